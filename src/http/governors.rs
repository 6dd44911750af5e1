//! Governor routes: signals, tool calls, state, listing, operator reset and action callbacks.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{query_limit, ApiError, ErrorCode};
use super::receipts::tenant_id;
use super::AppState;
use crate::auth::Caller;
use crate::governor::machine::{Input, State};
use crate::governor::{CallTool, Control, GetView, GovernorError, Outcome};
use crate::intake::{Keyed, Object, Replay, SignalRequest};
use crate::receipts::Receipt;
use crate::tenant::TenantId;

impl From<GovernorError> for ApiError {
    fn from(e: GovernorError) -> Self {
        match e {
            GovernorError::Ledger(e) => e.into(),
            GovernorError::Store(e) => e.into(),
            GovernorError::Invalid(m) => ApiError::new(ErrorCode::InvalidState, m),
        }
    }
}

/// The error code of a governed refusal.
pub fn refusal_code(reason: &str, status: u16) -> ErrorCode {
    match reason {
        "governor_refusing" => ErrorCode::GovernorRefusing,
        "intervening" => ErrorCode::Intervening,
        "postpone_queue_full" => ErrorCode::PostponeQueueFull,
        "actions_saturated" => ErrorCode::ActionsSaturated,
        _ => ErrorCode::for_status(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::CONFLICT),
        ),
    }
}

/// The answer for a governed input: 200 for decisions (accepted, or a governed refusal answered
/// with 200), the refusal's status otherwise; always with the last receipt.
fn answer(o: Outcome) -> Result<HttpResponse, ApiError> {
    let decided = |decision, reason, postponed| {
        let body = decided_body(decision, postponed, reason, &o.receipts, o.state)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("answer not written: {e}")))?;
        Ok(HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(body))
    };
    if o.duplicate {
        // A repeated idempotency key: the first request's receipt, nothing decided now.
        let mut res: HttpResponse = decided("duplicate", None, false)?;
        mark_replayed(&mut res);
        return Ok(res);
    }
    match o.refused {
        None => decided("accept", None, o.postponed),
        Some((200, reason)) => decided("refuse", Some(reason), false),
        Some((status, reason)) => {
            let receipts: Vec<Value> = (o.receipts.iter())
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect();
            let code = refusal_code(reason, status);
            let mut e = ApiError::new(
                code,
                format!("refused: {reason} (governor is {})", o.state.as_str()),
            );
            e.receipt = Some(receipts.last().cloned().unwrap_or(Value::Null));
            e.receipts = Some(Value::Array(receipts));
            if status == 429 {
                e = e.retry_after(1);
            }
            Err(e)
        }
    }
}

/// The body of a governed decision, `{decision, postponed, reason?, receipt, receipts, state}`
/// in that (alphabetical) order, written straight from the receipts: the last receipt is
/// written once and copied, as `receipt` and as the end of `receipts`.
fn decided_body(
    decision: &str,
    postponed: bool,
    reason: Option<&str>,
    receipts: &[Receipt],
    state: State,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024 * (receipts.len() + 1));
    out.extend_from_slice(b"{\"decision\":");
    serde_json::to_writer(&mut out, decision)?;
    out.extend_from_slice(b",\"postponed\":");
    serde_json::to_writer(&mut out, &postponed)?;
    if let Some(reason) = reason {
        out.extend_from_slice(b",\"reason\":");
        serde_json::to_writer(&mut out, reason)?;
    }
    out.extend_from_slice(b",\"receipt\":");
    let (last, earlier) = match receipts.split_last() {
        Some((last, earlier)) => (Some(last), earlier),
        None => (None, &[][..]),
    };
    let written = out.len();
    serde_json::to_writer(&mut out, &last)?;
    let last_text = written..out.len();
    out.extend_from_slice(b",\"receipts\":[");
    for r in earlier {
        serde_json::to_writer(&mut out, r)?;
        out.push(b',');
    }
    if last.is_some() {
        out.extend_from_within(last_text);
    }
    out.extend_from_slice(b"],\"state\":");
    serde_json::to_writer(&mut out, &state)?;
    out.push(b'}');
    Ok(out)
}

/// Marks the answer to a repeated idempotency key (`Idempotent-Replayed: true`).
pub fn mark_replayed(res: &mut HttpResponse) {
    res.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
        actix_web::http::header::HeaderValue::from_static("true"),
    );
}

/// The ledger id of the request's `Idempotency-Key` header, if it has one (400 if it is
/// malformed, empty included, or given twice).
pub fn idempotency(req: &HttpRequest, tenant: &TenantId) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all("idempotency-key");
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "Idempotency-Key is given more than once",
        ));
    }
    let key = value.to_str().unwrap_or("\u{0}");
    crate::intake::idempotency_id(tenant, key).map(Some)
}

/// `POST /v1/tenants/{tenant}/signals`
pub async fn signal(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Object<SignalRequest>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.actable_tenant(&caller, &path)?;
    let key = idempotency(&req, &tenant)?;
    answer(
        state
            .tree
            .intake
            .signal(&tenant, body.into_inner().0, key)
            .await?,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRequest {
    pub tool: String,
    #[serde(default)]
    pub args: Value,
    #[serde(default, deserialize_with = "crate::intake::whole")]
    pub timeout_ms: Option<u64>,
}

/// `POST /v1/governors/{tenant}/tool-calls`
pub async fn tool_call(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Object<ToolRequest>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.actable_tenant(&caller, &path)?;
    let key = idempotency(&http, &tenant)?;
    let req = body.into_inner().0;
    if req.tool.is_empty()
        || req.tool.len() > 64
        || !req
            .tool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "tool must be a lowercase tool name such as health",
        ));
    }
    if !(req.args.is_object() || req.args.is_null()) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "args must be an object",
        ));
    }
    crate::intake::check_recorded_json("args", &req.args)
        .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    let timeout_ms = req.timeout_ms.unwrap_or(5000);
    if !(1..=30_000).contains(&timeout_ms) {
        // As the OpenAPI schema says; a silent clamp turned 0 into a 1 ms deadline.
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("timeout_ms must be between 1 and 30000, found {timeout_ms}"),
        ));
    }
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let call = CallTool {
        tool: req.tool,
        args: if req.args.is_null() {
            json!({})
        } else {
            req.args
        },
        message_id: key,
    };
    let on_deadline = || {
        ApiError::new(
            ErrorCode::DecisionPending,
            format!(
                "the tool call did not finish within {} ms; it may yet finish and be recorded: \
                 read the tenant's receipts before calling again",
                timeout.as_millis()
            ),
        )
        .retry_after(1)
    };
    let replay = Replay::of(call.message_id.as_deref(), || Keyed::ToolCall {
        tool: call.tool.clone(),
        args: call.args.clone(),
    });
    let (_, outcome) = (state.tree.intake)
        .call_within(&tenant, timeout, on_deadline, |g| g.send(call.clone()))
        .await?;
    let outcome = outcome?;
    replay.check(outcome.duplicate, outcome.receipts.last())?;
    answer(outcome)
}

/// `GET /v1/governors/{tenant}`
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    let (g, view) = state.tree.intake.view(&tenant).await?;
    let mut v = serde_json::to_value(&view).unwrap_or(Value::Null);
    v["restarts"] = json!(g.restarts());
    Ok(HttpResponse::Ok().json(v))
}

/// The query of a list paged by tenant id (`GET /v1/governors`, `GET /v1/tenants`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(super) limit: Option<String>,
    /// The cursor: tenants after this id.
    pub(super) after: Option<String>,
}

/// `GET /v1/governors?limit=&after=`: running governors in tenant order, paged (hibernated ones
/// are not listed; they are rebuilt on demand).
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let limit = query_limit(q.limit.as_deref())?;
    let after = q.after.clone().unwrap_or_default();
    let page = state.tree.intake.running_governors(&after, limit);
    // Asked all at once, and waited for at most LIST_WAIT: a governor that is deciding (its
    // receipt not yet durable) or cannot read its chain (the store away) is listed with
    // `governor: null` instead of holding up the page.
    let views = page.entries.iter().map(|(_, g)| async move {
        actix_web::rt::time::timeout(LIST_WAIT, g.send(GetView))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    });
    let views = futures_util::future::join_all(views).await;
    let mut out = Vec::with_capacity(page.entries.len());
    for ((tenant, g), view) in page.entries.iter().zip(views) {
        let view = view.map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
        out.push(json!({"tenant_id": tenant, "child_state": g.state().as_str(), "restarts": g.restarts(), "governor": view}));
    }
    Ok(HttpResponse::Ok()
        .json(json!({"total": page.total, "governors": out, "next_after": page.next_after})))
}

/// How long `GET /v1/governors` waits for the governors of a page to show their state.
const LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `POST /v1/governors/{tenant}/reset` (operator or admin)
pub async fn reset(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_id(&path)?;
    caller.require_operator()?;
    answer(
        state
            .tree
            .intake
            .ask(&tenant, Control(Input::Reset))
            .await?
            .1?,
    )
}

/// `POST /v1/governors/{tenant}/actions/{id}/complete` and `…/fail` (admin; action callbacks).
pub async fn action_callback(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, action_id, verb) = path.into_inner();
    let tenant = tenant_id(&tenant)?;
    caller.require_admin()?;
    if action_id.chars().take(65).count() > 64 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "action ids are at most 64 characters",
        ));
    }
    // The body is optional, but one that is sent must be JSON: a malformed body is refused
    // and the action stays in flight (actix's `Option<Json<_>>` read it as absent).
    let detail = super::optional_json(&req, &body)?;
    crate::intake::check_recorded_json("the body", &detail)
        .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    let input = match verb.as_str() {
        "complete" => Input::ActionCompleted {
            action_id,
            result: detail,
        },
        "fail" => Input::ActionFailed {
            action_id,
            error: match detail.get("error") {
                None | Some(Value::Null) => "failed by callback".to_owned(),
                Some(Value::String(e)) => e.clone(),
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        "error must be a string",
                    ))
                }
            },
        },
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such route")),
    };
    answer(state.tree.intake.ask(&tenant, Control(input)).await?.1?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::{ReceiptDraft, ReceiptType};

    fn receipts(n: usize) -> Vec<Receipt> {
        let mut out: Vec<Receipt> = Vec::new();
        for i in 0..n {
            let d = ReceiptDraft::new("acme", ReceiptType::Transition, "signal_processed", "\"q\"")
                .states(Some("stable"), None)
                .metadata(json!({"input": {"value": i, "text": "café\n"}}));
            let prev = out.last().map(|r| (r.seq, r.receipt_hash.as_str()));
            out.push(d.seal(prev, "tai@test", "2026-11-28T14:00:00.000Z".into()));
        }
        out
    }

    /// What the body was before it was written by hand: serde's derive, members in order.
    #[derive(serde::Serialize)]
    struct Derived<'a> {
        decision: &'a str,
        postponed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        receipt: Option<&'a Receipt>,
        receipts: &'a [Receipt],
        state: State,
    }

    #[test]
    fn a_decision_body_is_byte_for_byte_what_serde_writes() {
        for n in 0..3 {
            let rs = receipts(n);
            for (decision, reason, postponed) in [
                ("accept", None, true),
                ("refuse", Some("gate_refused"), false),
            ] {
                let body = decided_body(decision, postponed, reason, &rs, State::Warning).unwrap();
                let derived = serde_json::to_vec(&Derived {
                    decision,
                    postponed,
                    reason,
                    receipt: rs.last(),
                    receipts: &rs,
                    state: State::Warning,
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(body).unwrap(),
                    String::from_utf8(derived).unwrap(),
                    "{n} receipts"
                );
            }
        }
    }
}
