//! A supervised actor made to panic is restarted, answers again, and the restart is visible in
//! `/metrics`, the tree snapshot and the recent-events view.

use std::time::Duration;

use crate::helpers::*;

const RESTARTS: &str = "tai_supervisor_restarts_total{supervisor=\"root\"}";

#[actix_web::test]
async fn a_crashed_actor_is_restarted_answers_again_and_shows_in_metrics() {
    // Arrange
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    let before = metric(&app.get_text("/metrics").await.1, RESTARTS).unwrap_or(0.0);
    assert_eq!(app.get_json("/v1/supervision/events").await.0, 200);

    // Act: the observer panics inside a handler.
    let (status, body) = app
        .post_json("/v1/chaos/actors/observer/crash", &serde_json::json!({}))
        .await;
    assert_eq!(
        (status, body),
        (202, serde_json::json!({"crashed": "observer"}))
    );

    // Assert: it answers again, and remembers its own restart.
    let events = eventually(
        "observer answers after its restart",
        Duration::from_secs(5),
        || async {
            let (status, body) = app.get_json("/v1/supervision/events").await;
            (status == 200
                && body["events"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["event"] == "child_restarted")))
            .then_some(body)
        },
    )
    .await;
    let restarted = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "child_restarted")
        .unwrap();
    assert_eq!(
        (
            restarted["supervisor"].as_str(),
            restarted["child"].as_str()
        ),
        (Some("root"), Some("observer"))
    );

    let text = app.get_text("/metrics").await.1;
    assert!(
        metric(&text, RESTARTS).unwrap() >= before + 1.0,
        "restart counted:\n{text}"
    );
    assert!(
        metric(
            &text,
            "tai_child_exits_total{supervisor=\"root\",reason=\"panic\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "panic exit counted"
    );

    let (status, snap) = app.get_json("/v1/supervision").await;
    assert_eq!(status, 200);
    let observer = &snap["children"][0];
    assert_eq!(
        (observer["id"].as_str(), observer["state"].as_str()),
        (Some("observer"), Some("running"))
    );
    assert!(observer["restarts"].as_u64().unwrap() >= 1);
    assert!(observer["last_exit"]
        .as_str()
        .unwrap()
        .starts_with("panic("));
    assert_eq!(
        app.get_json("/health").await.1["checks"]["supervision"],
        "ok"
    );
}

#[actix_web::test]
async fn chaos_hooks_are_404_unless_enabled() {
    let app = spawn_app(|_| {}).await;
    let (status, body) = app
        .post_json("/v1/chaos/actors/observer/crash", &serde_json::json!({}))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    assert_eq!(
        app.post_json("/v1/chaos/actors/nobody/crash", &serde_json::json!({}))
            .await
            .0,
        404
    );
}

#[actix_web::test]
async fn the_supervision_snapshot_lists_the_root_and_its_children() {
    let app = spawn_app(|_| {}).await;
    let (status, snap) = app.get_json("/v1/supervision").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            snap["name"].as_str(),
            snap["strategy"].as_str(),
            snap["intensity"].as_u64(),
            snap["period_ms"].as_u64()
        ),
        (Some("root"), Some("one_for_one"), Some(5), Some(60_000))
    );
    assert_eq!(snap["counts"]["active"], snap["counts"]["specs"]);
}

#[actix_web::test]
async fn the_recent_events_outlive_a_crash_of_the_observer_and_include_its_own_exit() {
    // Arrange: a governor that crashed and came back is in the recent events.
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    grant(&app, "t").await;
    let signal = serde_json::json!({"metric": "cpu", "value": 10});
    assert_eq!(app.post_json("/v1/tenants/t/signals", &signal).await.0, 200);
    let crash = app
        .post_json("/v1/chaos/governors/t/crash", &serde_json::json!({}))
        .await;
    assert_eq!(crash.0, 202, "{}", crash.1);
    let has = |events: &serde_json::Value, child: &str, event: &str| {
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["child"] == child && e["event"] == event))
    };
    eventually(
        "the governor's restart is remembered",
        Duration::from_secs(5),
        || async {
            has(
                &app.get_json("/v1/supervision/events").await.1,
                "t",
                "child_restarted",
            )
            .then_some(())
        },
    )
    .await;

    // Act: the Observer itself panics.
    assert_eq!(
        app.post_json("/v1/chaos/actors/observer/crash", &serde_json::json!({}))
            .await
            .0,
        202
    );

    // Assert: the restarted Observer still has the governor's restart, and its own exit too,
    // which happened while no Observer was running.
    let events = eventually(
        "the observer answers again",
        Duration::from_secs(5),
        || async {
            let (status, body) = app.get_json("/v1/supervision/events").await;
            (status == 200 && has(&body, "observer", "child_restarted")).then_some(body)
        },
    )
    .await;
    assert!(has(&events, "t", "child_restarted"), "{events}");
    let exit = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["child"] == "observer" && e["event"] == "child_exited")
        .unwrap_or_else(|| panic!("the observer's exit: {events}"));
    assert!(
        exit["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("panic("),
        "{exit}"
    );
}

/// Log lines inside a request carry its trace, from `X-Cloud-Trace-Context` or, without it,
/// from a W3C `traceparent`, so Cloud Logging groups them under the request.
#[actix_web::test]
async fn a_request_s_log_lines_carry_its_trace_from_either_trace_header() {
    let bin = start_binary(&[
        ("TAI_CHAOS__ENABLED", "true"),
        ("GOOGLE_CLOUD_PROJECT", "p-1"),
    ]);
    let client = awc::Client::default();
    let grant =
        serde_json::json!({"tenant_id": "traced", "entitlement_id": "e", "action": "grant"});
    let res = client.post(bin.url("/marketplace")).send_json(&grant).await;
    assert_eq!(res.unwrap().status(), 200);
    let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cloud = "105445aa7843bc8bf206b12000100000";
    let traceparent = format!("00-{w3c}-00f067aa0ba902b7-01");
    let cloud_header = format!("{cloud}/1;o=1");
    for (headers, expected) in [
        (vec![("traceparent", traceparent.as_str())], w3c),
        (
            vec![
                ("traceparent", traceparent.as_str()),
                ("x-cloud-trace-context", cloud_header.as_str()),
            ],
            cloud,
        ),
    ] {
        // Each crash request logs "chaos: crashed a governor" inside the request's span. The
        // governor runs (again, after the first crash) once a signal is answered.
        let signal = serde_json::json!({"metric": "cpu", "value": 1});
        eventually("a running governor", Duration::from_secs(5), || async {
            let res = client
                .post(bin.url("/v1/tenants/traced/signals"))
                .send_json(&signal)
                .await;
            (res.unwrap().status() == 200).then_some(())
        })
        .await;
        let mut req = client.post(bin.url("/v1/chaos/governors/traced/crash"));
        for (k, v) in headers {
            req = req.insert_header((k, v));
        }
        assert_eq!(req.send().await.unwrap().status(), 202);
        let trace = format!("projects/p-1/traces/{expected}");
        eventually(
            "the crash request's line with its trace",
            Duration::from_secs(5),
            || async {
                let lines = bin.warnings.lock().unwrap().clone();
                lines.into_iter().find(|l| {
                    l["message"] == "chaos: crashed a governor"
                        && l["logging.googleapis.com/trace"] == trace.as_str()
                })
            },
        )
        .await;
    }
}

/// The operations guide finds governor crashes in the logs with
/// `jsonPayload.message=~'governor.*crash'`; the lines a crash left were "panic (…)" and
/// "child terminated", which that search does not find.
#[actix_web::test]
async fn a_governor_crash_is_logged_as_the_guide_searches_for_it() {
    let bin = start_binary(&[("TAI_CHAOS__ENABLED", "true")]);
    let client = awc::Client::default();
    let post = |path: &str, body: serde_json::Value| client.post(bin.url(path)).send_json(&body);
    let grant =
        serde_json::json!({"tenant_id": "logged", "entitlement_id": "e", "action": "grant"});
    assert_eq!(post("/marketplace", grant).await.unwrap().status(), 200);
    let signal = serde_json::json!({"metric": "cpu", "value": 1});
    let res = post("/v1/tenants/logged/signals", signal).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = (client
        .post(bin.url("/v1/chaos/governors/logged/crash"))
        .send())
    .await
    .unwrap();
    assert_eq!(res.status(), 202);
    // 'governor.*crash', as Cloud Logging matches it.
    let matches = |m: &str| m.find("governor").is_some_and(|i| m[i..].contains("crash"));
    let line = eventually("the crash's line", Duration::from_secs(5), || async {
        let lines = bin.warnings.lock().unwrap().clone();
        lines
            .into_iter()
            .find(|l| l["message"].as_str().is_some_and(matches))
    })
    .await;
    assert_eq!(
        (&line["tenant"], &line["severity"]),
        (&serde_json::json!("logged"), &serde_json::json!("WARNING")),
        "{line}"
    );
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("panic(")),
        "{line}"
    );
}

#[actix_web::test]
async fn the_counters_alerts_read_are_at_zero_before_their_first_event() {
    // Prometheus takes a counter's first sample as its start: a series that first appears at
    // 3 (three governors panicking between two scrapes) is no increase, and the crash alert
    // (`increase(tai_child_exits_total{supervisor="governance",reason=~"panic|error|killed"}[1h])`)
    // would not fire. A fresh process must show them at 0.
    let bin = start_binary(&[]);
    let text = bin.metrics().await;
    for series in [
        r#"tai_child_exits_total{supervisor="governance",reason="panic"}"#,
        r#"tai_child_exits_total{supervisor="governance",reason="error"}"#,
        r#"tai_child_exits_total{supervisor="root",reason="killed"}"#,
        r#"tai_supervisor_restarts_total{supervisor="governance"}"#,
        r#"tai_supervisor_intensity_exceeded_total{supervisor="root"}"#,
        r#"tai_http_errors_total{class="5xx"}"#,
        "tai_panics_total",
        r#"tai_governor_state{state="refusing"}"#,
        "tai_governor_actions_pending",
        // What dashboards take a rate of: the first events after a start count too.
        r#"tai_receipts_total{type="transition"}"#,
        r#"tai_receipts_total{type="entitlement"}"#,
        r#"tai_pubsub_messages_total{delivery="push",outcome="malformed"}"#,
        r#"tai_ledger_batch_failures_total{backend="sqlite",kind="unavailable"}"#,
        r#"tai_ledger_batch_failures_total{backend="sqlite",kind="conflict"}"#,
    ] {
        assert_eq!(metric(&text, series), Some(0.0), "{series} in\n{text}");
    }
    // Series of a backend or a consumer this process does not have are not shown.
    for absent in [
        "tai_firestore_writes_total",
        r#"tai_pubsub_messages_total{delivery="pull""#,
        "tai_pubsub_acks_total",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
}
