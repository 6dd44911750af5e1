//! Receipt reads: a tenant's chain (paged, or exported whole as NDJSON), its verification, and
//! one receipt by id.

use actix_web::{web, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::error::{query_limit, query_uint, ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::receipts::{verify_chain, Anchor, AnyStore, LedgerStore, StoreError};
use crate::tenant::TenantId;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => ApiError::ledger_corrupt(m),
            other => ApiError::new(ErrorCode::Unavailable, other.to_string()),
        }
    }
}

impl From<crate::receipts::writer::LedgerError> for ApiError {
    fn from(e: crate::receipts::writer::LedgerError) -> Self {
        match e {
            // The edges check what clients send, so this is the service's own fault.
            crate::receipts::writer::LedgerError::Rejected(_) => ApiError::internal(e.to_string()),
            e => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        }
    }
}

/// Parses a tenant id from a path, or 400 `invalid_tenant_id`.
pub fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|m| ApiError::new(ErrorCode::InvalidTenantId, m))
}

/// 404 `tenant_not_found` unless the tenant has a chain; returns its head seq.
async fn known_tenant(state: &AppState, tenant: &TenantId) -> Result<u64, ApiError> {
    match state.tree.ledger.store().head(tenant.as_str()).await? {
        Some(h) => Ok(h.seq),
        None => Err(ApiError::new(
            ErrorCode::TenantNotFound,
            format!("tenant {tenant} not found"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    after_seq: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/tenants/{tenant}/receipts?after_seq=&limit=`
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    let limit = query_limit(page.limit.as_deref())?;
    let after = query_uint("after_seq", page.after_seq.as_deref())?.unwrap_or(0);
    let head_seq = known_tenant(&state, &tenant).await?;
    let receipts = state
        .tree
        .ledger
        .store()
        .range(tenant.as_str(), after, limit)
        .await?;
    let next = receipts
        .last()
        .map(|r| r.seq)
        .filter(|&s| receipts.len() == limit && s < head_seq);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tenant_id": tenant.as_str(),
        "head_seq": head_seq,
        "receipts": receipts,
        "next_after_seq": next,
    })))
}

/// Receipts read from the store per chunk of an export.
const EXPORT_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    after_seq: Option<String>,
}

/// `GET /v1/tenants/{tenant}/receipts/export?after_seq=`: the chain from seq 1 (or after
/// `after_seq`: what followed an anchor) up to its head when the export began (header
/// `Chain-Head-Seq`), one receipt per line, read and sent a page at a time, so any length takes
/// constant memory. What `tai-autonomics verify --file` checks offline. The
/// first page is read before the answer starts, so a store that fails at once gives an error
/// answer with the JSON body (503 when it is unreachable); one that fails part-way ends the
/// response without its last chunk, so the client sees a broken transfer, never a short chain
/// that looks whole.
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    let after = query_uint("after_seq", query.after_seq.as_deref())?.unwrap_or(0);
    let head_seq = known_tenant(&state, &tenant).await?;
    let store = state.tree.ledger.store().clone();
    let first = export_chunk(&store, &tenant, after, head_seq)
        .await
        .transpose()?;
    let rest = futures_util::stream::unfold(first.as_ref().map(|c| c.1), move |after| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            match export_chunk(&store, &tenant, after?, head_seq).await? {
                Ok((chunk, last)) => Some((Ok(chunk), Some(last))),
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let chunks = futures_util::stream::iter(first.map(|c| Ok(c.0))).chain(rest);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("Chain-Head-Seq", head_seq.to_string()))
        .streaming(chunks))
}

/// The export's next chunk after seq `after`, and the last seq in it: `None` at `head_seq`, or
/// where the chain ends before it (verifying the export tells).
async fn export_chunk(
    store: &AnyStore,
    tenant: &TenantId,
    after: u64,
    head_seq: u64,
) -> Option<Result<(web::Bytes, u64), StoreError>> {
    if after >= head_seq {
        return None;
    }
    let want = EXPORT_PAGE.min(usize::try_from(head_seq - after).unwrap_or(EXPORT_PAGE));
    let page = match store.range(tenant.as_str(), after, want).await {
        Ok(page) => page,
        Err(e) => return Some(Err(e)),
    };
    let last = page.last()?.seq;
    let mut chunk = Vec::with_capacity(page.len() * 1024);
    for r in &page {
        if let Err(e) = serde_json::to_writer(&mut chunk, r) {
            return Some(Err(StoreError::Corrupt(e.to_string())));
        }
        chunk.push(b'\n');
    }
    Some(Ok((web::Bytes::from(chunk), last)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    anchor_seq: Option<String>,
    anchor_hash: Option<String>,
}

impl VerifyQuery {
    /// The anchor asked for: both parameters or neither (empty counts as absent).
    fn anchor(&self) -> Result<Option<Anchor>, ApiError> {
        let seq = query_uint::<u64>("anchor_seq", self.anchor_seq.as_deref())?;
        let hash = self.anchor_hash.as_deref().filter(|h| !h.is_empty());
        let invalid = |m: String| ApiError::new(ErrorCode::InvalidRequest, m);
        match (seq, hash) {
            (None, None) => Ok(None),
            (Some(seq), Some(hash)) => Anchor::new(seq, hash).map(Some).map_err(invalid),
            _ => Err(invalid(
                "anchor_seq and anchor_hash are given together or not at all".into(),
            )),
        }
    }
}

/// `GET /v1/tenants/{tenant}/receipts/verify?anchor_seq=&anchor_hash=`: the whole chain, and
/// with an anchor (a `head_seq` and `head_hash` an earlier verification reported) whether the
/// chain still holds that receipt, which no rewrite of the ledger can fake.
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.readable_tenant(&caller, &path)?;
    let anchor = query.anchor()?;
    known_tenant(&state, &tenant).await?;
    let store = state.tree.ledger.store();
    let report = verify_chain(store, tenant.as_str(), anchor, 1000, |_| {}).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/receipts/{receipt_id}`
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(ApiError::new(ErrorCode::ReceiptNotFound, "no such receipt"));
    }
    match state.tree.ledger.store().get(&id).await? {
        // Another tenant's receipt is "not found" for a tenant token: its existence is not told.
        Some(r) if caller.tenant().is_some_and(|t| t.as_str() != r.tenant_id) => {
            Err(ApiError::new(
                ErrorCode::ReceiptNotFound,
                format!("receipt {id} not found"),
            ))
        }
        Some(r) => Ok(HttpResponse::Ok().json(r)),
        None => Err(ApiError::new(
            ErrorCode::ReceiptNotFound,
            format!("receipt {id} not found"),
        )),
    }
}
