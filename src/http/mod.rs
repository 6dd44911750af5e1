//! The HTTP API: the whole URL table on one screen, shared state and extractor configuration.
//!
//! Invariant: handlers hold no state of their own; they validate input, send one message to an
//! actor (or read a handle), and map the answer. Every response body is JSON, errors included.

pub mod chaos;
pub mod error;
pub mod health;
pub mod middleware;
pub mod ops;
pub mod receipts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::web;

use crate::config::Settings;
use crate::tree::Tree;

/// What every handler may read.
pub struct AppState {
    pub settings: Arc<Settings>,
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
        .service(
            web::resource("/v1/tenants/{tenant}/receipts").route(web::get().to(receipts::list)),
        )
        .service(
            web::resource("/v1/tenants/{tenant}/receipts/verify")
                .route(web::get().to(receipts::verify)),
        )
        .service(web::resource("/v1/receipts/{receipt_id}").route(web::get().to(receipts::get)))
        .service(web::resource("/v1/supervision").route(web::get().to(ops::supervision)))
        .service(
            web::resource("/v1/supervision/events").route(web::get().to(ops::supervision_events)),
        )
        .service(
            web::resource("/v1/chaos/actors/{child}/crash")
                .route(web::post().to(chaos::crash_actor)),
        );
}
