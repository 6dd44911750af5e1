//! The root supervision tree (SPEC §2): which actors run, in which order, under which rules.
//!
//! `root` is `one_for_one` with intensity `supervision.root_intensity` in
//! `supervision.root_period_secs` (5 in 60 s). Children start in the order listed and stop in
//! reverse: the Observer first (so it sees every later start), then the ledger's ReceiptWriter
//! on an arbiter (thread) of its own, so commits never hold up HTTP workers, then the
//! Entitlements actor (which appends through the writer), then `governance`: a dynamic
//! supervisor of one Governor per tenant (transient, with backoff), spread over arbiters, and the
//! Hibernator that sends idle governors to sleep; then the ActionSweeper, the MCP registry, the
//! ledger's Auditor (unless the audit is off) and the Pub/Sub consumer (with a subscription).
//! Every supervision event is counted and logged (`telemetry::events`) and remembered in the
//! ring the Observer serves (`EventLog`).

use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};
use anyhow::Context as _;
use supervisors::{
    Backoff, ChildRef, ChildSpec, DynamicRef, DynamicSupervisor, EventSink, Intensity, Restart,
    Shutdown, Strategy, Supervisor, SupervisorEvent, SupervisorRef,
};

use crate::config::{LedgerBackend, Settings};
use crate::entitlements::{Entitlements, Subscribers};
use crate::governor::{
    ActionSweeper, EntitlementUpdate, Executor, Governor, GovernorDeps, Hibernator, Sweep,
    SweepPolicy,
};
use crate::intake::Intake;
use crate::mcp::registry::{McpRegistry, Ops};
use crate::pubsub::consumer::{ConsumerConfig, PubsubConsumer};
use crate::pubsub::PubsubHealth;
use crate::receipts::audit::{AuditConfig, Auditor, SharedStanding};
use crate::receipts::firestore::FirestoreStore;
use crate::receipts::sqlite::SqliteStore;
use crate::receipts::writer::{LedgerHandle, ReceiptWriter, WriterConfig};
use crate::receipts::AnyStore;
use crate::telemetry::events;
use crate::telemetry::observer::{EventLog, EventRecord, Observer};

/// Handles to the running tree.
#[derive(Clone)]
pub struct Tree {
    pub root: SupervisorRef,
    pub observer: ChildRef<Observer>,
    pub ledger: LedgerHandle,
    /// The ledger writer's thread; stopped after the tree.
    pub ledger_arbiter: ArbiterHandle,
    pub entitlements: ChildRef<Entitlements>,
    /// Who hears about entitlement changes (kept outside the actor, so it survives restarts).
    pub entitlement_subscribers: Subscribers,
    /// One governor per tenant, keyed by tenant id.
    pub governors: DynamicRef<String, Governor>,
    /// The governed entry points (HTTP, Pub/Sub).
    pub intake: Intake,
    /// `pubsub_ready` of `/health`.
    pub pubsub_health: PubsubHealth,
    /// The pull consumer, when a subscription is configured.
    pub pubsub: Option<ChildRef<PubsubConsumer>>,
    /// The MCP tool registry.
    pub mcp: ChildRef<McpRegistry>,
    /// The ledger audit's settings and what it found, when it runs.
    pub audit: Option<(AuditConfig, SharedStanding)>,
    /// Per-tenant token buckets, for HTTP and MCP alike.
    pub limits: Arc<crate::limits::TenantLimits>,
    /// Webhook exchanges whose outcome is not recorded yet (a shutdown waits for them).
    pub action_exchanges: Arc<crate::governor::webhook::Exchanges>,
}

/// Opens the configured ledger backend. Firestore is tried again with backoff for up to
/// `patience` (zero: once).
pub async fn open_store(settings: &Settings, patience: Duration) -> anyhow::Result<AnyStore> {
    Ok(match settings.ledger.backend {
        LedgerBackend::Sqlite => {
            let path = &settings.ledger.sqlite_path;
            let existed = path.exists();
            let store = SqliteStore::open(path)
                .with_context(|| format!("opening the SQLite ledger at {}", path.display()))?;
            // The whole path, and whether the file is new: a relative path (the default
            // `data/ledger.db`) started from another folder makes a new, empty ledger there.
            let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            tracing::info!(
                path = %shown.display(),
                new = !existed,
                schema = store.schema_version().unwrap_or(0),
                "SQLite ledger opened"
            );
            AnyStore::Sqlite(store)
        }
        LedgerBackend::Firestore => {
            let project = settings
                .firestore_project()
                .context("ledger.backend = firestore needs a project id")?;
            let store = connect_firestore(&project, patience)
                .await
                .with_context(|| format!("connecting to Firestore project {project}"))?;
            tracing::info!(
                %project,
                emulator = !settings.firestore.emulator_host.is_empty(),
                "Firestore ledger connected"
            );
            AnyStore::Firestore(store)
        }
    })
}

/// The waits between attempts to reach Firestore at start: 0.1 s doubling to 5 s, each up to a
/// fifth longer at random, so that instances started together do not knock together.
const CONNECT_BACKOFF: supervisors::Backoff = supervisors::Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_secs(5),
    factor: 2.0,
    jitter: 0.2,
    reset_after: Duration::ZERO,
};

/// Connects to Firestore, trying again with [`CONNECT_BACKOFF`] until `patience` has passed.
/// The client opens its channel as it is made, so a blip at a cold start (a DNS answer, the
/// front end, an emulator still starting) would otherwise end the process before its listener
/// is up; Cloud Run's startup probe waits for the port meanwhile.
async fn connect_firestore(project: &str, patience: Duration) -> anyhow::Result<FirestoreStore> {
    const ATTEMPT: Duration = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        let delay = CONNECT_BACKOFF.jittered(attempts);
        attempts += 1;
        let error =
            match actix_web::rt::time::timeout(ATTEMPT, FirestoreStore::connect(project)).await {
                Ok(Ok(store)) => return Ok(store),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", ATTEMPT.as_secs()),
            };
        if started.elapsed() + delay > patience {
            anyhow::bail!("{error} (attempts: {attempts})");
        }
        tracing::warn!(%project, %error, retry_in_ms = delay.as_millis() as u64, "Firestore is not reachable yet; trying again");
        actix_web::rt::time::sleep(delay).await;
    }
}

/// Starts the root supervisor and its children; resolves when they all run.
pub async fn start(settings: &Settings) -> anyhow::Result<Tree> {
    let patience = Duration::from_secs(settings.firestore.connect_patience_secs);
    let store = open_store(settings, patience).await?;
    let max_batch = match store {
        AnyStore::Firestore(_) => settings.ledger.max_batch.min(FirestoreStore::max_batch()),
        AnyStore::Sqlite(_) => settings.ledger.max_batch,
    };
    let chaos: Arc<crate::receipts::writer::LedgerChaos> = Default::default();
    let writer_cfg = WriterConfig {
        node: settings.node_name(),
        max_batch,
        linger: Duration::from_micros(settings.ledger.linger_us),
        queue_capacity: settings.ledger.queue_capacity,
        chaos: chaos.clone(),
        governor_states: crate::governor::State::NAMES,
    };

    // The events outlive any one Observer: a restarted one serves the same ring.
    let event_log = EventLog::default();
    let log = event_log.clone();
    let (observer_spec, observer) =
        ChildSpec::worker("observer", move || Observer::new(log.clone()));
    let writer_store = store.clone();
    let (ledger_spec, writer) = ChildSpec::worker("ledger", move || {
        ReceiptWriter::new(writer_store.clone(), writer_cfg.clone())
    });
    let ledger_arbiter = Arbiter::new().handle();
    let ledger = LedgerHandle::new(writer, store, settings.ledger.queue_capacity, chaos);
    let entitlement_subscribers: Subscribers = Default::default();
    let (ent_ledger, ent_subs) = (ledger.clone(), entitlement_subscribers.clone());
    let (entitlements_spec, entitlements) = ChildSpec::worker("entitlements", move || {
        Entitlements::new(ent_ledger.clone(), ent_subs.clone())
    });

    let action_exchanges: Arc<crate::governor::webhook::Exchanges> = Default::default();
    let (webhook_url, webhook_basic) =
        crate::outbound::basic_credentials(&settings.actions.webhook_url);
    let deps = Arc::new(GovernorDeps {
        ledger: ledger.clone(),
        entitlements: entitlements.clone(),
        thresholds: settings.governance.thresholds.clone(),
        postpone_capacity: settings.governance.postpone_capacity,
        action_timeout: Duration::from_millis(settings.governance.action_timeout_ms),
        idle_hibernate: Duration::from_secs(settings.governance.idle_hibernate_secs),
        actions_in_flight: Default::default(),
        max_actions_in_flight: settings.actions.max_in_flight,
        executor: match settings.actions.executor.as_str() {
            "webhook" => Executor::Webhook(crate::governor::webhook::Webhook {
                url: webhook_url,
                basic: webhook_basic,
                timeout: Duration::from_millis(settings.actions.webhook_timeout_ms),
                secret: Some(settings.actions.webhook_secret.as_bytes())
                    .filter(|s| !s.is_empty())
                    .map(Into::into),
                tls: crate::outbound::Tls::new(
                    Some(settings.actions.webhook_ca_file.as_str())
                        .filter(|f| !f.is_empty())
                        .map(std::path::Path::new),
                )
                .map_err(|e| anyhow::anyhow!("actions.webhook_ca_file: {e}"))?,
                exchanges: action_exchanges.clone(),
            }),
            _ => Executor::Eval,
        },
    });
    let n = match settings.governance.arbiters {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let arbiters: Vec<ArbiterHandle> = (0..n).map(|_| Arbiter::new().handle()).collect();
    let gov = settings.governance.clone();
    let (governance_spec, governors) = ChildSpec::dynamic("governance", move || {
        let deps = deps.clone();
        DynamicSupervisor::new("governance", move |tenant: &String| {
            Ok::<_, String>(Governor::new(tenant, deps.clone()))
        })
        .restart(Restart::Transient)
        .backoff(Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_secs(2),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        })
        .intensity(Intensity::new(
            gov.intensity,
            Duration::from_secs(gov.period_secs),
        ))
        .shutdown(Shutdown::Timeout(Duration::from_secs(2)))
        .mailbox(gov.mailbox)
        .arbiters(arbiters.clone())
    });
    // Entitlement changes reach a running governor; one not running loads the record when it
    // starts. A change that leaves the tenant unentitled starts one: another instance's
    // governor (several may share a Firestore project) may have an action in flight, which
    // no one here could tell. A governor started here takes in the change as it rebuilds,
    // records the move to `refusing` and cancels that action now, not at that governor's next
    // input. (On one instance it records the lapse at once instead of at the next input.)
    let reach = governors.clone();
    entitlement_subscribers
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::new(
            move |ch: &crate::entitlements::EntitlementChanged| {
                let tenant = &ch.entitlement.tenant_id;
                if let Some(g) = reach.get(tenant).filter(|g| !g.ended_in_order()) {
                    // Past a full mailbox: a governor kept busy by signals must still learn
                    // that its tenant was suspended.
                    let _ = g.tell(EntitlementUpdate(ch.entitlement.clone()));
                } else if ch.entitlement.status != crate::entitlements::model::Status::Active {
                    let (pool, tenant) = (reach.clone(), tenant.clone());
                    actix::spawn(async move {
                        if let Err(e) = pool.get_or_start(tenant.clone()).await {
                            tracing::warn!(%tenant, error = %e, "no governor started to act on the tenant's lapse");
                        }
                    });
                }
            },
        ));

    let (sleeper, idle) = (
        governors.clone(),
        Duration::from_secs(settings.governance.idle_hibernate_secs),
    );
    let (hibernator_spec, _) =
        ChildSpec::worker("hibernator", move || Hibernator::new(sleeper.clone(), idle));

    // One process owns a SQLite file; a Firestore project may have several instances.
    let action_timeout = Duration::from_millis(settings.governance.action_timeout_ms);
    let policy = match settings.ledger.backend {
        LedgerBackend::Sqlite => SweepPolicy::AtStart,
        LedgerBackend::Firestore => SweepPolicy::Overdue {
            period: action_timeout.max(Duration::from_secs(1)),
            overdue: action_timeout * 2 + Duration::from_secs(1),
        },
    };
    let (swept, sweep_store) = (governors.clone(), ledger.store().clone());
    let (sweeper_spec, sweeper) = ChildSpec::worker("sweeper", move || {
        ActionSweeper::new(swept.clone(), sweep_store.clone(), policy)
    });

    // The background audit of every chain; what it found broken outlives a restarted Auditor.
    let audit = match AuditConfig::from_settings(&settings.ledger) {
        Some(cfg) => Some((cfg, audit_standing(&settings.ledger.audit_anchors_file)?)),
        None => None,
    };
    let audit_spec = audit.clone().map(|(cfg, standing)| {
        events::zero_audit_series();
        let store = ledger.store().clone();
        let (spec, _) = ChildSpec::worker("auditor", move || {
            Auditor::new(store.clone(), cfg, standing.clone())
        });
        spec.shutdown(Shutdown::Timeout(Duration::from_secs(1)))
            .mailbox(16)
    });

    let intake = Intake::new(settings, governors.clone(), entitlements.clone())?;

    let pubsub_health = PubsubHealth::default();
    let root_cell: Arc<std::sync::OnceLock<SupervisorRef>> = Default::default();
    let limits = Arc::new(crate::limits::TenantLimits::new(
        settings.rate_limit.per_second,
        settings.rate_limit.burst,
    ));
    let ops = Ops {
        limits: limits.clone(),
        intake: intake.clone(),
        ledger: ledger.clone(),
        root: root_cell.clone(),
        pubsub: pubsub_health.clone(),
        node: settings.node_name(),
        started: std::time::Instant::now(),
    };

    let tool_names = settings.mcp.tool_names;
    let (mcp_spec, mcp) =
        ChildSpec::worker("mcp", move || McpRegistry::new(ops.clone(), tool_names));

    let sink: EventSink = Arc::new(move |e: &SupervisorEvent| {
        events::supervision(e);
        // Straight into the ring: no mailbox to fill in a crash storm, and the Observer's own
        // exit is remembered although it is down when that event comes.
        event_log.push(EventRecord::from_event(e));
        // A governance supervisor that gave up stopped every governor, and with them the
        // timers of their actions: the restarted one is swept.
        if let SupervisorEvent::ChildRestarted {
            supervisor, child, ..
        } = e
        {
            if &**supervisor == "root" && child == "governance" {
                let _ = sweeper.tell(Sweep);
            }
        }
    });
    // Pull runs when a subscription is configured: last to start, first to stop.
    let (consumer_spec, pubsub) =
        ConsumerConfig::from_settings(&settings.pubsub, settings.gcp_project().as_deref())
            .map(|cfg| {
                pubsub_health.enable(
                    &cfg.subscription,
                    2 * cfg.health_interval.as_millis() as u64,
                );
                let (intake, health) = (intake.clone(), pubsub_health.clone());
                let (spec, child) = ChildSpec::worker("pubsub", move || {
                    PubsubConsumer::new(intake.clone(), cfg.clone(), health.clone())
                });
                (
                    spec.shutdown(Shutdown::Timeout(Duration::from_secs(2))),
                    child,
                )
            })
            .unzip();
    let mut root = Supervisor::new("root")
        .strategy(Strategy::OneForOne)
        .intensity(Intensity::new(
            settings.supervision.root_intensity,
            Duration::from_secs(settings.supervision.root_period_secs),
        ))
        .events(sink)
        .child(
            observer_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .mailbox(1024),
        )
        .child(
            ledger_spec
                .arbiter(ledger_arbiter.clone())
                .shutdown(Shutdown::Timeout(Duration::from_secs(3)))
                .mailbox(settings.ledger.queue_capacity),
        )
        .child(
            entitlements_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(2)))
                .mailbox(1024),
        )
        .child(governance_spec)
        .child(
            hibernator_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .mailbox(16),
        )
        .child(
            sweeper_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .mailbox(16),
        )
        .child(
            mcp_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .mailbox(1024),
        );
    if let Some(spec) = audit_spec {
        root = root.child(spec);
    }
    if let Some(spec) = consumer_spec {
        root = root.child(spec);
    }
    let root = root.start().await;
    let _ = root_cell.set(root.clone());
    if let Some(reason) = root.exit_reason() {
        anyhow::bail!("the supervision tree failed to start: {reason}");
    }
    Ok(Tree {
        root,
        observer,
        ledger,
        ledger_arbiter,
        entitlements,
        entitlement_subscribers,
        governors,
        intake,
        pubsub_health,
        pubsub,
        mcp,
        audit,
        limits,
        action_exchanges,
    })
}

/// What the audit starts from: nothing, or the anchors of `ledger.audit_anchors_file`.
fn audit_standing(file: &str) -> anyhow::Result<SharedStanding> {
    use crate::receipts::audit::Standing;
    if file.is_empty() {
        return Ok(SharedStanding::default());
    }
    let read = crate::receipts::chain::read_anchors_file(std::path::Path::new(file))
        .map_err(|e| anyhow::anyhow!("ledger.audit_anchors_file {file}: {e}"))?;
    events::audit_anchors_read(file, read.anchors.len(), read.skipped);
    Ok(Arc::new(std::sync::Mutex::new(Standing::with_anchors(
        read.anchors,
    ))))
}
