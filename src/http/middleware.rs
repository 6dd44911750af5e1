//! Request middleware: the drain gate, the request span (with the Cloud trace id), the HTTP
//! metrics and the request log (with its budget for the 503s that come by the thousand).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::rt::time::{sleep, Sleep};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::Stream;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use super::error::{error_response, ErrorCode};
use super::AppState;
use crate::telemetry::{events, trace_id_from_header};

/// Paths that keep answering while the instance drains (probes and scrapes).
pub(super) fn exempt_from_drain(path: &str) -> bool {
    path.starts_with("/health") || path == "/metrics"
}

/// A request body that must keep arriving: once nothing has come for `idle`, it ends with a
/// `TimedOut` error, which the JSON extractor answers with 408 `request_timeout`. Without it, a
/// client that sent its headers and part of its body held the connection and the handler for
/// as long as it liked.
struct BodyDeadline {
    inner: Payload,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.timer = None;
            return Poll::Ready(item);
        }
        let idle = this.idle;
        let timer = this.timer.get_or_insert_with(|| Box::pin(sleep(idle)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.ended = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the request body stopped arriving for {} ms",
                idle.as_millis()
            ),
        )))))
    }
}

pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let idle = Duration::from_millis(state.settings.http.body_timeout_ms);
        let inner = req.take_payload();
        if matches!(inner, Payload::None) {
            req.set_payload(inner);
        } else {
            req.set_payload(Payload::Stream {
                payload: Box::pin(BodyDeadline {
                    inner,
                    idle,
                    timer: None,
                    ended: false,
                }),
            });
        }
    }
    let method = events::method_label(req.method().as_str());
    // HEAD is GET without the content (RFC 9110 §9.3.2: every general-purpose server supports
    // both), so it is routed as GET; actix-http, which parsed the request as HEAD, sends the
    // head of the answer only.
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
    }
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
    // No decompression is built in, so a compressed body would read as malformed JSON.
    let encoding = (req.headers().get(actix_web::http::header::CONTENT_ENCODING))
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty() && e != "identity");
    let res = if let Some(encoding) = encoding {
        let (r, _) = req.into_parts();
        let shown: String = encoding.chars().take(32).collect();
        ServiceResponse::new(
            r,
            error_response(
                ErrorCode::UnsupportedMediaType,
                &format!("Content-Encoding {shown:?} is not supported; send the body uncompressed"),
                None,
            ),
        )
    } else if draining && !exempt_from_drain(req.path()) {
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

    // While draining, every answer closes its connection (HTTP/1.1), so a client opens a new
    // one for its next request, which another instance takes or the closed listener refuses,
    // instead of sending it on a connection the server is about to close (no way to tell then
    // whether it was handled). Asked again here: the drain may have begun during the request.
    let mut res = res;
    if draining_now(&res) {
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }

    // Routed: the resource path recorded by the router gives the pattern without a match.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.record("route", route.as_str());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    events::http_request(method, &route, status, elapsed);
    let code = res.response().extensions().get::<ErrorCode>().copied();
    span.in_scope(|| log_request(status, code, elapsed));
    Ok(res)
}

/// The request log: every failure (5xx) at warning level with its error code, except that the
/// 503s the service answers by design, to tell a client to retry (overload, a restart, the
/// ledger away, draining), are logged at most once a second per code, each such line with the
/// number left out since the one before (`suppressed`): an overload or an outage must not
/// turn into a log storm (a failing ledger under load wrote about 70,000 lines in 8 s).
/// `tai_http_requests_total` counts every one.
fn log_request(status: u16, code: Option<ErrorCode>, elapsed: Duration) {
    use crate::telemetry::budget::LogBudget;
    static BUDGETS: [LogBudget; 5] = [const { LogBudget::new() }; 5];
    let elapsed_ms = crate::telemetry::log_ms(elapsed);
    if status < 500 {
        tracing::debug!(status, elapsed_ms, "request");
        return;
    }
    let Some(code) = code else {
        tracing::warn!(status, elapsed_ms, "request failed");
        return;
    };
    let name = serde_json::to_value(code).unwrap_or_default();
    let name = name.as_str().unwrap_or_default();
    let budget = match code {
        ErrorCode::Unavailable => Some(0),
        ErrorCode::Draining => Some(1),
        ErrorCode::ActorRestarting => Some(2),
        ErrorCode::GovernorRestarting => Some(3),
        ErrorCode::DecisionPending => Some(4),
        _ => None,
    };
    match budget {
        None => tracing::warn!(status, code = name, elapsed_ms, "request failed"),
        Some(i) => {
            if let Some(suppressed) = BUDGETS[i].admit_now() {
                tracing::warn!(
                    status,
                    code = name,
                    elapsed_ms,
                    suppressed,
                    "request failed"
                );
            }
        }
    }
}

/// Whether the service is draining (see `startup::drain`).
fn draining_now<B>(res: &ServiceResponse<B>) -> bool {
    (res.request().app_data::<web::Data<AppState>>()).is_some_and(|s| s.is_draining())
}
