//! The contract on SQLite, plus what only SQLite promises: migrations and append-only triggers.

use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::{AppendItem, LedgerStore};

#[actix_web::test]
async fn sqlite_passes_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/ledger.db")).unwrap();
    super::contract::run(&store, "c-").await;
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
    assert_eq!(store.schema_version().unwrap(), 1);
    drop(store);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), 1);
    assert_eq!(again.range("t", 0, 10).await.unwrap(), c);
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
