//! Receipt reads over HTTP (paging, by id, verification) and tamper detection by the HTTP
//! endpoint and the offline CLI, on a real SQLite file.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use tai_autonomics::receipts::writer::NewReceipt;
use tai_autonomics::receipts::{ReceiptDraft, ReceiptType};

use crate::helpers::*;

/// Asserts that a run of the binary exited 0, showing its standard error otherwise.
fn exited_0(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Runs the real binary's offline `verify` against the ledger file `db`.
pub(crate) fn verify_cli(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("verify")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__SQLITE_PATH", db)
        .output()
        .unwrap()
}

async fn seed(app: &TestApp, tenant: &str, n: usize) -> Vec<tai_autonomics::receipts::Receipt> {
    let items = (0..n)
        .map(|i| {
            NewReceipt::new(
                ReceiptDraft::new(
                    tenant,
                    ReceiptType::Transition,
                    "signal_processed",
                    format!("value {i} < warning threshold 60"),
                )
                .states(Some("stable"), Some("stable"))
                .metadata(serde_json::json!({"input": {"value": i as f64 + 0.5}})),
            )
        })
        .collect();
    app.state.tree.ledger.append(items).await.expect("seeded")
}

#[actix_web::test]
async fn a_chain_is_paged_with_a_next_cursor_and_each_receipt_is_found_by_id() {
    let app = spawn_app(|_| {}).await;
    let seeded = seed(&app, "acme-corp", 25).await;
    let (status, page) = app
        .get_json("/v1/tenants/acme-corp/receipts?limit=10")
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["receipts"].as_array().unwrap().len(), 10);
    assert_eq!(
        (page["next_after_seq"].as_u64(), page["head_seq"].as_u64()),
        (Some(10), Some(25))
    );
    let (_, last) = app
        .get_json("/v1/tenants/acme-corp/receipts?after_seq=20&limit=10")
        .await;
    assert_eq!(last["receipts"].as_array().unwrap().len(), 5);
    assert!(last["next_after_seq"].is_null());
    assert_eq!(last["receipts"][0]["seq"], 21);
    let keys: Vec<&str> = last["receipts"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 13, "every member present: {keys:?}");

    let (status, one) = app
        .get_json(&format!("/v1/receipts/{}", seeded[7].receipt_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one, serde_json::to_value(&seeded[7]).unwrap());
    let (status, body) = app
        .get_json("/v1/receipts/0190f3c2-7a1b-7c3d-8e4f-0a1b2c3d4e5f")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("receipt_not_found"))
    );
}

#[actix_web::test]
async fn unknown_and_hostile_tenants_are_404_and_400() {
    let app = spawn_app(|_| {}).await;
    for (path, status, code) in [
        ("/v1/tenants/nobody/receipts", 404, "tenant_not_found"),
        (
            "/v1/tenants/nobody/receipts/verify",
            404,
            "tenant_not_found",
        ),
        ("/v1/tenants/UPPER/receipts", 400, "invalid_tenant_id"),
        ("/v1/tenants/%2e%2e/receipts", 400, "invalid_tenant_id"),
        ("/v1/tenants/caf%C3%A9/receipts", 400, "invalid_tenant_id"),
        ("/v1/tenants/a%00b/receipts", 400, "invalid_tenant_id"),
        ("/v1/tenants/acme/receipts?limit=0", 400, "invalid_request"),
        (
            "/v1/tenants/acme/receipts?after_seq=-1",
            400,
            "invalid_request",
        ),
        // Empty parameters count as absent.
        (
            "/v1/tenants/nobody/receipts?after_seq=&limit=",
            404,
            "tenant_not_found",
        ),
    ] {
        let (s, body) = app.get_json(path).await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{path}");
    }
    // A malformed or out-of-range number is named in the message, on every paged listing.
    for (path, name) in [
        ("/v1/tenants/acme/receipts?after_seq=-1", "after_seq"),
        ("/v1/tenants/acme/receipts?limit=ten", "limit"),
        ("/v1/governors?limit=1e3", "limit"),
        ("/v1/supervision?limit=-5", "limit"),
        // Page sizes are 1 to 1000 on every paged listing, as the MCP tools' schemas say.
        ("/v1/tenants/acme/receipts?limit=1001", "limit"),
        ("/v1/governors?limit=0", "limit"),
        ("/v1/governors?limit=5000", "limit"),
        ("/v1/supervision?limit=0", "limit"),
        ("/v1/supervision?limit=99999999", "limit"),
    ] {
        let (s, body) = app.get_json(path).await;
        let message = body["message"].as_str().unwrap_or_default();
        assert_eq!(s, 400, "{path}: {body}");
        assert!(
            message.starts_with(&format!("{name} must be a non-negative integer"))
                || message.starts_with(&format!("{name} must be between 1 and 1000")),
            "{path}: {message}"
        );
    }
    // A parameter a route does not have is refused, naming the ones it has: `after` (the
    // governors' cursor) on the receipts would otherwise give the first page again and again.
    let long = "x".repeat(5000);
    for (path, unknown, known) in [
        (
            "/v1/tenants/acme/receipts?after=2&limit=2".to_owned(),
            "`after`",
            "`after_seq` or `limit`",
        ),
        (
            "/v1/tenants/acme/receipts/export?limit=1".to_owned(),
            "`limit`",
            "`after_seq`",
        ),
        (
            "/v1/tenants/acme/receipts/verify?anchor=1".to_owned(),
            "`anchor`",
            "`anchor_seq` or `anchor_hash`",
        ),
        (
            "/v1/governors?after_seq=pa".to_owned(),
            "`after_seq`",
            "`limit` or `after`",
        ),
        ("/v1/supervision?limt=5".to_owned(), "`limt`", "`limit`"),
        (
            format!("/v1/governors?{long}=1"),
            "unknown field",
            "`limit` or `after`",
        ),
    ] {
        let (s, body) = app.get_json(&path).await;
        let message = body["message"].as_str().unwrap_or_default();
        assert_eq!(
            (s, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{path}: {body}"
        );
        assert!(
            message.contains(unknown) && message.contains(known) && message.len() < 400,
            "{message}"
        );
    }
}

#[actix_web::test]
async fn tampering_with_the_sqlite_file_is_reported_at_the_exact_seq_by_http_and_cli() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "acme-corp", 12).await;
    let (status, report) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(
        (
            status,
            report["valid"].as_bool(),
            report["receipts_checked"].as_u64()
        ),
        (200, Some(true), Some(12))
    );

    // Someone with access to the file changes a stored field of seq 7 (past the trigger).
    let db = app.dir.path().join("ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    assert_eq!(conn.execute("UPDATE receipts SET reason = 'value 99 < warning threshold 60' WHERE tenant_id = 'acme-corp' AND seq = 7", []).unwrap(), 1);
    drop(conn);

    let (_, report) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["first_broken"]["seq"], 7);
    assert!(report["first_broken"]["reason"]
        .as_str()
        .unwrap()
        .contains("receipt_hash"));
    assert_eq!(report["receipts_checked"], 6);

    let out = verify_cli(&db, &["--tenant", "acme-corp"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a broken chain is a non-zero exit"
    );
    let stdout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout["first_broken"]["seq"], 7);
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 7"));

    let all = verify_cli(&db, &["--all"]);
    assert_eq!(all.status.code(), Some(1));
    let unknown = verify_cli(&db, &["--tenant", "nobody"]);
    assert_eq!(unknown.status.code(), Some(66));
    let invalid = verify_cli(&db, &["--tenant", "../Acme"]);
    assert_eq!(invalid.status.code(), Some(64));
    // A mistyped ledger path is an error, and verifying it creates no file.
    let missing = app.dir.path().join("no-such-ledger.db");
    for args in [&["--all"][..], &["--tenant", "acme-corp"]] {
        let out = verify_cli(&missing, args);
        assert_eq!(out.status.code(), Some(66), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("there is no ledger at"));
    }
    assert!(!missing.exists());
}

#[actix_web::test]
async fn a_receipt_that_cannot_be_read_back_breaks_its_chain_at_its_seq_and_nothing_retries() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "acme-corp", 12).await;
    seed(&app, "other", 3).await;

    // A stored value no receipt can have (as a damaged or foreign write leaves it) at seq 9.
    let db = app.dir.path().join("ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    let changed = conn
        .execute(
            "UPDATE receipts SET type = 'bogus' WHERE tenant_id = 'acme-corp' AND seq = 9",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    // Verification reports it where it is, as it reports a changed field (it was a 500).
    let (status, report) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!((status, &report["valid"]), (200, &json!(false)), "{report}");
    assert_eq!(report["first_broken"]["seq"], 9, "{report}");
    assert_eq!(report["receipts_checked"], 8);
    let reason = report["first_broken"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot be read") && reason.contains("bogus"),
        "{reason}"
    );

    // A read of it is 500 `ledger_corrupt`, saying what, with no Retry-After: retrying cannot
    // mend it (before, `internal` with nothing said).
    let res = app
        .client
        .get(app.url("/v1/tenants/acme-corp/receipts?after_seq=8"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("retry-after").is_none());
    let (_, body) = app
        .get_json("/v1/tenants/acme-corp/receipts?after_seq=8")
        .await;
    assert_eq!(body["code"], "ledger_corrupt", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("bogus"),
        "{body}"
    );
    let (status, page) = app.get_json("/v1/tenants/acme-corp/receipts?limit=8").await;
    assert_eq!(
        (status, page["receipts"].as_array().map(Vec::len)),
        (200, Some(8))
    );

    // The CLI says the same, and `--all` goes on to the other chains.
    let out = verify_cli(&db, &["--tenant", "acme-corp"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 9"));
    let all = verify_cli(&db, &["--all"]);
    assert_eq!(all.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["tenant_id"], &lines[0]["valid"]),
        (&json!("acme-corp"), &json!(false))
    );
    assert_eq!(
        (&lines[1]["tenant_id"], &lines[1]["valid"]),
        (&json!("other"), &json!(true))
    );
}

#[actix_web::test]
async fn a_governor_whose_chain_cannot_be_read_back_answers_500_without_restarting_and_reads_it_again(
) {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    grant(&app, "acme-corp").await;
    let input = json!({"metric": "cpu", "value": 70.0});
    let signal = || app.post_json("/v1/tenants/acme-corp/signals", &input);
    let (status, body) = signal().await;
    assert_eq!((status, &body["state"]), (200, &json!("warning")), "{body}");
    let head = body["receipt"]["seq"].as_i64().unwrap();

    // The receipt the governor rebuilds its state from cannot be read back; the governor's
    // next incarnation meets it.
    let db = app.dir.path().join("ledger.db");
    let set_type = |kind: &str| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DROP TRIGGER IF EXISTS receipts_are_append_only_update")
            .unwrap();
        let changed = conn
            .execute(
                "UPDATE receipts SET type = ?1 WHERE tenant_id = 'acme-corp' AND seq = ?2",
                rusqlite::params![kind, head],
            )
            .unwrap();
        assert_eq!(changed, 1);
    };
    set_type("bogus");
    let (s, b) = app
        .post_json("/v1/chaos/governors/acme-corp/crash", &json!({}))
        .await;
    assert_eq!(s, 202, "{b}");

    // Every input is 500 `ledger_corrupt` at once; the governor is not restarted over and
    // over (it was, each time answering 503 `governor_restarting`), and nothing is appended.
    let answer = signal_until(&app, &input, 500, Duration::from_secs(5)).await;
    assert_eq!(answer["code"], "ledger_corrupt", "{answer}");
    for _ in 0..20 {
        let (status, body) = signal().await;
        assert_eq!(
            (status, &body["code"]),
            (500, &json!("ledger_corrupt")),
            "{body}"
        );
    }
    let (_, tree) = app.get_json("/v1/supervision").await;
    let governance = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "governance")
        .unwrap();
    let child = &governance["supervisor"]["children"][0];
    assert_eq!(
        (&child["id"], &child["restarts"]),
        (&json!("acme-corp"), &json!(1)),
        "{tree}"
    );
    let (_, text) = app.get_text("/metrics").await;
    assert_eq!(metric(&text, "tai_governors_unread"), Some(1.0));
    let (_, chain) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(chain["first_broken"]["seq"], head, "{chain}");

    // Restored, the chain is read again within the backoff (at most about 6 s) and the
    // governor decides from the state it recorded.
    set_type("transition");
    let body = signal_until(&app, &input, 200, Duration::from_secs(10)).await;
    assert_eq!(body["receipt"]["state_from"], "warning", "{body}");
    assert_eq!(body["receipt"]["seq"], head + 1, "{body}");
    let (_, text) = app.get_text("/metrics").await;
    assert_eq!(metric(&text, "tai_governors_unread"), Some(0.0));
}

/// Sends `input` as acme-corp's signal until it is answered with `status`; that answer.
async fn signal_until(
    app: &TestApp,
    input: &serde_json::Value,
    status: u16,
    within: Duration,
) -> serde_json::Value {
    let what = format!("a signal answered {status}");
    eventually(&what, within, || async {
        let (s, body) = app.post_json("/v1/tenants/acme-corp/signals", input).await;
        (s == status).then_some(body)
    })
    .await
}

#[actix_web::test]
async fn an_entitlement_record_that_cannot_be_read_back_is_500_and_listed_without_hiding_others() {
    let app = spawn_app(|_| {}).await;
    for t in ["damaged", "intact"] {
        grant(&app, t).await;
    }
    let conn = rusqlite::Connection::open(app.dir.path().join("ledger.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE entitlements SET record = 'not json' WHERE tenant_id = 'damaged'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let input = json!({"metric": "cpu", "value": 10.0});
    let (status, body) = app.post_json("/v1/tenants/damaged/signals", &input).await;
    assert_eq!(
        (status, &body["code"]),
        (500, &json!("ledger_corrupt")),
        "{body}"
    );
    let (status, body) = app.post_json("/v1/tenants/intact/signals", &input).await;
    assert_eq!(status, 200, "{body}");

    // The list goes on past it (a page holding it was 500).
    let (status, page) = app.get_json("/v1/tenants").await;
    assert_eq!(status, 200, "{page}");
    let listed = page["tenants"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{page}");
    assert_eq!(listed[0]["tenant_id"], "damaged");
    assert_eq!(
        (&listed[0]["status"], &listed[0]["active"]),
        (&json!(null), &json!(false))
    );
    assert!(listed[0]["unreadable"]
        .as_str()
        .unwrap()
        .contains("entitlement of damaged"));
    assert_eq!(
        (&listed[1]["tenant_id"], &listed[1]["status"]),
        (&json!("intact"), &json!("active"))
    );
    assert!(listed[1].get("unreadable").is_none());
}

#[actix_web::test]
async fn a_chain_rewritten_and_sealed_again_verifies_alone_but_not_against_its_anchor() {
    let app = spawn_app(|_| {}).await;
    let seeded = seed(&app, "acme-corp", 12).await;
    let (_, before) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    let (head_seq, head_hash) = (
        before["head_seq"].as_u64().unwrap(),
        before["head_hash"].as_str().unwrap().to_owned(),
    );
    assert_eq!(head_seq, 12);
    let early = format!("5:{}", seeded[4].receipt_hash);

    // Someone who can write the file changes seq 7 and seals it and every receipt after it.
    let db = app.dir.path().join("ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    let mut prev = seeded[5].clone();
    for r in &seeded[6..] {
        let mut r = r.clone();
        if r.seq == 7 {
            r.reason = "value 99 < warning threshold 60".into();
        }
        let (node, timestamp) = (r.node.clone(), r.timestamp.clone());
        let forged = r
            .unseal()
            .seal(Some((prev.seq, &prev.receipt_hash)), &node, timestamp);
        conn.execute(
            "UPDATE receipts SET reason = ?1, prev_hash = ?2, receipt_hash = ?3 WHERE tenant_id = 'acme-corp' AND seq = ?4",
            rusqlite::params![forged.reason, forged.prev_hash, forged.receipt_hash, forged.seq as i64],
        )
        .unwrap();
        prev = forged;
    }
    drop(conn);

    let (status, alone) = app.get_json("/v1/tenants/acme-corp/receipts/verify").await;
    assert_eq!(
        (status, &alone["valid"]),
        (200, &json!(true)),
        "a rewrite is consistent in itself"
    );
    assert_ne!(alone["head_hash"], json!(head_hash));
    let anchored = format!(
        "/v1/tenants/acme-corp/receipts/verify?anchor_seq={head_seq}&anchor_hash={head_hash}"
    );
    let (status, report) = app.get_json(&anchored).await;
    assert_eq!((status, &report["valid"]), (200, &json!(false)), "{report}");
    assert_eq!(report["first_broken"]["seq"], 12);
    assert!(
        report["first_broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("anchor"),
        "{report}"
    );
    assert_eq!(report["anchor"], json!({"seq": 12, "hash": head_hash}));
    let (_, held) = app
        .get_json(&format!(
            "/v1/tenants/acme-corp/receipts/verify?anchor_seq=5&anchor_hash={}",
            seeded[4].receipt_hash
        ))
        .await;
    assert_eq!(
        held["valid"], true,
        "the chain up to seq 5 is what was recorded"
    );
    let (_, past) = app
        .get_json(&format!(
            "/v1/tenants/acme-corp/receipts/verify?anchor_seq=40&anchor_hash={head_hash}"
        ))
        .await;
    assert_eq!(past["first_broken"]["seq"], 13, "{past}");
    let hex = "a".repeat(64);
    for query in [
        "anchor_seq=12".to_owned(),
        format!("anchor_hash={hex}"),
        format!("anchor_seq=0&anchor_hash={hex}"),
        format!("anchor_seq=x&anchor_hash={hex}"),
        format!("anchor_seq=12&anchor_hash={}", hex.to_uppercase()),
        "anchor_seq=12&anchor_hash=abc".to_owned(),
    ] {
        let (status, body) = app
            .get_json(&format!("/v1/tenants/acme-corp/receipts/verify?{query}"))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{query}: {body}"
        );
    }

    // The CLI, against the store and against an export of the rewritten chain.
    let latest = format!("acme-corp:{head_seq}:{head_hash}");
    let out = verify_cli(&db, &["--tenant", "acme-corp", "--anchor", &latest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 12"));
    let early_anchor = format!("acme-corp:{early}");
    let out = verify_cli(&db, &["--all", "--anchor", &early_anchor]);
    exited_0(&out);
    // An anchored tenant the ledger has no chain for is a broken chain.
    let absent = format!("nobody:{early}");
    let out = verify_cli(
        &db,
        &["--all", "--anchor", &early_anchor, "--anchor", &absent],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chain of nobody is BROKEN at seq 1"));
    for bad in [
        vec!["--tenant", "acme-corp", "--anchor", &absent],
        vec!["--all", "--anchor", "acme-corp:12"],
        vec![
            "--all",
            "--anchor",
            &early_anchor,
            "--anchor",
            &early_anchor,
        ],
        vec!["--all", "--anchor", "Acme:1:00"],
    ] {
        assert_eq!(verify_cli(&db, &bad).status.code(), Some(64), "{bad:?}");
    }
    let (_, export) = app.get_bytes("/v1/tenants/acme-corp/receipts/export").await;
    let out = verify_file_cli_with(&["--file", "-", "--anchor", &latest], &export);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_broken"]["seq"], 12);
    let out = verify_file_cli_with(&["--file", "-", "--anchor", &early_anchor], &export);
    assert_eq!(out.status.code(), Some(0));
}

#[actix_web::test]
async fn yesterdays_verify_output_checks_todays_ledger_as_anchors() {
    let app = spawn_app(|_| {}).await;
    for (t, n) in [("t1", 3), ("t2", 4), ("t3", 2)] {
        seed(&app, t, n).await;
    }
    let db = app.dir.path().join("ledger.db");
    // Yesterday's report, kept where the ledger's writers cannot reach it.
    let yesterday = verify_cli(&db, &["--all"]);
    exited_0(&yesterday);
    let kept = app.dir.path().join("yesterday.jsonl");
    std::fs::write(&kept, &yesterday.stdout).unwrap();
    let kept = kept.to_str().unwrap();

    // Chains grow: each still reaches yesterday's head.
    seed(&app, "t1", 2).await;
    let today = verify_cli(&db, &["--all", "--anchors", kept]);
    exited_0(&today);
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&today.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let anchored: Vec<(&serde_json::Value, &serde_json::Value)> = (reports.iter())
        .map(|r| (&r["head_seq"], &r["anchor"]["seq"]))
        .collect();
    assert_eq!(
        anchored,
        [
            (&json!(5), &json!(3)),
            (&json!(4), &json!(4)),
            (&json!(2), &json!(2))
        ]
    );

    // What `backup` prints (its line, then the copy's reports) serves as anchors as well.
    let copied = backup_cli(&db, &app.dir.path().join("copy.db"));
    exited_0(&copied);
    let heads = app.dir.path().join("copy-heads.jsonl");
    std::fs::write(&heads, &copied.stdout).unwrap();
    let out = verify_cli(&db, &["--all", "--anchors", heads.to_str().unwrap()]);
    exited_0(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("\"anchor\"")
            .count(),
        3
    );

    // `t2` cut short and `t3` deleted: each verifies alone, neither reaches its anchor.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TRIGGER receipts_are_append_only_delete;
         DELETE FROM receipts WHERE tenant_id = 't2' AND seq = 4;
         DELETE FROM receipts WHERE tenant_id = 't3';",
    )
    .unwrap();
    drop(conn);
    exited_0(&verify_cli(&db, &["--all"]));
    let out = verify_cli(&db, &["--all", "--anchors", kept]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chain of t2 is BROKEN at seq 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("chain of t3 is BROKEN at seq 1"),
        "{stderr}"
    );
    assert!(stderr.contains("verified 3 chain(s): 2 broken"), "{stderr}");
    // With --tenant, only that tenant's line counts.
    exited_0(&verify_cli(&db, &["--tenant", "t1", "--anchors", kept]));
    let t2 = verify_cli(&db, &["--tenant", "t2", "--anchors", kept]);
    assert_eq!(t2.status.code(), Some(1));
    // A tenant with no chain is unknown (66), unless an anchor says it had one.
    assert_eq!(verify_cli(&db, &["--tenant", "t3"]).status.code(), Some(66));
    let t3 = verify_cli(&db, &["--tenant", "t3", "--anchors", kept]);
    assert_eq!(t3.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&t3.stderr);
    assert!(
        stderr.contains("chain of t3 is BROKEN at seq 1"),
        "{stderr}"
    );

    // A file that is not anchors says where; one that cannot be read, or a tenant anchored
    // twice, is refused before anything is verified.
    let bad = app.dir.path().join("bad.txt");
    let t1 = &reports[0];
    let line = format!(
        "t1:{}:{}",
        t1["head_seq"],
        t1["head_hash"].as_str().unwrap()
    );
    std::fs::write(&bad, format!("{line}\nnot an anchor\n")).unwrap();
    let out = verify_cli(&db, &["--all", "--anchors", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2:"), "{stderr}");
    let missing = app.dir.path().join("missing.jsonl");
    let out = verify_cli(&db, &["--all", "--anchors", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(66));
    let out = verify_cli(&db, &["--all", "--anchors", kept, "--anchor", &line]);
    assert_eq!(out.status.code(), Some(64));
}

/// `verify` only reads: a ledger an older build migrated is verified as it is, not migrated
/// under the service that owns it (which would then refuse a schema newer than its own).
#[actix_web::test]
async fn the_cli_verifies_an_older_schema_without_migrating_or_writing_it() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "old", 3).await;
    let db = app.dir.path().join("ledger.db");
    // As a build of schema version 1 left it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP INDEX receipts_actions; DELETE FROM schema_migrations WHERE version > 1;",
    )
    .unwrap();
    drop(conn);
    let out = verify_cli(&db, &["--all"]);
    exited_0(&out);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: u32 = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, 1, "verify migrated the file");
    // A schema this build does not know is an error that says so, not a guess.
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'later')", [])
        .unwrap();
    drop(conn);
    let out = verify_cli(&db, &["--all"]);
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schema version 99"), "{stderr}");
}

#[actix_web::test]
async fn an_intact_ledger_verifies_from_the_cli_with_exit_0() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "t1", 3).await;
    seed(&app, "t2", 4).await;
    let db = app.dir.path().join("ledger.db");
    let out = verify_cli(&db, &["--all"]);
    exited_0(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["receipts_checked"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    // What one read of the whole file reported is what each chain verified alone reports.
    for (t, line) in ["t1", "t2"].iter().zip(&lines) {
        let alone = verify_cli(&db, &["--tenant", t]);
        let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
        assert_eq!(&alone, line);
    }

    // A receipt written again out of its place in the file (deleted and inserted as it was)
    // leaves its chain whole: `verify --all` verifies that chain again by itself.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TRIGGER receipts_are_append_only_delete;
         CREATE TEMP TABLE keep AS SELECT * FROM receipts WHERE tenant_id = 't1' AND seq = 2;
         DELETE FROM receipts WHERE tenant_id = 't1' AND seq = 2;
         INSERT INTO receipts SELECT * FROM keep;",
    )
    .unwrap();
    drop(conn);
    let again = verify_cli(&db, &["--all"]);
    exited_0(&again);
    assert_eq!(again.stdout, out.stdout);
}

/// Runs the real binary's `backup --to dest` against the ledger file `db`.
pub(crate) fn backup_cli(db: &std::path::Path, dest: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("backup")
        .arg("--to")
        .arg(dest)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__SQLITE_PATH", db)
        .output()
        .unwrap()
}

/// The receipts of `tenant` as `app` serves them, from seq 1.
async fn chain_of(app: &TestApp, tenant: &str) -> Vec<serde_json::Value> {
    let (_, page) = (app.get_json(&format!("/v1/tenants/{tenant}/receipts?limit=1000"))).await;
    page["receipts"].as_array().cloned().unwrap_or_default()
}

#[actix_web::test]
async fn a_backup_taken_while_receipts_are_appended_is_a_whole_copy_a_service_can_run_on() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "t1", 3).await;
    seed(&app, "t2", 4).await;
    let db = app.dir.path().join("ledger.db");
    let dest = app.dir.path().join("copy.db");
    // Appends go on, one durable receipt after another, while the backup runs.
    let appending = async {
        for _ in 0..300 {
            seed(&app, "busy", 1).await;
        }
    };
    let copying = {
        let (db, dest) = (db.clone(), dest.clone());
        actix_web::web::block(move || backup_cli(&db, &dest))
    };
    let ((), out) = futures_util::future::join(appending, copying).await;
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["backup"], dest.display().to_string());
    assert!(lines[0]["bytes"].as_u64().unwrap() > 0);
    assert!(lines[1..].iter().all(|l| l["valid"] == true), "{lines:?}");
    // The copy stands alone: no journal, index or half-written file beside it.
    let beside: Vec<String> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("copy.db") && n != "copy.db")
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // A service runs on the copy: every chain is there whole, and the busy one up to some
    // seq, each receipt as the ledger holds it.
    let restored = spawn_app(|s| s.ledger.sqlite_path = dest.clone()).await;
    for tenant in ["t1", "t2"] {
        assert_eq!(
            chain_of(&restored, tenant).await,
            chain_of(&app, tenant).await
        );
    }
    let (busy, live) = (
        chain_of(&restored, "busy").await,
        chain_of(&app, "busy").await,
    );
    assert_eq!(live.len(), 300);
    assert_eq!(busy[..], live[..busy.len()], "a prefix of the chain");
    let (_, report) = restored.get_json("/v1/tenants/busy/receipts/verify").await;
    assert_eq!(report["valid"], true, "{report}");
    drop(restored);

    // A backup never overwrites a file.
    let before = std::fs::read(&dest).unwrap();
    let again = backup_cli(&db, &dest);
    assert_eq!(again.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert!(
        std::fs::read(&dest).unwrap() == before,
        "the file was left as it was"
    );
    // A folder that is not there: nothing written, not even the partial file.
    let nowhere = app.dir.path().join("no-such-folder").join("copy.db");
    let out = backup_cli(&db, &nowhere);
    assert_eq!(out.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write"));
    assert!(!app.dir.path().join("no-such-folder").exists());
    // A missing ledger is not created, and no copy is made.
    let missing = app.dir.path().join("no-such-ledger.db");
    let none = app.dir.path().join("none.db");
    assert_eq!(backup_cli(&missing, &none).status.code(), Some(66));
    assert!(!missing.exists() && !none.exists());

    // A Firestore ledger has Firestore's own export; nothing is read or written.
    let firestore = cli_on_firestore(&["backup".as_ref(), "--to".as_ref(), none.as_os_str()]);
    assert_eq!(firestore.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&firestore.stderr).contains("gcloud firestore export"));
    assert!(!none.exists());

    // A tampered ledger is copied as it is, and the copy's check says where it breaks.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    conn.execute(
        "UPDATE receipts SET reason = 'edited' WHERE tenant_id = 't2' AND seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let tampered = app.dir.path().join("tampered.db");
    let out = backup_cli(&db, &tampered);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 3"));
    assert!(tampered.exists());
}

/// Runs the real binary's `verify --file` on `file`, with a configuration that would not load
/// (so none is read) and `stdin` on its standard input.
fn verify_file_cli(file: &str, stdin: &[u8]) -> std::process::Output {
    verify_file_cli_with(&["--file", file], stdin)
}

/// [`verify_file_cli`] with any `verify` arguments.
fn verify_file_cli_with(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("verify")
        .args(args)
        .env("TAI_AUTH__MDOE", "bearer")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[actix_web::test]
async fn pages_saved_from_the_api_verify_offline_and_a_change_in_the_file_is_found_at_its_seq() {
    let app = spawn_app(|_| {}).await;
    seed(&app, "acme-corp", 10).await;
    // The pages exactly as the API sent them, saved one after another.
    let mut saved = Vec::new();
    for after in [0, 4, 8] {
        let (status, body) = app
            .get_bytes(&format!(
                "/v1/tenants/acme-corp/receipts?after_seq={after}&limit=4"
            ))
            .await;
        assert_eq!(status, 200);
        saved.extend_from_slice(&body);
        saved.push(b'\n');
    }
    let file = app.dir.path().join("acme-corp.json");
    std::fs::write(&file, &saved).unwrap();
    let out = verify_file_cli(file.to_str().unwrap(), b"");
    exited_0(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &report["tenant_id"],
            &report["valid"],
            &report["receipts_checked"]
        ),
        (&json!("acme-corp"), &json!(true), &json!(10u64))
    );
    let (_, last) = app
        .get_json("/v1/tenants/acme-corp/receipts?after_seq=9")
        .await;
    assert_eq!(report["head_hash"], last["receipts"][0]["receipt_hash"]);

    // One stored value changed in the file (seq 6's reason), read from standard input.
    let text = String::from_utf8(saved).unwrap();
    let tampered = text.replacen(
        "value 5 < warning threshold 60",
        "value 95 < warning threshold 60",
        1,
    );
    assert_ne!(tampered, text);
    let out = verify_file_cli("-", tampered.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["first_broken"]["seq"], &report["receipts_checked"]),
        (&json!(6u64), &json!(5u64))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 6"));

    // Not receipts, no receipts, no file.
    assert_eq!(
        verify_file_cli("-", b"{\"receipts\": 3}").status.code(),
        Some(65)
    );
    assert_eq!(verify_file_cli("-", b"\n").status.code(), Some(66));
    let missing = app.dir.path().join("nothing.json");
    assert_eq!(
        verify_file_cli(missing.to_str().unwrap(), b"")
            .status
            .code(),
        Some(66)
    );
    // A file that cannot be read is said so, not called malformed JSON.
    let folder = verify_file_cli(app.dir.path().to_str().unwrap(), b"");
    assert_eq!(folder.status.code(), Some(66));
    let said = String::from_utf8_lossy(&folder.stderr);
    assert!(
        said.contains("cannot read") && !said.contains("JSON"),
        "{said}"
    );
}

#[actix_web::test]
async fn the_export_is_the_whole_chain_one_receipt_a_line_and_verifies_offline() {
    let app = spawn_app(|_| {}).await;
    // More than one page of the export (1,000), and a second tenant that must not appear.
    let seeded = seed(&app, "acme-corp", 2345).await;
    seed(&app, "other", 3).await;
    let mut res = app
        .client
        .get(app.url("/v1/tenants/acme-corp/receipts/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert_eq!(header("chain-head-seq").as_deref(), Some("2345"));
    let body = res.body().limit(64 << 20).await.unwrap();
    let lines: Vec<tai_autonomics::receipts::Receipt> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(
        lines, seeded,
        "every receipt, in chain order, exactly as stored"
    );

    let file = app.dir.path().join("export.ndjson");
    std::fs::write(&file, &body).unwrap();
    let out = verify_file_cli(file.to_str().unwrap(), b"");
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["valid"], &report["receipts_checked"]),
        (&json!(true), &json!(2345u64))
    );

    // What followed an anchor, checked from the anchor alone.
    let (status, tail) = app
        .get_bytes("/v1/tenants/acme-corp/receipts/export?after_seq=2000")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        tail.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        345
    );
    for (hash, code, checked, head) in [
        (&seeded[1999].receipt_hash, 0, 345, 2345),
        (&seeded[1998].receipt_hash, 1, 0, 2000),
    ] {
        let anchor = format!("acme-corp:2000:{hash}");
        let out = verify_file_cli_with(&["--file", "-", "--anchor", &anchor], &tail);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&report["receipts_checked"], &report["head_seq"]),
            (&json!(checked), &json!(head))
        );
    }
    let (status, none) = app
        .get_bytes("/v1/tenants/acme-corp/receipts/export?after_seq=2345")
        .await;
    assert_eq!((status, none.len()), (200, 0));
    let (status, body) = app
        .get_json("/v1/tenants/acme-corp/receipts/export?after_seq=-1")
        .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_request")));

    // The intact export ends with the closing chunk.
    let whole = raw_get(&app, "/v1/tenants/acme-corp/receipts/export").await;
    assert!(whole.ends_with(b"\r\n0\r\n\r\n"));

    // A row that cannot be read back (its type made unknown, past the trigger) fails the
    // second page: the response has begun, so it ends as a broken transfer, not a short chain.
    let conn = rusqlite::Connection::open(app.dir.path().join("ledger.db")).unwrap();
    conn.execute_batch("DROP TRIGGER receipts_are_append_only_update")
        .unwrap();
    conn.execute(
        "UPDATE receipts SET type = 'bogus' WHERE tenant_id = 'acme-corp' AND seq = 1500",
        [],
    )
    .unwrap();
    drop(conn);
    let raw = raw_get(&app, "/v1/tenants/acme-corp/receipts/export").await;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{:?}", &raw[..40]);
    assert!(raw.len() > 100_000, "the first page was sent");
    assert!(
        !raw.ends_with(b"\r\n0\r\n\r\n"),
        "the response ended as if the chain were whole"
    );
    // A failure in the first page comes before the answer starts: an error status and body.
    let conn = rusqlite::Connection::open(app.dir.path().join("ledger.db")).unwrap();
    conn.execute(
        "UPDATE receipts SET type = 'bogus' WHERE tenant_id = 'acme-corp' AND seq = 10",
        [],
    )
    .unwrap();
    drop(conn);
    let (status, body) = app.get_json("/v1/tenants/acme-corp/receipts/export").await;
    assert_eq!(
        (status, &body["code"]),
        (500, &json!("ledger_corrupt")),
        "{body}"
    );

    let (status, body) = app.get_json("/v1/tenants/nobody/receipts/export").await;
    assert_eq!((status, &body["code"]), (404, &json!("tenant_not_found")));
    let (status, _) = app.get_json("/v1/tenants/No/receipts/export").await;
    assert_eq!(status, 400);
}

/// `GET path` over a plain socket, everything the server sent until it closed: the framing
/// itself, which a client library would check for us (awc takes a closed connection as the end
/// of a chunked body).
async fn raw_get(app: &TestApp, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr = app.address.trim_start_matches("http://").to_owned();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    actix_web::rt::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = socket.read_to_end(&mut out);
        out
    })
    .await
    .unwrap()
}

/// `POST path` with `body` sent as written → (status, the answer's text).
async fn post_text(app: &TestApp, path: &str, body: &'static str) -> (u16, String) {
    let mut res = app
        .client
        .post(app.url(path))
        .content_type("application/json")
        .send_body(body)
        .await
        .unwrap();
    let bytes = res.body().limit(1 << 20).await.unwrap();
    (
        res.status().as_u16(),
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[actix_web::test]
async fn numbers_are_recorded_and_read_back_exactly_as_sent() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "exact").await;
    // Doubles that serde_json's default reading takes one unit off, as sent by a client: the
    // receipt must record these, and what the ledger hands back must be what was hashed.
    let (s, signal) = post_text(
        &app,
        "/v1/tenants/exact/signals",
        r#"{"metric": "p_error", "value": -6.604630556388117e-41}"#,
    )
    .await;
    assert_eq!(s, 200, "{signal}");
    assert!(
        signal.contains(r#""value":-6.604630556388117e-41"#),
        "{signal}"
    );
    let (s, tool) = post_text(
        &app,
        "/v1/governors/exact/tool-calls",
        r#"{"tool": "health", "args": {"p": 1.976563237333621e-264, "q": 3.818526826307957e276, "tiny": 5e-324}}"#,
    )
    .await;
    assert_eq!(s, 200, "{tool}");
    for written in [
        r#""p":1.976563237333621e-264"#,
        r#""q":3.818526826307957e+276"#,
        r#""tiny":5e-324"#,
    ] {
        assert!(tool.contains(written), "{written} in {tool}");
    }
    let answered: Vec<serde_json::Value> = [&signal, &tool]
        .iter()
        .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["receipt"].clone())
        .collect();
    let (_, page) = app.get_text("/v1/tenants/exact/receipts").await;
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let stored = page["receipts"].as_array().unwrap();
    for receipt in &answered {
        let id = &receipt["receipt_id"];
        let read = stored.iter().find(|r| &r["receipt_id"] == id).unwrap();
        assert_eq!(read, receipt, "read back as answered");
        // Its hash, recomputed from what was read back.
        let r: tai_autonomics::receipts::Receipt = serde_json::from_value(read.clone()).unwrap();
        assert_eq!(r.compute_hash(), r.receipt_hash);
    }
    let (_, report) = app.get_json("/v1/tenants/exact/receipts/verify").await;
    assert_eq!(report["valid"], true, "{report}");
}

/// The ledger audit on Firestore (the emulator), as on SQLite: a receipt document changed by
/// another writer is reported with its tenant and seq, although no one asked for the chain.
#[actix_web::test]
async fn the_ledger_audit_finds_a_changed_receipt_document_in_firestore() {
    let emulator = std::env::var("FIRESTORE_EMULATOR_HOST")
        .expect("run through tools/test.sh, which starts the Firestore emulator");
    let project = format!(
        "audit-{}-{}",
        std::process::id(),
        tai_autonomics::clock::now_ms()
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = start_binary_in(
        dir.path(),
        &[
            ("TAI_LEDGER__BACKEND", "firestore"),
            ("FIRESTORE_PROJECT_ID", project.as_str()),
            ("TAI_LEDGER__AUDIT_INTERVAL_SECS", "1"),
        ],
    );
    let client = awc::Client::default();
    let grant = json!({"tenant_id": "acme-corp", "entitlement_id": "e", "action": "grant"});
    let res = client.post(bin.url("/marketplace")).send_json(&grant).await;
    assert_eq!(res.unwrap().status(), 200);
    for value in [10, 20, 30] {
        let url = bin.url("/v1/tenants/acme-corp/signals");
        let res = client
            .post(url)
            .send_json(&json!({"metric": "cpu", "value": value}));
        assert_eq!(res.await.unwrap().status(), 200);
    }
    eventually("a complete pass", Duration::from_secs(20), || async {
        let text = bin.metrics().await;
        metric(&text, r#"tai_ledger_audit_passes_total{result="complete"}"#).filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(
        metric(&bin.metrics().await, "tai_ledger_chains_broken"),
        Some(0.0)
    );

    let doc = format!(
        "http://{emulator}/v1/projects/{project}/databases/(default)/documents/tenants/acme-corp/receipts/{:020}?updateMask.fieldPaths=reason",
        4
    );
    let res = client
        .patch(doc)
        .insert_header(("Authorization", "Bearer owner"))
        .send_json(
            &json!({"fields": {"reason": {"stringValue": "value 99 < warning threshold 60"}}}),
        )
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());

    let found = eventually("the audit's report", Duration::from_secs(20), || {
        let line = (bin.warnings.lock().unwrap().iter())
            .find(|l| {
                l["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("the ledger audit found")
            })
            .cloned();
        async move { line }
    })
    .await;
    assert_eq!(found["severity"], "ERROR", "{found}");
    assert_eq!(
        (&found["tenant"], &found["seq"]),
        (&json!("acme-corp"), &json!(4)),
        "{found}"
    );
    assert_eq!(
        metric(&bin.metrics().await, "tai_ledger_chains_broken"),
        Some(1.0)
    );
}

#[actix_web::test]
async fn operators_see_whether_the_ledger_audit_runs_and_what_it_found() {
    // On by default: an hour apart, the first pass 10 s after the start.
    let app = spawn_app(|_| {}).await;
    let (status, audit) = app.get_json("/v1/ledger/audit").await;
    assert_eq!(status, 200);
    assert_eq!(
        audit,
        json!({"enabled": true, "interval_secs": 3600, "receipts_per_sec": 20000,
            "running": false, "passes": {"complete": 0, "stopped": 0}, "last_pass": null,
            "anchored_chains": 0, "broken_total": 0, "broken": []})
    );
    // Off, it says so in the same shape.
    let off = spawn_app(|s| s.ledger.audit_interval_secs = 0).await;
    let (status, audit) = off.get_json("/v1/ledger/audit").await;
    assert_eq!((status, &audit["enabled"]), (200, &json!(false)), "{audit}");
    assert_eq!(
        (&audit["interval_secs"], &audit["last_pass"]),
        (&json!(null), &json!(null))
    );
}
