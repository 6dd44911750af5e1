//! `POST /marketplace`, `POST /v1/tenants/{t}/entitlement/events`, `GET /v1/tenants/{t}/entitlement`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::governors::idempotency;
use super::receipts::tenant_id;
use super::AppState;
use crate::auth::Caller;
use crate::entitlements::{ChangeError, Changed, Event};
use crate::intake::{MarketplaceRequest, Object};

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(t) => {
                ApiError::new(ErrorCode::TenantNotFound, format!("tenant {t} not found"))
            }
            ChangeError::Input(e) => ApiError::new(ErrorCode::InvalidRequest, e.to_string()),
            ChangeError::Refused { error, receipt } => {
                crate::telemetry::events::refused(error.code());
                ApiError::new(ErrorCode::EntitlementConflict, error.to_string())
                    .with_receipt(&receipt)
            }
            ChangeError::Ledger(e) => e.into(),
            ChangeError::Store(e) => e.into(),
        }
    }
}

fn changed(c: Changed) -> HttpResponse {
    let mut res = HttpResponse::Ok().json(serde_json::json!({
        "decision": if c.duplicate { "duplicate" } else { "accept" },
        "tenant_id": c.entitlement.tenant_id,
        "status": c.entitlement.status,
        "entitlement": c.entitlement,
        "receipt": c.receipt,
    }));
    if c.duplicate {
        // Only a repeated idempotency key gets here (Pub/Sub answers its own duplicates).
        super::governors::mark_replayed(&mut res);
    }
    res
}

/// `POST /marketplace`
pub async fn marketplace(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    body: web::Json<Object<MarketplaceRequest>>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let req = body.into_inner().0;
    let tenant = tenant_id(&req.tenant_id)?;
    let key = idempotency(&http, &tenant)?;
    state.limit(&tenant)?;
    Ok(changed(
        state.tree.intake.marketplace(&tenant, req, key).await?,
    ))
}

/// `POST /v1/tenants/{tenant}/entitlement/events` with `{event, value}`.
pub async fn event(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Object<Event>>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let tenant = tenant_id(&path)?;
    let key = idempotency(&http, &tenant)?;
    state.limit(&tenant)?;
    Ok(changed(
        state
            .tree
            .intake
            .entitlement_event(&tenant, body.into_inner().0, key)
            .await?,
    ))
}

/// `GET /v1/tenants/{tenant}/entitlement`
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    // Read from the store, past the Entitlements actor's cache: with several instances, a
    // change made through another one leaves this one's cached record behind.
    match state.tree.intake.reload_entitlement(&tenant).await? {
        Some(e) => {
            let active = e.is_active(&crate::clock::now_rfc3339());
            Ok(HttpResponse::Ok().json(serde_json::json!({ "entitlement": e, "active": active })))
        }
        None => Err(ApiError::new(
            ErrorCode::TenantNotFound,
            format!("tenant {tenant} not found"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_and_events_do_not_deserialize() {
        assert!(serde_json::from_str::<MarketplaceRequest>(
            r#"{"tenant_id":"a","entitlement_id":"e","action":"provision"}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<Event>(r#"{"event":"pack_enabled","value":"enterprise"}"#)
                .is_ok()
        );
        assert!(serde_json::from_str::<Event>(r#"{"event":"drop_tables","value":"x"}"#).is_err());
        // A misspelt member is refused, not ignored.
        assert!(serde_json::from_str::<Event>(
            r#"{"event":"pack_enabled","value":"enterprise","vaule":"x"}"#
        )
        .is_err());
    }
}
