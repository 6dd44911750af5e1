//! `/openapi.json` describes exactly the router's routes, each with the statuses it answers
//! here, `/observer` serves its page with the data its script reads, and README's shell blocks
//! run as written.

use crate::helpers::*;

/// A concrete URL for a described path: each `{parameter}` filled with a well-formed value.
fn concrete(path: &str) -> String {
    path.replace("{tenant}", "no-such-tenant")
        .replace("{receipt_id}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        .replace("{action_id}", "a-1")
        .replace("{verb}", "complete")
        .replace("{child}", "no-such-actor")
}

#[actix_web::test]
async fn openapi_describes_every_route_and_every_described_operation_answers() {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");

    // Every resource the router registers is described (read from the URL table's source).
    let routes = include_str!("../../src/http/mod.rs");
    let registered: Vec<&str> = routes
        .split("web::resource(\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(
        registered.len() >= 25,
        "found {} resources",
        registered.len()
    );
    for path in &registered {
        assert!(paths.contains_key(*path), "{path} is not in /openapi.json");
    }

    // Every operation described is routed: no "no such route" 404 and no 405.
    let client = awc::Client::default();
    let mut operations = 0;
    for (path, item) in paths {
        assert!(
            registered.contains(&path.as_str()),
            "{path} is described but not routed"
        );
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let success: Vec<&String> = (op["responses"].as_object().unwrap().keys())
                .filter(|c| c.starts_with('2'))
                .collect();
            assert!(!success.is_empty(), "{method} {path} declares no success");
            let url = app.url(&concrete(path));
            let req = match method.as_str() {
                "get" => client.get(url),
                "post" => client.post(url),
                other => panic!("unexpected method {other}"),
            };
            let mut res = req.send().await.expect("request sent");
            let code = res.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&res.body().await.unwrap()).unwrap_or_default();
            assert_ne!(code, 405, "{method} {path}: {body}");
            assert!(
                !(code == 404
                    && body["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no such route"))),
                "{method} {path} is not routed"
            );
            assert!(code < 500, "{method} {path} without a body: {code} {body}");
            assert!(
                op["responses"][code.to_string()].is_object(),
                "{method} {path} answered {code}, which it does not declare: {body}"
            );
        }
    }
    assert!(operations >= 28, "{operations} operations");

    // Successes declared as what they are: the chaos hooks accept (202) what they inject.
    grant(&app, "docs").await;
    let signal = serde_json::json!({"metric": "cpu", "value": 1});
    assert_eq!(
        app.post_json("/v1/tenants/docs/signals", &signal).await.0,
        200
    );
    for (path, url, body) in [
        (
            "/v1/chaos/governors/crash",
            "/v1/chaos/governors/crash",
            serde_json::json!({"fraction": 0}),
        ),
        (
            "/v1/chaos/ledger",
            "/v1/chaos/ledger",
            serde_json::json!({"stall_ms": 0}),
        ),
        (
            "/v1/chaos/governors/{tenant}/crash",
            "/v1/chaos/governors/docs/crash",
            serde_json::Value::Null,
        ),
        (
            "/v1/chaos/actors/{child}/crash",
            "/v1/chaos/actors/observer/crash",
            serde_json::Value::Null,
        ),
    ] {
        let (code, answer) = app.post_json(url, &body).await;
        assert!((200..300).contains(&code), "{url}: {code} {answer}");
        assert!(
            paths[path]["post"]["responses"][code.to_string()].is_object(),
            "POST {path} answered {code}, which it does not declare"
        );
    }
}

#[actix_web::test]
async fn observer_serves_its_page_and_the_series_its_script_reads() {
    let app = spawn_app(|_| {}).await;
    let mut res = awc::Client::default()
        .get(app.url("/observer"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("connect-src 'self'"));
    let page = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for source in [
        "/health",
        "/metrics",
        "/v1/supervision?limit=50",
        "/v1/supervision/events",
        "/v1/ledger/audit",
    ] {
        assert!(
            page.contains(&format!("\"{source}\"")),
            "the page reads {source}"
        );
    }
    assert!(
        !page.contains("innerHTML"),
        "data reaches the page only as text"
    );

    // What the script parses: governors by state and the supervision tree's JSON.
    grant(&app, "observed").await;
    let (s, _) = app
        .post_json(
            "/v1/tenants/observed/signals",
            &serde_json::json!({"metric": "cpu", "value": 10}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tai_governor_state{state=\"stable\"} ")),
        "{metrics}"
    );
    let (s, tree) = app.get_json("/v1/supervision?limit=50").await;
    assert_eq!(s, 200);
    for key in [
        "name",
        "strategy",
        "intensity",
        "period_ms",
        "counts",
        "children",
    ] {
        assert!(!tree[key].is_null(), "the tree has {key}");
    }
    let child = &tree["children"][0];
    for key in ["id", "kind", "state", "restarts", "last_exit"] {
        assert!(child.get(key).is_some(), "a child has {key}");
    }
    let (s, audit) = app.get_json("/v1/ledger/audit").await;
    assert_eq!(s, 200);
    for key in [
        "enabled",
        "running",
        "last_pass",
        "interval_secs",
        "anchored_chains",
        "broken_total",
        "broken",
    ] {
        assert!(audit.get(key).is_some(), "the audit has {key}");
    }
}

/// The bash block of README.md that follows `heading`, run by bash as written against the real
/// binary, with `set -e`, after `cargo run --release` (and `--`) became this test's build of
/// the binary, `localhost:8080` a free port, and `replaced` pairs; `then` runs after it. Bash's
/// output, once it has exited 0 within two minutes (the blocks wait for readiness without end,
/// as a newcomer's terminal may).
fn run_readme_block(heading: &str, replaced: &[(&str, &str)], then: &str) -> String {
    let readme = include_str!("../../README.md");
    let opening = format!("{heading}\n\n```bash\n");
    let start = readme.find(&opening).expect("the block") + opening.len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let port = free_port();
    let mut script = block
        .replace("cargo run --release --", "\"$TAI_BIN\"")
        .replace("cargo run --release", "\"$TAI_BIN\"")
        .replace("localhost:8080", &format!("localhost:{port}"));
    for (from, to) in replaced {
        assert!(script.contains(from), "{from} in {script}");
        script = script.replace(from, to);
    }
    assert!(!script.contains("cargo"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("timeout")
        // A block that fails part way leaves no service behind (timeout signals the group).
        .args([
            "120",
            "bash",
            "-c",
            &format!("set -e\ntrap 'kill %1 2>/dev/null || true' EXIT\n{script}\n{then}"),
        ])
        .current_dir(dir.path())
        .env("TAI_BIN", env!("CARGO_BIN_EXE_tai-autonomics"))
        .env("PORT", port.to_string())
        .env("TAI_LEDGER__SQLITE_PATH", dir.path().join("ledger.db"))
        .env("TAI_LOG__LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// README's "Try it" block: a newcomer grants a tenant, sends signals, watches the state and
/// the receipts, verifies them three ways and stops the service.
#[test]
fn the_readme_try_it_block_runs_as_written() {
    let stdout = run_readme_block("Try it:", &[], "wait %1");
    for shown in [
        r#""status":"active""#,
        r#""state":"stable""#,
        r#""state":"warning""#,
        r#""event_type":"action_started""#,
        r#""structuredContent":{"#,
        r#""tenants":[{"active":true,"head_seq":1,"#,
        r#""valid":true"#,
        "\"children\"",
    ] {
        assert!(stdout.contains(shown), "{shown} in\n{stdout}");
    }
}

/// README's backup block: the running service's ledger copied and the copy verified, then,
/// once the service has stopped, the copy restored in the ledger's place against the heads
/// the backup printed.
#[test]
fn the_readme_backup_block_runs_as_written() {
    let stdout = run_readme_block(
        "The SQLite ledger is backed up while the service runs, without stopping it:",
        &[],
        "cat backups/*.heads.jsonl",
    );
    assert!(
        stdout.contains(r#"{"backup":"backups/ledger-"#) && stdout.contains(r#""bytes":"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"{"bytes":"#)
            && stdout.contains(r#""restored":"backups/ledger-"#)
            && stdout.contains(r#"ledger.db.replaced-"#),
        "{stdout}"
    );
}

/// README's Pub/Sub block, on the emulator this test run has (`PUBSUB_EMULATOR_HOST`) in a
/// project of its own: a message published to the topic is pulled, decided and recorded.
#[test]
fn the_readme_pubsub_block_runs_as_written() {
    assert!(
        std::env::var("PUBSUB_EMULATOR_HOST").is_ok(),
        "PUBSUB_EMULATOR_HOST is not set: run tools/test.sh, or `source tools/emulators.sh && emulators_start`"
    );
    let project = format!("readme-{}", std::process::id());
    let stdout = run_readme_block(
        "Run it against the emulator with one topic and one subscription:",
        &[
            ("source tools/emulators.sh && emulators_start", ":"),
            ("demo", &project),
        ],
        "kill -TERM %1\nwait %1",
    );
    assert!(stdout.contains(r#""acked":1"#), "{stdout}");
    let id_line = stdout
        .lines()
        .find(|l| l.starts_with('"') && l.trim_matches('"').bytes().all(|b| b.is_ascii_digit()));
    assert!(id_line.is_some(), "a message id in\n{stdout}");
}
