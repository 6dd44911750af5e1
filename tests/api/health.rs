//! `/health` has the guide's body; liveness and readiness answer.

use crate::helpers::*;

#[actix_web::test]
async fn health_returns_the_guides_body() {
    // Arrange
    let app = spawn_app(|s| s.node.name = "tai@test-node".into()).await;
    // Act
    let (status, body) = app.get_json("/health").await;
    // Assert
    assert_eq!(status, 200);
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["checks", "node", "status", "timestamp", "uptime_ms"]);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["node"], "tai@test-node");
    assert!(body["uptime_ms"].is_u64());
    let ts = body["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "RFC 3339 with milliseconds: {ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.');
    assert_eq!(
        body["checks"],
        serde_json::json!({"http_server": "ok", "pubsub_ready": "disabled", "ledger": "ok", "supervision": "ok"})
    );
}

#[actix_web::test]
async fn liveness_and_readiness_answer_ok_when_the_tree_runs() {
    let app = spawn_app(|_| {}).await;
    assert_eq!(
        app.get_json("/health/live").await,
        (200, serde_json::json!({"status": "ok"}))
    );
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
}

#[actix_web::test]
async fn health_is_json_and_metrics_is_prometheus_text() {
    let app = spawn_app(|_| {}).await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "tai_actors",
        "tai_http_requests_total",
        "tai_supervisor_children",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(metric(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    // The process families operators' dashboards expect (Prometheus's client libraries' names),
    // each once, and the build's version.
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_start_time_seconds", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_threads", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
    ] {
        let typed = format!("# TYPE {name} {kind}\n");
        assert_eq!(text.matches(&typed).count(), 1, "{typed}");
        assert!(metric(&text, name).unwrap() > 0.0, "{name}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&text, "process_start_time_seconds").unwrap();
    assert!(
        started <= now && started > now - 3600.0,
        "{started} at {now}"
    );
    let build = format!(
        "tai_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{build} missing");
    assert!(
        metric(&text, "tai_actors").unwrap() >= 2.0,
        "root and observer are live actors"
    );
}

#[actix_web::test]
async fn request_metrics_are_labelled_with_the_matched_route_pattern() {
    let app = spawn_app(|_| {}).await;
    // A routed request (its tenant is unknown: 404 from the handler) and an unrouted one.
    let (status, _) = app.get_json("/v1/governors/route-label-probe").await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    let (_, text) = app.get_text("/metrics").await;
    let routed =
        r#"tai_http_requests_total{method="GET",route="/v1/governors/{tenant}",status="404"}"#;
    let unrouted = r#"tai_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    for series in [routed, unrouted] {
        assert!(
            metric(&text, series).unwrap_or(0.0) >= 1.0,
            "{series} missing:\n{text}"
        );
    }
    // No request is labelled with its raw path.
    assert!(!text.contains("route-label-probe"), "{text}");
}

#[actix_web::test]
async fn request_metrics_label_methods_outside_the_standard_set_as_other() {
    let app = spawn_app(|_| {}).await;
    // A client picks the method: each new one must not add series to /metrics.
    for method in ["PROBEMETHODA", "PROBEMETHODB"] {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 405);
    }
    let (_, text) = app.get_text("/metrics").await;
    let other = r#"tai_http_requests_total{method="other",route="/health",status="405"}"#;
    assert!(
        metric(&text, other).unwrap_or(0.0) >= 2.0,
        "{other} missing:\n{text}"
    );
    assert!(!text.contains("PROBEMETHOD"), "{text}");
}

#[actix_web::test]
async fn head_answers_wherever_get_does_with_the_head_only() {
    let app = spawn_app(|_| {}).await;
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/observer",
        "/openapi.json",
        "/v1/governors",
    ] {
        let get = app.client.get(app.url(path)).send().await.unwrap();
        let mut head = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        let length: usize = (head.headers().get("content-length"))
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or_default();
        assert!(length > 0, "{path}: the length of what GET would send");
        assert!(head.body().await.unwrap().is_empty(), "{path}: no content");
    }
    // POST-only routes still refuse it.
    let res = app
        .client
        .head(app.url("/marketplace"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"tai_http_requests_total{method="HEAD",route="/health",status="200"}"#),
        "HEAD is counted as HEAD"
    );
}

/// Runs `tools/smoke.sh URL` (with `TOKEN` when given) off the runtime that serves the app;
/// its exit status and what it printed.
async fn smoke(url: String, token: Option<&'static str>) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/smoke.sh");
    let out = actix_web::rt::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(script).arg(url).env_remove("TOKEN");
        if let Some(t) = token {
            cmd.env("TOKEN", t);
        }
        cmd.output().expect("bash runs the smoke script")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[actix_web::test]
async fn the_guides_smoke_test_passes_against_the_service_and_fails_where_it_should() {
    use tai_autonomics::auth::{token_digest, AuthMode, TokenConfig};
    let app = spawn_app(|_| {}).await;
    let (ok, out) = smoke(app.address.clone(), None).await;
    assert!(ok, "{out}");
    assert!(out.contains("smoke test passed"), "{out}");

    // With access control, the operator's token passes and no token fails at the first
    // route that needs one.
    let guarded = spawn_app(|s| {
        s.auth.mode = AuthMode::Bearer;
        s.auth.tokens = vec![TokenConfig {
            sha256: token_digest("ops-token"),
            role: "operator".into(),
            tenant: None,
        }];
    })
    .await;
    let (ok, out) = smoke(guarded.address.clone(), Some("ops-token")).await;
    assert!(ok, "{out}");
    let (ok, out) = smoke(guarded.address.clone(), None).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL: "), "{out}");

    // Nothing listening: a clear failure, not a hang.
    let (ok, out) = smoke(format!("http://127.0.0.1:{}", free_port()), None).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL: health: no answer"), "{out}");
}
