//! `POST /marketplace`, `POST /v1/tenants/{t}/entitlement/events`,
//! `GET /v1/tenants/{t}/entitlement`, and `GET /v1/tenants` (every tenant the ledger knows,
//! with its entitlement's standing).

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ErrorCode};
use super::governors::idempotency;
use super::receipts::tenant_id;
use super::AppState;
use crate::auth::Caller;
use crate::entitlements::{ChangeError, Changed, Entitlement, Event};
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

/// `GET /v1/tenants?limit=&after=` (operators): the tenants with a chain in the ledger, in id
/// order, each with its entitlement's status, SKU and whether it is active now, its chain's
/// `head_seq`, and the cursor of the next page. Read from the store (every instance gives the
/// same answer), each tenant in one read, eight at a time.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<super::governors::ListQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::receipts::LedgerStore as _;
    caller.require_operator()?;
    let limit = super::error::query_limit(q.limit.as_deref())?;
    // Tenant ids are at most 63 characters, so the first 64 of a cursor order every id as the
    // whole cursor does; a store is never handed a longer one (Firestore refuses values past
    // 1,500 bytes).
    let after: String = q.after.as_deref().unwrap_or("").chars().take(64).collect();
    let store = state.tree.ledger.store();
    let ids = store.tenants(&after, limit).await?;
    // Eight reads at a time, in order: the SQLite store keeps eight read connections, and a
    // page of a thousand all at once would open a connection (and a blocking thread) for each.
    use futures_util::StreamExt as _;
    let reads: Vec<_> =
        futures_util::stream::iter(ids.iter().map(|t| store.head_and_entitlement(t)))
            .buffered(8)
            .collect()
            .await;
    let now = crate::clock::now_rfc3339();
    let mut tenants = Vec::with_capacity(ids.len());
    for (tenant, read) in ids.iter().zip(reads) {
        let (head, record) = match read {
            Ok(read) => read,
            // One tenant whose stored data cannot be read back does not hide the others: it
            // is listed with nothing known of it, and why.
            Err(crate::receipts::StoreError::Corrupt(why)) => {
                super::error::log_ledger_corrupt(&why);
                tenants.push(serde_json::json!({
                    "tenant_id": tenant, "status": null, "sku": null, "active": false,
                    "head_seq": null, "unreadable": why,
                }));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let record = record.and_then(|r| serde_json::from_value::<Entitlement>(r).ok());
        tenants.push(serde_json::json!({
            "tenant_id": tenant,
            "status": record.as_ref().map(|e| e.status),
            "sku": record.as_ref().map(|e| e.sku.clone()),
            "active": record.as_ref().is_some_and(|e| e.is_active(&now)),
            "head_seq": head.map(|h| h.seq),
        }));
    }
    let next_after = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({"tenants": tenants, "next_after": next_after})))
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
