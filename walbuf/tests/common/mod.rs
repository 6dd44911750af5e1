//! Connections for the tests: a writer through `walbuf` (WAL, `synchronous=FULL`) and readers
//! through SQLite's default VFS, on one file.

#![allow(dead_code)]

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

pub fn writer(path: &Path) -> Connection {
    let vfs = walbuf::register().expect("register");
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        .unwrap();
    conn
}

pub fn reader(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn
}

/// Inserts rows `from..to`, each `size` bytes of a pattern its key decides, in one transaction.
pub fn insert(conn: &Connection, from: i64, to: i64, size: usize) {
    conn.execute_batch("BEGIN").unwrap();
    for k in from..to {
        conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (k, value(k, size)))
            .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

pub fn value(k: i64, size: usize) -> Vec<u8> {
    (0..size).map(|i| (k as usize * 31 + i) as u8).collect()
}

/// Every row's key, in order, after checking each value against its key.
pub fn keys(conn: &Connection, size: usize) -> Vec<i64> {
    let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    rows.map(|row| {
        let (k, v) = row.unwrap();
        assert_eq!(v, value(k, size), "row {k} reads back as written");
        k
    })
    .collect()
}

pub fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}
