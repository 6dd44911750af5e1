//! Starting the service for a test and talking to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tai_autonomics::config::Settings;
use tai_autonomics::startup::Application;

pub struct TestApp {
    pub address: String,
    pub client: awc::Client,
    pub state: actix_web::web::Data<tai_autonomics::http::AppState>,
    /// Holds this app's ledger file.
    pub dir: tempfile::TempDir,
}

/// Settings of the local profile with a free port; `adjust` may change anything else.
pub fn settings(adjust: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::load_profile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
    )
    .expect("config/ parses");
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.http.workers = 2;
    adjust(&mut s);
    s
}

/// The real application, in this process, on a free port, with its own SQLite ledger file.
pub async fn spawn_app(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let s = settings(move |s| {
        s.ledger.sqlite_path = path;
        adjust(s);
    });
    let app = Application::build(s).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped(false));
    TestApp {
        address,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish(),
        state,
        dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET → (status, the body as sent).
    pub async fn get_bytes(&self, path: &str) -> (u16, actix_web::web::Bytes) {
        let mut res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let body = res.body().limit(16 << 20).await.expect("body read");
        (res.status().as_u16(), body)
    }

    /// GET → (status, body as JSON or Null).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get_bytes(path).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let (status, body) = self.get_bytes(path).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut res = self
            .client
            .post(self.url(path))
            .send_json(body)
            .await
            .expect("request sent");
        let bytes = res.body().limit(16 << 20).await.expect("body read");
        (
            res.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// `POST path` with an `Idempotency-Key` header → (status, replayed header, body).
pub async fn keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> (u16, bool, serde_json::Value) {
    let mut res = app
        .client
        .post(app.url(path))
        .insert_header(("idempotency-key", key))
        .send_json(&body)
        .await
        .unwrap();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    let body: serde_json::Value = res.json().limit(1 << 20).await.unwrap_or_default();
    (res.status().as_u16(), replayed, body)
}

/// Held by the tests that make or count decisions overtaken by an entitlement change. Metrics
/// are process-wide: nextest runs each test in a process of its own, but `cargo test` (the
/// fallback of `tools/test.sh`) runs them all in one, where a count must not see another test's
/// overtaken decisions.
pub static OVERTAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A project of its own on the Firestore emulator that `tools/test.sh` started (the test fails
/// without one): `prefix`, the process id and the time.
pub fn firestore_project(prefix: &str) -> String {
    assert!(
        std::env::var("FIRESTORE_EMULATOR_HOST").is_ok(),
        "run through tools/test.sh, which starts the Firestore emulator"
    );
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        tai_autonomics::clock::now_ms()
    )
}

/// Settings for an app on the Firestore emulator's `project` (see [`firestore_project`]); two
/// apps given the same project are two instances sharing one ledger.
pub fn on_firestore(project: &str) -> impl FnOnce(&mut Settings) {
    let project = project.to_owned();
    move |s: &mut Settings| {
        s.ledger.backend = tai_autonomics::config::LedgerBackend::Firestore;
        s.firestore.project_id = project;
    }
}

/// The event types of `tenant`'s receipts, in chain order (its first 1,000).
pub async fn events(app: &TestApp, tenant: &str) -> Vec<String> {
    let (_, page) = app
        .get_json(&format!("/v1/tenants/{tenant}/receipts?limit=1000"))
        .await;
    page["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap().to_owned())
        .collect()
}

/// Grants `tenant` the base SKU through `POST /marketplace`.
pub async fn grant(app: &TestApp, tenant: &str) {
    let (s, b) = app
        .post_json(
            "/marketplace",
            &serde_json::json!({"tenant_id": tenant, "entitlement_id": "e", "action": "grant"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Crashes `tenant`'s governor through the chaos hook (the app runs with chaos enabled) and
/// waits until it answers again after `restarts` restarts in all; returns its view then.
pub async fn crash_governor(app: &TestApp, tenant: &str, restarts: u64) -> serde_json::Value {
    let (s, b) = app
        .post_json(
            &format!("/v1/chaos/governors/{tenant}/crash"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let path = format!("/v1/governors/{tenant}");
    eventually("the governor is back", Duration::from_secs(5), || async {
        let (s, v) = app.get_json(&path).await;
        (s == 200 && v["restarts"] == restarts).then_some(v)
    })
    .await
}

/// The test keys (`tests/keys`).
pub fn keys_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// A JWT over `claims`, signed with a test key.
pub fn sign(claims: &serde_json::Value, alg: jsonwebtoken::Algorithm, key_file: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let pem = std::fs::read(keys_dir().join(key_file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_secret(&pem),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

/// Polls `check` every 10 ms until it returns `Some`, or fails the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the first Prometheus sample whose line starts with `series` (name + labels).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The real binary, started with `env`, stdout captured; its port is read from the JSON
/// "tai-autonomics ready" log line.
pub struct Binary {
    pub child: Child,
    pub port: u16,
    /// The warning and error lines it logged (at most the first 10,000).
    pub warnings: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    /// How many lines it logged from each `target`, at any level.
    pub targets: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    /// The first 200 lines it logged, at any level (what it says as it starts).
    pub first_lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

/// Starts the binary with its ledger in a fresh temp dir.
pub fn start_binary(env: &[(&str, &str)]) -> Binary {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    start_binary_in(&dir, env)
}

/// Starts the binary with its ledger file in `dir` (so a test can restart it on the same file).
pub fn start_binary_in(dir: &Path, env: &[(&str, &str)]) -> Binary {
    start_binary_with(dir, env, &[])
}

/// [`start_binary_in`] without the variables `removed` of the test's own environment.
pub fn start_binary_with(dir: &Path, env: &[(&str, &str)], removed: &[&str]) -> Binary {
    start_binary_within(dir, env, removed, Duration::from_secs(20))
}

/// [`start_binary_with`], waiting up to `ready_within` for it to be ready.
pub fn start_binary_within(
    dir: &Path,
    env: &[(&str, &str)],
    removed: &[&str],
    ready_within: Duration,
) -> Binary {
    let cmd = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"));
    spawn_binary(cmd, dir, env, removed, ready_within)
}

/// [`start_binary_in`], with `setup` run by `sh` first in the process that then becomes the
/// binary (`exec`), so what it sets (resource limits, ignored signals) holds for the binary.
pub fn start_binary_after(dir: &Path, env: &[(&str, &str)], setup: &str) -> Binary {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("{setup}\nexec \"$0\""),
        env!("CARGO_BIN_EXE_tai-autonomics"),
    ]);
    spawn_binary(cmd, dir, env, &[], Duration::from_secs(20))
}

fn spawn_binary(
    mut cmd: Command,
    dir: &Path,
    env: &[(&str, &str)],
    removed: &[&str],
    ready_within: Duration,
) -> Binary {
    for k in removed {
        cmd.env_remove(k);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PORT", "0")
        .env("TAI_LOG__FORMAT", "json")
        .env("TAI_LEDGER__SQLITE_PATH", dir.join("ledger.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = warnings.clone();
    let targets = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let counted = targets.clone();
    let first_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let firsts = first_lines.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let target = (line.split_once(r#""target":""#))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(t, _)| t.to_owned())
                .unwrap_or_default();
            *counted.lock().unwrap().entry(target).or_insert(0) += 1;
            {
                let mut firsts = firsts.lock().unwrap();
                if firsts.len() < 200 {
                    firsts.push(serde_json::from_str(&line).unwrap_or_default());
                }
            }
            if line.contains(r#""severity":"WARNING""#) || line.contains(r#""severity":"ERROR""#) {
                let mut kept = kept.lock().unwrap();
                if kept.len() < 10_000 {
                    kept.push(serde_json::from_str(&line).unwrap_or_default());
                }
            }
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "tai-autonomics ready" {
                        let _ = tx.send(v["port"].as_u64().unwrap_or(0) as u16);
                        sent = true;
                    }
                }
            }
        }
    });
    let port = rx
        .recv_timeout(ready_within)
        .expect("the binary logs that it is ready");
    Binary {
        child,
        port,
        warnings,
        targets,
        first_lines,
    }
}

impl Binary {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        let mut res = awc::Client::default()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("/metrics answers");
        String::from_utf8(res.body().await.expect("a body").to_vec()).expect("UTF-8")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "signal {sig} delivered");
    }

    /// Waits up to `within` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real binary with `args` and a configuration whose ledger is on Firestore (a
/// project that is never reached: the commands under test refuse before they connect).
pub fn cli_on_firestore(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__BACKEND", "firestore")
        .env("FIRESTORE_PROJECT_ID", "cli-test")
        .output()
        .unwrap()
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A port free on the loopback interface now (for a server a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One of the emulators (a Java program) started by a test of its own on `port`, so that the
/// test can pause it (`signal("STOP")`), resume it or end it. Ends with the test.
pub struct OwnEmulator {
    child: Option<Child>,
}

impl OwnEmulator {
    /// The Firestore emulator of `TAI_TEST_FIRESTORE_JAR`.
    pub fn firestore(port: u16) -> OwnEmulator {
        let jar = emulator_jar("TAI_TEST_FIRESTORE_JAR");
        OwnEmulator::java(&[
            "-Duser.language=en",
            "-cp",
            &jar,
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start",
            "--host=127.0.0.1",
            &format!("--port={port}"),
        ])
    }

    /// The Pub/Sub emulator of `TAI_TEST_PUBSUB_JAR`.
    pub fn pubsub(port: u16) -> OwnEmulator {
        let jar = emulator_jar("TAI_TEST_PUBSUB_JAR");
        OwnEmulator::java(&["-jar", &jar, "--host=127.0.0.1", &format!("--port={port}")])
    }

    fn java(args: &[&str]) -> OwnEmulator {
        let child = Command::new("java")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java starts the emulator");
        OwnEmulator { child: Some(child) }
    }

    /// Sends `sig` (`STOP`, `CONT`, …) to the running emulator.
    pub fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("the emulator runs");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "signal {sig} delivered to the emulator");
    }

    /// Ends the emulator (resumed first, in case it was paused) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The emulator jar that `tools/emulators.sh` names in `var`.
fn emulator_jar(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run tools/test.sh, or `source tools/emulators.sh && emulators_start`")
    })
}

/// An HTTP server that answers every request with a 200 head announcing a 100-byte JSON body,
/// sends the body's first bytes, then nothing more, holding each connection open. Its address.
pub fn stalling_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"",
            );
            held.push(stream);
        }
    });
    address
}

/// Waits until [`https_hook`]'s server has recorded `n` failed handshakes, then requires that
/// it recorded exactly `n`. The client ends a handshake it refuses by itself; the server's
/// thread records it when it reads the client's alert, which on a busy machine can come after
/// the client's caller has seen the failure.
pub async fn handshakes_failed(failures: &std::sync::Mutex<Vec<String>>, n: usize) {
    eventually(
        "the server saw the handshakes fail",
        Duration::from_secs(10),
        || async { (failures.lock().unwrap().len() >= n).then_some(()) },
    )
    .await;
    let seen = failures.lock().unwrap().clone();
    assert_eq!(seen.len(), n, "{seen:?}");
}

/// An HTTPS server on 127.0.0.1 serving `tests/keys/tls_server.pem` (issued by the test CA,
/// `tls_ca.pem`, for 127.0.0.1): it answers each request `200 {"status":"completed"}` and
/// closes. Its address, and the error of each connection whose handshake failed.
pub fn https_hook() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let dir = keys_dir();
    let certs = CertificateDer::pem_file_iter(dir.join("tls_server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("tls_server_key.pem")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let failures = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
    let seen = failures.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            // The request's head, then as much body as its content-length says.
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            let complete = loop {
                match tls.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        seen.lock().unwrap().push(e.to_string());
                        break false;
                    }
                }
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break true;
                    }
                }
            };
            if !complete {
                continue;
            }
            let body = br#"{"status":"completed"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (address, failures)
}
