//! Ledger benchmarks: durable appends per second through the ReceiptWriter (group commit) at
//! 1, 16 and 256 concurrent producers on SQLite (and on the Firestore emulator when
//! FIRESTORE_EMULATOR_HOST is set), and chain verification in receipts per second.
//!
//! `cargo bench --bench ledger`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use supervisors::{ChildSpec, Supervisor};
use tai_autonomics::receipts::firestore::FirestoreStore;
use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::writer::{LedgerHandle, NewReceipt, ReceiptWriter, WriterConfig};

use tai_autonomics::receipts::{
    verify_chain, AnyStore, AppendItem, LedgerStore, Receipt, ReceiptDraft, ReceiptType, Verifier,
};

fn draft(tenant: usize, i: u64) -> NewReceipt {
    NewReceipt::new(
        ReceiptDraft::new(format!("tenant-{tenant}"), ReceiptType::Transition, "signal_processed", "value 42.5 < warning threshold 60")
            .states(Some("stable"), Some("stable"))
            .metadata(serde_json::json!({"input": {"metric": "cpu_utilization", "value": 42.5, "timestamp_ms": 1_769_437_845_123u64 + i}, "gates": {"entitlement": "pass"}})),
    )
}

/// Appends `total` receipts from `producers` concurrent callers, each awaiting its own receipt
/// before sending the next; returns the elapsed time.
async fn run(ledger: &LedgerHandle, producers: usize, total: u64) -> Duration {
    let per = total / producers as u64;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let l = ledger.clone();
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0..per {
                l.append_one(draft(p % 64, i)).await.expect("durable");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

async fn start(store: AnyStore, max_batch: usize) -> LedgerHandle {
    let cfg = WriterConfig {
        node: "tai@bench".into(),
        max_batch,
        linger: Duration::ZERO,
        queue_capacity: 65_536,
        chaos: Default::default(),
        governor_states: &[],
    };
    let chaos = cfg.chaos.clone();
    let s = store.clone();
    let (spec, child) =
        ChildSpec::worker("ledger", move || ReceiptWriter::new(s.clone(), cfg.clone()));
    // As in the service: the writer has an arbiter (thread) of its own.
    let arbiter = actix::Arbiter::new().handle();
    let root = Supervisor::new("root")
        .child(spec.mailbox(65_536).arbiter(arbiter))
        .start()
        .await;
    std::mem::forget(root);
    LedgerHandle::new(child, store, 65_536, chaos)
}

fn appends(c: &mut Criterion) {
    let sys = actix_web::rt::System::new();
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
    let ledger = sys.block_on(start(store, 512));
    let mut group = c.benchmark_group("sqlite_durable_appends");
    group.sample_size(10);
    for producers in [1usize, 16, 256] {
        let per_iter: u64 = if producers == 1 { 200 } else { 256 * 20 };
        group.throughput(Throughput::Elements(per_iter));
        group.bench_function(format!("{producers}_producers"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| sys.block_on(run(&ledger, producers, per_iter)))
                    .sum()
            })
        });
    }
    group.finish();

    if std::env::var("FIRESTORE_EMULATOR_HOST").is_ok() {
        let fs = sys
            .block_on(FirestoreStore::connect(&format!(
                "tai-bench-{}",
                std::process::id()
            )))
            .unwrap();
        let ledger = sys.block_on(start(AnyStore::Firestore(fs), FirestoreStore::max_batch()));
        let mut group = c.benchmark_group("firestore_emulator_durable_appends");
        group.sample_size(10);
        for producers in [1usize, 16, 256] {
            let per_iter: u64 = if producers == 1 { 50 } else { 1024 };
            group.throughput(Throughput::Elements(per_iter));
            group.bench_function(format!("{producers}_producers"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| sys.block_on(run(&ledger, producers, per_iter)))
                        .sum()
                })
            });
        }
        group.finish();
    }
}

fn verification(c: &mut Criterion) {
    let mut chain: Vec<Receipt> = Vec::with_capacity(10_000);
    for i in 0..10_000u64 {
        let d = draft(0, i).draft;
        let prev = chain.last().map(|r| (r.seq, r.receipt_hash.as_str()));
        chain.push(d.seal(prev, "tai@bench", "2026-01-26T14:30:45.123Z".into()));
    }
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(chain.len() as u64));
    group.bench_function("verify_10k_receipts", |b| {
        b.iter(|| {
            let mut v = Verifier::new("tenant-0");
            for r in &chain {
                assert!(v.feed(r));
            }
            v.checked()
        })
    });
    // One page as the verifier reads it from a store (1,000 receipts, freshly parsed and so
    // still in the CPU's caches).
    let page = &chain[..1000];
    group.throughput(Throughput::Elements(page.len() as u64));
    group.bench_function("verify_page_of_1k", |b| {
        b.iter(|| {
            let mut v = Verifier::new("tenant-0");
            for r in page {
                assert!(v.feed(r));
            }
            v.checked()
        })
    });
    group.finish();

    // End to end as the CLI and `GET …/receipts/verify` run it: pages of 1,000 read from the
    // SQLite file (parsed into receipts) and verified.
    let sys = actix_web::rt::System::new();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("verify.db")).unwrap();
    let items: Vec<AppendItem> = chain
        .iter()
        .map(|r| AppendItem::receipt(r.clone()))
        .collect();
    sys.block_on(store.append(items)).unwrap();
    let mut group = c.benchmark_group("verify_from_sqlite");
    group.sample_size(20);
    group.throughput(Throughput::Elements(chain.len() as u64));
    group.bench_function("verify_10k_receipts", |b| {
        b.iter(|| {
            let report = sys
                .block_on(verify_chain(&store, "tenant-0", None, 1000, |_| {}))
                .unwrap();
            assert!(report.valid);
            report.receipts_checked
        })
    });
    group.finish();
}

criterion_group!(benches, appends, verification);
criterion_main!(benches);
