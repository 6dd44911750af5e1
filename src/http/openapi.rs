//! `GET /openapi.json`: the OpenAPI 3.1 description of every route in `http::routes`.
//!
//! Built once from the tables below and served as bytes. A black-box test holds it to the
//! router both ways: every operation described answers (no 404 "no such route", no 405), and
//! every resource the router registers is described.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use crate::entitlements::model::{PACKS, ROLES, SKUS};

/// `GET /openapi.json`
pub async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| serde_json::to_vec(&build()).unwrap_or_default());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.clone())
}

/// Who may call an operation when `auth.mode = bearer` (the `x-callers` extension).
const OPEN: &[&str] = &[];
const ADMIN: &[&str] = &["admin"];
const OPERATORS: &[&str] = &["admin", "operator"];
const READERS: &[&str] = &["admin", "operator", "tenant (its own)"];
const ACTORS: &[&str] = &["admin", "tenant (its own)"];
const ANY_TOKEN: &[&str] = &["any token"];

/// One operation: method, path, summary, callers, query parameters (their schemas come from
/// [`query_parameter`] by name), request body schema, the success status and its schema, and the
/// error statuses it answers besides those every operation of its kind answers
/// ([`statuses`]).
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    callers: &'static [&'static str],
    query: &'static [&'static str],
    /// Takes an `Idempotency-Key` header.
    idempotent: bool,
    body: Option<Value>,
    ok: (u16, Value),
    errors: &'static [u16],
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A text of 1 to `max` characters, none a control character (`intake::printable`).
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

/// `schema`, or null.
fn nullable(mut schema: Value) -> Value {
    schema["type"] = json!([schema["type"], "null"]);
    schema
}

/// One JSON-RPC 2.0 message as `/mcp` reads it.
fn mcp_message() -> Value {
    json!({"type": "object", "required": ["jsonrpc", "method"],
        "properties": {"jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer"], "minimum": i64::MIN, "maximum": i64::MAX},
            "method": {"type": "string"},
            "params": {"type": ["object", "null"], "properties": {"_meta": {"type": ["object", "null"]}}}}})
}

fn any_object() -> Value {
    json!({"type": "object", "additionalProperties": true})
}

fn ops() -> Vec<Op> {
    let op = |method, path, summary, callers, ok: (u16, Value)| Op {
        method,
        path,
        summary,
        callers,
        query: &[],
        idempotent: false,
        body: None,
        ok,
        errors: &[],
    };
    vec![
        Op {
            errors: &[503],
            ..op(
                "get",
                "/health",
                "The operations guide's health body",
                OPEN,
                (200, schema("Health")),
            )
        },
        op(
            "get",
            "/health/live",
            "Liveness: the process answers",
            OPEN,
            (
                200,
                json!({"type": "object", "properties": {"status": {"const": "ok"}}}),
            ),
        ),
        Op {
            errors: &[503],
            ..op(
                "get",
                "/health/ready",
                "Readiness: tree up, ledger reachable and taking writes, not draining",
                OPEN,
                (200, any_object()),
            )
        },
        op(
            "get",
            "/metrics",
            "Prometheus text exposition",
            OPEN,
            (
                200,
                json!({"type": "string", "contentMediaType": "text/plain"}),
            ),
        ),
        Op {
            body: Some(schema("MarketplaceRequest")),
            idempotent: true,
            errors: &[404, 409, 429],
            ..op(
                "post",
                "/marketplace",
                "Grant, suspend, resume or revoke a tenant's entitlement",
                ADMIN,
                (200, schema("Decision")),
            )
        },
        Op {
            body: Some(schema("PubsubPush")),
            errors: &[404],
            ..op(
                "post",
                "/pubsub",
                "A Pub/Sub push delivery: 2xx acks, 400/404 dead-letter, 503 redelivers. The body is the push envelope; from a subscription with payload unwrapping and write metadata, the message's data itself with its id in x-goog-pubsub-message-id and its kind attribute in a kind header",
                &["Pub/Sub OIDC token, else admin"],
                (200, any_object()),
            )
        },
        op(
            "get",
            "/v1/pubsub",
            "This instance's Pub/Sub consumer",
            OPERATORS,
            (200, any_object()),
        ),
        op(
            "get",
            "/mcp/tools",
            "The MCP tool table, exactly as tools/list returns it",
            ANY_TOKEN,
            (
                200,
                json!({"type": "object", "properties": {"tools": {"type": "array", "items": any_object()}}}),
            ),
        ),
        Op {
            body: Some(json!({
                "description": "One JSON-RPC 2.0 request (with id: answered 200, a JSON-RPC error included) or notification (202), and no responses (the transport is stateless). Without an MCP-Protocol-Version header (MCP 2025-03-26) also a batch: an array of 1 to 100 messages, answered with an array of the requests' answers in order (202 when it holds notifications only)",
                "oneOf": [mcp_message(), {"type": "array", "minItems": 1,
                    "maxItems": crate::mcp::batch::MAX_BATCH,
                    // JSON-RPC answers a member that is not a message with an error in its
                    // place, so any member is taken.
                    "items": {"description": "a JSON-RPC 2.0 message as above; any other member is answered with a -32600 error in its place"}}]})),
            // 403: an Origin or Host off the allow-list (DNS rebinding).
            errors: &[403, 406],
            ..op(
                "post",
                "/mcp",
                "MCP Streamable HTTP (stateless; GET and DELETE answer 405)",
                ANY_TOKEN,
                (200, json!({"type": ["object", "array"]})),
            )
        },
        Op {
            body: Some(schema("SignalRequest")),
            idempotent: true,
            errors: &[404, 409, 429],
            ..op(
                "post",
                "/v1/tenants/{tenant}/signals",
                "A signal to the tenant's governor: a decision with its receipts",
                ACTORS,
                (200, schema("Decision")),
            )
        },
        Op {
            body: Some(entitlement_event()),
            idempotent: true,
            errors: &[404, 409, 429],
            ..op(
                "post",
                "/v1/tenants/{tenant}/entitlement/events",
                "An entitlement event",
                ADMIN,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[429],
            ..op(
                "get",
                "/v1/tenants/{tenant}/entitlement",
                "The tenant's entitlement record",
                READERS,
                (
                    200,
                    json!({"type": "object", "properties": {"entitlement": any_object(), "active": {"type": "boolean"}}}),
                ),
            )
        },
        Op {
            query: &["after_seq", "limit"],
            errors: &[429],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts",
                "The tenant's chain, paged (limit 1–1000, default 100)",
                READERS,
                (200, schema("ReceiptPage")),
            )
        },
        Op {
            query: &["anchor"],
            errors: &[429],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts/verify",
                "Verify the tenant's whole chain, and against an anchor (anchor_seq and anchor_hash together: a head_seq and head_hash reported earlier) when given",
                READERS,
                (200, schema("Verification")),
            )
        },
        Op {
            query: &["after_seq"],
            errors: &[429],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts/export",
                "The tenant's whole chain (or what follows after_seq) up to its head (header Chain-Head-Seq), one receipt per line (NDJSON), for `tai-autonomics verify --file` (with --anchor at after_seq)",
                READERS,
                (200, schema("Receipt")),
            )
        },
        Op {
            errors: &[404],
            ..op(
                "get",
                "/v1/receipts/{receipt_id}",
                "One receipt by id",
                READERS,
                (200, schema("Receipt")),
            )
        },
        Op {
            query: &["limit", "after"],
            errors: &[400],
            ..op(
                "get",
                "/v1/tenants",
                "Every tenant with a chain, in id order, paged, with its entitlement's standing",
                OPERATORS,
                (
                    200,
                    json!({"type": "object", "required": ["tenants", "next_after"], "properties": {
                "next_after": {"type": ["string", "null"]},
                "tenants": {"type": "array", "items": {"type": "object",
                    "required": ["tenant_id", "status", "sku", "active", "head_seq"], "properties": {
                    "tenant_id": {"type": "string"},
                    "status": {"type": ["string", "null"], "enum": ["active", "suspended", "revoked", null]},
                    "sku": {"type": ["string", "null"]}, "active": {"type": "boolean"},
                    "head_seq": {"type": ["integer", "null"]},
                    "unreadable": {"type": "string", "description": "present when the tenant's stored data cannot be read back (ledger_corrupt): why"}}}}}}),
                ),
            )
        },
        Op {
            query: &["limit", "after"],
            errors: &[400],
            ..op(
                "get",
                "/v1/governors",
                "Running governors in tenant order, paged",
                OPERATORS,
                (
                    200,
                    json!({"type": "object", "properties": {
                "total": {"type": "integer"}, "next_after": {"type": ["string", "null"]},
                "governors": {"type": "array", "items": {"type": "object", "properties": {
                    "tenant_id": {"type": "string"}, "child_state": {"type": "string"},
                    "restarts": {"type": "integer"}, "governor": {"oneOf": [schema("Governor"), {"type": "null"}]}}}}}}),
                ),
            )
        },
        Op {
            errors: &[429],
            ..op(
                "get",
                "/v1/governors/{tenant}",
                "One governor: state, seq, head hash, action in flight, restarts",
                READERS,
                (200, schema("Governor")),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "required": ["tool"], "additionalProperties": false, "properties": {
                "tool": {"type": "string", "pattern": "^[a-z_]{1,64}$", "description": "a tool name such as health"},
                "args": {"type": ["object", "null"], "additionalProperties": true,
                    "description": "Recorded in the receipt: at most 8 levels of objects and arrays, and 16 KiB as JSON (400 otherwise)"},
                "timeout_ms": {"type": ["integer", "null"], "minimum": 1, "maximum": 30000}}}),
            ),
            idempotent: true,
            errors: &[404, 409, 429],
            ..op(
                "post",
                "/v1/governors/{tenant}/tool-calls",
                "A tool call through the tenant's gates",
                ACTORS,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[409],
            ..op(
                "post",
                "/v1/governors/{tenant}/reset",
                "Operator reset out of refusing",
                OPERATORS,
                (200, schema("Decision")),
            )
        },
        Op {
            body: Some(
                json!({"description": "The executor's result (complete) or error (fail)", "type": "object"}),
            ),
            errors: &[404, 409],
            ..op(
                "post",
                "/v1/governors/{tenant}/actions/{action_id}/{verb}",
                "Webhook executor callback; verb is complete or fail",
                ADMIN,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[400],
            query: &["limit"],
            ..op(
                "get",
                "/v1/supervision",
                "The supervision tree snapshot",
                OPERATORS,
                (200, any_object()),
            )
        },
        op(
            "get",
            "/v1/ledger/audit",
            "The ledger audit: its settings, its passes, and the chains it found broken (at most 1000 listed, in tenant order)",
            OPERATORS,
            (
                200,
                json!({"type": "object",
                    "required": ["enabled", "interval_secs", "receipts_per_sec", "running", "passes", "last_pass", "anchored_chains", "broken_total", "broken"],
                    "properties": {
                    "enabled": {"type": "boolean"},
                    "interval_secs": {"type": ["integer", "null"]},
                    "receipts_per_sec": {"type": ["integer", "null"]},
                    "running": {"type": "boolean", "description": "a pass is going over the chains now"},
                    "passes": {"type": "object", "required": ["complete", "stopped"], "properties": {
                        "complete": {"type": "integer"}, "stopped": {"type": "integer"}}},
                    "last_pass": {"oneOf": [{"type": "null"}, {"type": "object",
                        "required": ["ended_at", "chains", "receipts", "broken", "skipped", "seconds"], "properties": {
                        "ended_at": {"type": "string"}, "chains": {"type": "integer"},
                        "receipts": {"type": "integer"}, "broken": {"type": "integer"},
                        "skipped": {"type": "integer"}, "seconds": {"type": "number"}}}]},
                    "anchored_chains": {"type": "integer", "description": "chains whose head the audit remembers from the last pass that found them whole; the next pass checks that each still reaches it"},
                    "broken_total": {"type": "integer"},
                    "broken": {"type": "array", "items": {"type": "object",
                        "required": ["tenant_id", "seq", "reason", "found_at"], "properties": {
                        "tenant_id": {"type": "string"},
                        "seq": {"type": ["integer", "null"], "description": "the first receipt that does not verify; null when the chain's head cannot be read"},
                        "reason": {"type": "string"}, "found_at": {"type": "string"}}}}}}),
            ),
        ),
        Op {
            ..op(
                "get",
                "/v1/supervision/events",
                "The latest supervision events",
                OPERATORS,
                (200, any_object()),
            )
        },
        op(
            "get",
            "/observer",
            "A live page of the supervision tree, governors by state and restarts",
            OPEN,
            (
                200,
                json!({"type": "string", "contentMediaType": "text/html"}),
            ),
        ),
        op(
            "get",
            "/openapi.json",
            "This document",
            OPEN,
            (200, json!({"type": "object"})),
        ),
        Op {
            errors: &[404],
            ..op(
                "post",
                "/v1/chaos/governors/{tenant}/crash",
                "Chaos (chaos.enabled only): the governor panics in a handler",
                ADMIN,
                (202, any_object()),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "required": ["fraction"], "additionalProperties": false, "properties": {"fraction": {"type": "number", "minimum": 0, "maximum": 1}}}),
            ),
            errors: &[404],
            ..op(
                "post",
                "/v1/chaos/governors/crash",
                "Chaos (chaos.enabled only): crash a fraction of the running governors",
                ADMIN,
                (202, any_object()),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "description": "exactly one of fail_ms and stall_ms",
                    "additionalProperties": false,
                    "properties": {
                        "fail_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 600000},
                        "stall_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 600000}},
                    "oneOf": [
                        {"required": ["fail_ms"], "properties": {"fail_ms": {"type": "integer"}}},
                        {"required": ["stall_ms"], "properties": {"stall_ms": {"type": "integer"}}}]}),
            ),
            errors: &[404],
            ..op(
                "post",
                "/v1/chaos/ledger",
                "Chaos (chaos.enabled only): the ledger fails or stalls for a while",
                ADMIN,
                (202, any_object()),
            )
        },
        Op {
            errors: &[404],
            ..op(
                "post",
                "/v1/chaos/actors/{child}/crash",
                "Chaos (chaos.enabled only): a root child panics in a handler",
                ADMIN,
                (202, any_object()),
            )
        },
    ]
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "malformed request (invalid_json, invalid_request, invalid_tenant_id)",
        401 => "no or bad credentials (unauthorized, invalid_signature)",
        403 => "the caller may not do this (forbidden)",
        404 => "unknown tenant, receipt or route",
        405 => "wrong method (Allow lists the right ones)",
        406 => "the client does not accept the answer's media types",
        408 => "the body stopped arriving (request_timeout)",
        409 => "the governor refuses or intervenes, or the change conflicts (with its receipt)",
        413 => "body over http.max_body_bytes",
        415 => "wrong content type, or a Content-Encoding (bodies are taken uncompressed)",
        422 => "the Idempotency-Key was used before for another request (idempotency_key_reused)",
        429 => "rate limited or saturated (Retry-After)",
        500 => "our fault (internal), or ledger data that cannot be read back (ledger_corrupt)",
        _ => "unavailable: ledger, governor restarting, or draining (Retry-After)",
    }
}

/// Every status `op` can answer besides its success: its own, and those that every operation
/// of its kind answers. Any route: 405 (another method), 415 (a `Content-Encoding`), 500;
/// 503 while draining, except the health routes and `/metrics`. With callers: 401, and 403
/// unless any token will do. With a body: 400, 408, 413, 415. With an `Idempotency-Key`: 422
/// (the key used before for another request). With a path parameter: 400 (a malformed one)
/// and 404.
fn statuses(op: &Op) -> BTreeSet<u16> {
    let mut all: BTreeSet<u16> = op.errors.iter().copied().collect();
    all.extend([405, 415, 500]);
    if !super::middleware::exempt_from_drain(op.path) {
        all.insert(503);
    }
    if !op.callers.is_empty() {
        all.insert(401);
        if op.callers != ANY_TOKEN {
            all.insert(403);
        }
    }
    if op.body.is_some() {
        all.extend([400, 408, 413, 415]);
    }
    if op.idempotent {
        all.insert(422);
    }
    if op.path.contains('{') {
        all.extend([400, 404]);
    }
    all
}

/// A query parameter by name. An empty value counts as absent (`allowEmptyValue`).
/// `anchor` is the pair `anchor_seq` and `anchor_hash`, given together or not at all: one
/// object parameter exploded into the two (form style), so that a schema can say so.
fn query_parameter(name: &str) -> Value {
    let schema = match name {
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        "after_seq" => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        "after" => json!({"type": "string", "description": "the next_after of the page before"}),
        "anchor" => {
            return json!({"name": "anchor", "in": "query", "required": false,
                "style": "form", "explode": true,
                "description": "a head_seq and head_hash an earlier verification reported",
                "schema": {"type": "object", "additionalProperties": false,
                    "properties": {
                        "anchor_seq": {"type": "integer", "minimum": 1, "maximum": u64::MAX},
                        "anchor_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    "dependentRequired": {"anchor_seq": ["anchor_hash"], "anchor_hash": ["anchor_seq"]}}})
        }
        other => unreachable!("no schema for query parameter {other}"),
    };
    json!({"name": name, "in": "query", "required": false, "allowEmptyValue": true, "schema": schema})
}

/// A path parameter by name.
fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "tenant" => json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"}),
        "action_id" => json!({"type": "string", "maxLength": 64}),
        "verb" => json!({"enum": ["complete", "fail"]}),
        "receipt_id" => json!({"type": "string", "pattern": "^[0-9A-Fa-f-]{1,64}$",
            "description": "a receipt's UUID; any other shape is 404"}),
        _ => json!({"type": "string"}),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// `POST /v1/tenants/{t}/entitlement/events`: each event with the values it takes.
fn entitlement_event() -> Value {
    let event = |events: &[&str], values: &[&str]| {
        json!({"type": "object", "required": ["event", "value"], "additionalProperties": false,
            "properties": {"event": {"enum": events}, "value": {"enum": values}}})
    };
    json!({"oneOf": [
        event(&["sku_changed"], &SKUS),
        event(&["pack_enabled", "pack_disabled"], &PACKS),
        event(&["iam_role_added", "iam_role_removed"], &ROLES),
    ]})
}

fn operation(op: &Op) -> Value {
    let mut parameters: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(path_parameter)
        .collect();
    parameters.extend(op.query.iter().map(|name| query_parameter(name)));
    if op.idempotent {
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "One decision per key and tenant: a repeat of the same request is answered with the first request's receipt (`decision: duplicate`, header `Idempotent-Replayed: true`); another request with a used key is 422 `idempotency_key_reused`",
            "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"}}));
    }
    let mut responses = Map::new();
    let media = if op.path == "/metrics" {
        "text/plain"
    } else if op.path == "/observer" {
        "text/html"
    } else if op.path.ends_with("/receipts/export") {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    responses.insert(
        op.ok.0.to_string(),
        json!({"description": "success", "content": {media: {"schema": op.ok.1}}}),
    );
    if op.path == "/mcp" {
        responses.insert(
            "202".into(),
            json!({"description": "a notification, taken (no content)"}),
        );
    }
    for status in statuses(op) {
        responses.insert(
            status.to_string(),
            json!({"description": status_text(status), "content": {"application/json": {"schema": schema("Error")}}}),
        );
    }
    let mut o = json!({
        "summary": op.summary,
        "operationId": operation_id(op),
        "x-callers": op.callers,
        "responses": responses,
    });
    if !parameters.is_empty() {
        o["parameters"] = json!(parameters);
    }
    if let Some(body) = &op.body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": body}}});
    }
    if op.callers.is_empty() {
        o["security"] = json!([]);
    }
    o
}

/// `post_v1_governors_by_tenant_reset`: the method, then the path's segments, each
/// `{parameter}` as `by_parameter`, so that two paths that differ only by a parameter differ.
fn operation_id(op: &Op) -> String {
    let words: Vec<String> = op
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(param) => format!("by_{param}"),
                None => s.to_owned(),
            },
        )
        .collect();
    format!("{}_{}", op.method, words.join("_").replace(['-', '.'], "_"))
}

fn components() -> Value {
    let receipt = json!({
        "type": "object",
        "required": ["receipt_id", "tenant_id", "seq", "type", "event_type", "state_from", "state_to",
                     "reason", "metadata", "node", "timestamp", "prev_hash", "receipt_hash"],
        "properties": {
            "receipt_id": {"type": "string", "format": "uuid", "description": "UUIDv7"},
            "tenant_id": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "type": {"enum": ["transition", "refusal", "action", "tool_call", "entitlement"]},
            "event_type": {"type": "string"},
            "state_from": {"type": ["string", "null"]},
            "state_to": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "metadata": {"type": "object"},
            "node": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time", "description": "RFC 3339 UTC with milliseconds"},
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "receipt_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                             "description": "SHA-256 of the RFC 8785 canonical JSON of the receipt without receipt_hash"}
        }
    });
    let state = json!({"enum": ["boot", "stable", "warning", "intervening", "refusing"]});
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
            "description": "With auth.mode = bearer: a token whose SHA-256 is configured with a role (admin, operator, tenant)"}},
        "schemas": {
            "Error": {"type": "object", "required": ["type", "code", "message"], "properties": {
                "type": {"const": "refusal"},
                "code": {"type": "string", "description": "a stable snake_case code"},
                "message": {"type": "string"},
                "receipt": receipt.clone(),
                "receipts": {"type": "array", "items": schema("Receipt"),
                    "description": "a governor's refusal: every receipt appended for the input, in order (the last is `receipt`)"}}},
            "Receipt": receipt,
            "SignalRequest": {"type": "object", "required": ["metric", "value"], "additionalProperties": false, "properties": {
                "metric": text(128),
                "value": {"type": "number", "description": "finite"},
                "timestamp_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX}}},
            "Decision": {"type": "object", "properties": {
                "decision": {"enum": ["accept", "refuse", "duplicate"]},
                "state": state.clone(),
                "postponed": {"type": "boolean"},
                "reason": {"type": "string"},
                "receipt": {"oneOf": [schema("Receipt"), {"type": "null"}]},
                "receipts": {"type": "array", "items": schema("Receipt")}},
                "additionalProperties": true},
            "MarketplaceRequest": {"type": "object", "required": ["tenant_id", "entitlement_id", "action"], "properties": {
                "tenant_id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"},
                "entitlement_id": text(128),
                "action": {"enum": ["grant", "suspend", "resume", "revoke"]},
                "sku": {"enum": [SKUS[0], SKUS[1], SKUS[2], null], "description": "grant: the SKU granted (base when absent)"},
                "customer_id": nullable(text(128)),
                "reason": {"type": ["string", "null"], "description": "recorded, cut at 512 characters"},
                "expires_at": {"type": ["string", "null"], "format": "date-time",
                    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$",
                    "description": "UTC, ending in Z"},
                "signature": {"type": ["string", "null"], "description": "a JWT over tenant_id, entitlement_id and action"}}},
            "PubsubPush": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "object", "required": ["data", "messageId"], "properties": {
                    "data": {"type": "string", "contentEncoding": "base64", "contentMediaType": "application/json",
                        "description": "a signal ({tenant_id, metric, value, timestamp_ms?}) or, with attributes.kind = marketplace, a marketplace request; anything else is 400 (dead-letter)"},
                    "messageId": {"type": "string", "pattern": "^[!-~]{1,128}$", "not": {"pattern": "^http:"},
                        "description": "also read as message_id"},
                    "attributes": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}},
                "subscription": {"type": ["string", "null"]}}},
            "Governor": {"type": "object", "properties": {
                "tenant_id": {"type": "string"},
                "state": state,
                "seq": {"type": "integer"},
                "head_hash": {"type": "string"},
                "action_in_flight": {"type": ["object", "null"]},
                "postponed": {"type": "integer"},
                "entitlement_active": {"type": "boolean"},
                "restarts": {"type": "integer"}}},
            "ReceiptPage": {"type": "object", "properties": {
                "tenant_id": {"type": "string"},
                "head_seq": {"type": "integer"},
                "receipts": {"type": "array", "items": schema("Receipt")},
                "next_after_seq": {"type": ["integer", "null"]}}},
            "Verification": {"type": "object", "properties": {
                "valid": {"type": "boolean"},
                "receipts_checked": {"type": "integer"},
                "head_seq": {"type": "integer"},
                "head_hash": {"type": "string"},
                "first_broken": {"type": ["object", "null"], "properties": {
                    "seq": {"type": "integer"}, "reason": {"type": "string"}}},
                "anchor": {"type": "object", "properties": {
                    "seq": {"type": "integer"}, "hash": {"type": "string"}}}}},
            "Health": {"type": "object", "required": ["status", "node", "uptime_ms", "timestamp", "checks"], "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "node": {"type": "string"},
                "uptime_ms": {"type": "integer"},
                "timestamp": {"type": "string", "format": "date-time"},
                "checks": {"type": "object", "properties": {
                    "http_server": {"type": "string"}, "pubsub_ready": {"type": "string"},
                    "ledger": {"type": "string"}, "supervision": {"type": "string"}}}}}
        }
    })
}

/// The whole document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for op in ops() {
        let item = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[op.method] = operation(&op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "TAI Autonomics",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-tenant governors, gates and hash-chained receipts. Every error is JSON: \
                            {\"type\":\"refusal\",\"code\":\"…\",\"message\":\"…\"}, plus the receipt when \
                            the refusal was recorded. x-callers lists who may call an operation when \
                            auth.mode = bearer; with auth.mode = none every caller is admin."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_from_the_kind_of_operation() {
        let doc = build();
        let codes = |path: &str, method: &str| {
            let mut codes: Vec<String> = doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            codes.sort();
            codes.join(" ")
        };
        // Open, no body, exempt from the drain.
        assert_eq!(codes("/health/live", "get"), "200 405 415 500");
        assert_eq!(
            codes("/v1/tenants/{tenant}/signals", "post"),
            "200 400 401 403 404 405 408 409 413 415 422 429 500 503"
        );
        // Any token: 403 only for its own reason; a notification is 202.
        assert_eq!(codes("/mcp/tools", "get"), "200 401 405 415 500 503");
        assert_eq!(
            codes("/mcp", "post"),
            "200 202 400 401 403 405 406 408 413 415 500 503"
        );
    }

    #[test]
    fn every_operation_has_a_unique_id_and_its_path_parameters() {
        let doc = build();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "{id} is unique");
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                let braces = path.matches('{').count();
                assert_eq!(params.len(), braces, "{method} {path}");
            }
        }
    }
}
