//! Chaos hooks (`chaos.enabled`, off by default, admin only): make a supervised actor panic
//! inside a handler, for the reliability tests and for game days.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;

/// `POST /v1/chaos/actors/{child}/crash`: the named root child (`observer`, `ledger`,
/// `entitlements`) panics in a handler; its supervisor restarts it. 404 when chaos is off or the
/// child has no crash hook.
pub async fn crash_actor(
    state: web::Data<AppState>,
    caller: Caller,
    child: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.chaos.enabled {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "chaos hooks are disabled (set TAI_CHAOS__ENABLED=true)",
        ));
    }
    caller.require_admin()?;
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
    if !state.settings.chaos.enabled {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "chaos hooks are disabled (set TAI_CHAOS__ENABLED=true)",
        ));
    }
    caller.require_admin()?;
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
