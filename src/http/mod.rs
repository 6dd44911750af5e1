//! The HTTP API: the whole URL table on one screen, shared state and extractor configuration.
//!
//! Invariant: handlers hold no state of their own; they validate input, send one message to an
//! actor (or read a handle), and map the answer. Every response body is JSON, errors included,
//! except `/metrics` (Prometheus text) and `/observer` (one static HTML page).

pub mod chaos;
pub mod entitlements;
pub mod error;
pub mod governors;
pub mod health;
pub mod mcp;
pub mod middleware;
pub mod observer;
pub mod openapi;
pub mod ops;
pub mod pubsub;
pub mod receipts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use serde_json::Value;

use self::error::{ApiError, ErrorCode};
use crate::auth::{Authenticator, Caller};
use crate::config::Settings;
use crate::tenant::TenantId;
use crate::tree::Tree;

/// What every handler may read.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    /// The MCP Streamable HTTP service behind `/mcp`.
    pub mcp: std::sync::Arc<crate::mcp::HttpService>,
    /// Checks push OIDC tokens (when `pubsub.push.verify`).
    pub push_auth: Option<std::sync::Arc<crate::pubsub::push_auth::PushAuth>>,
    /// The node name reported in `/health` (and later in receipts).
    pub node: String,
    pub started: Instant,
    /// Set on SIGTERM: readiness answers 503 and new work is refused.
    pub draining: Arc<AtomicBool>,
    pub tree: Tree,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The tenant named in a path, when `caller` may read it and its bucket has room.
    pub fn readable_tenant(&self, caller: &Caller, raw: &str) -> Result<TenantId, ApiError> {
        let tenant = receipts::tenant_id(raw)?;
        caller.may_read(&tenant)?;
        self.limit(&tenant)?;
        Ok(tenant)
    }

    /// The tenant named in a path, when `caller` may act for it and its bucket has room.
    pub fn actable_tenant(&self, caller: &Caller, raw: &str) -> Result<TenantId, ApiError> {
        let tenant = receipts::tenant_id(raw)?;
        caller.may_act_for(&tenant)?;
        self.limit(&tenant)?;
        Ok(tenant)
    }

    /// Chaos hooks exist only with `chaos.enabled` (404 otherwise) and only for admins.
    pub fn chaos_allowed(&self, caller: &Caller) -> Result<(), ApiError> {
        if !self.settings.chaos.enabled {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "chaos hooks are disabled (set TAI_CHAOS__ENABLED=true)",
            ));
        }
        Ok(caller.require_admin()?)
    }

    /// Takes one request from `tenant`'s bucket (shared with MCP), or 429 with `Retry-After`.
    pub fn limit(&self, tenant: &TenantId) -> Result<(), ApiError> {
        self.tree.limits.check(tenant)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state.auth.authenticate(header).map_err(ApiError::from),
            None => Err(ApiError::internal("application state missing")),
        };
        if result.is_err() {
            crate::telemetry::events::refused("unauthenticated");
        }
        std::future::ready(result)
    }
}

/// An optional JSON body, read as bytes: an empty body is `Null`; any other must be JSON, and
/// is refused as on every JSON route otherwise (415 for another content type, 400
/// `invalid_json` or `invalid_request`, as [`error::json_error`] maps them). actix's
/// `Option<Json<_>>` turns every such error into `None`, so a handler would act on a body it
/// could not read.
pub fn optional_json(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    use actix_web::error::JsonPayloadError;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    let is_json = req.mime_type().ok().flatten().is_some_and(|m| {
        m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON)
    });
    if !is_json {
        return Err(error::content_type_refusal(req));
    }
    serde_json::from_slice(body)
        .map_err(|e| error::json_api_error(&JsonPayloadError::Deserialize(e)))
}

/// Extractor limits and error mapping for every route.
pub fn extractor_config(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(error::json_error),
    )
    .app_data(web::PayloadConfig::new(max_body))
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error));
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health::health)))
        .service(web::resource("/health/live").route(web::get().to(health::live)))
        .service(web::resource("/health/ready").route(web::get().to(health::ready)))
        .service(web::resource("/metrics").route(web::get().to(ops::metrics)))
        .service(web::resource("/openapi.json").route(web::get().to(openapi::document)))
        .service(web::resource("/observer").route(web::get().to(observer::page)))
        .service(web::resource("/marketplace").route(web::post().to(entitlements::marketplace)))
        .service(web::resource("/pubsub").route(web::post().to(pubsub::push)))
        .service(web::resource("/v1/pubsub").route(web::get().to(pubsub::status)))
        .service(web::resource("/mcp/tools").route(web::get().to(mcp::tools)))
        .service(web::resource("/mcp").route(web::route().to(mcp::endpoint)))
        .service(web::resource("/v1/chaos/ledger").route(web::post().to(chaos::ledger)))
        .service(
            web::resource("/v1/chaos/governors/crash")
                .route(web::post().to(chaos::crash_governors)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/signals").route(web::post().to(governors::signal)),
        )
        .service(web::resource("/v1/governors").route(web::get().to(governors::list)))
        .service(web::resource("/v1/governors/{tenant}").route(web::get().to(governors::get)))
        .service(
            web::resource("/v1/governors/{tenant}/tool-calls")
                .route(web::post().to(governors::tool_call)),
        )
        .service(
            web::resource("/v1/governors/{tenant}/reset").route(web::post().to(governors::reset)),
        )
        .service(
            web::resource("/v1/governors/{tenant}/actions/{action_id}/{verb}")
                .route(web::post().to(governors::action_callback)),
        )
        .service(
            web::resource("/v1/chaos/governors/{tenant}/crash")
                .route(web::post().to(chaos::crash_governor)),
        )
        .service(web::resource("/v1/tenants").route(web::get().to(entitlements::list)))
        .service(
            web::resource("/v1/tenants/{tenant}/entitlement")
                .route(web::get().to(entitlements::get)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/entitlement/events")
                .route(web::post().to(entitlements::event)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/receipts").route(web::get().to(receipts::list)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/receipts/verify")
                .route(web::get().to(receipts::verify)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/receipts/export")
                .route(web::get().to(receipts::export)),
        )
        .service(web::resource("/v1/receipts/{receipt_id}").route(web::get().to(receipts::get)))
        .service(web::resource("/v1/supervision").route(web::get().to(ops::supervision)))
        .service(web::resource("/v1/ledger/audit").route(web::get().to(ops::ledger_audit)))
        .service(
            web::resource("/v1/supervision/events").route(web::get().to(ops::supervision_events)),
        )
        .service(
            web::resource("/v1/chaos/actors/{child}/crash")
                .route(web::post().to(chaos::crash_actor)),
        );
}
