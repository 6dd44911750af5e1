//! `GET /health` (the guide's body), `/health/live` (the process answers) and `/health/ready`
//! (tree up, ledger taking writes, not draining).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AppState;

#[derive(Serialize)]
struct Checks {
    http_server: &'static str,
    pubsub_ready: &'static str,
    ledger: &'static str,
    supervision: &'static str,
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    node: String,
    uptime_ms: u64,
    timestamp: String,
    checks: Checks,
}

/// `ok` when `root` runs every child it has (also the MCP health tool's check).
pub async fn supervision_status(root: &supervisors::SupervisorRef) -> &'static str {
    match actix_web::rt::time::timeout(Duration::from_secs(1), root.count_children()).await {
        Ok(Ok(c)) if c.active == c.specs => "ok",
        _ => "error",
    }
}

/// `ok` when the ledger backend answers and appends are not failing lately (also the MCP
/// health tool's check).
pub async fn ledger_status(ledger: &crate::receipts::writer::LedgerHandle) -> &'static str {
    use crate::receipts::LedgerStore;
    if ledger.writes_failing() {
        return "error";
    }
    match actix_web::rt::time::timeout(Duration::from_secs(1), ledger.store().ping()).await {
        Ok(Ok(())) => "ok",
        _ => "error",
    }
}

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let supervision = supervision_status(&state.tree.root).await;
    let ledger = ledger_status(&state.tree.ledger).await;
    let draining = state.is_draining();
    let ok = supervision == "ok" && ledger == "ok" && !draining;
    let body = HealthBody {
        status: if ok { "ok" } else { "unavailable" },
        node: state.node.clone(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        timestamp: crate::clock::now_rfc3339(),
        checks: Checks {
            http_server: if draining { "draining" } else { "ok" },
            pubsub_ready: state.tree.pubsub_health.status(),
            ledger,
            supervision,
        },
    };
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let supervision = supervision_status(&state.tree.root).await;
    let ledger = ledger_status(&state.tree.ledger).await;
    let draining = state.is_draining();
    let ok = supervision == "ok" && ledger == "ok" && !draining;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "checks": {"supervision": supervision, "ledger": ledger, "draining": draining},
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}
