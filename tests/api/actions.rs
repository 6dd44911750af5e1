//! Actions with the webhook executor against a local test server: postponement and ordered
//! replay, the queue bound, completion and failure callbacks, the state timeout, cancellation on
//! entitlement loss; and stop-the-line when the ledger fails.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::*;

/// A webhook receiver: records every body, answers with the configured status.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    signed: Arc<Mutex<Vec<Seen>>>,
    /// Each request's `Authorization` header.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

/// A request's `X-Tai-Timestamp` and `X-Tai-Signature` headers and its exact body.
type Seen = (Option<String>, Option<String>, Vec<u8>);

fn hook(status: u16) -> Hook {
    hook_answering(status, json!({"status": "completed"}))
}

/// A webhook receiver that answers with `answer`.
fn hook_answering(status: u16, answer: Value) -> Hook {
    let answer = Arc::new(answer);
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let signed: Arc<Mutex<Vec<_>>> = Arc::default();
    let authorizations: Arc<Mutex<Vec<_>>> = Arc::default();
    let code = Arc::new(AtomicU16::new(status));
    let (b, c, sg, au) = (
        bodies.clone(),
        code.clone(),
        signed.clone(),
        authorizations.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let (b, c, a, sg, au) = (b.clone(), c.clone(), answer.clone(), sg.clone(), au.clone());
        App::new().route(
            "/actions",
            web::post().to(move |req: actix_web::HttpRequest, raw: web::Bytes| {
                let (b, c, a, sg, au) = (b.clone(), c.clone(), a.clone(), sg.clone(), au.clone());
                async move {
                    let header = |name: &str| {
                        (req.headers().get(name)).map(|v| v.to_str().unwrap().to_owned())
                    };
                    let seen = (
                        header("x-tai-timestamp"),
                        header("x-tai-signature"),
                        raw.to_vec(),
                    );
                    sg.lock().unwrap().push(seen);
                    au.lock().unwrap().push(header("authorization"));
                    b.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&raw).unwrap());
                    let status =
                        actix_web::http::StatusCode::from_u16(c.load(Ordering::Relaxed)).unwrap();
                    HttpResponse::build(status).json(&*a)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    Hook {
        url,
        bodies,
        signed,
        authorizations,
    }
}

async fn app_with_hook(hook: &Hook, timeout_ms: u64) -> TestApp {
    let url = hook.url.clone();
    let app = spawn_app(move |s| {
        s.actions.executor = "webhook".into();
        s.actions.webhook_url = url;
        s.governance.postpone_capacity = 2;
        s.governance.action_timeout_ms = timeout_ms;
        s.chaos.enabled = true;
    })
    .await;
    let (s, b) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "t", "entitlement_id": "e", "action": "grant"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    app
}

/// An app whose webhook executor POSTs to `url` (`tweak` adjusts its settings further), with
/// the tenant `t` granted.
async fn app_posting_to(
    url: String,
    tweak: impl Fn(&mut tai_autonomics::config::Settings) + 'static,
) -> TestApp {
    let app = spawn_app(move |s| {
        s.actions.executor = "webhook".into();
        s.actions.webhook_url = url.clone();
        tweak(s);
    })
    .await;
    grant(&app, "t").await;
    app
}

async fn signal(app: &TestApp, value: f64) -> (u16, Value) {
    app.post_json(
        "/v1/tenants/t/signals",
        &json!({"metric": "cpu", "value": value}),
    )
    .await
}

/// Sends a signal of `value` (at or above the action threshold) and returns the id of the
/// action it started.
async fn start_action(app: &TestApp, value: f64) -> String {
    let (s, b) = signal(app, value).await;
    assert_eq!((s, &b["state"]), (200, &json!("intervening")), "{b}");
    b["receipt"]["metadata"]["action"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the webhook has been told that `action_id` was cancelled for `reason`.
async fn told_of_cancellation(hook: &Hook, action_id: &str, reason: &str) {
    let expected =
        json!({"action_id": action_id, "tenant_id": "t", "event": "cancelled", "reason": reason});
    eventually("the webhook is told", Duration::from_secs(5), || async {
        hook.bodies
            .lock()
            .unwrap()
            .contains(&expected)
            .then_some(())
    })
    .await;
}

/// Waits until the chain of `t` ends with `action_timeout` (reading the receipts, which asks
/// no governor anything), and checks that it holds one.
async fn timed_out_once(app: &TestApp, within: Duration) {
    let seen = eventually("the timeout is recorded", within, || async {
        let seen = events(app, "t").await;
        (seen.last().map(String::as_str) == Some("action_timeout")).then_some(seen)
    })
    .await;
    assert_eq!(
        seen.iter().filter(|e| *e == "action_timeout").count(),
        1,
        "{seen:?}"
    );
}

/// Completes `tenant`'s action `action_id` through the webhook callback.
async fn complete(app: &TestApp, tenant: &str, action_id: &str) -> (u16, Value) {
    app.post_json(
        &format!("/v1/governors/{tenant}/actions/{action_id}/complete"),
        &json!({}),
    )
    .await
}

/// Whether `tenant`'s chain verifies.
async fn chain_verifies(app: &TestApp, tenant: &str) -> bool {
    let (_, report) = app
        .get_json(&format!("/v1/tenants/{tenant}/receipts/verify"))
        .await;
    report["valid"] == true
}

async fn state(app: &TestApp) -> Value {
    app.get_json("/v1/governors/t").await.1
}

/// Waits until the governor of `t` is `refusing` (`what`), and checks that its last receipt is
/// the action's failure, with a reason that `says` it.
async fn failed_saying(app: &TestApp, what: &str, says: &str) {
    until_refusing(app, what).await;
    let (_, page) = app.get_json("/v1/tenants/t/receipts?limit=1000").await;
    let last = page["receipts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "action_failed", "{last}");
    assert!(last["reason"].as_str().unwrap().contains(says), "{last}");
}

/// Waits until the governor of `t` is `refusing`.
async fn until_refusing(app: &TestApp, what: &str) {
    eventually(what, Duration::from_secs(5), || async {
        (state(app).await["state"] == "refusing").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn signals_during_an_action_are_postponed_answered_at_once_and_replayed_in_order() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 30_000).await;
    let action_id = start_action(&app, 85.0).await;
    eventually("the webhook is called", Duration::from_secs(5), || async {
        (!hook.bodies.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let sent = hook.bodies.lock().unwrap()[0].clone();
    let (timestamp, signature, _) = hook.signed.lock().unwrap()[0].clone();
    assert!(
        timestamp.is_none() && signature.is_none(),
        "unsigned without a secret"
    );
    assert_eq!(
        (
            sent["action_id"].as_str(),
            sent["tenant_id"].as_str(),
            sent["type"].as_str()
        ),
        (Some(action_id.as_str()), Some("t"), Some("scale_up"))
    );

    let (s1, b1) = signal(&app, 10.0).await;
    let (s2, b2) = signal(&app, 65.0).await;
    assert_eq!(
        (s1, b1["postponed"].as_bool(), s2, b2["postponed"].as_bool()),
        (200, Some(true), 200, Some(true))
    );
    let (s3, b3) = signal(&app, 20.0).await;
    assert_eq!(
        (s3, b3["code"].as_str(), b3["receipt"]["reason"].as_str()),
        (
            429,
            Some("postpone_queue_full"),
            Some("postpone_queue_full")
        )
    );
    let (s, b) = app
        .post_json("/v1/governors/t/tool-calls", &json!({"tool": "health"}))
        .await;
    assert_eq!((s, b["code"].as_str()), (409, Some("intervening")));

    // A callback body the receipt could not record is refused; the action stays in flight.
    let (s, b) = app
        .post_json(
            &format!("/v1/governors/t/actions/{action_id}/complete"),
            &json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    // So is a body that is not JSON, or not a string where the error goes: the callback body
    // is optional, but one that is sent is read, never taken as absent.
    for (verb, content_type, body, status, code) in [
        (
            "complete",
            "application/json",
            "{\"result\": 5",
            400,
            "invalid_json",
        ),
        ("fail", "application/json", "[1", 400, "invalid_json"),
        (
            "complete",
            "text/plain",
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            "fail",
            "application/json",
            "{\"error\": 5}",
            400,
            "invalid_request",
        ),
    ] {
        let mut res = app
            .client
            .post(app.url(&format!("/v1/governors/t/actions/{action_id}/{verb}")))
            .insert_header(("content-type", content_type))
            .send_body(body)
            .await
            .unwrap();
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), b["code"].as_str()),
            (status, Some(code)),
            "{verb} {body}"
        );
    }
    let view = app.get_json("/v1/governors/t").await.1;
    assert_eq!(view["action_in_flight"]["action_id"], action_id, "{view}");
    let (s, b) = app
        .post_json(
            &format!("/v1/governors/t/actions/{action_id}/complete"),
            &json!({"status": "completed"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["state"], "warning",
        "the replayed 10 then 65 leave it in warning"
    );
    let ev = events(&app, "t").await;
    assert_eq!(
        &ev[2..],
        [
            "action_started",
            "signal_postponed",
            "signal_postponed",
            "signal_refused",
            "tool_call_refused",
            "action_completed",
            "signal_processed",
            "signal_warning"
        ]
    );
    let (s, _) = complete(&app, "t", &action_id).await;
    assert_eq!(s, 409, "a second completion is stale");
    assert!(chain_verifies(&app, "t").await);
}

#[actix_web::test]
async fn an_action_that_never_reports_times_out_into_refusing_and_reset_recovers() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 300).await;
    let action_id = start_action(&app, 95.0).await;
    until_refusing(&app, "the state timeout fires").await;
    told_of_cancellation(&hook, &action_id, "timed_out").await;
    let (s, b) = signal(&app, 10.0).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("governor_refusing")));
    let (s, b) = app.post_json("/v1/governors/t/reset", &json!({})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("stable")));
    let ev = events(&app, "t").await;
    assert!(
        ev.contains(&"action_timeout".to_owned())
            && ev.ends_with(&["signal_refused".to_owned(), "governor_reset".to_owned()]),
        "{ev:?}"
    );
}

#[actix_web::test]
async fn a_state_timeout_the_ledger_refuses_is_recorded_once_it_recovers() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 300).await;
    let action_id = start_action(&app, 95.0).await;
    // The timeout fires while every commit fails: its receipt cannot be written.
    let (s, b) = app
        .post_json("/v1/chaos/ledger", &json!({"fail_ms": 800}))
        .await;
    assert_eq!(s, 202, "{b}");
    until_refusing(&app, "the timeout is recorded after the ledger recovers").await;
    told_of_cancellation(&hook, &action_id, "timed_out").await;
    let ev = events(&app, "t").await;
    assert_eq!(
        ev.iter().filter(|e| *e == "action_timeout").count(),
        1,
        "{ev:?}"
    );
    assert!(chain_verifies(&app, "t").await);
}

#[actix_web::test]
async fn a_failing_webhook_fails_the_action_into_refusing() {
    let hook = hook(500);
    let app = app_with_hook(&hook, 30_000).await;
    signal(&app, 90.0).await;
    until_refusing(&app, "the failure is recorded").await;
    assert!(events(&app, "t")
        .await
        .contains(&"action_failed".to_owned()));
}

#[actix_web::test]
async fn a_webhook_whose_answer_stops_arriving_fails_the_action_at_the_webhook_timeout() {
    let url = format!("http://{}/actions", stalling_server());
    let app = app_posting_to(url, |s| {
        s.actions.webhook_timeout_ms = 300;
        // Far beyond the wait below: only the webhook timeout can end the action in time.
        s.governance.action_timeout_ms = 60_000;
    })
    .await;
    signal(&app, 90.0).await;
    failed_saying(&app, "the stalled answer fails the action", "timed out").await;
}

#[actix_web::test]
async fn an_https_webhook_is_called_over_tls_and_its_certificate_is_checked() {
    let (address, failures) = https_hook();
    let url = format!("https://{address}/actions");
    // Trusted through the operator's CA file: the action completes over TLS.
    let ca = keys_dir().join("tls_ca.pem").display().to_string();
    let app = app_posting_to(url.clone(), move |s| s.actions.webhook_ca_file = ca.clone()).await;
    let (s, b) = signal(&app, 90.0).await;
    assert_eq!(s, 200, "{b}");
    eventually("the action completes", Duration::from_secs(5), || async {
        events(&app, "t")
            .await
            .contains(&"action_completed".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(state(&app).await["state"], "stable");
    assert!(failures.lock().unwrap().is_empty(), "{failures:?}");
    // With the bundled roots only, the test CA's certificate is refused: the action fails and
    // says why, and the server saw the client end the handshake.
    let app = app_posting_to(url, |_| {}).await;
    signal(&app, 90.0).await;
    failed_saying(
        &app,
        "the untrusted certificate fails the action",
        "certificate",
    )
    .await;
    handshakes_failed(&failures, 1).await;
}

#[actix_web::test]
async fn a_webhook_that_redirects_fails_the_action_and_the_redirect_is_not_followed() {
    // Where the redirect points: it must never be called.
    let elsewhere = hook(200);
    let target = elsewhere.url.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let target = target.clone();
        App::new().route(
            "/actions",
            web::post().to(move || {
                let target = target.clone();
                async move {
                    HttpResponse::TemporaryRedirect()
                        .insert_header(("location", target))
                        .finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    let app = app_posting_to(url, |_| {}).await;
    signal(&app, 90.0).await;
    failed_saying(
        &app,
        "the redirect fails the action",
        "webhook answered 307",
    )
    .await;
    assert!(elsewhere.bodies.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn a_webhook_answer_a_receipt_cannot_record_fails_the_action_and_nothing_else() {
    let deep = json!({"status": "completed",
        "detail": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}});
    let huge = json!({"status": "completed", "detail": "x".repeat(20 * 1024)});
    for (answer, says) in [
        (deep, "may nest at most 8 levels"),
        (huge, "unreadable body"),
    ] {
        let hook = hook_answering(200, answer);
        let app = app_with_hook(&hook, 30_000).await;
        signal(&app, 90.0).await;
        until_refusing(&app, "the failure is recorded").await;
        let (_, page) = app.get_json("/v1/tenants/t/receipts?limit=1000").await;
        let failed = page["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event_type"] == "action_failed")
            .cloned()
            .unwrap_or_default();
        assert!(failed.to_string().contains(says), "{says}: {failed}");
        assert!(chain_verifies(&app, "t").await);
    }
}

#[actix_web::test]
async fn suspension_cancels_the_running_action_and_resume_returns_to_stable() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 30_000).await;
    let action_id = start_action(&app, 90.0).await;
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t", "entitlement_id": "e", "action": "suspend"}),
    )
    .await;
    until_refusing(&app, "refusing").await;
    assert!(
        state(&app).await["action_in_flight"].is_null(),
        "the action was cancelled"
    );
    told_of_cancellation(&hook, &action_id, "entitlement_inactive").await;
    let (s, _) = complete(&app, "t", &action_id).await;
    assert_eq!(s, 409, "a cancelled action's completion is stale");
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t", "entitlement_id": "e", "action": "resume"}),
    )
    .await;
    eventually("stable again", Duration::from_secs(5), || async {
        (state(&app).await["state"] == "stable").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn when_the_ledger_fails_the_input_is_refused_with_503_health_says_so_and_the_state_does_not_move(
) {
    let hook = hook(200);
    let app = app_with_hook(&hook, 30_000).await;
    signal(&app, 65.0).await;
    let before = state(&app).await;
    let (s, _) = app
        .post_json("/v1/chaos/ledger", &json!({"fail_ms": 800}))
        .await;
    assert_eq!(s, 202);
    let res = app
        .client
        .post(app.url("/v1/tenants/t/signals"))
        .send_json(&json!({"metric": "cpu", "value": 10.0}))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // The store still answers reads; health reports the failing writes all the same.
    for path in ["/health", "/health/ready"] {
        let (s, body) = app.get_json(path).await;
        assert_eq!(s, 503, "{path} while appends fail: {body}");
        assert_eq!(body["checks"]["ledger"], "error", "{path}: {body}");
    }
    let after = state(&app).await;
    assert_eq!(
        (after["state"].clone(), after["seq"].clone()),
        (before["state"].clone(), before["seq"].clone()),
        "stop the line: nothing advanced"
    );
    eventually("the ledger is back", Duration::from_secs(5), || async {
        (signal(&app, 10.0).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(state(&app).await["state"], "stable");
    let (s, body) = app.get_json("/health").await;
    assert_eq!(
        (s, &body["checks"]["ledger"]),
        (200, &json!("ok")),
        "one durable append clears it: {body}"
    );
    assert!(chain_verifies(&app, "t").await);
}

#[actix_web::test]
async fn crashing_a_fraction_of_governors_restarts_them_all() {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    for i in 0..6 {
        let t = format!("f{i}");
        app.post_json(
            "/marketplace",
            &json!({"tenant_id": t, "entitlement_id": "e", "action": "grant"}),
        )
        .await;
        app.post_json(
            &format!("/v1/tenants/{t}/signals"),
            &json!({"metric": "cpu", "value": 65.0}),
        )
        .await;
    }
    let (s, b) = app
        .post_json("/v1/chaos/governors/crash", &json!({"fraction": 0.5}))
        .await;
    assert_eq!((s, b["crashed"].as_u64()), (202, Some(3)));
    for i in 0..6 {
        let t = format!("f{i}");
        let v = eventually("every governor answers", Duration::from_secs(5), || async {
            let (s, v) = app.get_json(&format!("/v1/governors/{t}")).await;
            (s == 200).then_some(v)
        })
        .await;
        assert_eq!(v["state"], "warning", "{t} rebuilt its state");
    }
}

#[actix_web::test]
async fn a_full_governor_mailbox_gives_503_at_once_and_loses_nothing_accepted() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.governance.mailbox = 8;
        s.rate_limit.per_second = 1_000_000;
        s.rate_limit.burst = 1_000_000;
    })
    .await;
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t", "entitlement_id": "e", "action": "grant"}),
    )
    .await;
    signal(&app, 1.0).await;
    app.post_json("/v1/chaos/ledger", &json!({"stall_ms": 1500}))
        .await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (client, url) = (app.client.clone(), app.url("/v1/tenants/t/signals"));
        tasks.push(actix_web::rt::spawn(async move {
            let t0 = std::time::Instant::now();
            let res = client
                .post(url)
                .send_json(&json!({"metric": "cpu", "value": 1.0}))
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.headers().contains_key("retry-after"),
                t0.elapsed(),
            )
        }));
    }
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (200, _, _) => ok += 1,
            (503, retry, took) => {
                busy += 1;
                assert!(retry);
                assert!(
                    took < Duration::from_millis(1200) || took > Duration::from_millis(4000),
                    "refused at once, or at the decision deadline"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0, "a full mailbox refuses");
    let ev = events(&app, "t").await;
    assert_eq!(
        ev.iter()
            .filter(|e| e.as_str() == "signal_processed")
            .count(),
        ok + 1,
        "every accepted signal has exactly one receipt"
    );
    assert!(chain_verifies(&app, "t").await);
}

#[actix_web::test]
async fn above_the_global_action_bound_a_signal_is_refused_with_429() {
    let hook = hook(202);
    let url = hook.url.clone();
    let app = spawn_app(move |s| {
        s.actions.executor = "webhook".into();
        s.actions.webhook_url = url;
        s.actions.max_in_flight = 1;
        s.chaos.enabled = true;
    })
    .await;
    for t in ["a", "b"] {
        app.post_json(
            "/marketplace",
            &json!({"tenant_id": t, "entitlement_id": "e", "action": "grant"}),
        )
        .await;
    }
    let (s, b) = app
        .post_json(
            "/v1/tenants/a/signals",
            &json!({"metric": "cpu", "value": 90.0}),
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("intervening")));
    let (s, b) = app
        .post_json(
            "/v1/tenants/b/signals",
            &json!({"metric": "cpu", "value": 90.0}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["receipt"]["reason"].as_str()),
        (429, Some("actions_saturated"), Some("actions_saturated"))
    );
    let (s, b) = app
        .post_json(
            "/v1/tenants/b/signals",
            &json!({"metric": "cpu", "value": 65.0}),
        )
        .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (200, Some("warning")),
        "signals that start no action still pass"
    );
    let saturated = || async {
        let (s, b) = app
            .post_json(
                "/v1/tenants/b/signals",
                &json!({"metric": "cpu", "value": 90.0}),
            )
            .await;
        (s, b["code"].as_str().map(str::to_owned)) == (429, Some("actions_saturated".into()))
    };
    // The slot stays taken while `a`'s action runs: across a crash of its governor (the rebuilt
    // one takes it again) and into the next action a replayed signal starts.
    let (s, b) = app
        .post_json(
            "/v1/tenants/a/signals",
            &json!({"metric": "cpu", "value": 95.0}),
        )
        .await;
    assert_eq!((s, &b["postponed"]), (200, &json!(true)), "{b}");
    let (s, _) = app
        .post_json("/v1/chaos/governors/a/crash", &json!({}))
        .await;
    assert_eq!(s, 202);
    let action_id = eventually("a is back", Duration::from_secs(5), || async {
        let (s, v) = app.get_json("/v1/governors/a").await;
        (s == 200 && v["restarts"] == 1).then_some(v)
    })
    .await["action_in_flight"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(saturated().await, "after the crash");
    let (s, b) = complete(&app, "a", &action_id).await;
    assert_eq!((s, &b["state"]), (200, &json!("intervening")), "{b}");
    assert!(
        saturated().await,
        "a replayed signal started the next action"
    );
    let action_id = app.get_json("/v1/governors/a").await.1["action_in_flight"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    complete(&app, "a", &action_id).await;
    let (s, b) = app
        .post_json(
            "/v1/tenants/b/signals",
            &json!({"metric": "cpu", "value": 90.0}),
        )
        .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (200, Some("intervening")),
        "the slot is free again"
    );
}

#[actix_web::test]
async fn an_input_past_its_deadline_is_503_decision_pending_and_may_yet_be_recorded() {
    let app = spawn_app(|s| {
        s.chaos.enabled = true;
        s.governance.decision_timeout_ms = 200;
    })
    .await;
    grant(&app, "t").await;
    // The governor is up (its start records `entitlement_verified`).
    assert_eq!(signal(&app, 10.0).await.0, 200);
    let last = || async {
        let (_, page) = app.get_json("/v1/tenants/t/receipts").await;
        let r = &page["receipts"][page["receipts"].as_array().unwrap().len() - 1];
        (r["seq"].as_u64().unwrap(), r["event_type"].clone())
    };
    // A signal past the decision deadline, then a tool call past its own `timeout_ms`, each
    // while the ledger stalls with the governor already deciding it.
    for (path, body, event) in [
        (
            "/v1/tenants/t/signals",
            json!({"metric": "cpu", "value": 65.0}),
            "signal_warning",
        ),
        (
            "/v1/governors/t/tool-calls",
            json!({"tool": "health", "timeout_ms": 50}),
            "tool_call_succeeded",
        ),
    ] {
        let (seq, _) = last().await;
        let (s, _) = app
            .post_json("/v1/chaos/ledger", &json!({"stall_ms": 600}))
            .await;
        assert_eq!(s, 202);
        let mut res = app
            .client
            .post(app.url(path))
            .send_json(&body)
            .await
            .unwrap();
        let answer: Value = res.json().await.unwrap();
        assert_eq!(res.status(), 503, "{path}: {answer}");
        assert!(res.headers().contains_key("retry-after"));
        assert_eq!(answer["code"], "decision_pending", "{path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("may yet"),
            "{answer}"
        );
        // As the answer said: it was still on its way, and it is recorded once the ledger is back.
        eventually(
            "recorded after the answer",
            Duration::from_secs(5),
            || async { (last().await == (seq + 1, json!(event))).then_some(()) },
        )
        .await;
    }
    assert!(chain_verifies(&app, "t").await);
}

/// Crashes the governor of `t` and waits until its next incarnation answers.
#[actix_web::test]
async fn a_governor_that_crashes_with_signals_postponed_comes_back_with_its_action_and_queue() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 30_000).await;
    assert_eq!(signal(&app, 85.0).await.1["state"], "intervening");
    for v in [95.0, 10.0] {
        let (s, b) = signal(&app, v).await;
        assert_eq!((s, b["postponed"].as_bool()), (200, Some(true)), "{b}");
    }
    let before = state(&app).await;
    let first = before["action_in_flight"]["action_id"].clone();
    assert_eq!(before["postponed"], 2, "{before}");

    // A refused entitlement request (the tenant is active already) records the entitlement's
    // status, not the governor's, as its states.
    let (s, b) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "t", "entitlement_id": "e", "action": "resume"}),
        )
        .await;
    assert_eq!(
        (s, &b["receipt"]["state_to"]),
        (409, &json!("active")),
        "{b}"
    );

    // The chain's last receipts are a postponement and that refusal, not the action's start:
    // the rebuilt governor still has the action in flight and both signals queued, in order.
    let after = crash_governor(&app, "t", 1).await;
    assert_eq!(
        (
            &after["state"],
            &after["action_in_flight"]["action_id"],
            &after["postponed"]
        ),
        (&json!("intervening"), &first, &json!(2)),
        "{after}"
    );
    // Its completion replays them: 95 starts the next action with 10 still queued, which
    // that action's receipt records.
    let (s, b) = complete(&app, "t", first.as_str().unwrap()).await;
    assert_eq!((s, &b["state"]), (200, &json!("intervening")), "{b}");
    let second = state(&app).await;
    assert_eq!(second["postponed"], 1, "{second}");

    // Crashed again, now right after that `action_started`: the queue comes back from it.
    let after = crash_governor(&app, "t", 2).await;
    assert_eq!(
        (&after["action_in_flight"], &after["postponed"]),
        (&second["action_in_flight"], &json!(1)),
        "{after}"
    );
    let next = second["action_in_flight"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = complete(&app, "t", &next).await;
    assert_eq!((s, &b["state"]), (200, &json!("stable")), "{b}");
    let ev = events(&app, "t").await;
    assert_eq!(
        &ev[2..],
        [
            "action_started",
            "signal_postponed",
            "signal_postponed",
            "entitlement_refused",
            "action_completed",
            "action_started",
            "action_completed",
            "signal_processed"
        ]
    );
    assert!(chain_verifies(&app, "t").await);
}

#[actix_web::test]
async fn expiry_moves_a_governor_to_refusing_with_its_action_cancelled_when_it_falls_due() {
    let hook = hook(202);
    let app = app_with_hook(&hook, 30_000).await;
    let expires = tai_autonomics::clock::now_ms() + 2000;
    let (s, b) = app
        .post_json(
            "/marketplace",
            &json!({"tenant_id": "x", "entitlement_id": "e", "action": "grant",
                    "expires_at": tai_autonomics::clock::rfc3339_millis(expires)}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app
        .post_json(
            "/v1/tenants/x/signals",
            &json!({"metric": "cpu", "value": 90.0}),
        )
        .await;
    assert_eq!((s, &b["state"]), (200, &json!("intervening")), "{b}");
    // Nothing else happens to the tenant: the expiry alone moves its governor.
    let view = eventually("refusing at expiry", Duration::from_secs(10), || async {
        let v = app.get_json("/v1/governors/x").await.1;
        (v["state"] == "refusing").then_some(v)
    })
    .await;
    assert!(view["action_in_flight"].is_null(), "cancelled: {view}");
    assert!(tai_autonomics::clock::now_ms() > expires);
    let (_, page) = app.get_json("/v1/tenants/x/receipts").await;
    let last = &page["receipts"][page["receipts"].as_array().unwrap().len() - 1];
    assert_eq!(
        (&last["event_type"], &last["state_to"]),
        (&json!("entitlement_changed"), &json!("refusing")),
        "{last}"
    );
}

/// Credentials in the URL's userinfo are sent as HTTP Basic, as curl sends them; awc dropped
/// them, so a receiver that wants them refused every action.
#[actix_web::test]
async fn a_webhook_url_with_credentials_sends_them_as_basic_auth() {
    use base64::Engine as _;
    let hook = hook(200);
    let app = app_posting_to(
        hook.url.replacen("http://", "http://ops:pa%2055@", 1),
        |_| {},
    )
    .await;
    let (_, b) = signal(&app, 90.0).await;
    assert_eq!(b["state"], "intervening", "{b}");
    let seen = eventually("the POST", Duration::from_secs(5), || async {
        let seen = hook.authorizations.lock().unwrap().clone();
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:pa 55")
    );
    assert_eq!(seen, [Some(expected)]);
}

#[actix_web::test]
async fn with_a_secret_every_webhook_request_is_signed_over_its_timestamp_and_body() {
    let hook = hook(202);
    let (url, secret) = (hook.url.clone(), "a-secret-long-enough");
    let app = spawn_app(move |s| {
        s.actions.executor = "webhook".into();
        s.actions.webhook_url = url;
        s.actions.webhook_secret = secret.into();
        s.actions.max_in_flight = 10;
    })
    .await;
    grant(&app, "t").await;
    let (_, b) = signal(&app, 90.0).await;
    assert_eq!(b["state"], "intervening", "{b}");
    // The start, then (after the suspension) the cancellation: both signed.
    app.post_json(
        "/marketplace",
        &json!({"tenant_id": "t", "entitlement_id": "e", "action": "suspend"}),
    )
    .await;
    let signed = eventually("two requests", Duration::from_secs(5), || async {
        let seen = hook.signed.lock().unwrap().clone();
        (seen.len() == 2).then_some(seen)
    })
    .await;
    for (timestamp, sig, body) in signed {
        let ts: u64 = timestamp.expect("X-Tai-Timestamp").parse().unwrap();
        let expected = tai_autonomics::governor::webhook::signature(secret.as_bytes(), ts, &body);
        assert_eq!(sig.as_deref(), Some(expected.as_str()));
        assert!(tai_autonomics::clock::now_ms().abs_diff(ts) < 60_000);
    }
}

#[actix_web::test]
async fn an_action_outcome_and_a_signal_ready_together_are_decided_one_after_the_other() {
    // Arrange: a governor whose next decision waits on a stalled ledger.
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    grant(&app, "t").await;
    assert_eq!(
        app.post_json(
            "/v1/tenants/t/signals",
            &json!({"metric": "cpu", "value": 10.0})
        )
        .await
        .0,
        200
    );
    let (s, b) = app
        .post_json("/v1/chaos/ledger", &json!({"stall_ms": 300}))
        .await;
    assert_eq!(s, 202, "{b}");

    // Act: a signal starts an action (the eval executor completes it at once, from inside the
    // governor), and while its receipt waits, another signal queues in the mailbox. Both are
    // ready when the receipt is durable.
    let high = json!({"metric": "cpu", "value": 90.0});
    let first = app.post_json("/v1/tenants/t/signals", &high);
    let second = async {
        eventually(
            "the first decision waits on the ledger",
            Duration::from_secs(5),
            || async { (app.state.tree.ledger.queued() == 1).then_some(()) },
        )
        .await;
        app.post_json(
            "/v1/tenants/t/signals",
            &json!({"metric": "cpu", "value": 20.0}),
        )
        .await
    };
    let ((s, b), (s2, b2)) = futures_util::future::join(first, second).await;
    let started = b["receipts"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["event_type"] == "action_started"));
    assert!(s == 200 && started, "{b}");
    assert_eq!((s2, b2["postponed"].as_bool()), (200, Some(true)), "{b2}");

    // Assert: each decision starts where the one before it left the governor.
    let view = eventually("stable", Duration::from_secs(5), || async {
        let v = app.get_json("/v1/governors/t").await.1;
        (v["state"] == "stable" && v["postponed"] == 0).then_some(v)
    })
    .await;
    assert!(view["action_in_flight"].is_null(), "{view}");
    let (_, page) = app.get_json("/v1/tenants/t/receipts").await;
    let moves: Vec<(String, String, String)> = page["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] != "entitlement")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("event_type"), s("state_from"), s("state_to"))
        })
        .collect();
    assert!(moves.iter().any(|m| m.0 == "action_completed"), "{moves:?}");
    for pair in moves.windows(2) {
        assert_eq!(pair[1].1, pair[0].2, "{moves:?}");
    }
    assert!(chain_verifies(&app, "t").await);
}

/// An action's callback may reach another instance than the one that started the action (the
/// load balancer picks one). A governor for the tenant already running there knew nothing of
/// the action, and refused the callback as naming no action in flight (409), so the action
/// timed out. It now reads the chain again when an input makes no sense to it, and the
/// callback completes the action.
#[actix_web::test]
async fn a_callback_that_reaches_another_instance_completes_the_action() {
    // Arrange: two instances on one Firestore project, the webhook executor on both; the
    // second runs a governor for the tenant, then the first starts an action.
    let hook = hook(202);
    let (a, b) = two_instances_with_hook(&hook, "tai-callback").await;
    grant(&a, "t").await;
    assert_eq!(signal(&b, 50.0).await.1["state"], "stable");
    let id = start_action(&a, 85.0).await;

    // Act: the webhook's callback reaches the second instance.
    let (s, body) = complete(&b, "t", &id).await;

    // Assert: the action is completed, once, and the first instance's governor follows on.
    assert_eq!((s, &body["state"]), (200, &json!("stable")), "{body}");
    let after = signal(&a, 50.0).await;
    assert_eq!(
        (after.0, &after.1["state"]),
        (200, &json!("stable")),
        "{}",
        after.1
    );
    let seen = events(&a, "t").await;
    assert_eq!(
        seen.iter().filter(|e| *e == "action_completed").count(),
        1,
        "{seen:?}"
    );
    assert!(chain_verifies(&b, "t").await);
}

/// Two instances on one Firestore project (a fresh one named after `prefix`), both with the
/// webhook executor calling `hook`.
async fn two_instances_with_hook(hook: &Hook, prefix: &str) -> (TestApp, TestApp) {
    let project = firestore_project(prefix);
    let settings = || {
        let (url, project) = (hook.url.clone(), project.clone());
        move |s: &mut tai_autonomics::config::Settings| {
            on_firestore(&project)(s);
            s.actions.executor = "webhook".into();
            s.actions.webhook_url = url;
        }
    };
    (spawn_app(settings()).await, spawn_app(settings()).await)
}

/// A suspension made through an instance that runs no governor for the tenant cancels the
/// action that the other instance's governor started, without waiting for that governor's
/// next input.
#[actix_web::test]
async fn a_suspension_through_another_instance_cancels_the_running_action_at_once() {
    // Arrange: the first instance's governor starts an action; the second has no governor
    // for the tenant.
    let hook = hook(202);
    let (a, b) = two_instances_with_hook(&hook, "tai-cancel").await;
    grant(&a, "t").await;
    let id = start_action(&a, 85.0).await;

    // Act
    let suspend = json!({"tenant_id": "t", "entitlement_id": "e", "action": "suspend"});
    assert_eq!(b.post_json("/marketplace", &suspend).await.0, 200);

    // Assert: the webhook is told, and the chain records the move to `refusing` (read from
    // the receipts, which asks no governor anything).
    told_of_cancellation(&hook, &id, "entitlement_inactive").await;
    let seen = eventually("the lapse is recorded", Duration::from_secs(5), || async {
        let seen = events(&a, "t").await;
        (seen.last().map(String::as_str) == Some("entitlement_changed")).then_some(seen)
    })
    .await;
    assert_eq!(
        seen[seen.len() - 2..],
        ["entitlement_suspended", "entitlement_changed"]
    );
    // The action's late callback through the first instance is refused: it was cancelled.
    let (s, body) = complete(&a, "t", &id).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (409, Some("invalid_state")),
        "{body}"
    );
    assert_eq!(state(&a).await["state"], "refusing");
    assert!(chain_verifies(&b, "t").await);
}

/// An action whose process was killed is timed out by the next process, with no input: its
/// state timeout runs from the action's start, not from the restart.
#[actix_web::test]
async fn an_action_left_in_flight_by_a_killed_process_times_out_after_the_restart() {
    // Arrange: the real binary on a SQLite file, the webhook executor (the receiver takes the
    // action and never calls back), a 3 s state timeout.
    let hook = hook(202);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TAI_ACTIONS__EXECUTOR", "webhook"),
        ("TAI_ACTIONS__WEBHOOK_URL", hook.url.as_str()),
        ("TAI_GOVERNANCE__ACTION_TIMEOUT_MS", "3000"),
    ];
    let mut bin = start_binary_in(dir.path(), &env);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let post = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let mut res = client.post(url).send_json(&body).await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let grant = json!({"tenant_id": "t", "entitlement_id": "e", "action": "grant"});
    assert_eq!(post(bin.url("/marketplace"), grant).await.0, 200);
    let (s, started) = post(
        bin.url("/v1/tenants/t/signals"),
        json!({"metric": "cpu", "value": 90.0}),
    )
    .await;
    assert_eq!(
        (s, &started["state"]),
        (200, &json!("intervening")),
        "{started}"
    );
    let action_id = started["receipt"]["metadata"]["action"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act: the process is killed; the new one starts once the timeout has fallen due.
    bin.signal("KILL");
    assert_eq!(bin.wait_exit(Duration::from_secs(5)), None);
    let started_ms =
        tai_autonomics::clock::millis_of(started["receipt"]["timestamp"].as_str().unwrap())
            .unwrap();
    eventually("the timeout falls due", Duration::from_secs(10), || async {
        (tai_autonomics::clock::now_ms() > started_ms + 3000).then_some(())
    })
    .await;
    let bin = start_binary_in(dir.path(), &env);

    // Assert: with no input (only the receipts are read), the action times out, the webhook
    // is told, and the timeout came from the action's start (a fresh timeout would have
    // fallen due at least 3 s after the restart).
    let receipts = eventually(
        "the timeout is recorded",
        Duration::from_secs(10),
        || async {
            let mut res = (client.get(bin.url("/v1/tenants/t/receipts?limit=100")))
                .send()
                .await
                .unwrap();
            let page: Value = res.json().await.unwrap();
            let receipts = page["receipts"].as_array().unwrap().clone();
            (receipts.last().unwrap()["event_type"] == "action_timeout").then_some(receipts)
        },
    )
    .await;
    told_of_cancellation(&hook, &action_id, "timed_out").await;
    let timed_out = receipts.last().unwrap();
    let timed_out_ms =
        tai_autonomics::clock::millis_of(timed_out["timestamp"].as_str().unwrap()).unwrap();
    assert!(
        timed_out_ms < started_ms + 6000,
        "timed out {} ms after the start",
        timed_out_ms - started_ms
    );
    assert_eq!(timed_out["state_to"], "refusing", "{timed_out}");
    let mut res = client.get(bin.url("/metrics")).send().await.unwrap();
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert_eq!(metric(&text, "tai_governors_swept_total"), Some(1.0));
}

/// With several instances on one Firestore project, an action that its instance left in flight
/// (here: one whose own timeout lies far ahead, as if the instance were gone) is timed out by
/// another instance once it is overdue, with no input.
#[actix_web::test]
async fn another_instance_times_out_an_overdue_action_that_its_instance_left() {
    // Arrange: the first instance starts an action and would time it out only after a minute;
    // the second times actions out after 1 s, and takes over those overdue by 3 s.
    let hook = hook(202);
    let project = firestore_project("tai-overdue");
    let with_timeout = |ms: u64| {
        let (url, project) = (hook.url.clone(), project.clone());
        move |s: &mut tai_autonomics::config::Settings| {
            on_firestore(&project)(s);
            s.actions.executor = "webhook".into();
            s.actions.webhook_url = url;
            s.governance.action_timeout_ms = ms;
        }
    };
    let a = spawn_app(with_timeout(60_000)).await;
    grant(&a, "t").await;
    let id = start_action(&a, 85.0).await;

    // Act: the second instance starts; nothing is sent to it.
    let b = spawn_app(with_timeout(1_000)).await;

    // Assert: the action is timed out through the second instance, and the webhook is told.
    timed_out_once(&a, Duration::from_secs(15)).await;
    told_of_cancellation(&hook, &id, "timed_out").await;
    let (_, text) = b.get_text("/metrics").await;
    assert_eq!(metric(&text, "tai_governors_swept_total"), Some(1.0));
    assert_eq!(state(&a).await["state"], "refusing");
    assert!(chain_verifies(&b, "t").await);
}

/// A governance supervisor that gives up (past its restart intensity) stops every governor,
/// and with them their actions' timers; the restarted one's running actions still time out.
#[actix_web::test]
async fn an_action_survives_a_governance_supervisor_that_gave_up() {
    // Arrange: one restart a minute for governors; tenant t has an action in flight, and the
    // governor of tenant u is crashed twice.
    let hook = hook(202);
    let url = hook.url.clone();
    let app = spawn_app(move |s| {
        s.actions.executor = "webhook".into();
        s.actions.webhook_url = url;
        s.governance.action_timeout_ms = 1000;
        s.governance.intensity = 1;
        s.chaos.enabled = true;
    })
    .await;
    grant(&app, "t").await;
    grant(&app, "u").await;
    let id = start_action(&app, 85.0).await;
    assert_eq!(
        app.post_json(
            "/v1/tenants/u/signals",
            &json!({"metric": "cpu", "value": 10})
        )
        .await
        .0,
        200
    );
    crash_governor(&app, "u", 1).await;

    // Act: the second crash is past the intensity; root restarts the governance supervisor.
    let (s, b) = (app.post_json("/v1/chaos/governors/u/crash", &json!({}))).await;
    assert_eq!(s, 202, "{b}");

    // Assert: with no input for t, its action times out and the webhook is told.
    timed_out_once(&app, Duration::from_secs(10)).await;
    told_of_cancellation(&hook, &id, "timed_out").await;
    let (_, text) = app.get_text("/metrics").await;
    assert!(
        metric(&text, "tai_supervisor_restarts_total{supervisor=\"root\"}").unwrap_or(0.0) >= 1.0,
        "root restarted the governance supervisor"
    );
    assert!(chain_verifies(&app, "t").await);
}
