//! `POST /pubsub`: Pub/Sub push delivery, wrapped (the standard envelope) or unwrapped with
//! write metadata (the data as the body, the id in `x-goog-pubsub-message-id`). 200
//! acknowledges every governed outcome (accepted, refused with its receipt, or a redelivery
//! answered with its first receipt); 400 for a malformed envelope or payload and 404 for an
//! unknown tenant (the subscription's dead-letter policy takes them); 503 with `Retry-After`
//! for a transient failure (Pub/Sub redelivers). With `pubsub.push.verify` the OIDC token is
//! checked first and anything else is 401 with nothing processed; without it the route follows
//! `auth.mode` (an admin token in `bearer`). `GET /v1/pubsub` shows this instance's consumer
//! (status and counters) to operators.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::pubsub::message::{parse_push, parse_unwrapped, UNWRAPPED_ID_HEADER};
use crate::pubsub::push_auth::Refused;
use crate::pubsub::{deliver, Delivered};
use crate::telemetry::budget::LogBudget;
use crate::telemetry::events;

/// `GET /v1/pubsub` (operator): this instance's pull consumer and push settings.
pub async fn status(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let mut v = state.tree.pubsub_health.snapshot();
    v["push_verify"] = serde_json::json!(state.push_auth.is_some());
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /pubsub`
pub async fn push(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    match &state.push_auth {
        Some(auth) => {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            auth.check(header).await.map_err(|e| match e {
                Refused::Invalid(m) => {
                    events::refused("invalid_push_token");
                    // Anyone can send these: one line a second (the metric counts each).
                    static REFUSED: LogBudget = LogBudget::new();
                    if let Some(suppressed) = REFUSED.admit_now() {
                        tracing::warn!(reason = %m, suppressed, "pub/sub push refused");
                    }
                    ApiError::new(ErrorCode::Unauthorized, m)
                }
                Refused::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, m).retry_after(5),
            })?;
        }
        None => Caller::extract(&req).await?.require_admin()?,
    }
    // Payload unwrapping with write metadata: the id in a header, the body the data itself.
    let delivery = match req.headers().get(UNWRAPPED_ID_HEADER) {
        Some(id) => parse_unwrapped(
            &body,
            id.as_bytes(),
            req.headers().get("kind").map(|k| k.as_bytes()),
        ),
        None => parse_push(&body),
    };
    let delivery = delivery.map_err(|m| {
        events::pubsub_message("push", "malformed");
        ApiError::new(ErrorCode::InvalidRequest, m.0)
    })?;
    let out = deliver(&state.tree.intake, "push", &delivery).await;
    if out.ack() {
        return Ok(HttpResponse::Ok().json(out.body(&delivery.message_id)));
    }
    match out {
        Delivered::Rejected(e) | Delivered::Transient(e) => Err(e),
        _ => Err(ApiError::internal(
            "a settled delivery was not acknowledged",
        )),
    }
}
