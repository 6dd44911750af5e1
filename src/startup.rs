//! Application assembly and lifecycle: start the tree, bind, serve, drain, stop.
//!
//! Order (SPEC §2, §13): the supervision tree starts first and the HTTP server last; on SIGTERM
//! or SIGINT readiness turns 503 at once, new work is refused with 503 for `drain_delay_ms`, the
//! listener closes and in-flight requests get `shutdown_grace_ms`, then the tree stops in
//! reverse start order, all within Cloud Run's 10 s.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::receipts::store::LedgerStore as _;
use crate::{telemetry, tree};

/// Raises the process's soft limit on open files to its hard limit, as Go's runtime does for
/// every program. The soft limit is often 1024 (most shells', systemd's default) while the
/// hard one is far higher, and every connection is a file: with more clients than that at
/// once, accepting failed with "Too many open files" and the clients beyond it waited
/// unanswered. Returns the limits before and after when it changed them; an unlimited or
/// already equal limit is left alone, and a refusal is logged and changes nothing.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return None;
    };
    if current >= maximum {
        return None;
    }
    let raised = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some((current, maximum)),
        Err(e) => {
            tracing::warn!(error = %e, current, maximum, "could not raise the open-file limit");
            None
        }
    }
}

/// A built application: the tree is running and the listener is bound.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Starts the supervision tree, then binds `http.host:http.port` (port 0 = any free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let began = Instant::now();
        telemetry::metrics::install();
        let tree = tree::start(&settings)
            .await
            .context("starting the supervision tree")?;
        telemetry::events::zero_ledger_series(tree.ledger.store().backend());
        if tree.pubsub.is_some() {
            telemetry::events::zero_pull_series();
        }
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!(
                    "binding {}:{} (eaddrinuse means another process has the port)",
                    settings.http.host, settings.http.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let auth = crate::auth::Authenticator::new(settings.auth.mode, &settings.auth.tokens)
            .map_err(anyhow::Error::msg)?;
        let state = web::Data::new(AppState {
            auth,
            push_auth: crate::pubsub::push_auth::PushAuth::new(&settings.pubsub.push)?
                .map(Arc::new),
            mcp: Arc::new(crate::mcp::http_service(
                tree.mcp.clone(),
                &settings.mcp,
                settings.http.max_body_bytes,
            )),
            node: settings.node_name(),
            settings: Arc::new(settings.clone()),
            started: Instant::now(),
            draining: Arc::new(AtomicBool::new(false)),
            tree,
        });
        let max_body = settings.http.max_body_bytes;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .configure(|cfg| http::extractor_config(cfg, max_body))
                .configure(http::routes)
                .default_service(web::to(not_found))
                .wrap(ErrorHandlers::new().default_handler(http::error::json_error_body))
                .wrap(from_fn(http::middleware::observe))
        })
        .disable_signals()
        // HTTP/2 writes an answer that was waited for (a decision, a read through an actor)
        // as frames in more than one write; with Nagle's algorithm the later ones waited
        // for the client's delayed acknowledgement, about 40 ms each (README, Decisions).
        .tcp_nodelay(true)
        .shutdown_timeout(settings.http.shutdown_grace_ms.div_ceil(1000).max(1));
        if settings.http.workers > 0 {
            server = server.workers(settings.http.workers);
        }
        let server = server.listen_auto_h2c(listener)?.run();
        tracing::info!(host = %settings.http.host, port, node = %state.node, profile = %settings.profile, ready_ms = crate::telemetry::log_ms(began.elapsed()), "tai-autonomics ready");
        Ok(Application {
            port,
            server,
            state,
        })
    }

    /// Forgets idle rate-limit buckets (full again, so no different from new ones) once a
    /// minute, and within a second whenever more than `rate_limit.max_tracked_tenants` tenants
    /// hold one. A request for an unknown tenant takes a bucket before its 404, and a client
    /// cycling through made-up tenant ids grew memory by about 400 B per id for up to a minute
    /// (110 MB in 10 s at 27k requests a second).
    fn spawn_housekeeping(&self) {
        let state = self.state.clone();
        let most = state.settings.rate_limit.max_tracked_tenants;
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(Duration::from_secs(1));
            let mut seconds = 0u32;
            loop {
                tick.tick().await;
                seconds = seconds.wrapping_add(1);
                if seconds.is_multiple_of(60) || state.tree.limits.len() > most {
                    state.tree.limits.forget_idle();
                }
            }
        });
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state (tests use it to reach the tree).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM/SIGINT (when `signals` is true) or until the server stops, then
    /// drains and stops the tree. If the supervision tree exits on its own (the root supervisor
    /// gave up: more than `supervision.root_intensity` restarts in its period), the instance
    /// stops too and this returns the tree's reason as an error, so the process exits non-zero
    /// and the platform starts a new instance: OTP's permanent application, whose top
    /// supervisor's exit stops the node. An HTTP server left serving without its actors would
    /// answer 503 to everything for as long as nobody restarts it, and `/health/live` would
    /// keep it alive.
    pub async fn run_until_stopped(self, signals: bool) -> anyhow::Result<()> {
        self.spawn_housekeeping();
        let handle = self.server.handle();
        if signals {
            let (state, h) = (self.state.clone(), handle.clone());
            actix_web::rt::spawn(async move {
                let which = wait_for_signal().await;
                tracing::info!(signal = which, "shutdown requested: draining");
                drain(&state, &h).await;
            });
        }
        let gave_up: Arc<std::sync::OnceLock<String>> = Default::default();
        {
            let (state, h, gave_up) = (self.state.clone(), handle.clone(), gave_up.clone());
            actix_web::rt::spawn(async move {
                let reason = state.tree.root.join().await;
                if state.is_draining() {
                    return; // our own shutdown stopped it
                }
                let reason = reason.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
                tracing::error!(
                    reason = %reason,
                    "the supervision tree exited on its own; stopping the instance so that it is restarted"
                );
                let _ = gave_up.set(reason);
                // No drain delay: without the tree every request would be refused anyway.
                state.draining.store(true, Ordering::Release);
                h.stop(true).await;
            });
        }
        self.server.await.context("http server")?;
        stop_tree(&self.state).await;
        match gave_up.get() {
            Some(reason) => Err(anyhow::anyhow!(
                "the supervision tree exited on its own ({reason})"
            )),
            None => Ok(()),
        }
    }
}

/// 404 for a path no route takes, naming the request (its path cut at 200 characters) and
/// where the routes are described.
async fn not_found(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, http::error::ApiError> {
    let path: String = req.path().chars().take(200).collect();
    Err(http::error::ApiError::new(
        http::error::ErrorCode::NotFound,
        format!(
            "no such route: {} {path} (every route is described at /openapi.json)",
            req.method()
        ),
    ))
}

/// The signal that asks for a drain and a clean stop: SIGTERM (Cloud Run, systemd, `kill`),
/// SIGINT (Ctrl-C), and SIGHUP (a closing terminal, or a reload sent to a service whose
/// configuration is read at start only). Without a handler SIGHUP ended the process at once,
/// with no drain. A SIGHUP ignored when the process started (`nohup`) stays ignored.
pub async fn wait_for_signal() -> &'static str {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; wait forever.
        std::future::pending::<()>().await;
        return "none";
    };
    let mut hup = (!hangup_ignored())
        .then(|| signal(SignalKind::hangup()).ok())
        .flatten();
    let hup = async {
        match &mut hup {
            Some(hup) => hup.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup => "SIGHUP",
    }
}

/// Whether this process started with SIGHUP ignored (`nohup`, a supervisor that asks for it):
/// bit 0 of `SigIgn` in `/proc/self/status`. Read before a handler is installed, which would
/// replace the ignoring.
fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & 1 != 0)
}

/// Readiness 503 now, refuse new work for the drain delay, then close the listener and let
/// in-flight requests finish.
pub async fn drain(state: &AppState, handle: &ServerHandle) {
    state.draining.store(true, Ordering::Release);
    actix_web::rt::time::sleep(Duration::from_millis(state.settings.http.drain_delay_ms)).await;
    handle.stop(true).await;
}

/// Lets the webhook exchanges in flight record their outcome (SPEC §13: in-flight actions
/// drain), then stops the tree in reverse start order, all bounded so the process still exits
/// in time. An exchange still running at its deadline is dropped with its governor: its
/// action stays in flight in the chain and times out after the next start.
async fn stop_tree(state: &AppState) {
    let budget = Duration::from_millis(
        9_500u64
            .saturating_sub(
                state.settings.http.drain_delay_ms + state.settings.http.shutdown_grace_ms,
            )
            .max(500),
    );
    let began = Instant::now();
    let exchanges = &state.tree.action_exchanges;
    if exchanges.running() > 0 {
        let running = exchanges.running();
        tracing::info!(
            running,
            "waiting for webhook exchanges to record their outcome"
        );
        let wait = budget.saturating_sub(Duration::from_millis(500));
        if !exchanges.settled(wait).await {
            tracing::warn!(
                running = exchanges.running(),
                "webhook exchanges still running at shutdown; their actions stay in flight"
            );
        }
    }
    let budget = budget
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(500));
    match actix_web::rt::time::timeout(budget, state.tree.root.shutdown()).await {
        Ok(reason) => {
            tracing::info!(reason = ?reason.map(|r| r.to_string()), "supervision tree stopped");
            // The writer has flushed and stopped: nothing appends any more.
            let left = budget.saturating_sub(began.elapsed());
            let at_stop = state.tree.ledger.store().at_stop();
            if actix_web::rt::time::timeout(left, at_stop).await.is_err() {
                tracing::warn!("the ledger's last checkpoint did not end in time");
            }
        }
        Err(_) => tracing::error!(
            budget_ms = budget.as_millis() as u64,
            "supervision tree did not stop in time; exiting anyway"
        ),
    }
}
