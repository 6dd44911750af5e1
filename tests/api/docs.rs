//! `/openapi.json` describes exactly the router's routes, and `/observer` serves its page with
//! the data its script reads.

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
    let app = spawn_app(|_| {}).await;
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
            assert!(op["responses"]["200"].is_object(), "{method} {path}");
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
                !(code == 404 && body["message"] == "no such route"),
                "{method} {path} is not routed"
            );
            assert!(code < 500, "{method} {path} without a body: {code} {body}");
        }
    }
    assert!(operations >= 28, "{operations} operations");
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
}
