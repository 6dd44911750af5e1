//! The ledger's files under the real binary, failing as files on a real machine fail.
//!
//! - A full disk: the files are held to a size limit (`RLIMIT_FSIZE`, with `SIGXFSZ`
//!   ignored, so a write past it fails as a write to a full disk does), and SQLite's own write
//!   errors reach the writer, not a chaos hook. Inputs are refused with 503, nothing
//!   acknowledged is lost, nothing refused is stored, and appends go on when the space comes
//!   back.
//! - Files deleted or replaced while the service has them open: appends stop (503), health
//!   says so, and a copy of every acknowledged receipt is written beside the path.
//! - A damaged page: the ledger audit reports the chain it holds broken before anyone reads
//!   it, at the first receipt that cannot be read; reads of it are 500 `ledger_corrupt`, and
//!   every other chain goes on.
//! - A receipt changed in the file while the service runs: the ledger audit reports it, and
//!   reports the chain whole again once the field is put back.
//! - A chain cut short, or deleted whole, while the service runs: what is left verifies by
//!   itself, and the audit reports both against the heads it found before.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const TENANTS: usize = 4;
const CALLERS_PER_TENANT: usize = 2;

pub(crate) async fn post(client: &awc::Client, url: &str, body: &Value) -> (u16, Value, bool) {
    let mut res = client.post(url).send_json(body).await.expect("answered");
    let bytes = res.body().await.expect("a body");
    let retry_after = res.headers().contains_key("retry-after");
    let body = serde_json::from_slice(&bytes).expect("a JSON body");
    (res.status().as_u16(), body, retry_after)
}

pub(crate) async fn get(client: &awc::Client, url: &str) -> (u16, Value) {
    let mut res = client.get(url).send().await.expect("answered");
    let body = res.json().limit(16 << 20).await.expect("a JSON body");
    (res.status().as_u16(), body)
}

/// The ids of every receipt an acknowledged answer reports.
fn ids(body: &Value) -> Vec<String> {
    let list = match body.get("receipts") {
        Some(list) => list.as_array().expect("receipts is a list").clone(),
        None => vec![body["receipt"].clone()],
    };
    list.iter()
        .map(|r| r["receipt_id"].as_str().expect("a receipt id").to_owned())
        .collect()
}

/// A 503 of a failing ledger: the stable code, a message saying why, and `Retry-After`.
fn assert_ledger_refusal(status: u16, body: &Value, retry_after: bool) {
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("ledger"),
        "{body}"
    );
    assert!(retry_after, "a 503 carries Retry-After");
}

/// Every receipt id in `tenant`'s chain, in chain order.
async fn stored(client: &awc::Client, bin: &Binary, tenant: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let url = bin.url(&format!(
            "/v1/tenants/{tenant}/receipts?after_seq={after}&limit=1000"
        ));
        let (s, page) = get(client, &url).await;
        assert_eq!(s, 200, "{page}");
        for r in page["receipts"].as_array().unwrap() {
            out.push(r["receipt_id"].as_str().unwrap().to_owned());
        }
        match page["next_after_seq"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

#[actix_web::test]
async fn a_full_disk_refuses_inputs_with_503_loses_nothing_and_appends_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TAI_RATE_LIMIT__PER_SECOND", "1000000"),
        ("TAI_RATE_LIMIT__BURST", "1000000"),
    ];
    // A soft limit of 512 KiB on every file the process writes; the hard limit stays, so the
    // soft one can be lifted from outside later, as space freed on a disk.
    let bin = start_binary_after(dir.path(), &env, "trap '' XFSZ; ulimit -S -f 512");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for t in 0..TENANTS {
        let (s, body, _) = post(
            &client,
            &bin.url("/marketplace"),
            &json!({"tenant_id": format!("full-{t}"), "entitlement_id": "e", "action": "grant"}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        acked.lock().unwrap().extend(ids(&body));
    }

    // Signals from several callers per tenant until each of them is refused twice in a row,
    // a checkpoint pass apart. The log file often reaches the limit first; a checkpoint then
    // copies it into the database file and the log starts over, so inputs are taken again
    // until the database file is full too.
    let mut callers = Vec::new();
    for c in 0..TENANTS * CALLERS_PER_TENANT {
        let (acked, client) = (acked.clone(), client.clone());
        let url = bin.url(&format!("/v1/tenants/full-{}/signals", c % TENANTS));
        callers.push(actix_web::rt::spawn(async move {
            let mut refused = false;
            for _ in 0..100_000 {
                let (s, body, retry_after) =
                    post(&client, &url, &json!({"metric": "cpu", "value": 10.0})).await;
                if s == 200 {
                    acked.lock().unwrap().extend(ids(&body));
                    refused = false;
                    continue;
                }
                assert_ledger_refusal(s, &body, retry_after);
                if refused {
                    return;
                }
                refused = true;
                actix_web::rt::time::sleep(Duration::from_millis(250)).await;
            }
            panic!("the ledger's files never reached their limit");
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }

    // Stop the line: a refused input moves nothing, and health says why. A checkpoint may
    // still free some log space now and then, so an input that is taken counts as taken.
    // Every value here keeps the governors stable: an action would append receipts of its
    // own, which no answer acknowledges.
    let governor = bin.url("/v1/governors/full-0");
    let signals = bin.url("/v1/tenants/full-0/signals");
    eventually(
        "an input refused while the ledger is full",
        Duration::from_secs(30),
        || {
            let (client, acked, governor, signals, bin) =
                (client.clone(), acked.clone(), &governor, &signals, &bin);
            async move {
                let (_, before) = get(&client, governor).await;
                let (s, body, retry_after) =
                    post(&client, signals, &json!({"metric": "cpu", "value": 10.0})).await;
                if s == 200 {
                    acked.lock().unwrap().extend(ids(&body));
                    return None;
                }
                assert_ledger_refusal(s, &body, retry_after);
                let (_, after) = get(&client, governor).await;
                assert_eq!(
                    (&after["state"], &after["seq"], &after["head_hash"]),
                    (&before["state"], &before["seq"], &before["head_hash"]),
                    "a refused input does not advance the governor"
                );
                let (s, ready) = get(&client, &bin.url("/health/ready")).await;
                assert_eq!(
                    (s, &ready["checks"]["ledger"]),
                    (503, &json!("error")),
                    "{ready}"
                );
                let (s, _) = get(&client, &bin.url("/health/live")).await;
                assert_eq!(s, 200, "a full disk is no reason to restart the instance");
                Some(())
            }
        },
    )
    .await;

    // Space comes back: the same process takes inputs again, with nothing to restart.
    let lifted = Command::new("prlimit")
        .args(["--pid", &bin.child.id().to_string(), "--fsize=unlimited:"])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(lifted.success(), "the soft limit is lifted");
    let (s, body, _) = post(&client, &signals, &json!({"metric": "cpu", "value": 10.0})).await;
    assert_eq!(
        s, 200,
        "the next input after space returns is taken: {body}"
    );
    acked.lock().unwrap().extend(ids(&body));
    let (s, ready) = get(&client, &bin.url("/health/ready")).await;
    assert_eq!(
        s, 200,
        "one durable append clears the ledger check: {ready}"
    );

    // Every acknowledged receipt is stored once, and nothing else is: no refused input left
    // a receipt behind.
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let mut heads = Vec::new();
    let mut all = HashSet::new();
    for t in 0..TENANTS {
        let tenant = format!("full-{t}");
        for id in stored(&client, &bin, &tenant).await {
            assert!(all.insert(id), "no receipt is stored twice");
        }
        let (_, report) = get(
            &client,
            &bin.url(&format!("/v1/tenants/{tenant}/receipts/verify")),
        )
        .await;
        assert_eq!(report["valid"], true, "{report}");
        heads.push(report);
    }
    let lost: Vec<_> = acked.difference(&all).collect();
    assert!(lost.is_empty(), "acknowledged receipts lost: {lost:?}");
    let extra: Vec<_> = all.difference(&acked).collect();
    assert!(
        extra.is_empty(),
        "receipts of refused inputs stored: {extra:?}"
    );
    assert!(
        acked.len() >= TENANTS + 20,
        "the limit was reached in the middle of the stream, not at once: {} receipts",
        acked.len()
    );

    // A restart on the same file finds the same chains, whole.
    let mut bin = bin;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(20)), Some(0));
    let bin = start_binary_in(dir.path(), &env);
    for (t, before) in heads.iter().enumerate() {
        let (_, report) = get(
            &client,
            &bin.url(&format!("/v1/tenants/full-{t}/receipts/verify")),
        )
        .await;
        assert_eq!(report["valid"], true, "{report}");
        assert_eq!(
            (&report["head_seq"], &report["head_hash"]),
            (&before["head_seq"], &before["head_hash"]),
            "after the restart: {report}"
        );
    }
}

/// The copies of the ledger written beside `path` after its files were displaced.
fn rescued(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name.strip_prefix("ledger.db.rescued-"))
                .is_some_and(|ms| ms.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// A granted tenant with a few signals; returns every acknowledged receipt id and the head.
pub(crate) async fn some_receipts(
    client: &awc::Client,
    bin: &Binary,
    tenant: &str,
) -> (Vec<String>, Value) {
    let mut acked = Vec::new();
    let (s, body, _) = post(
        client,
        &bin.url("/marketplace"),
        &json!({"tenant_id": tenant, "entitlement_id": "e", "action": "grant"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    acked.extend(ids(&body));
    for value in [10.0, 65.0, 20.0] {
        let url = bin.url(&format!("/v1/tenants/{tenant}/signals"));
        let (s, body, _) = post(client, &url, &json!({"metric": "cpu", "value": value})).await;
        assert_eq!(s, 200, "{body}");
        acked.extend(ids(&body));
    }
    let url = bin.url(&format!("/v1/tenants/{tenant}/receipts/verify"));
    let (_, head) = get(client, &url).await;
    (acked, head)
}

/// What a service whose ledger files were displaced answers: 503 for an input, and health
/// that says why, while reads of the chain it has go on.
async fn refuses_appends(client: &awc::Client, bin: &Binary, tenant: &str) {
    let url = bin.url(&format!("/v1/tenants/{tenant}/signals"));
    let (s, body, retry_after) = post(client, &url, &json!({"metric": "cpu", "value": 10.0})).await;
    assert_ledger_refusal(s, &body, retry_after);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("deleted or replaced"),
        "{body}"
    );
    let (s, ready) = get(client, &bin.url("/health/ready")).await;
    assert_eq!(
        (s, &ready["checks"]["ledger"]),
        (503, &json!("error")),
        "{ready}"
    );
}

/// The first ERROR line `bin` logged with a message starting `start` (waited for: the lines
/// are read on a thread of their own).
async fn error_line(bin: &Binary, start: &str) -> Value {
    eventually(start, Duration::from_secs(10), || {
        let found = (bin.warnings.lock().unwrap().iter())
            .find(|l| l["severity"] == "ERROR" && l["message"].as_str().unwrap().starts_with(start))
            .cloned();
        async move { found }
    })
    .await
}

/// The rescued copy opened as a ledger by a new process: every acknowledged receipt, the head
/// the first process reported.
async fn the_copy_holds(
    client: &awc::Client,
    copy: &std::path::Path,
    tenant: &str,
    acked: &[String],
    head: &Value,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = copy.to_str().unwrap();
    let bin = start_binary_in(dir.path(), &[("TAI_LEDGER__SQLITE_PATH", path)]);
    let url = bin.url(&format!("/v1/tenants/{tenant}/receipts/verify"));
    let (_, report) = get(client, &url).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        (&report["head_seq"], &report["head_hash"]),
        (&head["head_seq"], &head["head_hash"]),
        "{report}"
    );
    assert_eq!(
        stored(client, &bin, tenant).await,
        acked,
        "every acknowledged receipt, in order"
    );
}

/// The service on a ledger in `folder` with some receipts; then `displace` is done to its
/// files. The service finds out by itself, idle: its log says which file and `what` happened
/// to it, and names the copy it wrote beside the path; inputs are then refused; and a new
/// process on the copy finds every acknowledged receipt, in order, and the same head.
async fn displaced(folder: &std::path::Path, displace: impl FnOnce(), what: &str) {
    let bin = start_binary_in(folder, &[]);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let (acked, head) = some_receipts(&client, &bin, "shifted").await;
    displace();
    let copy = eventually("a copy of the ledger", Duration::from_secs(10), || {
        let found = rescued(folder);
        async move { found.into_iter().next() }
    })
    .await;
    let detail = &error_line(&bin, "the ledger's files were deleted or replaced").await["detail"];
    assert!(detail.as_str().unwrap().ends_with(what), "{detail}");
    let told = &error_line(&bin, "the ledger as this process had it").await;
    assert_eq!(told["copy"], copy.to_str().unwrap(), "{told}");
    refuses_appends(&client, &bin, "shifted").await;
    drop(bin);
    the_copy_holds(&client, &copy, "shifted", &acked, &head).await;
}

/// The folder goes, as a cleaner or a mistaken `rm -rf data/` takes it.
#[actix_web::test]
async fn a_ledger_folder_deleted_under_the_service_stops_appends_and_its_receipts_are_copied_out() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let gone = folder.clone();
    displaced(
        &folder,
        move || std::fs::remove_dir_all(&gone).unwrap(),
        "ledger.db was deleted",
    )
    .await;
    assert!(
        !folder.join("ledger.db").exists(),
        "no new, empty ledger was made at the path"
    );
}

/// The folder deleted under a service, and a new service started on the same path (a process
/// manager's fresh instance): the first one's clean stop, which now closes its store, leaves
/// the new ledger's files alone. SQLite removes a ledger's log and index by their names when
/// its last connection closes, and those names are the new service's files by then; it does
/// so only for a database file still where it was opened (`databaseIsUnmoved` in its pager),
/// which this test holds to.
#[actix_web::test]
async fn a_service_stopped_after_its_folder_was_deleted_leaves_the_new_ledger_at_the_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut old = start_binary_in(&folder, &[]);
    some_receipts(&client, &old, "before").await;
    std::fs::remove_dir_all(&folder).unwrap();
    eventually("a copy of the ledger", Duration::from_secs(10), || {
        let found = rescued(&folder);
        async move { found.into_iter().next() }
    })
    .await;
    let mut new = start_binary_in(&folder, &[]);
    some_receipts(&client, &new, "after").await;
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    for name in ["ledger.db-wal", "ledger.db-shm"] {
        assert!(folder.join(name).is_file(), "{name} is gone");
    }
    let (acked, head) = some_receipts(&client, &new, "later").await;
    new.signal("TERM");
    assert_eq!(new.wait_exit(Duration::from_secs(10)), Some(0));
    let db = folder.join("ledger.db");
    let out = crate::receipts::verify_cli(&db, &["--tenant", "later"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["receipts_checked"], acked.len(), "{report}");
    assert_eq!(report["head_hash"], head["head_hash"], "{report}");
}

/// A restore done while the service runs: another database is moved over the path.
#[actix_web::test]
async fn a_ledger_file_replaced_under_the_service_stops_appends_and_its_receipts_are_copied_out() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_owned();
    let restore = move || {
        let other = folder.join("other.db");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        std::fs::rename(&other, folder.join("ledger.db")).unwrap();
    };
    displaced(dir.path(), restore, "ledger.db was replaced").await;
}

/// The log's shared-memory index deleted under the service (a clean-up of "temporary" files):
/// another process opening the file would make a new index whose locks no longer meet this
/// service's, so appends stop here too, and the receipts are copied out.
#[actix_web::test]
async fn a_ledger_index_deleted_under_the_service_stops_appends_and_its_receipts_are_copied_out() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("ledger.db-shm");
    displaced(
        dir.path(),
        move || std::fs::remove_file(&shm).unwrap(),
        "ledger.db-shm was deleted",
    )
    .await;
}

/// The seq of the first receipt of `tenant` that SQLite cannot read back from `db`, asked of
/// SQLite itself, one receipt at a time (the ground truth a report must name).
fn first_unreadable(db: &std::path::Path, tenant: &str, upto: i64) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    (1..=upto).find(|seq| {
        conn.query_row(
            "SELECT receipt_hash, reason, metadata FROM receipts WHERE tenant_id = ?1 AND seq = ?2",
            rusqlite::params![tenant, seq],
            |r| r.get::<_, String>(0),
        )
        .is_err()
    })
}

#[actix_web::test]
async fn a_damaged_page_in_the_ledger_file_is_reported_at_its_seq_and_other_chains_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let client = awc::Client::default();
    let mut bin = start_binary_in(dir.path(), &[]);
    let (_, _) = some_receipts(&client, &bin, "acme-corp").await;
    let url = bin.url("/v1/tenants/acme-corp/signals");
    for i in 0..40 {
        let value = f64::from(i % 50);
        let (s, body, _) = post(&client, &url, &json!({"metric": "cpu", "value": value})).await;
        assert_eq!(s, 200, "{body}");
    }
    let (_, _) = some_receipts(&client, &bin, "other").await;
    let (_, page) = get(
        &client,
        &bin.url("/v1/tenants/acme-corp/receipts?limit=1000"),
    )
    .await;
    let chain = page["receipts"].as_array().unwrap().clone();
    let hash = chain[19]["receipt_hash"].as_str().unwrap().to_owned();
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    drop(bin);

    // One page of the table, the one that holds receipt 20's hash, is lost (zeroed, as a
    // torn or lost write leaves it); everything is in the main file once the log is merged.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&db).unwrap();
    let at = (bytes.windows(64))
        .position(|w| w == hash.as_bytes())
        .expect("the hash is in the file");
    let page_start = at - at % 4096;
    assert!(page_start > 0, "not the file's first page");
    bytes[page_start..page_start + 4096].fill(0);
    std::fs::write(&db, &bytes).unwrap();
    let broken = first_unreadable(&db, "acme-corp", chain.len() as i64).expect("a lost row");
    assert!((2..=21).contains(&broken), "receipt {broken}");

    // The audit finds the damage before any request reads the chain, and names the seq.
    let bin = start_binary_in(dir.path(), &[("TAI_LEDGER__AUDIT_INTERVAL_SECS", "1")]);
    let found = error_line(&bin, "the ledger audit found a broken chain").await;
    assert_eq!(
        (&found["tenant"], &found["seq"]),
        (&json!("acme-corp"), &json!(broken)),
        "{found}"
    );
    assert_eq!(
        metric(&bin.metrics().await, "tai_ledger_chains_broken"),
        Some(1.0)
    );
    let (s, report) = get(&client, &bin.url("/v1/tenants/acme-corp/receipts/verify")).await;
    assert_eq!((s, &report["valid"]), (200, &json!(false)), "{report}");
    assert_eq!(report["first_broken"]["seq"], broken, "{report}");
    assert_eq!(report["receipts_checked"], broken - 1, "{report}");
    let reason = report["first_broken"]["reason"].as_str().unwrap();
    assert!(reason.contains("damaged"), "{reason}");
    // Reading it is 500 `ledger_corrupt` (it was 503 `unavailable` with `Retry-After: 1`,
    // forever), and the ERROR line says what to do.
    let after = broken - 1;
    let url = bin.url(&format!("/v1/tenants/acme-corp/receipts?after_seq={after}"));
    let (s, body) = get(&client, &url).await;
    assert_eq!(
        (s, &body["code"]),
        (500, &json!("ledger_corrupt")),
        "{body}"
    );
    let line = error_line(&bin, "stored ledger data cannot be read").await;
    assert!(
        line["error"].as_str().unwrap().contains("damaged"),
        "{line}"
    );

    // The other chain verifies, and its governor decides.
    let (_, other) = get(&client, &bin.url("/v1/tenants/other/receipts/verify")).await;
    assert_eq!(other["valid"], true, "{other}");
    let url = bin.url("/v1/tenants/other/signals");
    let (s, body, _) = post(&client, &url, &json!({"metric": "cpu", "value": 10.0})).await;
    assert_eq!(s, 200, "{body}");

    // The offline check, beside the running service, names the same seq and goes on to the
    // other chain (it stopped at the damage with exit 69).
    let out = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .args(["verify", "--all"])
        .env("TAI_LEDGER__SQLITE_PATH", &db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("acme-corp is BROKEN at seq {broken}")),
        "{stderr}"
    );
    assert!(stderr.contains("verified 2 chain(s): 1 broken"), "{stderr}");

    // A backup of the damaged file is refused, saying so, and writes nothing.
    let copy = dir.path().join("copy.db");
    let out = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .args(["backup", "--to", copy.to_str().unwrap()])
        .env("TAI_LEDGER__SQLITE_PATH", &db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(!copy.exists());
}

/// `tenant`'s stored `reason` at `seq` set to `to` by another process, past the append-only
/// trigger, as someone with access to the file would; the text it had is returned.
fn change_reason(db: &std::path::Path, tenant: &str, seq: i64, to: &str) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch("DROP TRIGGER IF EXISTS receipts_are_append_only_update")
        .unwrap();
    let was: String = conn
        .query_row(
            "SELECT reason FROM receipts WHERE tenant_id = ?1 AND seq = ?2",
            rusqlite::params![tenant, seq],
            |r| r.get(0),
        )
        .unwrap();
    let changed = conn
        .execute(
            "UPDATE receipts SET reason = ?3 WHERE tenant_id = ?1 AND seq = ?2",
            rusqlite::params![tenant, seq, to],
        )
        .unwrap();
    assert_eq!(changed, 1);
    was
}

/// The value of `series` in `bin`'s metrics once `ok` holds for it.
async fn metric_once(bin: &Binary, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    eventually(series, Duration::from_secs(20), || async {
        metric(&bin.metrics().await, series).filter(|v| ok(*v))
    })
    .await
}

/// The real binary auditing every second on a ledger in `dir`, and the receipts it
/// acknowledged for `acme-corp` and `other`.
async fn audited_with_two_chains(
    dir: &std::path::Path,
    client: &awc::Client,
) -> (Binary, Vec<String>, Vec<String>) {
    let bin = start_binary_in(dir, &[("TAI_LEDGER__AUDIT_INTERVAL_SECS", "1")]);
    let (acme, _) = some_receipts(client, &bin, "acme-corp").await;
    let (other, _) = some_receipts(client, &bin, "other").await;
    (bin, acme, other)
}

#[actix_web::test]
async fn a_receipt_changed_in_the_running_ledger_is_found_by_the_audit_and_its_restoration_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let client = awc::Client::default();
    let (bin, acme, other) = audited_with_two_chains(dir.path(), &client).await;
    let stored = (acme.len() + other.len()) as f64;
    // A pass over both chains: every receipt verified again, none broken.
    metric_once(&bin, "tai_ledger_audit_receipts_total", |n| n >= stored).await;
    metric_once(
        &bin,
        r#"tai_ledger_audit_passes_total{result="complete"}"#,
        |n| n >= 1.0,
    )
    .await;
    assert_eq!(
        metric(&bin.metrics().await, "tai_ledger_chains_broken"),
        Some(0.0)
    );
    let verified = |route: &str| {
        format!(r#"tai_http_requests_total{{method="GET",route="{route}",status="200"}}"#)
    };
    let asked = metric(
        &bin.metrics().await,
        &verified("/v1/tenants/{tenant}/receipts/verify"),
    );

    let was = change_reason(&db, "acme-corp", 3, "value 11 < warning threshold 60");
    assert_ne!(was, "value 11 < warning threshold 60");
    let found = error_line(&bin, "the ledger audit found a broken chain").await;
    assert_eq!(
        (&found["tenant"], &found["seq"]),
        (&json!("acme-corp"), &json!(3)),
        "{found}"
    );
    assert!(
        found["reason"].as_str().unwrap().contains("receipt_hash"),
        "{found}"
    );
    assert_eq!(
        metric(&bin.metrics().await, "tai_ledger_chains_broken"),
        Some(1.0)
    );
    // Operators see it listed, with when it was found.
    let (s, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    assert_eq!((s, &audit["broken_total"]), (200, &json!(1)), "{audit}");
    let listed = &audit["broken"][0];
    assert_eq!(
        (&listed["tenant_id"], &listed["seq"]),
        (&json!("acme-corp"), &json!(3)),
        "{audit}"
    );
    assert_eq!(listed["reason"], found["reason"], "{audit}");
    assert!(
        listed["found_at"].as_str().unwrap().ends_with('Z'),
        "{audit}"
    );
    assert_eq!(audit["interval_secs"], 1, "{audit}");
    // Nobody asked: the audit read the chain by itself.
    assert_eq!(
        metric(
            &bin.metrics().await,
            &verified("/v1/tenants/{tenant}/receipts/verify")
        ),
        asked
    );

    // Put back, the chain verifies again and the gauge (which the alert policy reads) clears;
    // the break was reported once, not at every pass.
    change_reason(&db, "acme-corp", 3, &was);
    metric_once(&bin, "tai_ledger_chains_broken", |n| n == 0.0).await;
    let reports = (bin.warnings.lock().unwrap().iter())
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("the ledger audit found")
        })
        .count();
    assert_eq!(reports, 1);
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    assert_eq!(
        (&audit["broken_total"], &audit["broken"]),
        (&json!(0), &json!([])),
        "{audit}"
    );
    // The gauge clears as the chain is found whole, within a pass; the pass's figures come
    // when it ends.
    let audit = eventually("a pass with no break", Duration::from_secs(20), || async {
        let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
        (audit["last_pass"]["broken"] == json!(0)).then_some(audit)
    })
    .await;
    assert_eq!(audit["last_pass"]["chains"], 2, "{audit}");
    let (_, report) = get(&client, &bin.url("/v1/tenants/acme-corp/receipts/verify")).await;
    assert_eq!(report["valid"], true, "{report}");
}

#[actix_web::test]
async fn a_chain_cut_short_or_deleted_in_the_running_ledger_is_found_by_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let client = awc::Client::default();
    let (bin, acme, other) = audited_with_two_chains(dir.path(), &client).await;
    let stored = (acme.len() + other.len()) as u64;
    // A pass that found both chains whole up to their heads.
    eventually(
        "a pass over every receipt",
        Duration::from_secs(20),
        || async {
            let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
            let last = &audit["last_pass"];
            let all = last["receipts"].as_u64().is_some_and(|n| n >= stored);
            (all && last["broken"] == json!(0)).then_some(audit)
        },
    )
    .await;
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    assert_eq!(audit["anchored_chains"], 2, "{audit}");

    // The last two receipts of `other` deleted, and `acme-corp`'s chain whole: what is left of
    // each verifies by itself.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let kept = other.len() as i64 - 2;
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_delete")
        .unwrap();
    conn.execute(
        "DELETE FROM receipts WHERE tenant_id = 'other' AND seq > ?1",
        [kept],
    )
    .unwrap();
    conn.execute("DELETE FROM receipts WHERE tenant_id = 'acme-corp'", [])
        .unwrap();
    let (_, alone) = get(&client, &bin.url("/v1/tenants/other/receipts/verify")).await;
    assert_eq!(
        (&alone["valid"], &alone["head_seq"]),
        (&json!(true), &json!(kept)),
        "{alone}"
    );

    // The audit checks each against the head it found before.
    metric_once(&bin, "tai_ledger_chains_broken", |n| n == 2.0).await;
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    let listed: Vec<(&Value, &Value)> = (audit["broken"].as_array().unwrap().iter())
        .map(|b| (&b["tenant_id"], &b["seq"]))
        .collect();
    assert_eq!(
        listed,
        [
            (&json!("acme-corp"), &json!(1)),
            (&json!("other"), &json!(kept + 1))
        ],
        "{audit}"
    );
    for b in audit["broken"].as_array().unwrap() {
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains("before the anchor's seq"), "{audit}");
    }
    let found = error_line(&bin, "the ledger audit found a broken chain").await;
    assert!(
        ["acme-corp", "other"].contains(&found["tenant"].as_str().unwrap()),
        "{found}"
    );
    // A deleted chain is not taken for one that was never there: it stays listed.
    let passes = r#"tai_ledger_audit_passes_total{result="complete"}"#;
    let now = metric_once(&bin, passes, |n| n >= 1.0).await;
    metric_once(&bin, passes, |n| n >= now + 2.0).await;
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    assert_eq!(audit["broken_total"], 2, "{audit}");
}

#[actix_web::test]
async fn the_audit_checks_every_chain_against_the_anchors_it_is_given_from_its_first_pass() {
    let dir = tempfile::tempdir().unwrap();
    let client = awc::Client::default();
    // The service's first life: two chains, and the report of each as verify gave it.
    let off = [("TAI_LEDGER__AUDIT_INTERVAL_SECS", "0")];
    let (acme, other) = {
        let bin = start_binary_in(dir.path(), &off);
        let (_, acme) = some_receipts(&client, &bin, "acme-corp").await;
        let (_, other) = some_receipts(&client, &bin, "other").await;
        (acme, other)
    };
    // Kept elsewhere: acme-corp's report as it stands; for `other`, a hash its chain never
    // had (as if its chain had been sealed again since); and a tenant whose chain is gone.
    let seq = other["head_seq"].as_u64().unwrap();
    let anchors = format!(
        "{acme}\nother:{seq}:{}\nghost:2:{}\n",
        "0".repeat(64),
        acme["head_hash"].as_str().unwrap()
    );
    let file = dir.path().join("heads.jsonl");
    std::fs::write(&file, anchors).unwrap();
    let file = file.to_str().unwrap();

    let bin = start_binary_in(
        dir.path(),
        &[
            ("TAI_LEDGER__AUDIT_INTERVAL_SECS", "1"),
            ("TAI_LEDGER__AUDIT_ANCHORS_FILE", file),
        ],
    );
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    assert_eq!(audit["anchored_chains"], 3, "{audit}");
    metric_once(&bin, "tai_ledger_chains_broken", |n| n == 2.0).await;
    let (_, audit) = get(&client, &bin.url("/v1/ledger/audit")).await;
    let broken = audit["broken"].as_array().unwrap();
    let listed: Vec<(&Value, &Value)> = (broken.iter())
        .map(|b| (&b["tenant_id"], &b["seq"]))
        .collect();
    assert_eq!(
        listed,
        [(&json!("ghost"), &json!(1)), (&json!("other"), &json!(seq))],
        "{audit}"
    );
    let reason = |i: usize| broken[i]["reason"].as_str().unwrap();
    assert!(reason(0).contains("before the anchor's seq 2"), "{audit}");
    assert!(reason(1).contains("not the anchor's"), "{audit}");
    drop(bin);

    // A file that cannot be read stops the start, naming the setting.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .current_dir(dir.path())
        .env("PORT", "0")
        .env(
            "TAI_LEDGER__AUDIT_ANCHORS_FILE",
            dir.path().join("missing.jsonl"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A binary that started serving instead would never exit by itself.
    let t0 = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(exited, Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ledger.audit_anchors_file") && err.contains("missing.jsonl"),
        "{err}"
    );
}

/// `tai-autonomics ARGS` with `env`, as a user who cannot write the folder it reads: run as
/// `nobody` (through util-linux's `setpriv`) when the tests run as root, whom no folder's mode
/// stops.
fn as_reader(args: &[&str], env: &[(&str, &std::path::Path)]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_tai-autonomics");
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .env("PORT", "0")
        .env("TAI_LOG__FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `verify` and `backup` read a WAL-mode ledger through SQLite's index, which their first read
/// makes beside the file with an empty log. They remove both again when the ledger had none
/// (a stopped service's folder holds `ledger.db` alone, and so it stays), and leave a running
/// service's as they are. Before, both were left behind by every read of a stopped ledger.
#[actix_web::test]
async fn reading_a_ledger_leaves_its_folder_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let client = awc::Client::default();
    let mut bin = start_binary_in(dir.path(), &[]);
    let (mut acked, _) = some_receipts(&client, &bin, "acme-corp").await;
    let running = file_names(dir.path());
    assert_eq!(running, ["ledger.db", "ledger.db-shm", "ledger.db-wal"]);
    let out = crate::receipts::verify_cli(&db, &["--all"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        file_names(dir.path()),
        running,
        "the service's files are its own"
    );
    acked.extend(some_receipts(&client, &bin, "other").await.0);
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(file_names(dir.path()), ["ledger.db"]);

    let out = crate::receipts::verify_cli(&db, &["--all"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let checked: usize = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let report: Value = serde_json::from_str(line).unwrap();
            report["receipts_checked"].as_u64().unwrap() as usize
        })
        .sum();
    assert_eq!(checked, acked.len());
    assert_eq!(file_names(dir.path()), ["ledger.db"], "after verify");
    let to = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .args([
            "backup",
            "--to",
            to.path().join("copy.db").to_str().unwrap(),
        ])
        .env("TAI_LEDGER__SQLITE_PATH", &db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(file_names(dir.path()), ["ledger.db"], "after backup");
    assert_eq!(file_names(to.path()), ["copy.db"]);
}

#[actix_web::test]
async fn a_stopped_ledger_is_whole_by_itself_and_is_read_from_a_folder_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let client = awc::Client::default();
    let mut bin = start_binary_in(dir.path(), &[]);
    let (acked, head) = some_receipts(&client, &bin, "acme-corp").await;
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    // A clean stop copies the write-ahead log into the file (it kept up to 32 MB of
    // receipts) and closes every connection, so SQLite removes the log and its index: the
    // file is left alone, and copied elsewhere it holds every receipt.
    let wal = dir.path().join("ledger.db-wal");
    assert_eq!(
        file_names(dir.path()),
        ["ledger.db"],
        "{:?}",
        bin.warnings.lock().unwrap()
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let alone = elsewhere.path().join("ledger.db");
    std::fs::copy(&db, &alone).unwrap();
    let whole = |path: &std::path::Path, out: std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", path.display());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["receipts_checked"], acked.len(), "{report}");
        assert_eq!(report["head_hash"], head["head_hash"], "{report}");
    };
    whole(
        &alone,
        as_reader(&["verify", "--all"], &[("TAI_LEDGER__SQLITE_PATH", &alone)]),
    );

    // Its folder as read-only media has it (a mounted snapshot, an archive), with an empty
    // log and the index beside it (as a process killed after its last checkpoint leaves
    // them; here another connection holds them open), and alone: SQLite cannot make the index
    // it reads a WAL-mode file through. `verify` and `backup` failed there with "unable to
    // open database file" (`backup` blaming its target).
    let holder = rusqlite::Connection::open(&db).unwrap();
    let _: i64 = holder
        .query_row("SELECT COUNT(*) FROM receipts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    assert!(dir.path().join("ledger.db-shm").is_file());
    set_mode(dir.path(), 0o555);
    whole(
        &db,
        as_reader(&["verify", "--all"], &[("TAI_LEDGER__SQLITE_PATH", &db)]),
    );
    set_mode(dir.path(), 0o755);
    drop(holder);
    assert!(!wal.exists(), "the last connection closed removes the log");
    set_mode(dir.path(), 0o555);
    whole(
        &db,
        as_reader(&["verify", "--all"], &[("TAI_LEDGER__SQLITE_PATH", &db)]),
    );
    let to = tempfile::tempdir().unwrap();
    set_mode(to.path(), 0o777);
    let copy = to.path().join("copy.db");
    let copy_arg = copy.to_str().unwrap();
    let out = as_reader(
        &["backup", "--to", copy_arg],
        &[("TAI_LEDGER__SQLITE_PATH", &db)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(copy.is_file());
    assert!(
        !dir.path().join("ledger.db-shm").exists(),
        "nothing was written beside it"
    );

    // The service cannot run there, and says why.
    let out = as_reader(&["serve"], &[("TAI_LEDGER__SQLITE_PATH", &db)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("must be writable"), "{stderr}");

    // A write-ahead log with something in it cannot be read without the index, nor left
    // out: the message says what to do.
    set_mode(dir.path(), 0o755);
    std::fs::write(&wal, [0u8; 64]).unwrap();
    set_mode(dir.path(), 0o555);
    let out = as_reader(&["verify", "--all"], &[("TAI_LEDGER__SQLITE_PATH", &db)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("copy the ledger with its -wal file"),
        "{stderr}"
    );
    set_mode(dir.path(), 0o755);
}
