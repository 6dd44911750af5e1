//! `POST /marketplace`, `POST /v1/tenants/{t}/entitlement/events`, `GET /v1/tenants/{t}/entitlement`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::receipts::tenant_id;
use super::AppState;
use crate::auth::Caller;
use crate::entitlements::signature::{verify, Expectations};
use crate::entitlements::{
    Action, ApplyEvent, ChangeError, Changed, Event, GetEntitlement, Marketplace,
};

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

/// The marketplace's request body.
#[derive(Debug, Deserialize)]
pub struct MarketplaceRequest {
    pub tenant_id: String,
    pub entitlement_id: String,
    pub action: Action,
    pub sku: Option<String>,
    pub customer_id: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 UTC; the entitlement is inactive after it.
    pub expires_at: Option<String>,
    /// A JWT (RS256/ES256) over the same `tenant_id`, `entitlement_id` and `action`.
    pub signature: Option<String>,
}

fn changed(c: Changed) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "decision": "accept",
        "tenant_id": c.entitlement.tenant_id,
        "status": c.entitlement.status,
        "entitlement": c.entitlement,
        "receipt": c.receipt,
    }))
}

fn short_text(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{field} must be 1-128 printable characters"),
        ));
    }
    Ok(())
}

/// Checks the signature: pinned algorithms, `exp`/`iss`/`aud`, claims equal to the body.
fn check_signature(state: &AppState, req: &MarketplaceRequest) -> Result<(), ApiError> {
    let refuse = |m: String| {
        crate::telemetry::events::refused("invalid_signature");
        tracing::warn!(tenant = %req.tenant_id, reason = %m, "marketplace signature refused");
        ApiError::new(ErrorCode::InvalidSignature, m)
    };
    let token = req
        .signature
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse("signature is required".into()))?;
    let keys = state
        .marketplace_keys
        .as_ref()
        .ok_or_else(|| ApiError::internal("marketplace.verify is on but no key is loaded"))?;
    let m = &state.settings.marketplace;
    let expect = Expectations {
        issuer: Some(m.issuer.clone()).filter(|s| !s.is_empty()),
        audience: Some(m.audience.clone()).filter(|s| !s.is_empty()),
        leeway_secs: m.leeway_secs,
    };
    let claims = verify(token, keys, &expect).map_err(|e| refuse(e.0))?;
    for (claim, body) in [
        ("tenant_id", req.tenant_id.as_str()),
        ("entitlement_id", req.entitlement_id.as_str()),
        ("action", req.action.as_str()),
    ] {
        if claims.get(claim).and_then(|v| v.as_str()) != Some(body) {
            return Err(refuse(format!(
                "claim {claim} does not match the request body"
            )));
        }
    }
    Ok(())
}

/// `POST /marketplace`
pub async fn marketplace(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<MarketplaceRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let req = body.into_inner();
    let tenant = tenant_id(&req.tenant_id)?;
    short_text("entitlement_id", &req.entitlement_id)?;
    for (f, v) in [("sku", &req.sku), ("customer_id", &req.customer_id)] {
        if let Some(v) = v {
            short_text(f, v)?;
        }
    }
    let expires_at = match &req.expires_at {
        Some(e) => Some(crate::clock::normalize_rfc3339(e).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "expires_at must be an RFC 3339 UTC timestamp such as 2027-01-01T00:00:00Z",
            )
        })?),
        None => None,
    };
    state.limit(&tenant)?;
    let verified = state.settings.marketplace.verify;
    if verified {
        check_signature(&state, &req)?;
    }
    let msg = Marketplace {
        tenant_id: tenant.to_string(),
        entitlement_id: req.entitlement_id,
        action: req.action,
        sku: req.sku,
        customer_id: req.customer_id,
        reason: req.reason.map(|r| r.chars().take(512).collect()),
        expires_at,
        signature_verified: verified,
        message_id: None,
    };
    Ok(changed(state.tree.entitlements.send(msg).await??))
}

/// `POST /v1/tenants/{tenant}/entitlement/events` with `{event, value}`.
pub async fn event(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Event>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let tenant = tenant_id(&path)?;
    state.limit(&tenant)?;
    let msg = ApplyEvent {
        tenant_id: tenant.to_string(),
        event: body.into_inner(),
    };
    Ok(changed(state.tree.entitlements.send(msg).await??))
}

/// `GET /v1/tenants/{tenant}/entitlement`
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    match state
        .tree
        .entitlements
        .send(GetEntitlement(tenant.to_string()))
        .await??
    {
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
    }
}
