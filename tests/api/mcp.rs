//! MCP end to end on the real application: JSON-RPC over `/mcp` in both protocol eras (the
//! `initialize` handshake and the stateless 2026-07-28 revision), every tool with its error
//! cases, access per token (also on two instances sharing the Firestore emulator),
//! DNS-rebinding protection, `GET /mcp/tools`, a registry crash, and `mcp-stdio` on the real
//! binary. (Independent clients, Python, TypeScript, the inspector and
//! the conformance suite, run from `tools/mcp-clients.sh`.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::*;
use tai_autonomics::config::ToolNames;

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

/// One JSON-RPC exchange over `/mcp` → (HTTP status, body).
async fn rpc(app: &TestApp, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/mcp"))
        .insert_header(("accept", "application/json, text/event-stream"));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send_json(&body).await.expect("request sent");
    let bytes = res.body().limit(16 << 20).await.expect("body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A legacy-era session: `initialize`, then requests with the negotiated version header.
struct Legacy<'a> {
    app: &'a TestApp,
    token: Option<String>,
    next: u64,
}

impl<'a> Legacy<'a> {
    async fn open(app: &'a TestApp, token: Option<&str>) -> Legacy<'a> {
        let mut s = Legacy {
            app,
            token: token.map(|t| format!("Bearer {t}")),
            next: 1,
        };
        let init = s
            .request("initialize", json!({"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "tai-tests", "version": "1"}}))
            .await;
        assert_eq!(init["result"]["protocolVersion"], LEGACY, "{init}");
        assert_eq!(init["result"]["serverInfo"]["name"], "tai-autonomics");
        let mut headers = vec![("mcp-protocol-version", LEGACY)];
        if let Some(t) = &s.token {
            headers.push(("authorization", t.as_str()));
        }
        let (status, _) = rpc(
            app,
            &headers,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(status, 202);
        s
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut headers = vec![("mcp-protocol-version", LEGACY)];
        if let Some(t) = &self.token {
            headers.push(("authorization", t.as_str()));
        }
        let (status, body) = rpc(
            self.app,
            &headers,
            json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}),
        )
        .await;
        assert_eq!(status, 200, "{method}: {body}");
        body
    }

    /// `tools/call` → the result object.
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let body = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        assert!(body["result"].is_object(), "{tool}: {body}");
        body["result"].clone()
    }
}

/// Bearer authentication with two tokens: `admin-secret` (admin) and `a-secret` (tenant
/// `tenant-a`).
fn bearer_tokens(s: &mut tai_autonomics::config::Settings) {
    use tai_autonomics::auth::{token_digest, AuthMode, TokenConfig};
    s.auth.mode = AuthMode::Bearer;
    s.auth.tokens = vec![
        TokenConfig {
            sha256: token_digest("admin-secret"),
            role: "admin".into(),
            tenant: None,
        },
        TokenConfig {
            sha256: token_digest("a-secret"),
            role: "tenant".into(),
            tenant: Some("tenant-a".into()),
        },
    ];
}

/// GET with the admin token of the bearer-mode tests → the JSON body.
async fn admin_get(app: &TestApp, path: &str) -> Value {
    app.client
        .get(app.url(path))
        .insert_header(("authorization", "Bearer admin-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn structured(result: &Value) -> &Value {
    assert_eq!(result["isError"], false, "{result}");
    // The text copy says the same.
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, &result["structuredContent"]);
    &result["structuredContent"]
}

fn error_text(result: &Value) -> String {
    assert_eq!(result["isError"], true, "{result}");
    assert!(result.get("structuredContent").is_none());
    result["content"][0]["text"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn the_handshake_era_lists_the_nine_tools_and_get_mcp_tools_is_the_same_list() {
    let app = spawn_app(|_| {}).await;
    let mut s = Legacy::open(&app, None).await;
    let listed = s.request("tools/list", json!({})).await["result"]["tools"].clone();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 9);
    for t in listed.as_array().unwrap() {
        for field in [
            "title",
            "description",
            "inputSchema",
            "outputSchema",
            "annotations",
        ] {
            assert!(t.get(field).is_some(), "{} lacks {field}", t["name"]);
        }
        for hint in [
            "readOnlyHint",
            "destructiveHint",
            "idempotentHint",
            "openWorldHint",
        ] {
            assert!(t["annotations"][hint].is_boolean(), "{} {hint}", t["name"]);
        }
    }
    let (status, direct) = app.get_json("/mcp/tools").await;
    assert_eq!(status, 200);
    assert_eq!(direct["tools"], listed);
    let ping = s.request("ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
}

#[actix_web::test]
async fn every_tool_acts_on_the_real_actors_and_tenant_calls_leave_receipts() {
    let app = spawn_app(|_| {}).await;
    let mut s = Legacy::open(&app, None).await;

    let health = s.call("taiea.health.check", json!({})).await;
    assert_eq!(structured(&health)["status"], "ok");
    let support = s.call("taiea.support.model", json!({})).await;
    assert_eq!(structured(&support)["tiers"].as_array().unwrap().len(), 3);

    // Entitlements: provision, modify, suspend, resume.
    let provisioned = s
        .call("taiea.entitlement.apply_event", json!({"tenant_id": "mcp-co", "event_type": "provision", "event_data": {"sku": "base"}}))
        .await;
    assert_eq!(structured(&provisioned)["status"], "active");
    let modified = s
        .call("taiea.entitlement.apply_event", json!({"tenant_id": "mcp-co", "event_type": "modify", "event_data": {"sku": "professional"}}))
        .await;
    assert_eq!(structured(&modified)["entitlement"]["sku"], "professional");
    for (event, status) in [("suspend", "suspended"), ("resume", "active")] {
        let r = s
            .call(
                "taiea.entitlement.apply_event",
                json!({"tenant_id": "mcp-co", "event_type": event}),
            )
            .await;
        assert_eq!(structured(&r)["status"], status, "{event}");
    }
    // Without an entitlement id, an event acts on the tenant's own entitlement, whatever
    // granted it; naming another one is refused (a late message about an earlier purchase).
    grant(&app, "http-co").await;
    let r = s
        .call(
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "http-co", "event_type": "suspend"}),
        )
        .await;
    assert_eq!(structured(&r)["status"], "suspended", "{r}");
    let r = s
        .call(
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "http-co", "event_type": "resume", "event_data": {"entitlement_id": "e-old"}}),
        )
        .await;
    assert!(error_text(&r).contains("is not this tenant's"), "{r}");

    // Governor: a signal, then its state.
    let signal = s
        .call(
            "taiea.governor.signal",
            // A whole number written with a fraction of zero is an integer (JSON Schema's).
            json!({"tenant_id": "mcp-co", "metric": "cpu_utilization", "value": 70, "timestamp_ms": 1.7e12}),
        )
        .await;
    let sig = structured(&signal);
    assert_eq!(
        (sig["decision"].as_str(), sig["state"].as_str()),
        (Some("accept"), Some("warning"))
    );
    assert_eq!(
        sig["receipt"]["metadata"]["input"]["timestamp_ms"], 1_700_000_000_000u64,
        "{sig}"
    );
    assert_eq!(
        sig["receipts"].as_array().and_then(|r| r.last()),
        Some(&sig["receipt"]),
        "{sig}"
    );
    let state = s
        .call("taiea.governor.state", json!({"tenant_id": "mcp-co"}))
        .await;
    assert_eq!(structured(&state)["state"], "warning");
    let list = s.call("taiea.governors.list", json!({"limit": 10})).await;
    assert!(structured(&list)["governors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["tenant_id"] == "mcp-co"));
    let tree = s.call("taiea.supervision.tree", json!({})).await;
    let children: Vec<&str> = structured(&tree)["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        children.contains(&"mcp") && children.contains(&"governance"),
        "{children:?}"
    );

    // The chain: every tenant-scoped call left a tool_call receipt, and it verifies.
    let audit = s
        .call(
            "taiea.audit.log",
            json!({"tenant_id": "mcp-co", "limit": 1000}),
        )
        .await;
    let receipts = structured(&audit)["receipts"].as_array().unwrap().clone();
    let tool_calls: Vec<&str> = receipts
        .iter()
        .filter(|r| r["type"] == "tool_call")
        .map(|r| r["metadata"]["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        tool_calls,
        [
            "taiea.entitlement.apply_event",
            "taiea.entitlement.apply_event",
            "taiea.entitlement.apply_event",
            "taiea.entitlement.apply_event",
            "taiea.governor.signal",
            "taiea.governor.state"
        ]
    );
    assert!(receipts.iter().any(|r| r["event_type"] == "signal_warning"));
    let some = receipts[3]["receipt_id"].as_str().unwrap();
    let verified = s
        .call(
            "taiea.receipts.verify_chain",
            json!({"tenant_id": "mcp-co", "receipt_id": some}),
        )
        .await;
    let v = structured(&verified);
    assert_eq!(
        (v["valid"].as_bool(), v["receipt"]["hash_matches"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    let (_, http) = app.get_json("/v1/tenants/mcp-co/receipts/verify").await;
    assert_eq!(http["valid"], true);
    // Against an anchor: the head reported now holds; a hash that is not the head's does not.
    let anchor =
        json!({"tenant_id": "mcp-co", "anchor_seq": v["head_seq"], "anchor_hash": v["head_hash"]});
    let held = s.call("taiea.receipts.verify_chain", anchor.clone()).await;
    let held = structured(&held);
    assert_eq!(
        (&held["valid"], &held["anchor"]["seq"]),
        (&json!(true), &v["head_seq"]),
        "{held}"
    );
    let mut other = anchor.clone();
    other["anchor_hash"] = json!("0".repeat(64));
    let broken = s.call("taiea.receipts.verify_chain", other).await;
    let broken = structured(&broken);
    assert_eq!(
        (&broken["valid"], &broken["first_broken"]["seq"]),
        (&json!(false), &v["head_seq"]),
        "{broken}"
    );
    let half = s
        .call(
            "taiea.receipts.verify_chain",
            json!({"tenant_id": "mcp-co", "anchor_seq": 1}),
        )
        .await;
    assert!(error_text(&half).contains("invalid_request"), "{half}");

    // Deprovision is final.
    let revoked = s
        .call(
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "mcp-co", "event_type": "deprovision"}),
        )
        .await;
    assert_eq!(structured(&revoked)["status"], "revoked");
    let again = s
        .call(
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "mcp-co", "event_type": "resume"}),
        )
        .await;
    assert!(
        error_text(&again).contains("entitlement_conflict"),
        "{again}"
    );
}

#[actix_web::test]
async fn bad_arguments_are_tool_errors_that_say_what_is_wrong_and_unknown_tools_are_protocol_errors(
) {
    let app = spawn_app(|_| {}).await;
    grant(&app, "args-co").await;
    let before = app.get_json("/v1/tenants/args-co/receipts").await.1["head_seq"].clone();
    let mut s = Legacy::open(&app, None).await;
    for (tool, args, says) in [
        (
            "taiea.governor.signal",
            json!({"tenant_id": "args-co", "metric": "cpu"}),
            "missing required argument `value`",
        ),
        (
            "taiea.governor.signal",
            json!({"tenant_id": "args-co", "metric": "cpu", "value": "hot"}),
            "`value` must be number",
        ),
        (
            "taiea.governor.state",
            json!({}),
            "missing required argument `tenant_id`",
        ),
        (
            "taiea.governor.state",
            json!({"tenant_id": "NOT/valid"}),
            "`tenant_id` must match",
        ),
        (
            "taiea.audit.log",
            json!({"tenant_id": "args-co", "limit": 0}),
            "out of range",
        ),
        (
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "args-co", "event_type": "explode"}),
            "one of provision",
        ),
        (
            "taiea.health.check",
            json!({"extra": 1}),
            "unknown argument `extra`",
        ),
        (
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "args-co", "event_type": "suspend",
                   "event_data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}}),
            "argument `event_data` may nest at most 8 levels",
        ),
    ] {
        let r = s.call(tool, args).await;
        let text = error_text(&r);
        assert!(text.contains(says), "{tool}: {text} should say {says}");
    }
    // Nothing was stored by refused arguments.
    assert_eq!(
        app.get_json("/v1/tenants/args-co/receipts").await.1["head_seq"],
        before
    );
    // An unknown tenant: a tool error, and nothing stored or started.
    let r = s
        .call("taiea.governor.state", json!({"tenant_id": "ghost"}))
        .await;
    assert!(error_text(&r).contains("tenant_not_found"), "{r}");
    assert_eq!(app.get_json("/v1/tenants/ghost/receipts").await.0, 404);
    // An unknown tool is a JSON-RPC error.
    let body = s
        .request("tools/call", json!({"name": "taiea.nope", "arguments": {}}))
        .await;
    assert_eq!(body["error"]["code"], -32602, "{body}");
    // Params not of a served method's shape are -32602 with the reason (rmcp alone answers
    // -32601, "method not found", naming the method); an unknown method is -32601.
    for (method, params, code, says) in [
        (
            "tools/call",
            json!({}),
            -32602,
            "params of tools/call: missing field `name`",
        ),
        (
            "tools/call",
            json!({"name": "taiea.health.check", "arguments": []}),
            -32602,
            "params of tools/call: invalid type: sequence",
        ),
        (
            "initialize",
            json!({"protocolVersion": 5}),
            -32602,
            "params of initialize",
        ),
        ("nope/x", json!({}), -32601, "method not found: nope/x"),
        // Methods of capabilities this server does not declare say so (rmcp's own answer
        // was the bare method name).
        (
            "resources/list",
            json!({}),
            -32601,
            "method not found: resources/list (this server offers tools only)",
        ),
        (
            "prompts/get",
            json!({"name": "p"}),
            -32601,
            "method not found: prompts/get (this server offers tools only)",
        ),
    ] {
        let body = s.request(method, params).await;
        assert_eq!(body["error"]["code"], code, "{method}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method}: {body}");
    }
}

#[actix_web::test]
async fn the_stateless_revision_discovers_and_calls_with_meta_and_headers() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "modern-co").await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "tai-tests", "version": "1"}});
    let (status, discover) = rpc(
        &app,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "server/discover"),
        ],
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
    )
    .await;
    assert_eq!(status, 200, "{discover}");
    assert!(discover["result"]["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!(MODERN)));
    let (status, call) = rpc(
        &app,
        &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "taiea.governor.signal")],
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "taiea.governor.signal", "arguments": {"tenant_id": "modern-co", "metric": "cpu", "value": 10}, "_meta": meta}}),
    )
    .await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(structured(&call["result"])["state"], "stable");
    // A header that disagrees with the body is refused.
    let (status, mismatch) = rpc(
        &app,
        &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "taiea.health.check")],
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "taiea.governor.state", "arguments": {"tenant_id": "modern-co"}, "_meta": meta}}),
    )
    .await;
    assert_eq!(
        (status, mismatch["error"]["code"].as_i64()),
        (400, Some(-32020))
    );
}

#[actix_web::test]
async fn tokens_limit_tools_to_their_tenant_and_foreign_origins_are_403() {
    let app = spawn_app(bearer_tokens).await;
    for t in ["tenant-a", "tenant-b"] {
        let res = app
            .client
            .post(app.url("/marketplace"))
            .insert_header(("authorization", "Bearer admin-secret"))
            .send_json(&json!({"tenant_id": t, "entitlement_id": "e", "action": "grant"}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    // No token: 401 before any MCP processing.
    let (status, _) = rpc(&app, &[], json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})).await;
    assert_eq!(status, 401);
    let mut a = Legacy::open(&app, Some("a-secret")).await;
    let own = a
        .call("taiea.governor.state", json!({"tenant_id": "tenant-a"}))
        .await;
    assert_eq!(structured(&own)["tenant_id"], "tenant-a");
    // The tenant's own gates: the audit log is an enterprise tool, tenant-a has the base SKU.
    let gated = a
        .call("taiea.audit.log", json!({"tenant_id": "tenant-a"}))
        .await;
    assert!(error_text(&gated).contains("tool_not_entitled"), "{gated}");
    for (tool, args) in [
        ("taiea.governor.state", json!({"tenant_id": "tenant-b"})),
        (
            "taiea.governor.signal",
            json!({"tenant_id": "tenant-b", "metric": "cpu", "value": 1}),
        ),
        ("taiea.audit.log", json!({"tenant_id": "tenant-b"})),
        (
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "tenant-a", "event_type": "suspend"}),
        ),
        ("taiea.supervision.tree", json!({})),
    ] {
        let r = a.call(tool, args).await;
        assert!(error_text(&r).starts_with("forbidden"), "{tool}: {r}");
    }
    // Tenant B's chain did not move.
    let b = admin_get(&app, "/v1/tenants/tenant-b/receipts").await;
    assert_eq!(b["head_seq"], 1, "{b}");
    // Tenant A's chain records the call and the gate refusal; an admin may read it.
    let a_chain = admin_get(&app, "/v1/tenants/tenant-a/receipts").await;
    let events: Vec<&str> = a_chain["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["mcp_tool_call", "mcp_tool_refused"]),
        "{events:?}"
    );
    let refusal = a_chain["receipts"].as_array().unwrap().last().unwrap();
    assert_eq!(refusal["metadata"]["gates"]["tool"], "refuse");
    let mut admin = Legacy::open(&app, Some("admin-secret")).await;
    let audit = admin
        .call("taiea.audit.log", json!({"tenant_id": "tenant-a"}))
        .await;
    assert_eq!(structured(&audit)["tenant_id"], "tenant-a");
    // DNS rebinding: a foreign Origin or Host is 403.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    for (header, value, want) in [
        ("origin", "http://evil.example", 403),
        ("origin", "http://localhost:3000", 200),
        ("host", "evil.example", 403),
    ] {
        let headers = [("authorization", "Bearer admin-secret"), (header, value)];
        let (status, _) = rpc(&app, &headers, init.clone()).await;
        assert_eq!(status, want, "{header}: {value}");
        // A batch is checked as a whole, also when none of its members would run.
        let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        for batch in [json!([ping]), json!([5])] {
            let (status, _) = rpc(&app, &headers, batch.clone()).await;
            assert_eq!(status, want, "{header}: {value}: {batch}");
        }
    }
}

#[actix_web::test]
async fn a_tenants_call_is_gated_on_the_stored_record_when_another_instance_changed_it() {
    // Arrange: two instances on one Firestore project, with an admin and a tenant token. A
    // grants and caches the record; the tenant's first call through A passes its gates.
    let project = firestore_project("tai-mcp2");
    let on = |project: &str| {
        let firestore = on_firestore(project);
        move |s: &mut tai_autonomics::config::Settings| {
            firestore(s);
            bearer_tokens(s);
        }
    };
    let a = spawn_app(on(&project)).await;
    let b = spawn_app(on(&project)).await;
    let marketplace = |app: &TestApp, action: &str| {
        let req = app
            .client
            .post(app.url("/marketplace"))
            .insert_header(("authorization", "Bearer admin-secret"))
            .send_json(&json!({"tenant_id": "tenant-a", "entitlement_id": "e", "action": action}));
        async move { req.await.unwrap().status().as_u16() }
    };
    assert_eq!(marketplace(&a, "grant").await, 200);
    let mut tenant = Legacy::open(&a, Some("a-secret")).await;
    let state = json!({"tenant_id": "tenant-a"});
    let first = tenant.call("taiea.governor.state", state.clone()).await;
    assert_eq!(structured(&first)["tenant_id"], "tenant-a");

    // Act: suspended through B, which A's cache does not hear of; the tenant calls through A
    // again (sending once more what is unavailable, as a client would).
    assert_eq!(marketplace(&b, "suspend").await, 200);
    let mut answer = String::new();
    for _ in 0..3 {
        let r = tenant.call("taiea.governor.state", state.clone()).await;
        answer = error_text(&r);
        if !answer.starts_with("unavailable") {
            break;
        }
    }

    // Assert: the call is refused by its entitlement gate, and the chain records no call
    // after the suspension, only the refusal.
    assert!(answer.starts_with("refused by the gates"), "{answer}");
    let chain = admin_get(&a, "/v1/tenants/tenant-a/receipts").await;
    let events: Vec<&str> = chain["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    let suspended = events
        .iter()
        .position(|e| *e == "entitlement_suspended")
        .expect("the suspension is in the chain");
    assert_eq!(events[suspended + 1..], ["mcp_tool_refused"], "{events:?}");
}

#[actix_web::test]
async fn a_registry_crash_is_a_supervised_restart_with_the_table_rebuilt() {
    let app = spawn_app(|s| s.chaos.enabled = true).await;
    let (status, _) = app
        .post_json("/v1/chaos/actors/mcp/crash", &json!({}))
        .await;
    assert_eq!(status, 202);
    let restarted = eventually(
        "the registry restarted",
        std::time::Duration::from_secs(10),
        || async {
            let (_, snap) = app.get_json("/v1/supervision").await;
            snap["children"]
                .as_array()?
                .iter()
                .find(|c| {
                    c["id"] == "mcp" && c["restarts"].as_u64() >= Some(1) && c["state"] == "running"
                })
                .cloned()
        },
    )
    .await;
    assert!(restarted["last_exit"]
        .as_str()
        .unwrap()
        .starts_with("panic("));
    let mut s = Legacy::open(&app, None).await;
    let tools = s.request("tools/list", json!({})).await;
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 9);
}

#[test]
fn mcp_stdio_serves_the_same_tools_on_stdin_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("mcp-stdio")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__SQLITE_PATH", dir.path().join("ledger.db"))
        .env("TAI_LOG__FORMAT", "json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // JSON that is not a JSON-RPC message: rmcp's -32600, with the `id` JSON-RPC requires.
    writeln!(stdin, "{{\"foo\": 1}}").unwrap();
    let invalid: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (&invalid["error"]["code"], invalid.get("id")),
        (&json!(-32600), Some(&Value::Null)),
        "{invalid}"
    );
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "stdio-test", "version": "1"}}}),
    );
    let init: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "tai-autonomics");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let list: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 9);
    // A line that is not JSON is answered with the parse error, not dropped.
    writeln!(stdin, "{{\"jsonrpc\": \"2.0\", \"id\": 7, \"method\"").unwrap();
    let parse: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (&parse["error"]["code"], &parse["id"]),
        (&json!(-32700), &Value::Null),
        "{parse}"
    );
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "taiea.entitlement.apply_event", "arguments": {"tenant_id": "stdio-co", "event_type": "provision"}}}),
    );
    let call: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        call["result"]["structuredContent"]["status"], "active",
        "{call}"
    );
    // The tree it runs has no ledger audit (a session's process would read the whole ledger).
    send(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "taiea.supervision.tree", "arguments": {}}}),
    );
    let tree: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let children: Vec<&str> = (tree["result"]["structuredContent"]["children"].as_array())
        .unwrap_or_else(|| panic!("{tree}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        children.contains(&"mcp") && !children.contains(&"auditor"),
        "{children:?}"
    );
    drop(stdin);
    // Closing stdin ends the server cleanly; stdout carried nothing but protocol lines.
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(lines.next().is_none());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("MCP registry started"), "{err}");
}

#[actix_web::test]
async fn a_governed_refusal_over_mcp_is_a_decision_with_its_receipt() {
    let app = spawn_app(|_| {}).await;
    let mut s = Legacy::open(&app, None).await;
    for event in ["provision", "suspend"] {
        let r = s
            .call(
                "taiea.entitlement.apply_event",
                json!({"tenant_id": "refused-co", "event_type": event}),
            )
            .await;
        structured(&r);
    }
    let r = s
        .call(
            "taiea.governor.signal",
            json!({"tenant_id": "refused-co", "metric": "cpu", "value": 90}),
        )
        .await;
    let out = structured(&r);
    assert_eq!(
        (out["decision"].as_str(), out["state"].as_str()),
        (Some("refuse"), Some("refusing")),
        "{out}"
    );
    assert_eq!(out["receipt"]["type"], "refusal");
    let receipts = out["receipts"]
        .as_array()
        .expect("every receipt of the refusal");
    assert_eq!(receipts.last(), Some(&out["receipt"]), "{out}");
}

#[actix_web::test]
async fn malformed_json_rpc_is_a_precise_4xx_with_the_json_error_body_and_nothing_runs() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "t").await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "taiea.governor.signal",
                   "arguments": {"tenant_id": "t", "metric": "cpu", "value": 90.0}}});
    let both = "application/json, text/event-stream";
    let json_type = "application/json";
    // (content type, accept, body, status, code, part of the message)
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            json_type,
            both,
            String::new(),
            400,
            "invalid_json",
            "not JSON",
        ),
        (
            json_type,
            both,
            r#"{"jsonrpc":"#.into(),
            400,
            "invalid_json",
            "line 1 column 11",
        ),
        (
            json_type,
            both,
            // JSON by the grammar, but no f64 holds it: said as such, not as a wrong shape.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"taiea.governor.signal","arguments":{"tenant_id":"t","metric":"cpu","value":1e400}}}"#.into(),
            400,
            "invalid_json",
            "number out of range",
        ),
        (
            json_type,
            both,
            "[]".into(),
            400,
            "invalid_request",
            "an empty batch",
        ),
        (
            json_type,
            both,
            format!("[{call},"),
            400,
            "invalid_json",
            "not JSON",
        ),
        (
            json_type,
            both,
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}).to_string(),
            400,
            "invalid_request",
            "\"2.0\"",
        ),
        (
            json_type,
            both,
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}).to_string(),
            400,
            "invalid_request",
            "`id`",
        ),
        (
            json_type,
            both,
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1, 2]})
                .to_string(),
            400,
            "invalid_request",
            "`params`",
        ),
        (
            "text/plain",
            both,
            call.to_string(),
            415,
            "unsupported_media_type",
            "expected content-type application/json, not \"text/plain\"",
        ),
        (
            "application/x-www-form-urlencoded",
            both,
            call.to_string(),
            415,
            "unsupported_media_type",
            "what curl -d sends",
        ),
        (
            json_type,
            "text/event-stream",
            call.to_string(),
            406,
            "invalid_request",
            "Accept header rules out",
        ),
    ];
    for (content_type, accept, body, status, code, says) in cases {
        let mut res = app
            .client
            .post(app.url("/mcp"))
            .insert_header(("content-type", content_type))
            .insert_header(("accept", accept))
            .send_body(body.clone())
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap_or_default();
        assert_eq!(res.status().as_u16(), status, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(
        app.get_json("/v1/tenants/t/receipts").await.1["head_seq"],
        1,
        "only the grant is stored: no call ran"
    );
}

#[actix_web::test]
async fn a_signal_with_an_idempotency_key_is_decided_once_however_often_an_agent_sends_it() {
    let app = spawn_app(|_| {}).await;
    let mut s = Legacy::open(&app, None).await;
    let provisioned = s
        .call(
            "taiea.entitlement.apply_event",
            json!({"tenant_id": "agent-co", "event_type": "provision", "event_data": {"sku": "base"}}),
        )
        .await;
    assert_eq!(structured(&provisioned)["status"], "active");
    let args = json!({"tenant_id": "agent-co", "metric": "cpu", "value": 70, "idempotency_key": "plan-7/step-1"});
    let first = s.call("taiea.governor.signal", args.clone()).await;
    let first = structured(&first).clone();
    assert_eq!(first["decision"], "accept", "{first}");
    assert_eq!(
        first["receipt"]["metadata"]["idempotency_key"],
        "plan-7/step-1"
    );
    let again = s.call("taiea.governor.signal", args).await;
    let again = structured(&again);
    assert_eq!(
        (again["decision"].as_str(), &again["receipt"]["receipt_id"]),
        (Some("duplicate"), &first["receipt"]["receipt_id"])
    );
    let decisions = (app.get_json("/v1/tenants/agent-co/receipts").await.1["receipts"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event_type"] == "signal_warning")
        .count();
    assert_eq!(decisions, 1);
    // The key names that signal: another one with it is an error, and is not decided.
    let reused = s
        .call(
            "taiea.governor.signal",
            json!({"tenant_id": "agent-co", "metric": "cpu", "value": 95, "idempotency_key": "plan-7/step-1"}),
        )
        .await;
    let text = error_text(&reused);
    assert!(
        text.starts_with("idempotency_key_reused: idempotency key plan-7/step-1 was used before"),
        "{reused}"
    );
    let (_, view) = app.get_json("/v1/governors/agent-co").await;
    assert_eq!(view["state"], "warning", "{view}");
    let bad = s
        .call(
            "taiea.governor.signal",
            json!({"tenant_id": "agent-co", "metric": "cpu", "value": 70, "idempotency_key": "two words"}),
        )
        .await;
    assert!(error_text(&bad).contains("idempotency_key"), "{bad}");
}

#[actix_web::test]
async fn a_tenants_tool_calls_take_from_the_same_rate_limit_as_its_http_requests() {
    let app = spawn_app(|s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await;
    grant(&app, "busy").await; // the first of the bucket's three
    let mut s = Legacy::open(&app, None).await;
    let args = json!({"tenant_id": "busy", "metric": "cpu", "value": 10});
    // Two more calls empty the bucket (one more, were a second to pass meanwhile).
    let mut accepted = 0;
    let refused = loop {
        let result = s.call("taiea.governor.signal", args.clone()).await;
        if result["isError"] == true {
            break result;
        }
        assert_eq!(structured(&result)["decision"], "accept", "{result}");
        accepted += 1;
        assert!(accepted <= 4, "the bucket never ran dry");
    };
    assert!(accepted >= 2, "the burst let two calls through");
    let head = || async {
        use tai_autonomics::receipts::LedgerStore as _;
        let store = app.state.tree.ledger.store();
        store.head("busy").await.unwrap().unwrap().seq
    };
    // The bucket is empty: a tool error that says so and when to retry, and nothing decided
    // (the grant, the governor's first receipt, and a decision and a `tool_call` receipt for
    // each call accepted).
    assert_eq!(
        head().await,
        2 + 2 * accepted,
        "nothing recorded for the refused call"
    );
    let text = error_text(&refused);
    assert!(
        text.starts_with("rate_limited: tenant busy is over its request rate")
            && text.contains("retry in"),
        "{text}"
    );
    // Reads are limited too, and HTTP finds the same bucket empty.
    let read = s
        .call("taiea.governor.state", json!({"tenant_id": "busy"}))
        .await;
    assert!(error_text(&read).starts_with("rate_limited"), "{read}");
    let (status, body) = app
        .post_json(
            "/v1/tenants/busy/signals",
            &json!({"metric": "cpu", "value": 10}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
}

#[actix_web::test]
async fn a_batch_of_2025_03_26_is_answered_message_by_message_in_order() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "bt").await;
    let signal = |id: u64, value: f64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "taiea.governor.signal",
                       "arguments": {"tenant_id": "bt", "metric": "cpu", "value": value}}})
    };
    let batch = json!([
        {"jsonrpc": "2.0", "id": "p", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        signal(2, 70.0),
        signal(3, 10.0),
        {"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {"protocolVersion": "2025-03-26",
            "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        5,
        {"jsonrpc": "1.0", "id": 6, "method": "ping"},
        {"jsonrpc": "2.0", "id": 7, "method": "no/such"},
        {"jsonrpc": "2.0", "id": 8, "result": {}},
    ]);
    // Without MCP-Protocol-Version a request is 2025-03-26's, and so with it said.
    for headers in [vec![], vec![("mcp-protocol-version", "2025-03-26")]] {
        let (status, answers) = rpc(&app, &headers, batch.clone()).await;
        assert_eq!(status, 200, "{answers}");
        let answers = answers.as_array().expect("an array of answers");
        let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
        // The notification has no answer; the others answer in the batch's order.
        assert_eq!(
            ids,
            [
                json!("p"),
                json!(2),
                json!(3),
                json!(4),
                Value::Null,
                json!(6),
                json!(7),
                Value::Null
            ]
            .iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(answers[0]["result"], json!({}));
        assert_eq!(structured(&answers[1]["result"])["state"], "warning");
        assert_eq!(structured(&answers[2]["result"])["state"], "stable");
        let codes: Vec<&Value> = answers[3..].iter().map(|a| &a["error"]["code"]).collect();
        assert_eq!(
            codes,
            [
                &json!(-32600),
                &json!(-32600),
                &json!(-32600),
                &json!(-32601),
                &json!(-32600)
            ]
        );
        // A response answers no request of a stateless server: refused, and the refusal is a
        // JSON-RPC response like every element of the array, so it has an id (`null`).
        let stray = answers[7].as_object().unwrap();
        assert_eq!(stray.get("id"), Some(&Value::Null), "{answers:?}");
        assert!(answers[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize must not be part of a batch"));
    }
    assert_eq!(
        events(&app, "bt").await,
        [
            "entitlement_granted",
            "entitlement_verified",
            "signal_warning",
            "mcp_tool_call",
            "signal_processed",
            "mcp_tool_call",
            "signal_warning",
            "mcp_tool_call",
            "signal_processed",
            "mcp_tool_call"
        ]
    );

    // Notifications alone: 202, no body.
    let (status, _) = rpc(
        &app,
        &[],
        json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}]),
    )
    .await;
    assert_eq!(status, 202);
    // Later revisions have no batches; too many messages in one is refused whole.
    let too_many: Vec<Value> = (0..=100).map(|i| signal(i, 90.0)).collect();
    for (headers, body, says) in [
        (
            vec![("mcp-protocol-version", LEGACY)],
            json!([signal(1, 90.0)]),
            "speaks 2025-11-25",
        ),
        (vec![], json!(too_many), "at most 100"),
    ] {
        let (status, answer) = rpc(&app, &headers, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("invalid_request")),
            "{answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        app.get_json("/v1/tenants/bt/receipts").await.1["head_seq"],
        10,
        "a refused batch runs nothing"
    );
}

type StdioSession = (
    std::process::Child,
    std::process::ChildStdin,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
);

/// `mcp-stdio` on a fresh ledger in `dir`, initialized with `version`: the child, its stdin and
/// its stdout's lines.
fn stdio_session(dir: &std::path::Path, version: &str, env: &[(&str, &str)]) -> StdioSession {
    let (child, mut stdin, mut lines) = stdio_uninitialized(dir, env);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "stdio-batch", "version": "1"}}});
    writeln!(stdin, "{init}").unwrap();
    let init: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(init["result"]["protocolVersion"], version, "{init}");
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    (child, stdin, lines)
}

/// `mcp-stdio` on a fresh ledger in `dir`, not initialized: a ping before `initialize` has
/// been answered (refused, as it comes first), so the server is reading its stdin.
fn stdio_uninitialized(dir: &std::path::Path, env: &[(&str, &str)]) -> StdioSession {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tai-autonomics"))
        .arg("mcp-stdio")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAI_LEDGER__SQLITE_PATH", dir.join("ledger.db"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ping = json!([{"jsonrpc": "2.0", "id": 0, "method": "ping"}]);
    writeln!(stdin, "{ping}").unwrap();
    let early: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(early["error"]["code"], -32600, "{early}");
    assert!(
        (early["error"]["message"].as_str().unwrap()).contains("comes after initialize"),
        "{early}"
    );
    (child, stdin, lines)
}

/// Sends SIGTERM to `child` and waits up to 10 s for it to end.
fn terminated(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGTERM (what an MCP client sends when stdin's closing is not enough, and what a process
/// manager sends) stops `mcp-stdio` as a closed stdin does: the tree shut down, exit 0. Before,
/// the signal ended the process at once.
#[test]
fn mcp_stdio_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _stdin, _lines) = stdio_session(dir.path(), "2025-06-18", &[]);
    let status = terminated(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop, not killed by the signal: {status:?}"
    );
    // As a service's stop: the log copied into the ledger and every connection closed, so
    // SQLite removed the log and its index (before, both were left beside the file).
    assert_eq!(crate::helpers::file_names(dir.path()), ["ledger.db"]);
}

/// The same before the client's `initialize`, and a client that goes away before it: the tree
/// stopped in order and the ledger closed. Before, the signal handlers were installed only
/// once the handshake was over, so the signal's default action ended the process at once,
/// and a closed stdin ended it with the tree and the ledger as they were.
#[test]
fn mcp_stdio_stops_cleanly_before_the_client_initialized() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _stdin, _lines) = stdio_uninitialized(dir.path(), &[]);
    let status = terminated(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(crate::helpers::file_names(dir.path()), ["ledger.db"]);

    let dir = tempfile::tempdir().unwrap();
    let (mut child, stdin, _lines) = stdio_uninitialized(dir.path(), &[]);
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "no session was held: {status:?}");
    assert_eq!(crate::helpers::file_names(dir.path()), ["ledger.db"]);
}

#[test]
fn mcp_stdio_takes_a_batch_in_a_2025_03_26_session_and_runs_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin, mut lines) = stdio_session(dir.path(), "2025-03-26", &[]);
    let call = |id: u64, name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}})
    };
    // The signal needs the tenant the call before it provisions: members run in order, each
    // after the one before was answered (rmcp alone would run them all at once).
    let batch = json!([
        {"jsonrpc": "2.0", "id": "p", "method": "ping"},
        call(3, "taiea.entitlement.apply_event", json!({"tenant_id": "sb", "event_type": "provision"})),
        call(4, "taiea.governor.signal", json!({"tenant_id": "sb", "metric": "cpu", "value": 70})),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        7,
        {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {}},
        call(6, "taiea.governor.signal", json!({"tenant_id": "sb", "metric": "cpu", "value": 10})),
    ]);
    writeln!(stdin, "{batch}").unwrap();
    // stdin closes at once: the batch still runs to its end before rmcp's input ends.
    drop(stdin);
    let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let answers = answer.as_array().expect("one array for the batch");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            json!("p"),
            json!(3),
            json!(4),
            Value::Null,
            json!(5),
            json!(6)
        ]
        .iter()
        .collect::<Vec<_>>(),
        "{answer}"
    );
    assert_eq!(
        answers[1]["result"]["structuredContent"]["status"],
        "active"
    );
    let states: Vec<&Value> = [&answers[2], &answers[5]]
        .iter()
        .map(|a| &a["result"]["structuredContent"]["state"])
        .collect();
    assert_eq!(states, [&json!("warning"), &json!("stable")], "{answer}");
    assert_eq!(
        (&answers[3]["error"]["code"], &answers[4]["error"]["code"]),
        (&json!(-32600), &json!(-32600))
    );
    assert!(child.wait().unwrap().success());
    assert!(lines.next().is_none(), "nothing but the batch's answer");

    // A session of a later revision has no batches: refused whole, nothing run.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin, mut lines) = stdio_session(dir.path(), LEGACY, &[]);
    let provision = call(
        3,
        "taiea.entitlement.apply_event",
        json!({"tenant_id": "sb", "event_type": "provision"}),
    );
    writeln!(stdin, "{}", json!([provision])).unwrap();
    writeln!(
        stdin,
        "{}",
        call(4, "taiea.governor.state", json!({"tenant_id": "sb"}))
    )
    .unwrap();
    drop(stdin);
    let refused: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (&refused["id"], &refused["error"]["code"]),
        (&Value::Null, &json!(-32600)),
        "{refused}"
    );
    assert!(
        (refused["error"]["message"].as_str().unwrap()).contains("speaks 2025-11-25"),
        "{refused}"
    );
    let state: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        state["result"]["isError"], true,
        "no tenant was provisioned: {state}"
    );
    assert!(child.wait().unwrap().success());
}

#[actix_web::test]
async fn a_client_that_accepts_json_is_served_whatever_else_its_accept_says() {
    let app = spawn_app(|_| {}).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    // This server answers in JSON only, so any Accept that allows JSON is served (curl's and
    // most HTTP libraries' `*/*`, or none at all); one that rules JSON out is 406.
    for (accept, status) in [
        (Some("*/*"), 200),
        (Some("application/json"), 200),
        (Some("application/*;q=0.5, text/html"), 200),
        (None, 200),
        (Some("text/event-stream"), 406),
        (Some("application/json;q=0, */*"), 406),
    ] {
        let mut req = app
            .client
            .post(app.url("/mcp"))
            .insert_header(("content-type", "application/json"));
        if let Some(accept) = accept {
            req = req.insert_header(("accept", accept));
        }
        let mut res = req.send_body(ping.to_string()).await.unwrap();
        let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
        assert_eq!(res.status().as_u16(), status, "{accept:?}: {body}");
        if status == 200 {
            assert_eq!(body, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        } else {
            assert_eq!(body["code"], "invalid_request", "{body}");
        }
    }
}

#[test]
fn mcp_stdio_a_batch_goes_on_when_the_client_cancels_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin, mut lines) = stdio_session(dir.path(), "2025-03-26", &[]);
    let call = |id: u64, name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}})
    };
    let provision = call(
        1,
        "taiea.entitlement.apply_event",
        json!({"tenant_id": "sc", "event_type": "provision"}),
    );
    writeln!(stdin, "{provision}").unwrap();
    let provisioned: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(provisioned["id"], 1, "{provisioned}");
    // Another connection holds SQLite's write lock, so the signal's receipt cannot be made
    // durable and its answer waits.
    let db = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let signal = call(
        10,
        "taiea.governor.signal",
        json!({"tenant_id": "sc", "metric": "cpu", "value": 70}),
    );
    let ping = json!({"jsonrpc": "2.0", "id": 11, "method": "ping"});
    writeln!(stdin, "{}", json!([signal, ping])).unwrap();
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 10, "reason": "took too long"}});
    writeln!(stdin, "{cancel}").unwrap();
    // rmcp answers nothing for a cancelled request (as MCP asks); the batch goes on without it.
    let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!([
            {"jsonrpc": "2.0", "id": 10, "error": {"code": -32800, "message": "cancelled by the client"}},
            {"jsonrpc": "2.0", "id": 11, "result": {}},
        ])
    );
    db.execute_batch("ROLLBACK").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[actix_web::test]
async fn underscored_tool_names_suit_strict_clients_and_a_call_may_use_either_spelling() {
    let strict = |n: &str| {
        (1..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let listed = |answer: &Value| -> Vec<String> {
        answer["result"]["tools"]
            .as_array()
            .expect("a tool list")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let init = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": LEGACY,
        "capabilities": {}, "clientInfo": {"name": "strict", "version": "1"}}});
    let call = |name: &str, value: f64| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name,
            "arguments": {"tenant_id": "un", "metric": "cpu", "value": value}}})
    };

    // The default lists SPEC §10's names, and takes a call in the other spelling too.
    let app = spawn_app(|_| {}).await;
    grant(&app, "un").await;
    let names = listed(&rpc(&app, &[], list.clone()).await.1);
    assert!(
        names.contains(&"taiea.governor.signal".to_owned()),
        "{names:?}"
    );
    let (_, answer) = rpc(&app, &[], call("taiea_governor_signal", 70.0)).await;
    assert_eq!(
        structured(&answer["result"])["state"],
        "warning",
        "{answer}"
    );

    // Underscored: every listed name passes `^[a-zA-Z0-9_-]{1,64}$`, the instructions name the
    // tools so too, and both spellings call; the receipts record SPEC §10's name.
    let app = spawn_app(|s| s.mcp.tool_names = ToolNames::Underscored).await;
    grant(&app, "un").await;
    let names = listed(&rpc(&app, &[], list).await.1);
    assert_eq!(names.len(), 9);
    assert!(names.iter().all(|n| strict(n)), "{names:?}");
    assert!(
        names.contains(&"taiea_entitlement_apply_event".to_owned()),
        "{names:?}"
    );
    let (_, tools) = app.get_json("/mcp/tools").await;
    assert_eq!(
        tools["tools"][5]["name"], "taiea_governor_signal",
        "{tools}"
    );
    let (_, answer) = rpc(&app, &[], init).await;
    let instructions = answer["result"]["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("taiea_governor_signal") && !instructions.contains("taiea."),
        "{instructions}"
    );
    for (name, value, state) in [
        ("taiea_governor_signal", 70.0, "warning"),
        ("taiea.governor.signal", 10.0, "stable"),
    ] {
        let (_, answer) = rpc(&app, &[], call(name, value)).await;
        assert_eq!(structured(&answer["result"])["state"], state, "{answer}");
    }
    let (_, page) = app.get_json("/v1/tenants/un/receipts").await;
    let tools: Vec<&Value> = page["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event_type"] == "mcp_tool_call")
        .map(|r| &r["metadata"]["tool"])
        .collect();
    assert_eq!(
        tools,
        [
            &json!("taiea.governor.signal"),
            &json!("taiea.governor.signal")
        ]
    );
    // A mix of the two spellings names no tool.
    let (_, answer) = rpc(&app, &[], call("taiea.governor_signal", 70.0)).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
}

#[test]
fn mcp_stdio_lists_underscored_tool_names_when_configured_so() {
    // A desktop client starts the process with the setting in its environment.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin, mut lines) = stdio_session(
        dir.path(),
        LEGACY,
        &[("TAI_MCP__TOOL_NAMES", "underscored")],
    );
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    )
    .unwrap();
    let list: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 9);
    assert!(names.iter().all(|n| !n.contains('.')), "{names:?}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "taiea_support_model", "arguments": {}}});
    writeln!(stdin, "{call}").unwrap();
    let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
