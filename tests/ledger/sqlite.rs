//! The contract on SQLite, plus what only SQLite promises: migrations and append-only triggers.

use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::{AppendItem, LedgerStore, StoreError};

#[actix_web::test]
async fn sqlite_passes_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/ledger.db")).unwrap();
    super::contract::run(&store, "c-").await;
}

/// A release rolled back onto a ledger a later one migrated refuses it, rather than write to
/// a schema it does not know; the file is left as it was.
#[test]
fn a_ledger_with_a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let version = {
        let store = SqliteStore::open(&path).unwrap();
        store.schema_version().unwrap()
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'later')",
        [version + 1],
    )
    .unwrap();
    drop(conn);
    let Err(e) = SqliteStore::open(&path) else {
        panic!("a newer schema was opened");
    };
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "schema version {}, newer than this build's {version}",
            version + 1
        )),
        "{message}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let max: u32 = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(max, version + 1);
}

/// Two processes started at once on a new file (two `cargo run`s, a service and a test) both
/// open it: one applies the migrations, the other waits for them and finds them applied.
/// Before, one of them failed to start: "database is locked" as both turned WAL on, or, on a
/// file in WAL mode already, "table receipts already exists" as both read version 0.
#[test]
fn stores_opened_at_once_on_a_new_file_migrate_it_once_and_both_open() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        if round % 2 == 1 {
            // Empty, in WAL mode: both go straight to the migrations.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        }
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let opened: Vec<_> = (0..2)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SqliteStore::open(&path).map(|s| s.schema_version())
                })
            })
            .collect();
        for store in opened {
            let version = store.join().unwrap();
            assert!(
                matches!(version, Ok(Ok(v)) if v >= 1),
                "round {round}: {version:?}"
            );
        }
    }
}

#[actix_web::test]
async fn reopening_keeps_data_and_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    let c = super::contract::chain("t", None, 2);
    store
        .append(
            c.iter()
                .cloned()
                .map(AppendItem::receipt)
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    drop(store);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), 2);
    assert_eq!(again.range("t", 0, 10).await.unwrap(), c);
    // A second seq 2 (another writer's chain) is a conflict that says which seq was taken.
    let fork = super::contract::chain("t", Some(&c[0]), 1);
    match again
        .append(vec![AppendItem::receipt(fork[0].clone())])
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("seq 2 of tenant t is taken"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// A store closed at a stop, or its last handle dropped, closes every connection it opened,
/// the checkpoint thread's included, before it returns: SQLite then removes the emptied log
/// and its index, so the file alone is the ledger. The thread used to notice only after its
/// pause, and a process ending within it left both files beside the ledger.
#[actix_web::test]
async fn closing_or_dropping_the_store_closes_every_connection_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let files = |what: &str| {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.contains(&"ledger.db".to_owned()), "{what}: {names:?}");
        names
    };
    for round in 0..3 {
        let store = SqliteStore::open(&path).unwrap();
        let more = match store.range("t", 0, 100).await.unwrap().last() {
            Some(last) => super::contract::chain("t", Some(last), 2),
            None => super::contract::chain("t", None, 2),
        };
        store
            .append(
                more.into_iter()
                    .map(AppendItem::receipt)
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        // A clone held elsewhere (a governor, a spawned read) keeps the store open.
        let clone = store.clone();
        drop(store);
        assert!(
            files("one handle left").contains(&"ledger.db-wal".to_owned()),
            "the log is there while a handle is"
        );
        drop(clone);
        assert_eq!(files("dropped"), ["ledger.db"], "round {round}");
    }
    // Closed at a stop while handles remain (a governor's, the audit's): the same, and
    // what comes after is refused as unavailable rather than opening the file again.
    let again = SqliteStore::open(&path).unwrap();
    let last = again.range("t", 0, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.seq, 6);
    let held = again.clone();
    again.close_at_stop().await;
    assert_eq!(files("closed"), ["ledger.db"]);
    let next = super::contract::chain("t", Some(&last), 1);
    for refused in [
        held.append(vec![AppendItem::receipt(next[0].clone())])
            .await
            .map(|_| ()),
        held.range("t", 0, 1).await.map(|_| ()),
        held.head("t").await.map(|_| ()),
    ] {
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("closed")),
            "{refused:?}"
        );
    }
    assert_eq!(files("refused"), ["ledger.db"]);
    drop(held);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.head("t").await.unwrap().map(|h| h.seq), Some(6));
}

/// The ledger's folder deleted just before a stop closes the store (within the checkpoint
/// thread's pause, before it looked): the copy of every receipt is still written beside the
/// path. Before, the thread ended at the close without looking, and no copy was written.
#[actix_web::test]
async fn a_ledger_deleted_just_before_the_store_is_closed_is_still_copied_out() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let store = SqliteStore::open(&folder.join("ledger.db")).unwrap();
    let chain = super::contract::chain("t", None, 3);
    store
        .append(
            chain
                .iter()
                .cloned()
                .map(AppendItem::receipt)
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    store.close_at_stop().await;
    let copies: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .expect("the folder is made again for the copy")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ledger.db.rescued-")
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = SqliteStore::open_read_only(&copies[0]).unwrap();
    assert_eq!(copy.range("t", 0, 10).await.unwrap(), chain);
}

#[actix_web::test]
async fn the_file_itself_refuses_updates_and_deletes_of_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .append(
            super::contract::chain("t", None, 1)
                .into_iter()
                .map(AppendItem::receipt)
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let upd = conn
        .execute("UPDATE receipts SET reason = 'x'", [])
        .unwrap_err()
        .to_string();
    let del = conn
        .execute("DELETE FROM receipts", [])
        .unwrap_err()
        .to_string();
    assert!(
        upd.contains("append-only") && del.contains("append-only"),
        "{upd} / {del}"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Under a steady write load the WAL starts over instead of growing by the whole write volume:
/// the writer copies back what the checkpoint thread has not yet copied once the log passes
/// its threshold (8192 frames, 32 MiB), so the next commit writes the WAL from its start.
#[actix_web::test]
async fn the_wal_stays_bounded_under_a_steady_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    // The store checks neither hashes nor ids; these rows only need to be big and unique.
    let mut template = super::contract::chain("w", None, 1).remove(0);
    template.metadata = serde_json::json!({ "padding": "x".repeat(3800) });
    const TOTAL_MB: u64 = 128;
    let per_batch = 256u64;
    let batches = TOTAL_MB * 1024 * 1024 / (4096 * per_batch);
    let mut largest_wal = 0u64;
    for b in 0..batches {
        let batch: Vec<AppendItem> = (0..per_batch)
            .map(|i| {
                let seq = b * per_batch + i + 1;
                let mut r = template.clone();
                r.seq = seq;
                r.receipt_id = format!("wal-{seq:012}");
                AppendItem::receipt(r)
            })
            .collect();
        store.append(batch).await.unwrap();
        let wal = std::fs::metadata(dir.path().join("ledger.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        largest_wal = largest_wal.max(wal);
    }
    assert!(
        largest_wal < 96 * 1024 * 1024,
        "{TOTAL_MB} MiB written; the WAL reached {} MiB instead of starting over",
        largest_wal / (1024 * 1024)
    );
    assert_eq!(
        store.head("w").await.unwrap().map(|h| h.seq),
        Some(batches * per_batch),
        "every row is there"
    );
}

/// Three chains appended in turn, a receipt of each per commit, as a service interleaves them.
async fn interleaved(store: &SqliteStore, per_chain: usize) {
    use tai_autonomics::receipts::{Receipt, ReceiptDraft, ReceiptType};
    let mut last: std::collections::HashMap<&str, Receipt> = Default::default();
    for i in 0..per_chain {
        let mut batch = Vec::new();
        for tenant in ["a", "b", "c"] {
            let d = ReceiptDraft::new(tenant, ReceiptType::Transition, "signal_processed", "r")
                .metadata(serde_json::json!({"i": i, "input": {"value": 0.1 * i as f64}}));
            let r = d.seal(
                last.get(tenant).map(|p| (p.seq, p.receipt_hash.as_str())),
                "n",
                tai_autonomics::clock::now_rfc3339(),
            );
            last.insert(tenant, r.clone());
            batch.push(AppendItem::receipt(r));
        }
        store.append(batch).await.unwrap();
    }
}

/// `verify --all` reads a SQLite ledger once, front to back: its reports are those of each
/// chain verified by itself, anchors included, while the ledger is as written. A row written
/// again out of its place breaks the order that read relies on, not the chain: that report is
/// not valid, and the chain verified by itself is (the CLI verifies such a chain again).
#[actix_web::test]
async fn every_chain_verified_in_one_read_reports_as_each_verified_alone() {
    use tai_autonomics::receipts::{verify_chain, Anchor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    interleaved(&store, 40).await;
    let b20 = store.range("b", 19, 1).await.unwrap().remove(0);
    let anchors: std::collections::HashMap<String, Anchor> =
        [("b".to_owned(), Anchor::new(20, &b20.receipt_hash).unwrap())].into();
    let alone = |t: &'static str| {
        let (store, anchor) = (&store, anchors.get(t).cloned());
        async move { verify_chain(store, t, anchor, 1000, |_| {}).await.unwrap() }
    };

    let all = store
        .verify_all(anchors.clone(), |_| {})
        .await
        .unwrap()
        .expect("every row read");
    assert_eq!(all.len(), 3);
    for t in ["a", "b", "c"] {
        let report = alone(t).await;
        assert!(report.valid, "{report:?}");
        assert_eq!(all[t], report);
    }
    assert!(all["b"].anchor.is_some());

    // b's receipt 7 deleted and inserted again as it was: last in the file now.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TRIGGER receipts_are_append_only_delete;
         CREATE TEMP TABLE keep AS SELECT * FROM receipts WHERE tenant_id = 'b' AND seq = 7;
         DELETE FROM receipts WHERE tenant_id = 'b' AND seq = 7;
         INSERT INTO receipts SELECT * FROM keep;",
    )
    .unwrap();
    // c's receipt 12 changed.
    conn.execute_batch(
        "DROP TRIGGER receipts_are_append_only_update;
         UPDATE receipts SET reason = 'changed' WHERE tenant_id = 'c' AND seq = 12;",
    )
    .unwrap();
    drop(conn);
    let all = store
        .verify_all(anchors.clone(), |_| {})
        .await
        .unwrap()
        .expect("every row read");
    assert!(all["a"].valid);
    assert_eq!(all["a"], alone("a").await);
    assert!(
        !all["b"].valid,
        "out of its place in the file: {:?}",
        all["b"]
    );
    assert!(alone("b").await.valid, "and whole as a chain");
    let c = alone("c").await;
    assert_eq!(c.first_broken.as_ref().map(|b| b.seq), Some(12));
    assert_eq!(all["c"], c);
}
