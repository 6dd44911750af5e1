//! Operator endpoints: `/metrics`, the supervision tree snapshot and recent supervision events,
//! and the ledger audit's findings.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use supervisors::TreeSnapshot;

use super::error::{query_limit, ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::telemetry::observer::RecentEvents;
use crate::telemetry::{events, metrics};

const ASK: Duration = Duration::from_secs(2);

fn refresh_children_gauges(t: &TreeSnapshot) {
    events::supervisor_children(&t.name, t.counts.active);
    for node in &t.children {
        if let Some(sub) = &node.subtree {
            refresh_children_gauges(sub);
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(Ok(snap)) = actix_web::rt::time::timeout(ASK, state.tree.root.snapshot(0)).await {
        refresh_children_gauges(&snap);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::render())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// Most children listed per dynamic supervisor (default 100, at most 1000).
    limit: Option<String>,
}

pub async fn supervision(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<SnapshotQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let limit = query_limit(q.limit.as_deref())?;
    let snap = actix_web::rt::time::timeout(ASK, state.tree.root.snapshot(limit))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the supervision tree did not answer in time",
            )
        })??;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(snap.to_json()))
}

/// The broken chains `GET /v1/ledger/audit` lists at most (`broken_total` counts them all).
const AUDIT_LISTED: usize = 1000;

/// `GET /v1/ledger/audit` (operator): the ledger audit's settings, its passes, and the chains it
/// found broken and has not since found whole.
pub async fn ledger_audit(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let view = match &state.tree.audit {
        Some((cfg, standing)) => {
            (standing.lock().unwrap_or_else(|e| e.into_inner())).view(Some(*cfg), AUDIT_LISTED)
        }
        None => crate::receipts::audit::Standing::default().view(None, AUDIT_LISTED),
    };
    Ok(HttpResponse::Ok().json(view))
}

pub async fn supervision_events(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let events = actix_web::rt::time::timeout(ASK, state.tree.observer.send(RecentEvents))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the observer did not answer in time",
            )
        })??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}
