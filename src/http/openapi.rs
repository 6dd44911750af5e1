//! `GET /openapi.json`: the OpenAPI 3.1 description of every route in `http::routes`.
//!
//! Built once from the tables below and served as bytes. A black-box test holds it to the
//! router both ways: every operation described answers (no 404 "no such route", no 405), and
//! every resource the router registers is described.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

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

/// One operation: method, path, summary, callers, parameters, request body schema, the
/// success status and its schema, and the error statuses it can answer besides the common ones.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    callers: &'static [&'static str],
    query: &'static [(&'static str, &'static str)],
    /// Takes an `Idempotency-Key` header.
    idempotent: bool,
    body: Option<Value>,
    ok: (u16, Value),
    errors: &'static [u16],
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
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
            errors: &[400, 401, 403, 409, 413, 415, 429, 503],
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
            errors: &[400, 401, 404, 413, 415, 503],
            ..op(
                "post",
                "/pubsub",
                "A Pub/Sub push delivery: 2xx acks, 400/404 dead-letter, 503 redelivers",
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
            body: Some(
                json!({"description": "A JSON-RPC message (MCP Streamable HTTP)", "type": "object"}),
            ),
            errors: &[400, 406, 415],
            ..op(
                "post",
                "/mcp",
                "MCP Streamable HTTP (stateless; GET and DELETE answer 405)",
                ANY_TOKEN,
                (200, any_object()),
            )
        },
        Op {
            body: Some(schema("SignalRequest")),
            idempotent: true,
            errors: &[400, 401, 403, 404, 409, 413, 415, 429, 503],
            ..op(
                "post",
                "/v1/tenants/{tenant}/signals",
                "A signal to the tenant's governor: a decision with its receipts",
                ACTORS,
                (200, schema("Decision")),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "required": ["event", "value"], "properties": {
                "event": {"enum": ["sku_changed", "pack_enabled", "pack_disabled", "iam_role_added", "iam_role_removed"]},
                "value": {"type": "string"}}}),
            ),
            idempotent: true,
            errors: &[400, 401, 403, 404, 409, 413, 415, 429, 503],
            ..op(
                "post",
                "/v1/tenants/{tenant}/entitlement/events",
                "An entitlement event",
                ADMIN,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[400, 401, 403, 404],
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
            query: &[("after_seq", "integer"), ("limit", "integer")],
            errors: &[400, 401, 403, 404, 503],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts",
                "The tenant's chain, paged (limit 1–1000, default 100)",
                READERS,
                (200, schema("ReceiptPage")),
            )
        },
        Op {
            query: &[("anchor_seq", "integer"), ("anchor_hash", "string")],
            errors: &[400, 401, 403, 404, 503],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts/verify",
                "Verify the tenant's whole chain, and against an anchor (anchor_seq and anchor_hash together: a head_seq and head_hash reported earlier) when given",
                READERS,
                (200, schema("Verification")),
            )
        },
        Op {
            query: &[("after_seq", "integer")],
            errors: &[400, 401, 403, 404, 503],
            ..op(
                "get",
                "/v1/tenants/{tenant}/receipts/export",
                "The tenant's whole chain (or what follows after_seq) up to its head (header Chain-Head-Seq), one receipt per line (NDJSON), for `tai-autonomics verify --file` (with --anchor at after_seq)",
                READERS,
                (200, schema("Receipt")),
            )
        },
        Op {
            errors: &[400, 401, 403, 404, 503],
            ..op(
                "get",
                "/v1/receipts/{receipt_id}",
                "One receipt by id",
                READERS,
                (200, schema("Receipt")),
            )
        },
        Op {
            query: &[("limit", "integer"), ("after", "string")],
            errors: &[400, 401, 403],
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
            errors: &[400, 401, 403, 404, 503],
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
                json!({"type": "object", "required": ["tool"], "properties": {
                "tool": {"type": "string"},
                "args": {"type": "object", "additionalProperties": true,
                    "description": "Recorded in the receipt: at most 8 levels of objects and arrays, and 16 KiB as JSON (400 otherwise)"},
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 30000}}}),
            ),
            idempotent: true,
            errors: &[400, 401, 403, 404, 409, 413, 415, 429, 503],
            ..op(
                "post",
                "/v1/governors/{tenant}/tool-calls",
                "A tool call through the tenant's gates",
                ACTORS,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[400, 401, 403, 404, 409, 503],
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
            errors: &[400, 401, 403, 404, 409, 413, 415, 503],
            ..op(
                "post",
                "/v1/governors/{tenant}/actions/{action_id}/{verb}",
                "Webhook executor callback; verb is complete or fail",
                ADMIN,
                (200, schema("Decision")),
            )
        },
        Op {
            errors: &[400, 401, 403],
            query: &[("limit", "integer")],
            ..op(
                "get",
                "/v1/supervision",
                "The supervision tree snapshot",
                OPERATORS,
                (200, any_object()),
            )
        },
        Op {
            errors: &[401, 403],
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
            errors: &[400, 401, 403, 404, 503],
            ..op(
                "post",
                "/v1/chaos/governors/{tenant}/crash",
                "Chaos (chaos.enabled only): the governor panics in a handler",
                ADMIN,
                (200, any_object()),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "required": ["fraction"], "properties": {"fraction": {"type": "number", "minimum": 0, "maximum": 1}}}),
            ),
            errors: &[400, 401, 403, 404],
            ..op(
                "post",
                "/v1/chaos/governors/crash",
                "Chaos (chaos.enabled only): crash a fraction of the running governors",
                ADMIN,
                (200, any_object()),
            )
        },
        Op {
            body: Some(
                json!({"type": "object", "properties": {"fail_ms": {"type": "integer"}, "stall_ms": {"type": "integer"}}}),
            ),
            errors: &[400, 401, 403, 404],
            ..op(
                "post",
                "/v1/chaos/ledger",
                "Chaos (chaos.enabled only): the ledger fails or stalls for a while",
                ADMIN,
                (200, any_object()),
            )
        },
        Op {
            errors: &[400, 401, 403, 404],
            ..op(
                "post",
                "/v1/chaos/actors/{child}/crash",
                "Chaos (chaos.enabled only): a root child panics in a handler",
                ADMIN,
                (200, any_object()),
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
        409 => "the governor refuses or intervenes, or the change conflicts (with its receipt)",
        413 => "body over http.max_body_bytes",
        415 => "wrong content type",
        429 => "rate limited or saturated (Retry-After)",
        _ => "unavailable: ledger, governor restarting, or draining (Retry-After)",
    }
}

fn operation(op: &Op) -> Value {
    let mut parameters: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let mut p =
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
            if name == "tenant" {
                p["schema"]["pattern"] = json!("^[a-z0-9][a-z0-9._-]{0,62}$");
            }
            p
        })
        .collect();
    parameters.extend(op.query.iter().map(|(name, ty)| {
        let mut schema = json!({"type": ty});
        match *name {
            "limit" => {
                schema["minimum"] = json!(1);
                schema["maximum"] = json!(1000);
                schema["default"] = json!(100);
            }
            "after_seq" => schema["minimum"] = json!(0),
            _ => {}
        }
        json!({"name": name, "in": "query", "required": false, "schema": schema})
    }));
    if op.idempotent {
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "One decision per key and tenant: a repeat is answered with the first request's receipt (`decision: duplicate`, header `Idempotent-Replayed: true`)",
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
    for status in op.errors.iter().chain(&[405, 500]) {
        let description = if *status == 500 {
            "internal (our fault only)"
        } else {
            status_text(*status)
        };
        responses.insert(
            status.to_string(),
            json!({"description": description, "content": {"application/json": {"schema": schema("Error")}}}),
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
                "metric": {"type": "string"},
                "value": {"type": "number", "description": "finite"},
                "timestamp_ms": {"type": "integer", "minimum": 0}}},
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
                "entitlement_id": {"type": "string"},
                "action": {"enum": ["grant", "suspend", "resume", "revoke"]},
                "sku": {"type": "string"},
                "customer_id": {"type": "string"},
                "reason": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"},
                "signature": {"type": "string", "description": "a JWT over tenant_id, entitlement_id and action"}}},
            "PubsubPush": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "object", "required": ["data", "messageId"], "properties": {
                    "data": {"type": "string", "contentEncoding": "base64"},
                    "messageId": {"type": "string"},
                    "attributes": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "subscription": {"type": "string"}}},
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
