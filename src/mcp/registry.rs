//! The McpRegistry actor (supervised): holds the tool table and runs tool calls against the
//! real actors and ledger. A call is checked in order: the tool exists (else a protocol error),
//! its arguments fit the schema, the caller's token may use it (a tenant token only its own
//! tenant), then it runs. Tenant-scoped calls on a known tenant record the gates and append a
//! `tool_call` receipt to the tenant's chain; the answer waits for that receipt. Results carry
//! `structuredContent` and a text copy; failures are `isError` results that say what is wrong.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use supervisors::SupervisorRef;

use super::tools::{find, table, validate, Access, ToolDef};
use crate::auth::Caller;
use crate::config::ToolNames;
use crate::entitlements::{gates, Action, Entitlement, Event};
use crate::http::error::ApiError;
use crate::intake::{Intake, MarketplaceRequest, SignalRequest};
use crate::pubsub::PubsubHealth;
use crate::receipts::writer::{LedgerError, LedgerHandle, NewReceipt};
use crate::receipts::{verify_chain, Anchor, LedgerStore, ReceiptDraft, ReceiptType};
use crate::tenant::TenantId;

const ASK: Duration = Duration::from_secs(2);

/// What tools act on.
#[derive(Clone)]
pub struct Ops {
    /// The tenants' token buckets, the same as HTTP's.
    pub limits: Arc<crate::limits::TenantLimits>,
    pub intake: Intake,
    pub ledger: LedgerHandle,
    /// The root supervisor, known once the tree runs.
    pub root: Arc<OnceLock<SupervisorRef>>,
    pub pubsub: PubsubHealth,
    pub node: String,
    pub started: Instant,
}

/// The registry.
pub struct McpRegistry {
    ops: Ops,
    tools: Arc<Vec<ToolDef>>,
    /// How `tools/list` spells the names (`mcp.tool_names`).
    names: ToolNames,
}

impl McpRegistry {
    pub fn new(ops: Ops, names: ToolNames) -> Self {
        McpRegistry {
            ops,
            tools: Arc::new(table()),
            names,
        }
    }
}

impl Actor for McpRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let names: Vec<&str> = self.tools.iter().map(|t| t.name).collect();
        tracing::info!(tools = self.tools.len(), names = ?names, listed = self.names.as_str(), "MCP registry started");
    }
}

/// `tools/list`: every tool, in table order, its name spelled as `mcp.tool_names` says.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub struct ListTools;

impl Handler<ListTools> for McpRegistry {
    type Result = MessageResult<ListTools>;
    fn handle(&mut self, _: ListTools, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tools.iter().map(|t| t.to_json(self.names)).collect())
    }
}

/// `tools/call`, naming the tool in either spelling (its receipt records SPEC §10's). `Err` =
/// no such tool (a protocol error); `Ok` = a `CallToolResult`.
#[derive(Message)]
#[rtype(result = "Result<Value, String>")]
pub struct CallTool {
    pub name: String,
    pub arguments: Value,
    pub caller: Caller,
}

/// Chaos hook: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for McpRegistry {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: MCP registry crash requested");
    }
}

impl Handler<CallTool> for McpRegistry {
    type Result = ResponseFuture<Result<Value, String>>;
    fn handle(&mut self, msg: CallTool, _: &mut Context<Self>) -> Self::Result {
        let (ops, tools) = (self.ops.clone(), self.tools.clone());
        Box::pin(async move {
            let Some(def) = find(&tools, &msg.name) else {
                return Err(format!("unknown tool: {}", msg.name));
            };
            let args = if msg.arguments.is_null() {
                json!({})
            } else {
                msg.arguments
            };
            if let Err(e) = validate(&def.input, &args) {
                return Ok(failure(&format!("invalid arguments: {e}")));
            }
            Ok(call(&ops, def, &args, &msg.caller).await)
        })
    }
}

/// A successful result: structured content and its text copy.
fn success(v: Value) -> Value {
    json!({"resultType": "complete", "content": [{"type": "text", "text": v.to_string()}], "structuredContent": v, "isError": false})
}

/// A tool error (no structured content, so clients do not validate it against the schema).
fn failure(message: &str) -> Value {
    json!({"resultType": "complete", "content": [{"type": "text", "text": message}], "isError": true})
}

fn api(e: ApiError) -> String {
    format!(
        "{}: {}",
        serde_json::to_value(e.code)
            .unwrap_or(Value::Null)
            .as_str()
            .unwrap_or("error"),
        e.message
    )
}

async fn call(ops: &Ops, def: &ToolDef, args: &Value, caller: &Caller) -> Value {
    let tenant = match args.get("tenant_id").and_then(Value::as_str) {
        Some(raw) => match TenantId::parse(raw) {
            Ok(t) => Some(t),
            Err(e) => return failure(&format!("invalid tenant_id: {e}")),
        },
        None => None,
    };
    let allowed = match (def.access, &tenant) {
        (Access::Anyone, _) => Ok(()),
        (Access::Operator, _) => caller.require_operator(),
        (Access::Admin, _) => caller.require_admin(),
        (Access::TenantRead, Some(t)) => caller.may_read(t),
        (Access::TenantAct, Some(t)) => caller.may_act_for(t),
        (_, None) => Ok(()),
    };
    if let Err(e) = allowed {
        return failure(&format!("forbidden: {e}"));
    }
    // A tenant's calls take from the bucket its HTTP requests take from.
    if let Some(Err(e)) = tenant.as_ref().map(|t| ops.limits.check(t)) {
        let wait = e.retry_after_secs.unwrap_or(1);
        return failure(&format!("{} (retry in {wait} s)", api(e)));
    }
    // A tenant acting for itself passes its gates first (entitlement, tool, preconditions);
    // a refusal is recorded in its chain. Operators and admins are not held back by a
    // tenant's entitlement (they suspend, resume and audit it), their calls record the gates.
    if let (Caller::Tenant(_), Some(t)) = (caller, tenant.as_ref().filter(|_| def.tenant_scoped()))
    {
        let entitlement = match ops.intake.entitlement(t).await {
            Ok(e) => e,
            Err(e) => return failure(&api(e)),
        };
        if let Some(ent) = entitlement {
            let gate = gates::evaluate(
                Some(&ent),
                &crate::clock::now_rfc3339(),
                def.gate_tool(args),
                args,
            );
            if let Some(reason) = gate.refusal {
                let draft =
                    ReceiptDraft::new(t.as_str(), ReceiptType::Refusal, "mcp_tool_refused", reason)
                        .metadata(json!({"tool": def.name, "gates": gate.gates}));
                if let Err(e) = ops.ledger.append_one(on_record(draft, &ent)).await {
                    forget_if_stale(ops, t, &e).await;
                    return failure(&format!(
                        "unavailable: the refusal could not be recorded ({e}); retry"
                    ));
                }
                return failure(&format!("refused by the gates: {reason} ({})", gate.gates));
            }
        }
    }
    let outcome = run(ops, def.name, args, tenant.as_ref()).await;
    let Some(tenant) = tenant.filter(|_| def.tenant_scoped()) else {
        return match outcome {
            Ok(v) => success(v),
            Err(e) => failure(&e),
        };
    };
    // The call leaves its receipt in a known tenant's chain (nothing for unknown tenants).
    let entitlement = match ops.intake.entitlement(&tenant).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return match outcome {
                Ok(v) => success(v),
                Err(e) => failure(&e),
            }
        }
        Err(e) => return failure(&api(e)),
    };
    let gate = gates::evaluate(
        Some(&entitlement),
        &crate::clock::now_rfc3339(),
        def.gate_tool(args),
        args,
    );
    let mut metadata = json!({"tool": def.name, "gates": gate.gates, "outcome": if outcome.is_ok() { "ok" } else { "error" }});
    if def.name == "taiea.governor.signal" || def.name == "taiea.entitlement.apply_event" {
        metadata["arguments"] = args.clone();
    }
    if let Err(e) = &outcome {
        metadata["error"] = json!(e);
    }
    let draft = ReceiptDraft::new(
        tenant.as_str(),
        ReceiptType::ToolCall,
        "mcp_tool_call",
        format!("{} called over MCP", def.name),
    )
    .metadata(metadata);
    let receipt = match ops.ledger.append_one(on_record(draft, &entitlement)).await {
        Ok(r) => r,
        Err(e) => {
            forget_if_stale(ops, &tenant, &e).await;
            return failure(&format!(
                "unavailable: the call's receipt could not be made durable ({e}); retry"
            ));
        }
    };
    match outcome {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("tool_call_receipt_id".into(), json!(receipt.receipt_id));
            }
            success(v)
        }
        Err(e) => failure(&e),
    }
}

/// A call's receipt, naming the record its gates were evaluated on (see
/// [`NewReceipt::expects`]): if the ledger holds a newer one, nothing is written.
fn on_record(draft: ReceiptDraft, record: &Entitlement) -> NewReceipt {
    NewReceipt {
        expects: Some(crate::entitlements::actor::fingerprint(record)),
        ..NewReceipt::new(draft)
    }
}

/// After the ledger refused a call's receipt because the record it named is no longer the
/// tenant's latest (a change made through another instance), or because another instance
/// wrote first: the instance's cached record is dropped, so the caller's retry is gated on
/// the stored one.
async fn forget_if_stale(ops: &Ops, tenant: &TenantId, e: &LedgerError) {
    if matches!(e, LedgerError::Superseded(_) | LedgerError::Conflict(_)) {
        let _ = ops.intake.reload_entitlement(tenant).await;
    }
}

fn str_arg(args: &Value, name: &str) -> Option<String> {
    args.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// An integer argument (its schema checked it is one, `5.0` included) as a `u64`; one past
/// `u64` or below 0 is refused rather than read as absent.
fn uint_arg(args: &Value, name: &str) -> Result<Option<u64>, String> {
    match args.get(name).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => crate::intake::whole_value(v).map(Some).ok_or_else(|| {
            format!(
                "invalid_request: `{name}` must be a whole number from 0 to {}",
                u64::MAX
            )
        }),
    }
}

fn tenant_of(t: Option<&TenantId>) -> Result<&TenantId, String> {
    t.ok_or_else(|| "missing required argument `tenant_id`".to_owned())
}

/// Runs one tool; `Err` is the message of an `isError` result.
async fn run(
    ops: &Ops,
    name: &str,
    args: &Value,
    tenant: Option<&TenantId>,
) -> Result<Value, String> {
    match name {
        "taiea.health.check" => Ok(health(ops).await),
        "taiea.support.model" => Ok(crate::governor::tools::support_model()),
        "taiea.entitlement.apply_event" => {
            let t = tenant_of(tenant)?;
            let data = args.get("event_data").cloned().unwrap_or(json!({}));
            let event_type = str_arg(args, "event_type").unwrap_or_default();
            let changed = if event_type == "modify" {
                let sku = str_arg(&data, "sku").ok_or("modify needs event_data.sku")?;
                ops.intake
                    .entitlement_event(t, Event::SkuChanged(sku), None)
                    .await
            } else {
                let action = match event_type.as_str() {
                    "provision" => Action::Grant,
                    "deprovision" => Action::Revoke,
                    "suspend" => Action::Suspend,
                    _ => Action::Resume,
                };
                // Without an id, provision names a new one and the others act on the
                // tenant's current entitlement (the marketplace refuses any other id).
                let entitlement_id = match str_arg(&data, "entitlement_id") {
                    Some(id) => id,
                    None if action == Action::Grant => format!("mcp-{t}"),
                    None => match ops.intake.entitlement(t).await.map_err(api)? {
                        Some(e) => e.entitlement_id,
                        None => format!("mcp-{t}"),
                    },
                };
                let req = MarketplaceRequest {
                    tenant_id: t.to_string(),
                    entitlement_id,
                    action,
                    sku: str_arg(&data, "sku"),
                    customer_id: str_arg(&data, "customer_id"),
                    reason: str_arg(&data, "reason")
                        .or_else(|| Some(format!("{event_type} over MCP"))),
                    expires_at: str_arg(&data, "expires_at"),
                    signature: None,
                };
                ops.intake.entitlement_change(t, req).await
            }
            .map_err(api)?;
            Ok(
                json!({"tenant_id": t.as_str(), "status": changed.entitlement.status, "entitlement": changed.entitlement, "receipt": changed.receipt}),
            )
        }
        "taiea.receipts.verify_chain" => {
            let t = tenant_of(tenant)?;
            let anchor = match (uint_arg(args, "anchor_seq")?, str_arg(args, "anchor_hash")) {
                (None, None) => None,
                (Some(seq), Some(hash)) => {
                    Some(Anchor::new(seq, &hash).map_err(|m| format!("invalid_request: {m}"))?)
                }
                _ => return Err(
                    "invalid_request: anchor_seq and anchor_hash are given together or not at all"
                        .into(),
                ),
            };
            let store = ops.ledger.store();
            if store
                .head(t.as_str())
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("tenant_not_found: tenant {t} has no receipts"));
            }
            let report = verify_chain(store, t.as_str(), anchor, 1000, |_| {})
                .await
                .map_err(|e| e.to_string())?;
            let mut out = serde_json::to_value(&report).unwrap_or(Value::Null);
            if let Some(id) = str_arg(args, "receipt_id") {
                let r = store.get(&id).await.map_err(|e| e.to_string())?;
                let Some(r) = r.filter(|r| r.tenant_id == t.as_str()) else {
                    return Err(format!("receipt_not_found: no receipt {id} in {t}'s chain"));
                };
                let intact = r.hash_matches(&mut String::new()) && r.seq <= report.head_seq;
                out["receipt"] = json!({"receipt_id": id, "seq": r.seq, "hash_matches": r.hash_matches(&mut String::new()), "in_verified_chain": intact});
                out["valid"] = json!(report.valid && intact);
            }
            Ok(out)
        }
        "taiea.governor.state" => {
            let t = tenant_of(tenant)?;
            let (_, view) = ops.intake.view(t).await.map_err(api)?;
            Ok(serde_json::to_value(view).unwrap_or(Value::Null))
        }
        "taiea.governor.signal" => {
            let t = tenant_of(tenant)?;
            let req = SignalRequest {
                metric: str_arg(args, "metric").unwrap_or_default(),
                value: args["value"].as_f64().unwrap_or(f64::NAN),
                timestamp_ms: uint_arg(args, "timestamp_ms")?,
            };
            let key = match str_arg(args, "idempotency_key") {
                Some(k) => Some(crate::intake::idempotency_id(t, &k).map_err(|_| {
                    format!(
                        "invalid idempotency_key: 1-{} visible ASCII characters (no spaces)",
                        crate::intake::MAX_IDEMPOTENCY_KEY
                    )
                })?),
                None => None,
            };
            match ops.intake.signal(t, req, key).await {
                Ok(o) => {
                    let (decision, reason) = match o.refused {
                        _ if o.duplicate => ("duplicate", Value::Null),
                        None => ("accept", Value::Null),
                        Some((_, reason)) => ("refuse", json!(reason)),
                    };
                    Ok(
                        json!({"decision": decision, "reason": reason, "state": o.state, "postponed": o.postponed, "receipt": o.receipts.last(), "receipts": o.receipts}),
                    )
                }
                // A governed refusal is a decision, with its receipts.
                Err(e) if e.receipt.is_some() => {
                    let state = e.receipt.as_ref().map(|r| r["state_to"].clone());
                    let receipts = e.receipts.clone().unwrap_or_else(|| json!([e.receipt]));
                    Ok(
                        json!({"decision": "refuse", "reason": e.code, "message": e.message, "state": state, "postponed": false, "receipt": e.receipt, "receipts": receipts}),
                    )
                }
                Err(e) => Err(api(e)),
            }
        }
        "taiea.governors.list" => {
            let limit = uint_arg(args, "limit")?.unwrap_or(100) as usize;
            let after = str_arg(args, "after").unwrap_or_default();
            let page = ops.intake.running_governors(&after, limit);
            let governors: Vec<Value> = page
                .entries
                .iter()
                .map(|(t, g)| json!({"tenant_id": t, "child_state": g.state().as_str(), "restarts": g.restarts()}))
                .collect();
            Ok(json!({"total": page.total, "governors": governors, "next_after": page.next_after}))
        }
        "taiea.supervision.tree" => {
            let limit = uint_arg(args, "limit")?.unwrap_or(100) as usize;
            let root = ops.root.get().ok_or("unavailable: the tree is starting")?;
            let snap = actix_web::rt::time::timeout(ASK, root.snapshot(limit))
                .await
                .map_err(|_| "unavailable: the supervision tree did not answer in time".to_owned())?
                .map_err(|e| format!("unavailable: {e}"))?;
            serde_json::from_str(&snap.to_json()).map_err(|e| e.to_string())
        }
        "taiea.audit.log" => {
            let t = tenant_of(tenant)?;
            let after = uint_arg(args, "after_seq")?.unwrap_or(0);
            let limit = uint_arg(args, "limit")?.unwrap_or(100) as usize;
            let store = ops.ledger.store();
            let Some(head) = store.head(t.as_str()).await.map_err(|e| e.to_string())? else {
                return Err(format!("tenant_not_found: tenant {t} has no receipts"));
            };
            let receipts = store
                .range(t.as_str(), after, limit)
                .await
                .map_err(|e| e.to_string())?;
            let next = (receipts.len() == limit)
                .then(|| receipts.last().map(|r| r.seq))
                .flatten();
            Ok(
                json!({"tenant_id": t.as_str(), "head_seq": head.seq, "receipts": receipts, "next_after_seq": next}),
            )
        }
        other => Err(format!("unknown tool {other}")),
    }
}

/// The `/health` body's essentials.
async fn health(ops: &Ops) -> Value {
    use crate::http::health::{ledger_status, supervision_status};
    let ledger = ledger_status(&ops.ledger).await;
    let supervision = match ops.root.get() {
        Some(root) => supervision_status(root).await,
        None => "starting",
    };
    let ok = ledger == "ok" && supervision == "ok";
    json!({
        "status": if ok { "ok" } else { "unavailable" },
        "node": ops.node,
        "uptime_ms": ops.started.elapsed().as_millis() as u64,
        "checks": {"ledger": ledger, "supervision": supervision, "pubsub_ready": ops.pubsub.status()},
    })
}
