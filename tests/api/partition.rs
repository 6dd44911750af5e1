//! The ledger's store going silent, as in a network partition: a Firestore emulator of the
//! test's own, stopped with SIGSTOP (connections stay open, nothing answers). Reads answer 503
//! within seconds instead of holding their requests, without the Firestore client's chatter in
//! the log; governors that cannot read their chains answer 503 and wait for it, restarting
//! nothing; and all answer again once it is back.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// The Firestore emulator of this test's own on `port`, once it answers.
async fn own_firestore(port: u16) -> OwnEmulator {
    let own = OwnEmulator::firestore(port);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(2))
        .finish();
    let url = format!("http://127.0.0.1:{port}/");
    eventually("the emulator answers", Duration::from_secs(90), || async {
        let res = client.get(&url).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    own
}

/// The binary on an emulator of the test's own (with `env` besides), and a client that waits
/// longer than any answer should take, so that a held request shows as what it is.
async fn on_own_emulator(env: &[(&str, &str)]) -> (OwnEmulator, Binary, awc::Client) {
    let port = free_port();
    let emulator = own_firestore(port).await;
    let host = format!("127.0.0.1:{port}");
    let mut all = vec![
        ("TAI_LEDGER__BACKEND", "firestore"),
        ("FIRESTORE_EMULATOR_HOST", host.as_str()),
        ("FIRESTORE_PROJECT_ID", "silent"),
    ];
    all.extend_from_slice(env);
    let bin = start_binary(&all);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    (emulator, bin, client)
}

/// The lines `bin` logged at warning or above with `message`, from targets starting `target`.
fn lines(bin: &Binary, target: &str, message: &str) -> Vec<serde_json::Value> {
    (bin.warnings.lock().unwrap().iter())
        .filter(|l| {
            l["target"].as_str().unwrap_or_default().starts_with(target)
                && l["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(message)
        })
        .cloned()
        .collect()
}

#[actix_web::test]
async fn reads_of_a_silent_firestore_answer_503_within_seconds_and_come_back_with_it() {
    // Arrange: the binary on an emulator of this test's own, a tenant with a receipt or three.
    let (emulator, bin, client) = on_own_emulator(&[]).await;
    let post = |path: &str, body: serde_json::Value| {
        let req = client.post(bin.url(path));
        async move {
            let mut res = req.send_json(&body).await.expect("answered");
            let v: serde_json::Value = res.json().await.unwrap_or_default();
            (res.status().as_u16(), v)
        }
    };
    let get = |path: String| {
        let req = client.get(bin.url(&path));
        async move {
            match req.send().await {
                Ok(mut res) => {
                    let v: serde_json::Value = res.json().limit(1 << 20).await.unwrap_or_default();
                    (Some(res.status().as_u16()), v)
                }
                Err(e) => (None, serde_json::json!(e.to_string())),
            }
        }
    };
    let grant = serde_json::json!({"tenant_id": "quiet", "entitlement_id": "e", "action": "grant"});
    assert_eq!(post("/marketplace", grant).await.0, 200);
    let (s, signal) = post(
        "/v1/tenants/quiet/signals",
        serde_json::json!({"metric": "cpu_utilization", "value": 42.5}),
    )
    .await;
    assert_eq!(s, 200, "{signal}");
    let receipt_id = signal["receipt"]["receipt_id"].as_str().unwrap().to_owned();

    // Act: the store goes silent.
    emulator.signal("STOP");

    // Assert: every read answers 503 `unavailable`, within seconds.
    for path in [
        "/v1/tenants/quiet/receipts/verify".to_owned(),
        "/v1/tenants/quiet/receipts".to_owned(),
        format!("/v1/receipts/{receipt_id}"),
        "/v1/tenants/quiet/entitlement".to_owned(),
    ] {
        let t0 = Instant::now();
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, Some(503), "{path}: {body}");
        assert_eq!(body["code"], "unavailable", "{path}: {body}");
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{path}: {:?}",
            t0.elapsed()
        );
    }

    // The Firestore client's warning for each attempt it sends again stays out of the log at
    // the default level: the service's own lines tell each outcome.
    for target in ["firestore", "gcloud_sdk"] {
        let chatter = lines(&bin, target, "");
        assert!(
            chatter.is_empty(),
            "{} lines: {:?}",
            chatter.len(),
            chatter.first()
        );
    }

    // And once the store answers again, so does the service, with the chain whole.
    emulator.signal("CONT");
    let report = eventually("verify answers again", Duration::from_secs(30), || async {
        let (status, v) = get("/v1/tenants/quiet/receipts/verify".into()).await;
        (status == Some(200)).then_some(v)
    })
    .await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        report["head_seq"], 3,
        "grant, entitlement_verified, the signal: {report}"
    );
}

/// The value of `name` in the binary's metrics (0 when it has none yet).
async fn read_metric(client: &awc::Client, bin: &Binary, name: &str) -> f64 {
    let mut res = client
        .get(bin.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let text = String::from_utf8(res.body().await.expect("body").to_vec()).expect("text");
    metric(&text, name).unwrap_or(0.0)
}

#[actix_web::test]
async fn governors_that_cannot_read_their_chain_answer_503_restart_nothing_and_come_back_with_the_store(
) {
    // Arrange: twenty tenants granted, none with a governor running yet, and supervisors that
    // give up early: the governors' after ten restarts, the root after one of theirs. A store
    // that is away is not a crash, and must not end the process however long it lasts.
    let (emulator, bin, client) = on_own_emulator(&[
        ("TAI_GOVERNANCE__INTENSITY", "10"),
        ("TAI_SUPERVISION__ROOT_INTENSITY", "1"),
    ])
    .await;
    let tenants: Vec<String> = (0..20).map(|i| format!("start-{i}")).collect();
    for t in &tenants {
        let grant = serde_json::json!({"tenant_id": t, "entitlement_id": "e", "action": "grant"});
        let res = client.post(bin.url("/marketplace")).send_json(&grant).await;
        assert_eq!(res.expect("answered").status().as_u16(), 200);
    }
    let signal_all = || {
        futures_util::future::join_all(tenants.iter().map(|t| {
            let req = client.post(bin.url(&format!("/v1/tenants/{t}/signals")));
            async move {
                let body = serde_json::json!({"metric": "cpu_utilization", "value": 42.5});
                let mut res = req.send_json(&body).await.ok()?;
                let v: serde_json::Value = res.json().await.unwrap_or_default();
                Some((res.status().as_u16(), v))
            }
        }))
    };

    // Act: the store goes silent, and a signal for each tenant starts its governor, whose
    // rebuild cannot read its chain; then a second round finds the governors waiting.
    emulator.signal("STOP");
    let t0 = Instant::now();
    let first = signal_all().await;
    let second = signal_all().await;

    // Assert: every caller gets 503 `unavailable`, no governor is restarted, each waits to
    // read its chain again, and the log tells the failed reads once a second.
    for answer in first.iter().chain(&second) {
        let (status, body) = answer.as_ref().expect("answered");
        assert_eq!(
            (*status, body["code"].as_str()),
            (503, Some("unavailable")),
            "{body}"
        );
    }
    let restarts = r#"tai_supervisor_restarts_total{supervisor="governance"}"#;
    assert_eq!(read_metric(&client, &bin, restarts).await, 0.0);
    assert_eq!(
        read_metric(&client, &bin, "tai_governors_unread").await,
        20.0
    );
    let booting = r#"tai_governor_state{state="boot"}"#;
    assert_eq!(read_metric(&client, &bin, booting).await, 0.0);
    let seconds = t0.elapsed().as_secs() as usize + 2;
    let found = lines(&bin, "tai_autonomics", "governor could not rebuild");
    assert!(
        !found.is_empty() && found.len() <= seconds,
        "{} lines in {seconds} s",
        found.len()
    );
    // The supervisors crate's own lines repeat the tree's event sink's: left out.
    assert!(lines(&bin, "supervisors", "").is_empty());

    // And once the store answers again, every governor reads its chain and decides, with no
    // restart on the way.
    emulator.signal("CONT");
    for t in &tenants {
        let path = format!("/v1/tenants/{t}/signals");
        let decided = eventually("the signal is decided", Duration::from_secs(30), || async {
            let body = serde_json::json!({"metric": "cpu_utilization", "value": 42.5});
            let mut res = client.post(bin.url(&path)).send_json(&body).await.ok()?;
            let v: serde_json::Value = res.json().await.ok()?;
            (res.status() == 200).then_some(v)
        })
        .await;
        assert_eq!(decided["state"], "stable", "{t}: {decided}");
    }
    assert_eq!(
        read_metric(&client, &bin, "tai_governors_unread").await,
        0.0
    );
    assert_eq!(read_metric(&client, &bin, restarts).await, 0.0);
}

#[actix_web::test]
async fn a_start_before_firestore_answers_waits_for_it_instead_of_exiting() {
    // Nothing listens on the port yet: the binary's first attempts fail, and it tries again
    // until the emulator (started after it) answers.
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let starting = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap().keep();
        let env = [
            ("TAI_LEDGER__BACKEND", "firestore"),
            ("FIRESTORE_EMULATOR_HOST", host.as_str()),
            ("FIRESTORE_PROJECT_ID", "late-start"),
        ];
        start_binary_within(&dir, &env, &[], Duration::from_secs(120))
    });
    let _emulator = own_firestore(port).await;
    let bin = starting.join().expect("the binary became ready");
    let waited = bin
        .warnings
        .lock()
        .unwrap()
        .iter()
        .any(|w| w["message"] == "Firestore is not reachable yet; trying again");
    assert!(waited, "it tried again: {:?}", bin.warnings.lock().unwrap());
    let client = awc::Client::default();
    let mut res = client
        .post(bin.url("/marketplace"))
        .send_json(
            &serde_json::json!({"tenant_id": "late", "entitlement_id": "e", "action": "grant"}),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.body().await);
}
