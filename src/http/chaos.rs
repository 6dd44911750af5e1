//! Chaos hooks (`chaos.enabled`, off by default, admin only): make a supervised actor panic
//! inside a handler, for the reliability tests and for game days.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::intake::Object;

/// `POST /v1/chaos/actors/{child}/crash`: the named root child (`observer`, `ledger`,
/// `entitlements`) panics in a handler; its supervisor restarts it. 404 when chaos is off or the
/// child has no crash hook.
pub async fn crash_actor(
    state: web::Data<AppState>,
    caller: Caller,
    child: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.chaos_allowed(&caller)?;
    let tree = &state.tree;
    // Each call ends with the child's exit; that error is the expected outcome.
    let outcome = match child.as_str() {
        "observer" => tree.observer.send(crate::telemetry::observer::Crash).await,
        "ledger" => {
            tree.ledger
                .writer()
                .send(crate::receipts::writer::Crash)
                .await
        }
        "entitlements" => {
            tree.entitlements
                .send(crate::entitlements::actor::Crash)
                .await
        }
        "mcp" => tree.mcp.send(crate::mcp::registry::Crash).await,
        "pubsub" => match &tree.pubsub {
            Some(consumer) => consumer.send(crate::pubsub::consumer::Crash).await,
            None => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "no pull consumer runs (no subscription is configured)",
                ))
            }
        },
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no crash hook for actor {other:?}"),
            ))
        }
    };
    tracing::warn!(child = %child, ?outcome, "chaos: crashed a supervised actor");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "crashed": child.as_str() })))
}

/// `POST /v1/chaos/governors/{tenant}/crash`: the tenant's running governor panics in a handler.
pub async fn crash_governor(
    state: web::Data<AppState>,
    caller: Caller,
    tenant: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.chaos_allowed(&caller)?;
    let Some(g) = state.tree.governors.get(&tenant) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no running governor for {tenant}"),
        ));
    };
    let outcome = g.send(crate::governor::actor::Crash).await;
    tracing::warn!(tenant = %tenant, ?outcome, "chaos: crashed a governor");
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({ "crashed": format!("governor {tenant}") })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerChaosRequest {
    #[serde(default, deserialize_with = "crate::intake::whole")]
    fail_ms: Option<u64>,
    #[serde(default, deserialize_with = "crate::intake::whole")]
    stall_ms: Option<u64>,
}

/// `POST /v1/chaos/ledger` `{"fail_ms": N}` or `{"stall_ms": N}`: every commit fails (nothing
/// written) or waits, for N ms.
pub async fn ledger(
    state: web::Data<AppState>,
    caller: Caller,
    web::Json(Object(body)): web::Json<Object<LedgerChaosRequest>>,
) -> Result<HttpResponse, ApiError> {
    state.chaos_allowed(&caller)?;
    let chaos = &state.tree.ledger.chaos;
    match (body.fail_ms, body.stall_ms) {
        (Some(ms), None) if ms <= 600_000 => chaos.fail_for(std::time::Duration::from_millis(ms)),
        (None, Some(ms)) if ms <= 600_000 => chaos.stall_for(std::time::Duration::from_millis(ms)),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of fail_ms or stall_ms, at most 600000",
            ))
        }
    }
    tracing::warn!(fail_ms = ?body.fail_ms, stall_ms = ?body.stall_ms, "chaos: ledger failure injected");
    Ok(HttpResponse::Accepted().json(
        serde_json::json!({ "ledger": { "fail_ms": body.fail_ms, "stall_ms": body.stall_ms } }),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionRequest {
    fraction: f64,
}

/// `POST /v1/chaos/governors/crash` `{"fraction": 0.1}`: that share of running governors panic.
pub async fn crash_governors(
    state: web::Data<AppState>,
    caller: Caller,
    web::Json(Object(body)): web::Json<Object<FractionRequest>>,
) -> Result<HttpResponse, ApiError> {
    state.chaos_allowed(&caller)?;
    if !(0.0..=1.0).contains(&body.fraction) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "fraction must be between 0 and 1",
        ));
    }
    let running = state.tree.governors.list(usize::MAX);
    let n = (running.len() as f64 * body.fraction).ceil() as usize;
    let mut crashed = 0;
    for (_, g) in running.into_iter().take(n) {
        if g.try_tell(crate::governor::actor::Crash).is_ok() {
            crashed += 1;
        }
    }
    tracing::warn!(
        crashed,
        fraction = body.fraction,
        "chaos: crashed a fraction of governors"
    );
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "crashed": crashed })))
}
