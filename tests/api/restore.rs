//! `tai-autonomics restore --from FILE` on the real binary and real ledger files: refused while
//! a service has the ledger open, and then nothing is changed; after a stop (or a kill) the
//! backup's chains replace the ledger's, every receipt the old ledger held is in the copy kept
//! beside it, and that copy undoes the restore; a broken, missing, foreign or resealed backup,
//! the ledger itself, or a ledger whose first page is lost changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::ledger_files::{get, post, some_receipts};
use crate::receipts::verify_cli;

/// Runs the real binary's `restore --from backup` on the ledger file `db`.
fn restore_cli(db: &Path, backup: &Path) -> Output {
    restore_cli_with(db, backup, &[])
}

/// [`restore_cli`] with more arguments.
fn restore_cli_with(db: &Path, backup: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("restore")
        .arg("--from")
        .arg(backup)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__SQLITE_PATH", db)
        .output()
        .unwrap()
}

/// Runs the real binary's `backup --to dest` on the ledger file `db`, which must succeed;
/// returns what it printed (the heads of the backup's chains).
fn backup_cli(db: &Path, dest: &Path) -> Vec<u8> {
    let out = crate::receipts::backup_cli(db, dest);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    out.stdout
}

/// The JSON lines of a command's standard output.
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every receipt of `tenant`'s chain as `bin` serves it.
async fn chain(client: &awc::Client, bin: &Binary, tenant: &str) -> Vec<Value> {
    let url = bin.url(&format!("/v1/tenants/{tenant}/receipts?limit=1000"));
    let (s, page) = get(client, &url).await;
    assert_eq!(s, 200, "{page}");
    page["receipts"].as_array().unwrap().clone()
}

/// One governed signal for `tenant`, which must be acknowledged.
async fn signal(client: &awc::Client, bin: &Binary, tenant: &str, value: f64) {
    let url = bin.url(&format!("/v1/tenants/{tenant}/signals"));
    let (s, body, _) = post(client, &url, &json!({"metric": "cpu", "value": value})).await;
    assert_eq!(s, 200, "{body}");
}

#[actix_web::test]
async fn a_backup_restored_after_a_kill_replaces_the_ledger_and_the_old_one_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let backup = backups.join("b.db");
    let client = awc::Client::default();
    let mut bin = start_binary_in(dir.path(), &[]);
    some_receipts(&client, &bin, "acme-corp").await;
    some_receipts(&client, &bin, "other").await;
    backup_cli(&db, &backup);
    let at_backup = chain(&client, &bin, "acme-corp").await;
    let other = chain(&client, &bin, "other").await;
    for i in 0..5 {
        signal(&client, &bin, "acme-corp", f64::from(i)).await;
    }
    some_receipts(&client, &bin, "after-backup").await;

    // While the service runs, the restore is refused at once and changes nothing.
    let out = restore_cli(&db, &backup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("open in another process"), "{stderr}");
    assert!(stderr.contains("stop it, then restore"), "{stderr}");
    signal(&client, &bin, "acme-corp", 10.0).await;
    let latest = chain(&client, &bin, "acme-corp").await;
    assert_eq!(latest.len(), at_backup.len() + 6);
    assert!(
        !file_names(dir.path())
            .iter()
            .any(|n| n.contains(".replaced-")),
        "{:?}",
        file_names(dir.path())
    );

    // Killed, not stopped: receipts are left in its write-ahead log.
    bin.signal("KILL");
    bin.wait_exit(Duration::from_secs(10));
    drop(bin);
    let out = restore_cli(&db, &backup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = json_lines(&out);
    let (done, reports) = lines.split_last().unwrap();
    assert_eq!(reports.len(), 2, "the backup's two chains: {lines:?}");
    assert!(reports.iter().all(|r| r["valid"] == true), "{lines:?}");
    assert_eq!(done["restored"], backup.display().to_string());
    assert_eq!(done["ledger"], db.display().to_string());
    let replaced = PathBuf::from(done["replaced"].as_str().unwrap());
    assert_eq!(replaced.parent(), Some(dir.path()));
    assert!(stderr.contains("is kept as"), "{stderr}");
    // The ledger and the old one's copy, each a whole file by itself.
    let names = file_names(dir.path());
    let replaced_name = replaced.file_name().unwrap().to_str().unwrap();
    assert_eq!(names, ["backups", "ledger.db", replaced_name], "{names:?}");
    assert!(replaced_name
        .strip_prefix("ledger.db.replaced-")
        .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())));

    // The copy holds every receipt the killed service acknowledged.
    let out = verify_cli(&replaced, &["--all"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let heads: Vec<(Value, Value)> = json_lines(&out)
        .iter()
        .map(|r| (r["tenant_id"].clone(), r["head_seq"].clone()))
        .collect();
    assert!(
        heads.contains(&(json!("acme-corp"), json!(latest.len()))),
        "{heads:?}"
    );
    assert!(heads.iter().any(|(t, _)| t == "after-backup"), "{heads:?}");

    // A service on the restored ledger has the backup's chains, and appends after them.
    let bin = start_binary_in(dir.path(), &[]);
    assert_eq!(chain(&client, &bin, "acme-corp").await, at_backup);
    assert_eq!(chain(&client, &bin, "other").await, other);
    let url = bin.url("/v1/tenants/after-backup/receipts");
    assert_eq!(
        get(&client, &url).await.0,
        404,
        "a tenant granted after the backup"
    );
    signal(&client, &bin, "acme-corp", 20.0).await;
    let now = chain(&client, &bin, "acme-corp").await;
    assert_eq!(now.len(), at_backup.len() + 1);
    assert_eq!(now[..at_backup.len()], at_backup[..]);
    let (_, report) = get(&client, &bin.url("/v1/tenants/acme-corp/receipts/verify")).await;
    assert_eq!(report["valid"], true, "{report}");
    drop(bin);

    // The restore is undone with the copy it kept, which is itself kept aside in turn.
    let out = restore_cli(&db, &replaced);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let again = PathBuf::from(
        json_lines(&out).last().unwrap()["replaced"]
            .as_str()
            .unwrap(),
    );
    assert_ne!(again, replaced);
    let bin = start_binary_in(dir.path(), &[]);
    assert_eq!(chain(&client, &bin, "acme-corp").await, latest);
    let url = bin.url("/v1/tenants/after-backup/receipts");
    assert_eq!(get(&client, &url).await.0, 200);
    let out = verify_cli(&again, &["--tenant", "acme-corp"]);
    assert_eq!(json_lines(&out)[0]["head_seq"], now.len(), "{out:?}");
}

/// A service's ledger in `dir` with acme-corp's chain, its backup `b.db` beside it, then
/// `after` more signals, and the service stopped; the ledger and backup paths, and the head
/// seq of the backup's chain.
async fn backed_up(dir: &Path, after: u32) -> (PathBuf, PathBuf, usize) {
    let db = dir.join("ledger.db");
    let client = awc::Client::default();
    let mut bin = start_binary_in(dir, &[]);
    some_receipts(&client, &bin, "acme-corp").await;
    let backup = dir.join("b.db");
    backup_cli(&db, &backup);
    let head = chain(&client, &bin, "acme-corp").await.len();
    for i in 0..after {
        signal(&client, &bin, "acme-corp", f64::from(i % 50)).await;
    }
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    (db, backup, head)
}

#[actix_web::test]
async fn a_restore_that_cannot_be_trusted_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backup, head) = backed_up(dir.path(), 1).await;
    let ledger = std::fs::read(&db).unwrap();
    let unchanged = |why: &str| {
        assert!(
            std::fs::read(&db).unwrap() == ledger,
            "{why}: the ledger changed"
        );
        let names = file_names(dir.path());
        assert!(
            !names.iter().any(|n| n.contains(".replaced-")),
            "{why}: {names:?}"
        );
    };

    // A backup with a changed receipt: its report names the seq, and the ledger stays.
    let tampered = dir.path().join("tampered.db");
    std::fs::copy(&backup, &tampered).unwrap();
    let conn = rusqlite::Connection::open(&tampered).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    conn.execute(
        "UPDATE receipts SET reason = 'edited' WHERE tenant_id = 'acme-corp' AND seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let out = restore_cli(&db, &tampered);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BROKEN at seq 2"), "{stderr}");
    assert!(stderr.contains("the ledger was not changed"), "{stderr}");
    unchanged("a tampered backup");

    // Any other process that has the ledger open (here a reader, as `verify` is one) holds the
    // restore off, not only a service.
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    reader
        .query_row("SELECT count(*) FROM receipts", [], |_| Ok(()))
        .unwrap();
    let out = restore_cli(&db, &backup);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    drop(reader);
    unchanged("a reader");

    // No such backup; a file that is no ledger; the ledger itself.
    let out = restore_cli(&db, &dir.path().join("no-such.db"));
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    unchanged("a missing backup");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a ledger\n".repeat(400)).unwrap();
    let out = restore_cli(&db, &text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("is not a ledger this build reads"),
        "{stderr}"
    );
    unchanged("a text file");
    let out = restore_cli(&db, &db);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("is the ledger itself"), "{stderr}");
    unchanged("the ledger itself");

    // A ledger whose first page is lost is no database SQLite can lock: it is left for the
    // operator to move away, and then the restore makes the ledger anew.
    let mut lost = ledger.clone();
    lost[..4096].fill(0);
    std::fs::write(&db, &lost).unwrap();
    let out = restore_cli(&db, &backup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("move it away"), "{stderr}");
    assert!(std::fs::read(&db).unwrap() == lost);
    std::fs::rename(&db, dir.path().join("lost.db")).unwrap();
    let out = restore_cli(&db, &backup);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out).last().unwrap()["replaced"], Value::Null);
    let out = verify_cli(&db, &["--tenant", "acme-corp"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out)[0]["head_seq"], head, "{out:?}");

    // A Firestore ledger has Firestore's own import; nothing is read or written.
    let out = cli_on_firestore(&["restore".as_ref(), "--from".as_ref(), backup.as_os_str()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gcloud firestore import"));
}

#[actix_web::test]
async fn a_ledger_with_a_damaged_page_is_restored_and_kept_as_it_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backup, head) = backed_up(dir.path(), 40).await;
    // The last page of the file lost, as a failing disk loses one.
    let mut damaged = std::fs::read(&db).unwrap();
    let len = damaged.len();
    assert!(len > 3 * 4096);
    damaged[len - 4096..].fill(0xA5);
    std::fs::write(&db, &damaged).unwrap();

    let out = restore_cli(&db, &backup);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let replaced = PathBuf::from(
        json_lines(&out).last().unwrap()["replaced"]
            .as_str()
            .unwrap(),
    );
    assert!(
        std::fs::read(&replaced).unwrap() == damaged,
        "kept byte for byte"
    );
    let out = verify_cli(&db, &["--all"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out)[0]["head_seq"], head, "{out:?}");
}

#[actix_web::test]
async fn a_backup_sealed_again_since_it_was_taken_is_refused_against_the_heads_kept_then() {
    let client = awc::Client::default();
    // The real history, its backup, and the heads `backup` printed, kept apart from it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let mut bin = start_binary_in(dir.path(), &[]);
    some_receipts(&client, &bin, "acme-corp").await;
    some_receipts(&client, &bin, "other").await;
    let backup = dir.path().join("b.db");
    let heads = dir.path().join("b.heads.jsonl");
    std::fs::write(&heads, backup_cli(&db, &backup)).unwrap();
    signal(&client, &bin, "acme-corp", 40.0).await;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    drop(bin);
    let ledger = std::fs::read(&db).unwrap();

    // Another history of the same tenants, as long, each chain valid by itself: what a backup
    // rewritten and sealed again looks like.
    let elsewhere = tempfile::tempdir().unwrap();
    let forged = elsewhere.path().join("forged.db");
    {
        let bin = start_binary_in(elsewhere.path(), &[]);
        some_receipts(&client, &bin, "acme-corp").await;
        some_receipts(&client, &bin, "other").await;
        backup_cli(&elsewhere.path().join("ledger.db"), &forged);
    }
    let heads_arg = heads.to_str().unwrap();
    let out = restore_cli_with(&db, &forged, &["--anchors", heads_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("acme-corp is BROKEN at seq"), "{stderr}");
    assert!(stderr.contains("the ledger was not changed"), "{stderr}");
    assert!(std::fs::read(&db).unwrap() == ledger);
    assert!(!file_names(dir.path())
        .iter()
        .any(|n| n.contains(".replaced-")));

    // A file of heads that is not there changes nothing either.
    let missing = dir.path().join("none.jsonl");
    let out = restore_cli_with(&db, &backup, &["--anchors", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(std::fs::read(&db).unwrap() == ledger);

    // The real backup holds the heads kept when it was taken.
    let out = restore_cli_with(&db, &backup, &["--anchors", heads_arg]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out);
    assert!(lines[..2].iter().all(|r| r["valid"] == true), "{lines:?}");
}
