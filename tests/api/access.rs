//! The access matrix: for each route, each caller (no token, admin, operator, tenant A,
//! tenant B) gets the expected status; tenant A can never read or change tenant B.

use serde_json::json;
use tai_autonomics::auth::{token_digest, AuthMode, TokenConfig};

use crate::helpers::*;

const TOKENS: [(&str, &str, Option<&str>); 4] = [
    ("admin-token", "admin", None),
    ("ops-token", "operator", None),
    ("a-token", "tenant", Some("tenant-a")),
    ("b-token", "tenant", Some("tenant-b")),
];

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> u16 {
    let mut req = match method {
        "POST" => app.client.post(app.url(path)),
        _ => app.client.get(app.url(path)),
    };
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    res.unwrap().status().as_u16()
}

#[actix_web::test]
async fn every_route_answers_each_role_as_specified() {
    let app = spawn_app(|s| {
        s.auth.mode = AuthMode::Bearer;
        s.auth.tokens = TOKENS
            .iter()
            .map(|(t, role, tenant)| TokenConfig {
                sha256: token_digest(t),
                role: (*role).into(),
                tenant: tenant.map(str::to_owned),
            })
            .collect();
        s.chaos.enabled = true;
    })
    .await;
    // Arrange: tenant-a exists with a receipt; tenant-b exists too.
    for t in ["tenant-a", "tenant-b"] {
        let s = call(
            &app,
            "POST",
            "/marketplace",
            Some("admin-token"),
            Some(json!({"tenant_id": t, "entitlement_id": "e", "action": "grant"})),
        )
        .await;
        assert_eq!(s, 200);
    }
    let head = app.state.tree.ledger.store().range("tenant-a", 0, 1).await;
    let receipt_a = head.unwrap()[0].receipt_id.clone();
    use tai_autonomics::receipts::LedgerStore as _;

    let grant_new =
        || Some(json!({"tenant_id": "tenant-c", "entitlement_id": "e", "action": "grant"}));
    let event = || Some(json!({"event": "iam_role_added", "value": "custom_role"}));
    let receipt_path = format!("/v1/receipts/{receipt_a}");
    //            route                                   none admin ops   A    B
    let matrix: Vec<(&str, &str, Option<serde_json::Value>, [u16; 5])> = vec![
        ("GET", "/health", None, [200, 200, 200, 200, 200]),
        ("GET", "/health/ready", None, [200, 200, 200, 200, 200]),
        ("GET", "/metrics", None, [200, 200, 200, 200, 200]),
        (
            "GET",
            "/v1/tenants/tenant-a/entitlement",
            None,
            [401, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/receipts",
            None,
            [401, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/receipts/verify",
            None,
            [401, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/tenants/tenant-a/receipts/export",
            None,
            [401, 200, 200, 200, 403],
        ),
        (
            "GET",
            receipt_path.as_str(),
            None,
            [401, 200, 200, 200, 404],
        ),
        ("GET", "/v1/supervision", None, [401, 200, 200, 403, 403]),
        ("GET", "/v1/tenants", None, [401, 200, 200, 403, 403]),
        ("GET", "/v1/ledger/audit", None, [401, 200, 200, 403, 403]),
        (
            "GET",
            "/v1/supervision/events",
            None,
            [401, 200, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/tenants/tenant-a/entitlement/events",
            event(),
            [401, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/marketplace",
            grant_new(),
            [401, 200, 403, 403, 403],
        ),
        (
            "POST",
            "/v1/chaos/actors/nobody/crash",
            Some(json!({})),
            [401, 404, 403, 403, 403],
        ),
    ];
    let callers = [
        None,
        Some("admin-token"),
        Some("ops-token"),
        Some("a-token"),
        Some("b-token"),
    ];
    for (method, path, body, expected) in matrix {
        let mut got = [0u16; 5];
        for (i, token) in callers.iter().enumerate() {
            got[i] = call(&app, method, path, *token, body.clone()).await;
        }
        assert_eq!(
            got, expected,
            "{method} {path} for [none, admin, operator, tenant A, tenant B]"
        );
    }
    // A bad token is 401 with WWW-Authenticate, and the body never echoes it.
    let mut res = app
        .client
        .get(app.url("/v1/tenants/tenant-a/entitlement"))
        .insert_header(("Authorization", "Bearer not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    let body = res.body().await.unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("not-a-token"));
}
