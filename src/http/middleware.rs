//! Request middleware: the drain gate, the request span (with the Cloud trace id) and the HTTP
//! metrics.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use super::error::{error_response, ErrorCode};
use super::AppState;
use crate::telemetry::{events, trace_id_from_header};

/// Paths that keep answering while the instance drains (probes and scrapes).
fn exempt_from_drain(path: &str) -> bool {
    path.starts_with("/health") || path == "/metrics"
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let method = events::method_label(req.method().as_str());
    let trace_id = req
        .headers()
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_from_header)
        .unwrap_or_default();
    // The route is known once the request has been routed: asked for here, before routing,
    // actix matches the path against every pattern again (regex-lite), which cost about as much
    // as the routing itself (4 % of the CPU at the maximum signal rate).
    let span = tracing::info_span!(
        "request",
        %method,
        route = tracing::field::Empty,
        trace_id = %trace_id
    );

    let draining = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.is_draining());
    let res = if draining && !exempt_from_drain(req.path()) {
        let (r, _) = req.into_parts();
        ServiceResponse::new(
            r,
            error_response(
                ErrorCode::Draining,
                "this instance is shutting down; retry on another",
                Some(1),
            ),
        )
    } else {
        next.call(req)
            .instrument(span.clone())
            .await?
            .map_into_boxed_body()
    };

    // Routed: the resource path recorded by the router gives the pattern without a match.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.record("route", route.as_str());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    events::http_request(method, &route, status, elapsed);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "request failed"
            );
        } else {
            tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request");
        }
    });
    Ok(res)
}
