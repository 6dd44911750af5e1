//! The real binary: configuration errors exit 78, SIGTERM (and SIGHUP, unless ignored at
//! start) drains and exits 0 within 10 s, a root supervisor that gives up takes the process
//! down with it (non-zero) to be restarted, refusals that come by the hundred are logged once
//! a second, not once each, the open-file limit is raised, and the ledger opened is logged.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn blocking_get(url: &str) -> Option<u16> {
    blocking_request("GET", url, "")
}

/// POSTs `{}`.
fn blocking_post(url: &str) -> Option<u16> {
    blocking_request("POST", url, "{}")
}

/// A tiny HTTP/1.1 request over std, so these tests need no async runtime of their own: the
/// answer's status, or `None` without one. A non-empty `body` goes as JSON.
fn blocking_request(method: &str, url: &str, body: &str) -> Option<u16> {
    blocking_request_with(method, url, "", body)
}

/// [`blocking_request`] with more header lines (each ending in `\r\n`).
/// `GET url` on a connection of its own: the status and the body.
fn blocking_get_body(url: &str) -> (Option<u16>, String) {
    let answer = blocking_exchange("GET", url, "", "").unwrap_or_default();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());
    let body = (answer.split_once("\r\n\r\n")).map_or("", |(_, b)| b);
    (status, body.to_owned())
}

fn blocking_request_with(method: &str, url: &str, headers: &str, body: &str) -> Option<u16> {
    let answer = blocking_exchange(method, url, headers, body)?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// One request on a connection of its own (closed after the answer): the whole answer.
fn blocking_exchange(method: &str, url: &str, headers: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let (host, path) = addr
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((addr, "/".into()));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let json = match body {
        "" => String::new(),
        b => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{json}{headers}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    Some(buf)
}

/// One keep-alive GET on `s`: the answer's head and as much of its body as arrived within
/// half a second (the connection stays open unless the server closes it).
fn exchange(s: &mut std::net::TcpStream, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_bad_value_stops_startup_with_exit_code_78_and_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("http.port") && err.contains("\"abc\"") && err.contains("PORT"),
        "{err}"
    );
}

#[test]
fn token_digest_prints_the_digest_auth_tokens_want_and_without_a_token_is_a_usage_error() {
    let digest = |arg: Option<&str>, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"));
        c.arg("token-digest").env_remove("TAI_TOKEN");
        if let Some(a) = arg {
            c.arg(a);
        }
        if let Some(e) = env {
            c.env("TAI_TOKEN", e);
        }
        c.output().unwrap()
    };
    let want = format!("{}\n", tai_autonomics::auth::token_digest("ops-token"));
    for out in [
        digest(Some("ops-token"), None),
        digest(None, Some("ops-token")),
    ] {
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    let none = digest(None, None);
    assert_eq!(none.status.code(), Some(64), "EX_USAGE");
    assert!(String::from_utf8_lossy(&none.stderr).contains("give the token"));
}

#[test]
fn the_config_command_prints_the_effective_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("config")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PORT", "9999")
        .env("TAI_PROFILE", "cloud")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["http"]["port"].as_u64(),
            v["http"]["host"].as_str(),
            v["profile"].as_str()
        ),
        (Some(9999), Some("0.0.0.0"), Some("cloud"))
    );
}

#[test]
fn sigterm_turns_readiness_503_drains_and_exits_0_within_10_seconds() {
    let mut bin = start_binary(&[("TAI_HTTP__DRAIN_DELAY_MS", "1500")]);
    assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    // A keep-alive connection opened before the signal.
    let url = bin.url("/health/live");
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut kept = std::net::TcpStream::connect(host).unwrap();
    let first = exchange(&mut kept, host, "/health/live");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let t0 = Instant::now();
    bin.signal("TERM");
    // Readiness flips at once and stays 503 for the drain delay; new work is refused with 503.
    let mut saw_503 = false;
    while t0.elapsed() < Duration::from_millis(1200) {
        match blocking_get(&bin.url("/health/ready")) {
            Some(503) => {
                saw_503 = true;
                assert_eq!(
                    blocking_get(&bin.url("/v1/supervision")),
                    Some(503),
                    "new work is refused while draining"
                );
                break;
            }
            Some(200) => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("unexpected readiness answer during drain: {other:?}"),
        }
    }
    assert!(saw_503, "readiness answered 503 during the drain");
    // While draining, an answer on a kept connection closes it: the client's next request goes
    // on a new connection, never on one the server is about to close.
    let during = exchange(&mut kept, host, "/v1/supervision");
    assert!(during.starts_with("HTTP/1.1 503"), "{during}");
    assert!(
        during
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{during}"
    );
    assert_eq!(
        bin.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exit 0 within 10 s"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigint_stops_the_service_the_same_way() {
    let mut bin = start_binary(&[("TAI_HTTP__DRAIN_DELAY_MS", "0")]);
    assert_eq!(blocking_get(&bin.url("/health")), Some(200));
    bin.signal("INT");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_root_supervisor_that_gives_up_stops_the_process_non_zero_so_it_is_restarted() {
    // Arrange: the root allows one restart in its period.
    let mut bin = start_binary(&[
        ("TAI_CHAOS__ENABLED", "true"),
        ("TAI_SUPERVISION__ROOT_INTENSITY", "1"),
    ]);
    assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    let crash = bin.url("/v1/chaos/actors/mcp/crash");

    // Act: the first crash is restarted; the second is one too many.
    assert_eq!(blocking_post(&crash), Some(202));
    let t0 = Instant::now();
    loop {
        // Wait until the MCP registry runs again, so the second crash reaches it.
        if blocking_get(&bin.url("/mcp/tools")) == Some(200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the registry came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    blocking_post(&crash);

    // Assert: the process does not linger with a dead tree (liveness would keep it so): it
    // exits non-zero, at once.
    let code = bin.wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}, expected a failure"
    );
}

#[test]
fn refusals_that_come_by_the_hundred_are_logged_once_a_second_with_the_count_left_out() {
    // Arrange: a tenant with a governor, and a ledger that fails every commit for a while,
    // so every signal is refused with 503 `unavailable` (the service's own back-pressure).
    let bin = start_binary(&[("TAI_CHAOS__ENABLED", "true")]);
    let grant = r#"{"tenant_id":"loud","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(
        blocking_request("POST", &bin.url("/marketplace"), grant),
        Some(200)
    );
    let signals = bin.url("/v1/tenants/loud/signals");
    let signal = r#"{"metric":"cpu_utilization","value":42.5}"#;
    assert_eq!(blocking_request("POST", &signals, signal), Some(200));
    let chaos = bin.url("/v1/chaos/ledger");
    assert_eq!(
        blocking_request("POST", &chaos, r#"{"fail_ms":20000}"#),
        Some(202)
    );
    let now_secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let burst = |n: usize| {
        for _ in 0..n {
            assert_eq!(blocking_request("POST", &signals, signal), Some(503));
        }
    };

    // Act: two bursts of 100 refusals, the second in a later second of the clock.
    let t0 = Instant::now();
    burst(100);
    let first_ended = now_secs();
    while now_secs() == first_ended {
        std::thread::sleep(Duration::from_millis(20));
    }
    burst(100);
    let seconds = t0.elapsed().as_secs() + 2;

    // Assert: a handful of lines, not 200; each names its code, and the second burst's first
    // line counts what the first burst left out.
    let refusal_lines = || {
        let lines = bin.warnings.lock().unwrap().clone();
        lines
            .into_iter()
            .filter(|l| (l["message"].as_str()).is_some_and(|m| m.starts_with("request failed")))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = refusal_lines();
        let told: u64 = lines
            .iter()
            .map(|l| 1 + l["suppressed"].as_u64().unwrap_or(0))
            .sum();
        if told > 100 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        lines
            .iter()
            .all(|l| l["code"] == "unavailable" && l["status"] == 503),
        "{lines:?}"
    );
    // Each names its request, in its fields and in its message (a listing of messages alone,
    // as the operations guide's daily review prints, must say what failed).
    for l in &lines {
        assert_eq!(
            (&l["method"], &l["route"], &l["path"], &l["message"]),
            (
                &serde_json::json!("POST"),
                &serde_json::json!("/v1/tenants/{tenant}/signals"),
                &serde_json::json!("/v1/tenants/loud/signals"),
                &serde_json::json!(
                    "request failed: POST /v1/tenants/loud/signals: 503 unavailable"
                )
            ),
            "{l}"
        );
    }
    let told: u64 = lines
        .iter()
        .map(|l| 1 + l["suppressed"].as_u64().unwrap())
        .sum();
    assert!(
        (2..=seconds as usize).contains(&lines.len()),
        "{} lines in {seconds} s: {lines:?}",
        lines.len()
    );
    assert!(
        (101..=200).contains(&told),
        "the lines account for {told} refusals"
    );
    // The receipt writer's failed batches (each refusal's) are told the same way.
    let batches = bin.warnings.lock().unwrap().clone();
    let batches: Vec<_> = batches
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("ledger batch failed")
        })
        .collect();
    assert!(
        (1..=seconds as usize).contains(&batches.len()),
        "{} lines for failed batches in {seconds} s",
        batches.len()
    );
}

#[test]
fn refused_push_tokens_are_logged_once_a_second_with_the_count_left_out() {
    // Arrange: push verification on; anyone can reach `POST /pubsub`.
    let jwks = keys_dir().join("jwks.json").display().to_string();
    let bin = start_binary(&[
        ("TAI_PUBSUB__PUSH__VERIFY", "true"),
        ("TAI_PUBSUB__PUSH__AUDIENCE", "https://tai.example/pubsub"),
        ("TAI_PUBSUB__PUSH__JWKS_FILE", jwks.as_str()),
    ]);
    let envelope = r#"{"message":{"data":"e30=","messageId":"m-1"},"subscription":"s"}"#;

    // Act: 100 pushes with a token that is no JWT at all.
    let t0 = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            blocking_request_with(
                "POST",
                &bin.url("/pubsub"),
                "Authorization: Bearer not-a-token\r\n",
                envelope
            ),
            Some(401)
        );
    }
    let seconds = t0.elapsed().as_secs() as usize + 2;

    // Assert: a line a second at most, the first of them written.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<_> = (bin.warnings.lock().unwrap().iter())
            .filter(|l| l["message"] == "pub/sub push refused")
            .cloned()
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        (1..=seconds).contains(&lines.len()),
        "{} lines for 100 refused pushes in {seconds} s",
        lines.len()
    );
}

#[actix_web::test]
async fn expiries_the_ledger_refuses_are_logged_once_a_second_and_recorded_once_it_is_back() {
    // Arrange: thirty tenants whose entitlements expire in six seconds (time enough to set
    // them up on a busy machine), each with a running governor that will find its expiry due.
    let bin = start_binary(&[("TAI_CHAOS__ENABLED", "true")]);
    let client = awc::Client::default();
    let tenants: Vec<String> = (0..30).map(|i| format!("lapse-{i}")).collect();
    let expires = tai_autonomics::clock::now_ms() + 6000;
    for t in &tenants {
        let grant = serde_json::json!({"tenant_id": t, "entitlement_id": "e", "action": "grant",
            "expires_at": tai_autonomics::clock::rfc3339_millis(expires)});
        let res = client.post(bin.url("/marketplace")).send_json(&grant).await;
        assert_eq!(res.expect("answered").status(), 200);
        let signal = serde_json::json!({"metric": "cpu_utilization", "value": 42.5});
        let res = (client.post(bin.url(&format!("/v1/tenants/{t}/signals"))))
            .send_json(&signal)
            .await;
        assert_eq!(res.expect("answered").status(), 200);
    }
    assert!(tai_autonomics::clock::now_ms() < expires, "set up in time");

    // Act: the ledger fails every commit from now until three seconds past the expiries, so
    // each governor tries to record its expiry once a second, three times or more.
    let fail_ms = expires + 3000 - tai_autonomics::clock::now_ms();
    let res = (client.post(bin.url("/v1/chaos/ledger")))
        .send_json(&serde_json::json!({ "fail_ms": fail_ms }))
        .await;
    assert_eq!(res.expect("answered").status(), 202);
    let t0 = Instant::now();

    // Assert: every expiry is recorded once the ledger is back (each governor `refusing`)...
    for t in &tenants {
        let url = bin.url(&format!("/v1/governors/{t}"));
        let view = eventually(
            "the expiry is recorded",
            Duration::from_secs(30),
            || async {
                let mut res = client.get(&url).send().await.ok()?;
                let v: serde_json::Value = res.json().await.ok()?;
                (v["state"] == "refusing").then_some(v)
            },
        )
        .await;
        assert_eq!(view["entitlement_active"], false, "{t}: {view}");
    }
    // ... and the tries the ledger refused were logged once a second, not once a try (ninety
    // and more).
    let seconds = t0.elapsed().as_secs() as usize + 2;
    let lines: Vec<_> = (bin.warnings.lock().unwrap().iter())
        .filter(|l| l["message"] == "could not record an expiry; trying again in a second")
        .cloned()
        .collect();
    assert!(
        (1..=seconds).contains(&lines.len()),
        "{} lines in {seconds} s",
        lines.len()
    );
}

/// Every variable the binary or gcloud's look-up could take a project from.
const PROJECT_VARIABLES: [&str; 6] = [
    "FIRESTORE_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GCP_PROJECT",
    "PROJECT_ID",
    "GCP_PROJECT_ID",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// A stand-in for Cloud Run's metadata server that names `project` to every caller; its
/// address (`host:port`).
fn metadata_server(project: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Type: application/text\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{project}",
                project.len()
            );
        }
    });
    addr
}

#[test]
fn the_cloud_profile_keeps_receipts_in_firestore_in_the_project_the_metadata_server_names() {
    // Arrange: the cloud profile with no project anywhere but the metadata server.
    let emulator = std::env::var("FIRESTORE_EMULATOR_HOST")
        .expect("run through tools/test.sh, which starts the Firestore emulator");
    let project = "meta-project";
    let metadata = metadata_server(project);
    let dir = tempfile::tempdir().unwrap();
    let bin = start_binary_with(
        dir.path(),
        &[
            ("TAI_PROFILE", "cloud"),
            ("GCE_METADATA_HOST", metadata.as_str()),
        ],
        &PROJECT_VARIABLES,
    );

    // Act: a tenant granted through the instance.
    let tenant = format!(
        "cloud-{}-{}",
        std::process::id(),
        tai_autonomics::clock::now_ms()
    );
    let grant = format!(r#"{{"tenant_id":"{tenant}","entitlement_id":"e","action":"grant"}}"#);
    assert_eq!(
        blocking_request("POST", &bin.url("/marketplace"), &grant),
        Some(200)
    );

    // Assert: its document is in that project's Firestore, and no SQLite file was made.
    let doc = format!(
        "http://{emulator}/v1/projects/{project}/databases/(default)/documents/tenants/{tenant}"
    );
    assert_eq!(blocking_get(&doc), Some(200), "{doc}");
    assert!(
        !dir.path().join("ledger.db").exists(),
        "no embedded ledger beside it"
    );
}

#[test]
fn the_cloud_profile_with_no_project_to_be_found_stops_with_exit_code_78_and_one_line() {
    // The metadata server's address refuses connections: nothing names a project.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"));
    for k in PROJECT_VARIABLES {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_PROFILE", "cloud")
        .env("PORT", "0")
        .env("GCE_METADATA_HOST", &closed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A binary that started serving instead would never exit by itself.
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(78), "exited 78 at once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("firestore.project_id"), "{err}");
}

/// A webhook receiver that answers each action `200 {"status":"completed"}` after `delay`:
/// its URL, and a flag set once an action's POST has arrived.
fn slow_hook(delay: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                seen.store(true, std::sync::atomic::Ordering::Release);
                std::thread::sleep(delay);
                let body = br#"{"status":"completed"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            });
        }
    });
    (url, got)
}

#[test]
fn sigterm_lets_a_webhook_action_in_flight_record_its_outcome_before_the_tree_stops() {
    // The receiver answers 1.5 s after the POST; SIGTERM comes as soon as it has the POST.
    // Before, the governors stopped with the exchange still running: the action stayed in
    // flight in the chain (to time out after a restart) although the receiver completed it.
    let (url, got) = slow_hook(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let mut bin = start_binary_in(
        dir.path(),
        &[
            ("TAI_ACTIONS__EXECUTOR", "webhook"),
            ("TAI_ACTIONS__WEBHOOK_URL", &url),
        ],
    );
    let grant = r#"{"tenant_id":"draining","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(
        blocking_request("POST", &bin.url("/marketplace"), grant),
        Some(200)
    );
    let signal = r#"{"metric":"cpu","value":95}"#;
    let url = bin.url("/v1/tenants/draining/signals");
    assert_eq!(blocking_request("POST", &url, signal), Some(200));
    let t0 = Instant::now();
    while !got.load(std::sync::atomic::Ordering::Acquire) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the webhook got the action"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    bin.signal("TERM");
    assert_eq!(
        bin.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exit 0 within 10 s"
    );
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let events: Vec<String> = conn
        .prepare("SELECT event_type FROM receipts WHERE tenant_id = 'draining' ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events,
        [
            "entitlement_granted",
            "entitlement_verified",
            "action_started",
            "action_completed"
        ]
    );
}

#[test]
fn mcp_requests_leave_no_lines_of_rmcp_at_the_default_level() {
    // Every MCP request over HTTP is an rmcp session of its own: at `info` rmcp wrote three
    // lines for each (its start with the client's capabilities, its input's end, its end),
    // and a warning for each error a client's call got back.
    let bin = start_binary(&[("TAI_CHAOS__ENABLED", "true")]);
    let headers = "Accept: application/json, text/event-stream\r\n";
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"no.such.tool","arguments":{}}}"#,
        r#"[{"jsonrpc":"2.0","id":3,"method":"ping"}]"#,
    ] {
        assert_eq!(
            blocking_request_with("POST", &bin.url("/mcp"), headers, body),
            Some(200),
            "{body}"
        );
    }
    // A line the service writes after them (a chaos hook's warning): once it is counted, every
    // line written before it, the MCP requests' included, has been read.
    assert_eq!(
        blocking_request("POST", &bin.url("/v1/chaos/actors/observer/crash"), "{}"),
        Some(202)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let targets = loop {
        let targets = bin.targets.lock().unwrap().clone();
        if targets.contains_key("tai_autonomics::http::chaos") || Instant::now() > deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        targets.contains_key("tai_autonomics::http::chaos"),
        "{targets:?}"
    );
    assert!(
        !targets.keys().any(|t| t.starts_with("rmcp")),
        "{targets:?}"
    );
}

/// A metadata server that answers the instance id (the only path asked of it here) with `id`,
/// with the `Metadata-Flavor: Google` header when `flavored`.
fn instance_metadata(id: &'static str, flavored: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let asked = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let right = asked.starts_with("get /computemetadata/v1/instance/id ")
                && asked.contains("metadata-flavor: google");
            let (status, body) = if right {
                ("200 OK", id)
            } else {
                ("404 Not Found", "")
            };
            let flavor = if flavored {
                "Metadata-Flavor: Google\r\n"
            } else {
                ""
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{flavor}Content-Type: application/text\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn on_cloud_run_the_node_is_named_after_the_instance_not_the_hostname_all_share() {
    let id = "00f5c1b2e9a4d7c3a1b2c3d4e5f60718293a4b5c6d7e8f90abcd";
    let health_node = |bin: &Binary| {
        let (status, body) = blocking_get_body(&bin.url("/health"));
        assert_eq!(status, Some(200), "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["node"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // On Cloud Run (K_SERVICE set): the last 16 characters of the metadata server's id.
    let metadata = instance_metadata(id, true);
    let bin = start_binary(&[
        ("K_SERVICE", "tai-autonomics"),
        ("GCE_METADATA_HOST", metadata.as_str()),
    ]);
    assert_eq!(health_node(&bin), "tai@4b5c6d7e8f90abcd");
    let grant = r#"{"tenant_id":"named","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(
        blocking_request("POST", &bin.url("/marketplace"), grant),
        Some(200)
    );
    let (_, receipts) = blocking_get_body(&bin.url("/v1/tenants/named/receipts"));
    assert!(
        receipts.contains(r#""node":"tai@4b5c6d7e8f90abcd""#),
        "{receipts}"
    );
    // A configured name is kept; an answer that is not the metadata server's leaves the
    // host's name, and says so.
    let bin = start_binary(&[
        ("K_SERVICE", "tai-autonomics"),
        ("GCE_METADATA_HOST", metadata.as_str()),
        ("NODE_NAME", "tai@mine"),
    ]);
    assert_eq!(health_node(&bin), "tai@mine");
    let impostor = instance_metadata(id, false);
    let bin = start_binary(&[
        ("K_SERVICE", "tai-autonomics"),
        ("GCE_METADATA_HOST", impostor.as_str()),
    ]);
    assert!(!health_node(&bin).contains("8f90abcd"));
    let warned = bin.warnings.lock().unwrap().clone();
    assert!(
        warned.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("instance id could not be read"))),
        "{warned:?}"
    );
    // Elsewhere nothing is asked.
    let bin = start_binary(&[("GCE_METADATA_HOST", metadata.as_str())]);
    assert!(!health_node(&bin).contains("8f90abcd"));
}

/// Started with a soft open-file limit of 256 (below a hard one far higher, as most shells and
/// systemd start a process), the service raises it to the hard limit and serves 400 clients
/// connected at once. Before, those past about 250 waited unanswered: accepting their
/// connections failed with "Too many open files".
#[test]
fn started_with_a_low_open_file_limit_the_service_serves_more_clients_at_once() {
    use std::io::{Read as _, Write as _};
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let hard = hard.expect("the hard open-file limit is finite");
    assert!(
        hard >= 1024,
        "this test needs a hard open-file limit of 1024 or more: {hard}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = start_binary_after(dir.path(), &[], "ulimit -S -n 256");
    let (_, metrics) = blocking_get_body(&bin.url("/metrics"));
    assert_eq!(
        metric(&metrics, "process_max_fds"),
        Some(hard as f64),
        "the soft limit is raised to the hard one"
    );
    let mut clients: Vec<_> = (0..400)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", bin.port)).expect("connects"))
        .collect();
    for c in &mut clients {
        // Less than the 5 s keep-alive after which the first ones would close and free files.
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    let served = (clients.iter_mut())
        .map(|c| {
            let mut head = [0u8; 12];
            c.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
        })
        .filter(|answered| *answered)
        .count();
    assert_eq!(served, 400, "every client connected at once is answered");
}

/// SIGHUP (a closing terminal, a "reload" sent to a service that reads its configuration at
/// start only) drains and stops the service as SIGTERM does. Before, it ended the process at
/// once: no drain, killed by the signal.
#[test]
fn sighup_drains_and_exits_0_as_sigterm_does() {
    let mut bin = start_binary(&[("TAI_HTTP__DRAIN_DELAY_MS", "300")]);
    assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    bin.signal("HUP");
    assert_eq!(
        bin.wait_exit(Duration::from_secs(10)),
        Some(0),
        "drained and exited 0, not killed by the signal"
    );
}

/// Started with SIGHUP ignored (`nohup`), the service leaves it ignored: readiness stays 200
/// after one, and SIGTERM still stops it.
#[test]
fn a_sighup_ignored_at_start_stays_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = start_binary_after(dir.path(), &[], "trap '' HUP");
    assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    bin.signal("HUP");
    // A handled SIGHUP turns readiness 503 at once; watch it for half a second.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(500) {
        assert_eq!(blocking_get(&bin.url("/health/ready")), Some(200));
    }
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The ledger the service opens is logged as it starts, with its whole path and whether the
/// file is new: the default path is relative, and a service started from another folder makes
/// a new, empty ledger there, which the log then says.
#[test]
fn the_sqlite_ledger_it_opens_is_logged_with_its_whole_path_and_whether_it_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let opened = |bin: &Binary| {
        (bin.first_lines.lock().unwrap().iter())
            .find(|l| l["message"] == "SQLite ledger opened")
            .cloned()
            .expect("the ledger is logged before the service is ready")
    };
    let path = std::fs::canonicalize(dir.path()).unwrap().join("ledger.db");
    let bin = start_binary_in(dir.path(), &[]);
    let first = opened(&bin);
    assert_eq!(first["path"], path.to_str().unwrap(), "{first}");
    assert_eq!(
        (&first["new"], &first["schema"]),
        (&serde_json::json!(true), &serde_json::json!(2)),
        "{first}"
    );
    drop(bin);
    let bin = start_binary_in(dir.path(), &[]);
    let again = opened(&bin);
    assert_eq!(again["new"], false, "{again}");
}
