//! SQLite through `walbuf`, against the real library on disk: what one connection commits,
//! another (through the default VFS) reads; rolled-back spills, a log that starts over, and a
//! process that dies mid-transaction leave a consistent file with every commit in it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn commits_stay_whole_across_rollbacks_of_spilled_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let writer = common::writer(&path);
    // A cache of 16 pages: a large transaction spills its pages into the log before it ends.
    writer.pragma_update(None, "cache_size", 16).unwrap();
    let reader = common::reader(&path);
    common::insert(&writer, 0, 100, 500);
    writer.execute_batch("BEGIN").unwrap();
    for k in 100..2_100 {
        writer
            .execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (k, common::value(k, 2000)),
            )
            .unwrap();
    }
    assert_eq!(
        common::keys(&reader, 500).len(),
        100,
        "nothing uncommitted is seen"
    );
    writer.execute_batch("ROLLBACK").unwrap();
    common::insert(&writer, 100, 300, 500);
    assert_eq!(common::keys(&reader, 500), (0..300).collect::<Vec<_>>());
    assert_eq!(common::integrity(&writer), "ok");
    drop(writer);
    drop(reader);
    let again = common::reader(&path);
    assert_eq!(common::keys(&again, 500), (0..300).collect::<Vec<_>>());
    assert_eq!(common::integrity(&again), "ok");
}

#[test]
fn the_log_starts_over_after_another_connection_checkpoints_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let writer = common::writer(&path);
    let other = common::reader(&path);
    let wal = dir.path().join("db-wal");
    for round in 0..5 {
        common::insert(&writer, round * 100, round * 100 + 100, 300);
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        let busy: i64 = other
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0, "the checkpoint ran to the end");
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    }
    assert_eq!(common::keys(&other, 300), (0..500).collect::<Vec<_>>());
    assert_eq!(common::integrity(&other), "ok");
}

/// Run as a child by the next test: commits rows in batches of 50, says so after each commit,
/// then starts one more transaction and aborts the process in its middle.
#[test]
fn child_commits_then_dies() {
    let Ok(path) = std::env::var("WALBUF_CHILD_DB") else {
        return;
    };
    let writer = common::writer(std::path::Path::new(&path));
    writer.pragma_update(None, "cache_size", 16).unwrap();
    for batch in 0..20 {
        common::insert(&writer, batch * 50, batch * 50 + 50, 700);
        println!("committed {}", batch * 50 + 50);
    }
    writer.execute_batch("BEGIN").unwrap();
    for k in 1_000..3_000 {
        writer
            .execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (k, common::value(k, 700)),
            )
            .unwrap();
    }
    std::process::abort();
}

#[test]
fn a_process_that_dies_mid_transaction_leaves_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_commits_then_dies",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WALBUF_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut committed = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            committed = n.parse().unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child died");
    assert_eq!(committed, 1_000);
    assert!(
        std::fs::metadata(dir.path().join("db-wal")).unwrap().len() > 0,
        "the commits are still in the log, for recovery to find"
    );
    let conn = common::reader(&path);
    assert_eq!(common::keys(&conn, 700), (0..committed).collect::<Vec<_>>());
    assert_eq!(common::integrity(&conn), "ok");
}
