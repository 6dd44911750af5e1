//! Chaos hooks (`chaos.enabled`, off by default): make a supervised actor panic inside a
//! handler, for the reliability tests and for game days.

use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::telemetry::observer;

/// `POST /v1/chaos/actors/{child}/crash`: the named root child panics in a handler; its
/// supervisor restarts it. 404 when chaos is off or the child has no crash hook.
pub async fn crash_actor(
    state: web::Data<AppState>,
    child: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.chaos.enabled {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "chaos hooks are disabled (set TAI_CHAOS__ENABLED=true)",
        ));
    }
    match child.as_str() {
        "observer" => {
            // The call ends with the child's exit; that error is the expected outcome.
            let outcome = state.tree.observer.send(observer::Crash).await;
            tracing::warn!(
                child = "observer",
                ?outcome,
                "chaos: crashed a supervised actor"
            );
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no crash hook for actor {other:?}"),
            ))
        }
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "crashed": child.as_str() })))
}
