//! Governor benchmarks: governors started per second (each rebuilds from the ledger and loads
//! its entitlement), and resident memory per live governor, registry included.
//!
//! `cargo bench --bench governors` (100k live governors for the memory figure; set
//! `TAI_BENCH_GOVERNORS=1000000` for a million).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use supervisors::{ChildSpec, DynamicSupervisor, Restart, Supervisor};
use tai_autonomics::entitlements::Entitlements;
use tai_autonomics::governor::{Executor, GetView, Governor, GovernorDeps};
use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::writer::{LedgerHandle, ReceiptWriter, WriterConfig};
use tai_autonomics::receipts::AnyStore;

fn resident_bytes() -> u64 {
    tai_autonomics::telemetry::metrics::process_stats().resident_bytes
}

async fn deps(dir: &std::path::Path) -> Arc<GovernorDeps> {
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("bench.db")).unwrap());
    let cfg = WriterConfig {
        node: "tai@bench".into(),
        max_batch: 512,
        linger: Duration::ZERO,
        queue_capacity: 65_536,
        chaos: Default::default(),
        governor_states: tai_autonomics::governor::State::NAMES,
    };
    let chaos = cfg.chaos.clone();
    let s = store.clone();
    let (spec, child) =
        ChildSpec::worker("ledger", move || ReceiptWriter::new(s.clone(), cfg.clone()));
    let ledger = LedgerHandle::new(child, store, 65_536, chaos);
    let l = ledger.clone();
    let (ent_spec, entitlements) = ChildSpec::worker("entitlements", move || {
        Entitlements::new(l.clone(), Default::default())
    });
    std::mem::forget(
        Supervisor::new("root")
            .child(spec)
            .child(ent_spec)
            .start()
            .await,
    );
    Arc::new(GovernorDeps {
        ledger,
        entitlements,
        thresholds: Default::default(),
        postpone_capacity: 64,
        action_timeout: Duration::from_secs(30),
        idle_hibernate: Duration::from_secs(3600),
        actions_in_flight: Default::default(),
        max_actions_in_flight: 1000,
        executor: Executor::Eval,
    })
}

fn governors(c: &mut Criterion) {
    let sys = actix_web::rt::System::new();
    let dir = tempfile::tempdir().unwrap();
    let deps = sys.block_on(deps(dir.path()));
    const BATCH: u64 = 10_000;
    let mut group = c.benchmark_group("governors");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(BATCH));
    group.bench_function("start_10k_governors", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += sys.block_on(async {
                    let d = deps.clone();
                    let pool = DynamicSupervisor::new("governance", move |t: &String| {
                        Ok::<_, String>(Governor::new(t, d.clone()))
                    })
                    .restart(Restart::Transient)
                    .start();
                    let t0 = Instant::now();
                    for i in 0..BATCH {
                        pool.start_child(format!("tenant-{i}")).await.unwrap();
                    }
                    // The last one has rebuilt and answers.
                    pool.get(&format!("tenant-{}", BATCH - 1))
                        .unwrap()
                        .send(GetView)
                        .await
                        .unwrap();
                    let elapsed = t0.elapsed();
                    pool.shutdown().await;
                    elapsed
                });
            }
            total
        })
    });
    group.finish();

    let n: u64 = std::env::var("TAI_BENCH_GOVERNORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    sys.block_on(async {
        let d = deps.clone();
        let pool = DynamicSupervisor::new("governance", move |t: &String| Ok::<_, String>(Governor::new(t, d.clone()))).restart(Restart::Transient).start();
        let before = resident_bytes();
        let t0 = Instant::now();
        for i in 0..n {
            pool.start_child(format!("tenant-{i}")).await.unwrap();
        }
        pool.get(&format!("tenant-{}", n - 1)).unwrap().send(GetView).await.unwrap();
        let elapsed = t0.elapsed();
        let per = resident_bytes().saturating_sub(before) / n;
        println!("figure: {n} live governors: {per} bytes resident each (registry included), started at {:.0}/s", n as f64 / elapsed.as_secs_f64());
        pool.shutdown().await;
    });
}

criterion_group!(benches, governors);
criterion_main!(benches);
