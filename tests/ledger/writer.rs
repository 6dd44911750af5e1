//! The ReceiptWriter: group commit across many callers, the bounded queue, failed batches.

use std::time::Duration;

use supervisors::{ChildSpec, Supervisor};
use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::writer::{
    LedgerError, LedgerHandle, NewReceipt, ReceiptWriter, WriterConfig,
};
use tai_autonomics::receipts::{
    verify_chain, AnyStore, AppendItem, LedgerStore, Receipt, ReceiptDraft, ReceiptType,
};

pub async fn writer(
    store: AnyStore,
    max_batch: usize,
    capacity: usize,
) -> (LedgerHandle, supervisors::SupervisorRef) {
    writer_lingering(store, max_batch, capacity, Duration::from_micros(200)).await
}

async fn writer_lingering(
    store: AnyStore,
    max_batch: usize,
    capacity: usize,
    linger: Duration,
) -> (LedgerHandle, supervisors::SupervisorRef) {
    writer_with(store, max_batch, capacity, linger, &[]).await
}

pub async fn writer_with(
    store: AnyStore,
    max_batch: usize,
    capacity: usize,
    linger: Duration,
    governor_states: &'static [&'static str],
) -> (LedgerHandle, supervisors::SupervisorRef) {
    let cfg = WriterConfig {
        node: "tai@writer-test".into(),
        max_batch,
        linger,
        queue_capacity: capacity,
        chaos: Default::default(),
        governor_states,
    };
    let chaos = cfg.chaos.clone();
    let s = store.clone();
    let (spec, child) =
        ChildSpec::worker("ledger", move || ReceiptWriter::new(s.clone(), cfg.clone()));
    let root = Supervisor::new("root")
        .child(spec.mailbox(capacity))
        .start()
        .await;
    (LedgerHandle::new(child, store, capacity, chaos), root)
}

pub fn draft(tenant: &str, i: usize) -> NewReceipt {
    NewReceipt::new(
        ReceiptDraft::new(
            tenant,
            ReceiptType::Transition,
            "signal_processed",
            format!("n{i}"),
        )
        .states(Some("stable"), Some("stable")),
    )
}

/// Appends the receipt after `head` to its chain through a second store on the same file, as
/// another instance would: the writer's cached head goes stale.
async fn append_behind_the_writers_back(path: &std::path::Path, head: &Receipt) {
    let other = SqliteStore::open(path).unwrap();
    let sneaky = ReceiptDraft::new(head.tenant_id.as_str(), ReceiptType::Refusal, "x", "y").seal(
        Some((head.seq, &head.receipt_hash)),
        "tai@other",
        "t".into(),
    );
    other
        .append(vec![AppendItem::receipt(sneaky)])
        .await
        .unwrap();
}

/// Runs `n` appends concurrently (each its own task) and collects the outcomes.
async fn concurrent(
    ledger: &LedgerHandle,
    n: usize,
    tenants: usize,
) -> Vec<Result<Receipt, LedgerError>> {
    let mut handles = Vec::new();
    for i in 0..n {
        let l = ledger.clone();
        handles.push(actix_web::rt::spawn(async move {
            l.append_one(draft(&format!("t{}", i % tenants), i)).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[actix_web::test]
async fn many_callers_are_committed_in_groups_and_every_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    let (ledger, root) = writer(store.clone(), 64, 10_000).await;
    let results = concurrent(&ledger, 600, 6).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    for t in 0..6 {
        let tenant = format!("t{t}");
        let report = verify_chain(&store, &tenant, None, 1000, |_| {})
            .await
            .unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.receipts_checked, 100);
    }
    // Every caller got its own durable receipt back.
    let mut ids: Vec<_> = results.into_iter().map(|r| r.unwrap().receipt_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 600);
    assert_eq!(ledger.queued(), 0);
    root.shutdown().await;
}

#[actix_web::test]
async fn a_full_queue_refuses_at_once_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    let (ledger, root) = writer(store.clone(), 4, 8).await;
    let results = concurrent(&ledger, 300, 1).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::Busy)))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy > 0, "some callers were refused");
    assert_eq!(
        ok + busy,
        300,
        "every caller got an answer: durable or busy"
    );
    let report = verify_chain(&store, "t0", None, 1000, |_| {})
        .await
        .unwrap();
    assert!(report.valid);
    assert_eq!(
        report.receipts_checked as usize, ok,
        "exactly the accepted receipts are stored"
    );
    root.shutdown().await;
}

#[actix_web::test]
async fn a_failed_batch_fails_every_caller_in_it_and_the_writer_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&path).unwrap());
    let (ledger, root) = writer(store.clone(), 512, 1000).await;
    let first = ledger.append_one(draft("t0", 0)).await.unwrap();
    // Another writer (as a second instance would) appends seq 2 behind the writer's back.
    append_behind_the_writers_back(&path, &first).await;
    // The writer's cached head is stale: its next batch conflicts as a whole.
    let results = concurrent(&ledger, 20, 1).await;
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::Conflict(_))))
        .count();
    assert!(conflicts >= 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(LedgerError::Conflict(_)))));
    // It reloads the head and goes on.
    let after = ledger.append_one(draft("t0", 99)).await.unwrap();
    let report = verify_chain(&store, "t0", None, 1000, |_| {})
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(report.head_seq, after.seq);
    root.shutdown().await;
}

#[actix_web::test]
async fn a_redelivered_message_gets_its_original_receipt_and_no_second_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    let (ledger, root) = writer(store.clone(), 64, 1000).await;
    let with_id = |i| NewReceipt {
        message_id: Some("m-42".into()),
        ..draft("t0", i)
    };
    // Twice in one batch, and once more later.
    let both = ledger.append(vec![with_id(1), with_id(2)]).await.unwrap();
    let later = ledger.append_one(with_id(3)).await.unwrap();
    assert_eq!(both[0], both[1]);
    assert_eq!(both[0], later);
    assert_eq!(
        store.head("t0").await.unwrap().unwrap().seq,
        1,
        "one receipt for one message id"
    );
    // A decision of several receipts for a message that has its receipt already appends none
    // of them: the answer is that one receipt.
    let again = ledger
        .append(vec![draft("t0", 4), with_id(5), draft("t0", 6)])
        .await
        .unwrap();
    assert_eq!(again, vec![later]);
    assert_eq!(store.head("t0").await.unwrap().unwrap().seq, 1);
    root.shutdown().await;
}

/// A commit under way finishes and answers its caller even if the writer crashes meanwhile:
/// nobody is told "nothing was written" about a receipt that was, and the restarted writer
/// continues the chain.
#[actix_web::test]
async fn a_commit_under_way_survives_a_writer_crash_and_answers_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("ledger.db")).unwrap());
    // No linger: the writer starts the commit as it takes the draft, before the crash arrives.
    let (ledger, _root) = writer_lingering(store.clone(), 64, 1024, Duration::ZERO).await;
    // The commit holds still for a moment, so the crash lands while it is under way.
    ledger.chaos.stall_for(Duration::from_millis(300));
    let l = ledger.clone();
    let first = actix_web::rt::spawn(async move { l.append_one(draft("t0", 0)).await });
    // Once counted, the draft is in the writer's mailbox, ahead of the crash sent next.
    while ledger.queued() == 0 {
        actix_web::rt::task::yield_now().await;
    }
    let restarts = ledger.writer().restarts();
    let _ = ledger
        .writer()
        .send(tai_autonomics::receipts::writer::Crash)
        .await;
    let receipt = first
        .await
        .unwrap()
        .expect("the commit under way answers its caller");
    assert_eq!(receipt.seq, 1);
    while ledger.writer().restarts() == restarts {
        actix_web::rt::task::yield_now().await;
    }
    let next = ledger.append_one(draft("t0", 1)).await.unwrap();
    assert_eq!(next.seq, 2, "the restarted writer continues the chain");
    let report = verify_chain(&store, "t0", None, 100, |_| {}).await.unwrap();
    assert!(report.valid && report.receipts_checked == 2, "{report:?}");
}

/// Drafts that arrive while a commit is under way are sealed on arrival, on top of that commit.
/// When it fails, they are sealed again from the store's heads, not failed with it.
#[actix_web::test]
async fn callers_sealed_ahead_of_a_failed_commit_are_sealed_again_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&path).unwrap());
    let (ledger, root) = writer_lingering(store.clone(), 64, 1024, Duration::ZERO).await;
    let first = ledger.append_one(draft("t0", 0)).await.unwrap();
    // Another writer appends seq 2 behind the writer's back: its head for t0 is now stale.
    append_behind_the_writers_back(&path, &first).await;
    // The next commit holds still, so the callers after it arrive while it is under way.
    ledger.chaos.stall_for(Duration::from_millis(300));
    let l = ledger.clone();
    let doomed = actix_web::rt::spawn(async move { l.append_one(draft("t0", 1)).await });
    while ledger.queued() == 0 {
        actix_web::rt::task::yield_now().await;
    }
    let behind = concurrent(&ledger, 4, 2).await;
    assert!(
        matches!(doomed.await.unwrap(), Err(LedgerError::Conflict(_))),
        "the commit on the stale head conflicts"
    );
    let behind: Vec<_> = behind
        .into_iter()
        .map(|r| r.expect("a caller behind the failed commit is not failed with it"))
        .collect();
    let t0: Vec<u64> = behind
        .iter()
        .filter(|r| r.tenant_id == "t0")
        .map(|r| r.seq)
        .collect();
    assert_eq!(t0, vec![3, 4], "sealed again after the sneaky seq 2");
    for (tenant, count) in [("t0", 4), ("t1", 2)] {
        let report = verify_chain(&store, tenant, None, 100, |_| {})
            .await
            .unwrap();
        assert!(report.valid, "{tenant}: {report:?}");
        assert_eq!(report.receipts_checked, count);
    }
    root.shutdown().await;
}

/// A caller sealed ahead of a commit that fails is checked again when it is sealed again: the
/// store may have moved on behind the writer's back (another instance sharing it), and a
/// decision on a record that was replaced meanwhile must not land after the replacement.
#[actix_web::test]
async fn a_decision_sealed_ahead_of_a_failed_commit_is_checked_again_when_sealed_again() {
    use tai_autonomics::receipts::writer::record_fingerprint;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&path).unwrap());
    let (ledger, root) = writer_lingering(store.clone(), 64, 1024, Duration::ZERO).await;
    let (active, suspended) = (
        serde_json::json!({"tenant_id": "t", "status": "active"}),
        serde_json::json!({"tenant_id": "t", "status": "suspended"}),
    );
    let granted = ledger
        .append_one(NewReceipt {
            entitlement: Some(active.clone()),
            ..draft("t", 0)
        })
        .await
        .unwrap();
    let first_u = ledger.append_one(draft("u", 0)).await.unwrap();
    // Another instance appends to u, so the writer's next commit for u conflicts.
    append_behind_the_writers_back(&path, &first_u).await;
    ledger.chaos.stall_for(Duration::from_millis(300));
    let l = ledger.clone();
    let doomed = actix_web::rt::spawn(async move { l.append_one(draft("u", 1)).await });
    while ledger.queued() == 0 {
        actix_web::rt::task::yield_now().await;
    }
    // Decided on the active record, and sealed on arrival behind the stalled commit.
    let l = ledger.clone();
    let decided = actix_web::rt::spawn(async move {
        l.append_one(NewReceipt {
            expects: Some(record_fingerprint(Some(&active))),
            ..draft("t", 1)
        })
        .await
    });
    // Meanwhile the other instance suspends t.
    let other = SqliteStore::open(&path).unwrap();
    let suspension = ReceiptDraft::new("t", ReceiptType::Entitlement, "entitlement_suspended", "s")
        .seal(
            Some((granted.seq, &granted.receipt_hash)),
            "tai@other",
            "t".into(),
        );
    other
        .append(vec![
            AppendItem::receipt(suspension).with_entitlement(Some(suspended))
        ])
        .await
        .unwrap();

    assert!(
        matches!(doomed.await.unwrap(), Err(LedgerError::Conflict(_))),
        "the commit on u's stale head conflicts"
    );
    let decided = decided.await.unwrap();
    assert!(
        matches!(decided, Err(LedgerError::Superseded(_))),
        "{decided:?}"
    );
    assert_eq!(
        store.head("t").await.unwrap().unwrap().seq,
        2,
        "nothing after the suspension"
    );
    root.shutdown().await;
}

#[actix_web::test]
async fn a_failed_commit_chained_after_a_good_one_fails_only_its_callers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&path).unwrap());
    // One receipt per commit: the callers sealed during a commit are committed one by one,
    // chained on the commit thread.
    let (ledger, root) = writer_lingering(store.clone(), 1, 1024, Duration::ZERO).await;
    let first = ledger.append_one(draft("t0", 0)).await.unwrap();
    ledger.append_one(draft("t1", 0)).await.unwrap();
    append_behind_the_writers_back(&path, &first).await;
    ledger.chaos.stall_for(Duration::from_millis(300));
    let spawn = |tenant: &'static str, i: usize| {
        let l = ledger.clone();
        actix_web::rt::spawn(async move { l.append_one(draft(tenant, i)).await })
    };
    // In this order through the writer's mailbox: `good` starts the stalled commit; `doomed`
    // is sealed meanwhile on the stale head of t0 and chained after it; `behind` waits in the
    // queue behind `doomed`.
    let good = spawn("t1", 1);
    let doomed = spawn("t0", 1);
    let behind = [spawn("t1", 2), spawn("t0", 2)];
    assert_eq!(
        good.await
            .unwrap()
            .expect("the first commit is durable")
            .seq,
        2
    );
    assert!(
        matches!(doomed.await.unwrap(), Err(LedgerError::Conflict(_))),
        "the chained commit on the stale head conflicts"
    );
    let mut seqs = Vec::new();
    for h in behind {
        let r = h
            .await
            .unwrap()
            .expect("a caller behind the failed commit is not failed with it");
        seqs.push((r.tenant_id, r.seq));
    }
    assert_eq!(
        seqs,
        [("t1".to_string(), 3), ("t0".to_string(), 3)],
        "sealed again from the store"
    );
    for (tenant, count) in [("t0", 3), ("t1", 3)] {
        let report = verify_chain(&store, tenant, None, 100, |_| {})
            .await
            .unwrap();
        assert!(report.valid, "{tenant}: {report:?}");
        assert_eq!(report.receipts_checked, count);
    }
    root.shutdown().await;
}

/// Deliveries of one Pub/Sub message that race each other (a redelivery racing the first, or
/// one id pushed for several tenants) make one receipt: each caller gets that receipt or a
/// retryable `InFlight`, no batch fails, and the receipts around them are all committed.
#[actix_web::test]
async fn racing_deliveries_of_one_message_make_one_receipt_and_fail_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    // No linger: drafts whose ids were looked up are sealed ahead and chained.
    let (ledger, root) = writer_lingering(store.clone(), 64, 10_000, Duration::ZERO).await;
    for t in 0..4 {
        ledger.append_one(draft(&format!("t{t}"), 0)).await.unwrap();
    }
    for round in 0..20 {
        let mid = format!("m-{round}");
        let mut racing = Vec::new();
        let mut plain = Vec::new();
        for i in 0..40 {
            let l = ledger.clone();
            let mid = mid.clone();
            let tenant = format!("t{}", i % 4);
            if i % 5 == 0 {
                racing.push(actix_web::rt::spawn(async move {
                    let item = NewReceipt {
                        message_id: Some(mid),
                        ..draft(&tenant, i)
                    };
                    l.append_one(item).await
                }));
            } else {
                plain.push(actix_web::rt::spawn(async move {
                    l.append_one(draft(&tenant, i)).await
                }));
            }
        }
        for h in plain {
            h.await.unwrap().expect("no batch fails");
        }
        let mut got = Vec::new();
        for h in racing {
            match h.await.unwrap() {
                Ok(r) => got.push(r.receipt_id),
                Err(LedgerError::InFlight(_)) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        got.dedup();
        assert_eq!(
            got.len(),
            1,
            "round {round}: one receipt for {mid}: {got:?}"
        );
        // Retried once the first has its answer: that receipt, and no second one.
        let again = ledger
            .append_one(NewReceipt {
                message_id: Some(mid.clone()),
                ..draft("t3", 99)
            })
            .await
            .unwrap();
        assert_eq!(again.receipt_id, got[0]);
        let stored = store.by_message_id(&mid).await.unwrap().unwrap();
        assert_eq!(stored.receipt_id, got[0]);
    }
    let mut total = 0;
    for t in 0..4 {
        let report = verify_chain(&store, &format!("t{t}"), None, 1000, |_| {})
            .await
            .unwrap();
        assert!(report.valid, "{report:?}");
        total += report.receipts_checked;
    }
    assert_eq!(
        total,
        4 + 20 * 32 + 20,
        "the plain receipts and one per message"
    );

    // A delivery whose commit fails holds its id no longer: the next delivery is committed.
    ledger.chaos.fail_for(Duration::from_millis(200));
    let failed = ledger
        .append_one(NewReceipt {
            message_id: Some("m-failed".into()),
            ..draft("t0", 0)
        })
        .await;
    assert!(
        matches!(failed, Err(LedgerError::Unavailable(_))),
        "{failed:?}"
    );
    loop {
        let retry = ledger
            .append_one(NewReceipt {
                message_id: Some("m-failed".into()),
                ..draft("t0", 1)
            })
            .await;
        match retry {
            Ok(r) => {
                assert_eq!(store.by_message_id("m-failed").await.unwrap(), Some(r));
                break;
            }
            Err(LedgerError::Unavailable(_)) => actix_web::rt::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    root.shutdown().await;
}

/// Metadata of exactly `levels` nested objects.
fn nested(levels: usize) -> serde_json::Value {
    let mut v = serde_json::json!({});
    for _ in 1..levels {
        v = serde_json::json!({ "x": v });
    }
    v
}

/// A receipt nested deeper than any backend stores is refused to its own caller, before it
/// joins a batch: the callers appending beside it are committed. One at the limit is stored
/// and verifies. Run on SQLite here and on the Firestore emulator (whose refusal of a deep
/// document would otherwise fail the whole commit).
pub async fn deep_metadata_is_refused_to_its_caller_alone(store: AnyStore) {
    use tai_autonomics::receipts::receipt::{nesting, MAX_METADATA_NESTING};
    let (ledger, root) = writer(store.clone(), 512, 1000).await;
    let deep = |levels: usize| {
        let metadata = nested(levels);
        assert_eq!(nesting(&metadata), levels);
        NewReceipt::new(
            ReceiptDraft::new("deep", ReceiptType::ToolCall, "tool_call_refused", "deep")
                .metadata(metadata),
        )
    };
    let mut handles = Vec::new();
    for i in 0..24 {
        let l = ledger.clone();
        handles.push(actix_web::rt::spawn(async move {
            l.append_one(draft(&format!("beside{}", i % 3), i)).await
        }));
    }
    let refused = ledger.append_one(deep(MAX_METADATA_NESTING + 1)).await;
    assert!(
        matches!(&refused, Err(LedgerError::Rejected(m)) if m.contains("nests 17 levels")),
        "{refused:?}"
    );
    for h in handles {
        h.await
            .unwrap()
            .expect("a caller beside the deep receipt is committed");
    }
    let stored = ledger.append_one(deep(MAX_METADATA_NESTING)).await.unwrap();
    assert_eq!(
        stored.seq, 1,
        "the refused receipt took no place in the chain"
    );
    for tenant in ["beside0", "beside1", "beside2", "deep"] {
        let report = verify_chain(&store, tenant, None, 1000, |_| {})
            .await
            .unwrap();
        assert!(report.valid, "{tenant}: {report:?}");
    }
    let back = store.get(&stored.receipt_id).await.unwrap().unwrap();
    assert_eq!(back.metadata, nested(MAX_METADATA_NESTING));
    root.shutdown().await;
}

#[actix_web::test]
async fn deep_metadata_is_refused_to_its_caller_alone_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    deep_metadata_is_refused_to_its_caller_alone(store).await;
}

#[actix_web::test]
async fn a_draft_decided_on_a_replaced_entitlement_record_is_refused_and_nothing_of_its_caller_is_written(
) {
    use tai_autonomics::receipts::writer::record_fingerprint;
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    let (ledger, root) = writer(store.clone(), 64, 1000).await;
    let (active, suspended) = (
        serde_json::json!({"tenant_id": "t", "status": "active"}),
        serde_json::json!({"tenant_id": "t", "status": "suspended"}),
    );
    let record = |r: &serde_json::Value, i| NewReceipt {
        entitlement: Some(r.clone()),
        ..draft("t", i)
    };
    let decided_on = |r: &serde_json::Value, i| NewReceipt {
        expects: Some(record_fingerprint(Some(r))),
        ..draft("t", i)
    };
    // A record's fingerprint does not depend on the order of its keys.
    assert_eq!(
        record_fingerprint(Some(&active)),
        record_fingerprint(Some(
            &serde_json::from_str(r#"{"status": "active", "tenant_id": "t"}"#).unwrap()
        ))
    );

    ledger.append_one(record(&active, 1)).await.unwrap();
    ledger.append_one(decided_on(&active, 2)).await.unwrap();
    ledger.append_one(record(&suspended, 3)).await.unwrap();
    let late = ledger
        .append(vec![decided_on(&active, 4), decided_on(&active, 5)])
        .await;
    assert!(matches!(late, Err(LedgerError::Superseded(_))), "{late:?}");
    assert_eq!(
        store.head("t").await.unwrap().unwrap().seq,
        3,
        "nothing written"
    );
    let fresh = ledger.append_one(decided_on(&suspended, 6)).await.unwrap();
    assert_eq!(fresh.seq, 4);
    drop(root);

    // A writer that knows nothing of the tenant yet reads the record from the store.
    let (ledger, _root) = writer(store.clone(), 64, 1000).await;
    let late = ledger.append_one(decided_on(&active, 7)).await;
    assert!(matches!(late, Err(LedgerError::Superseded(_))), "{late:?}");
    assert_eq!(
        ledger
            .append_one(decided_on(&suspended, 8))
            .await
            .unwrap()
            .seq,
        5
    );
    let report = verify_chain(&store, "t", None, 1000, |_| {}).await.unwrap();
    assert!(report.valid && report.receipts_checked == 5, "{report:?}");
}

#[actix_web::test]
async fn a_governor_draft_behind_the_chains_last_governor_decision_is_a_conflict_and_nothing_of_its_caller_is_written(
) {
    use tai_autonomics::governor::State;
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("l.db")).unwrap());
    let governed = || writer_with(store.clone(), 64, 1000, Duration::ZERO, State::NAMES);
    let (ledger, root) = governed().await;
    // A governor's draft, following the chain's last governor decision at `seq` as it knows it.
    let follows = |seq, i| NewReceipt {
        follows: Some(seq),
        ..draft("t", i)
    };
    // Receipts of others: the Entitlements actor's (its refusals carry the entitlement's
    // status as their states) and an MCP call's (no states).
    let others = || {
        let plain = |kind, event, state: Option<&str>| {
            NewReceipt::new(ReceiptDraft::new("t", kind, event, "r").states(state, state))
        };
        vec![
            plain(
                ReceiptType::Entitlement,
                "entitlement_granted",
                Some("active"),
            ),
            plain(ReceiptType::Refusal, "entitlement_refused", Some("active")),
            plain(ReceiptType::ToolCall, "mcp_tool_call", None),
        ]
    };

    ledger.append(others()).await.unwrap();
    assert_eq!(ledger.append_one(follows(0, 1)).await.unwrap().seq, 4);
    ledger.append(others()).await.unwrap();
    // Others' receipts between two decisions do not count.
    assert_eq!(ledger.append_one(follows(4, 2)).await.unwrap().seq, 8);
    // A governor still at seq 4 (another instance's, say) is behind.
    let behind = ledger.append(vec![follows(4, 3), follows(4, 4)]).await;
    assert!(
        matches!(&behind, Err(LedgerError::Conflict(m)) if m.contains("seq 8, not at 4")),
        "{behind:?}"
    );
    assert_eq!(
        store.head("t").await.unwrap().unwrap().seq,
        8,
        "nothing written"
    );
    // A caller's later drafts follow its own first one.
    let both = ledger
        .append(vec![follows(8, 5), follows(8, 6)])
        .await
        .unwrap();
    assert_eq!(both.iter().map(|r| r.seq).collect::<Vec<_>>(), [9, 10]);
    drop(root);

    // A writer that knows nothing of the tenant yet reads the last decision from the store.
    let (ledger, _root) = governed().await;
    ledger.append(others()).await.unwrap();
    let behind = ledger.append_one(follows(8, 7)).await;
    assert!(
        matches!(behind, Err(LedgerError::Conflict(_))),
        "{behind:?}"
    );
    assert_eq!(ledger.append_one(follows(10, 8)).await.unwrap().seq, 14);
    let report = verify_chain(&store, "t", None, 1000, |_| {}).await.unwrap();
    assert!(report.valid && report.receipts_checked == 14, "{report:?}");
}
