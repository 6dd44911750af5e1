//! Pub/Sub benchmarks, end to end with durable receipts (SQLite): push deliveries over HTTP
//! (`POST /pubsub`, 64 concurrent senders, every message id new) and, when
//! `PUBSUB_EMULATOR_HOST` is set, messages pulled from the Pub/Sub emulator (published in
//! batches, timed until the consumer has acked them all). The application runs in this process
//! on port 0; the senders share its two cores.
//!
//! `cargo bench --bench pubsub` (with `source tools/emulators.sh && emulators_start` first for
//! the pull figure).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tai_autonomics::config::Settings;
use tai_autonomics::startup::Application;

const TENANTS: usize = 64;
const PER_ITER: u64 = 2000;
const SENDERS: u64 = 64;
const PROJECT: &str = "tai-bench";

struct Running {
    url: String,
    state: actix_web::web::Data<tai_autonomics::http::AppState>,
    _dir: tempfile::TempDir,
}

async fn start(adjust: impl FnOnce(&mut Settings)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::load_profile(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
    )
    .unwrap();
    s.http.port = 0;
    s.log.level = "warning".into();
    s.rate_limit.per_second = 1_000_000;
    s.rate_limit.burst = 1_000_000;
    s.ledger.sqlite_path = dir.path().join("bench.db");
    // The signal path alone: the ledger audit's cost is measured by itself (docs/PERFORMANCE.md).
    s.ledger.audit_interval_secs = 0;
    adjust(&mut s);
    let app = Application::build(s).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped(false));
    let client = awc::Client::default();
    for t in 0..TENANTS {
        let res = client
            .post(format!("{url}/marketplace"))
            .send_json(&json!({"tenant_id": format!("bench-{t}"), "entitlement_id": "e", "action": "grant"}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    Running {
        url,
        state,
        _dir: dir,
    }
}

fn signal(n: u64) -> Vec<u8> {
    // Below the warning threshold: a decision and one receipt per message, no actions.
    json!({"tenant_id": format!("bench-{}", n % TENANTS as u64), "metric": "cpu_utilization", "value": (n % 50) as f64})
        .to_string()
        .into_bytes()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Sends `PER_ITER` push deliveries with fresh message ids from `SENDERS` concurrent clients.
async fn push_round(url: &str, next: &Arc<AtomicU64>) -> Duration {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (url, next) = (url.to_owned(), next.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let client = awc::Client::default();
            for _ in 0..PER_ITER / SENDERS {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = json!({"message": {"data": b64(&signal(n)), "messageId": format!("push-{n}")}, "subscription": "projects/tai-bench/subscriptions/push"});
                let mut res = client
                    .post(format!("{url}/pubsub"))
                    .send_json(&body)
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                // Read the answer to its end, or the client cannot reuse the connection.
                res.body().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

async fn emulator(host: &str, method: &str, path: &str, body: Value) -> Value {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let url = format!("http://{host}/v1/projects/{PROJECT}/{path}");
    let req = if method == "PUT" {
        client.put(url)
    } else {
        client.post(url)
    };
    let mut res = req.send_json(&body).await.unwrap();
    let bytes = res.body().limit(1 << 24).await.unwrap();
    assert!(
        res.status().is_success(),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

/// Publishes `PER_ITER` signals and waits until the consumer has acked all of them.
async fn pull_round(host: &str, topic: &str, app: &Running, next: &Arc<AtomicU64>) -> Duration {
    let acked = || {
        app.state.tree.pubsub_health.snapshot()["acked"]
            .as_u64()
            .unwrap()
    };
    let target = acked() + PER_ITER;
    let t0 = Instant::now();
    for _ in 0..PER_ITER / 1000 {
        let msgs: Vec<Value> = (0..1000)
            .map(|_| json!({"data": b64(&signal(next.fetch_add(1, Ordering::Relaxed)))}))
            .collect();
        emulator(
            host,
            "POST",
            &format!("topics/{topic}:publish"),
            json!({"messages": msgs}),
        )
        .await;
    }
    while acked() < target {
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    t0.elapsed()
}

fn pubsub(c: &mut Criterion) {
    let sys = actix_web::rt::System::new();
    let app = sys.block_on(start(|_| {}));
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("pubsub");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(PER_ITER));
    group.bench_function("push_http_durable", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| sys.block_on(push_round(&app.url, &next)))
                .sum()
        })
    });
    if let Ok(host) = std::env::var("PUBSUB_EMULATOR_HOST") {
        let topic = format!("bench-{}", std::process::id());
        let sub = format!("bench-sub-{}", std::process::id());
        sys.block_on(async {
            emulator(&host, "PUT", &format!("topics/{topic}"), json!({})).await;
            emulator(&host, "PUT", &format!("subscriptions/{sub}"), json!({"topic": format!("projects/{PROJECT}/topics/{topic}"), "ackDeadlineSeconds": 60})).await;
        });
        let (h, t, s) = (host.clone(), topic.clone(), sub.clone());
        let puller = sys.block_on(start(move |st| {
            st.gcp.project_id = PROJECT.into();
            st.pubsub.emulator_host = h;
            st.pubsub.topic = t;
            st.pubsub.subscription = s;
        }));
        group.bench_function("pull_emulator_durable", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| sys.block_on(pull_round(&host, &topic, &puller, &next)))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pubsub);
criterion_main!(benches);
