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
use crate::telemetry::{events, request_trace_id};

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
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let trace_id = request_trace_id(header("x-cloud-trace-context"), header("traceparent"))
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
    let request = Logged {
        method,
        route: &route,
        path: res.request().path(),
        status,
        code,
        elapsed,
    };
    span.in_scope(|| log_request(&request));
    Ok(res)
}

/// What the request log says of a request.
struct Logged<'a> {
    method: &'static str,
    route: &'a str,
    path: &'a str,
    status: u16,
    code: Option<ErrorCode>,
    elapsed: Duration,
}

/// A request path as a log line repeats it: at most 256 characters (a URI may be kilobytes
/// long), the rest shown as `…`. Written only when the line is (no allocation otherwise).
struct ShortPath<'a>(&'a str);

impl std::fmt::Display for ShortPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(256) {
            Some((end, _)) => write!(f, "{}…", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

/// The request log: every failure (5xx) at warning level with its error code, except that the
/// 503s the service answers by design, to tell a client to retry (overload, a restart, the
/// ledger away, draining), are logged at most once a second per code, each such line with the
/// number left out since the one before (`suppressed`): an overload or an outage must not
/// turn into a log storm (a failing ledger under load wrote about 70,000 lines in 8 s).
/// `tai_http_requests_total` counts every one. Each line names the request: `method`,
/// `route` (the pattern) and `path` as fields, and a failure's message says them too
/// (`request failed: POST /v1/tenants/acme/signals: 503 unavailable`), as a log listing that
/// shows only messages (the operations guide's daily review) would otherwise show nothing but
/// "request failed".
fn log_request(r: &Logged<'_>) {
    use crate::telemetry::budget::LogBudget;
    static BUDGETS: [LogBudget; 5] = [const { LogBudget::new() }; 5];
    let (method, route, status) = (r.method, r.route, r.status);
    let path = ShortPath(r.path);
    let elapsed_ms = crate::telemetry::log_ms(r.elapsed);
    if status < 500 {
        tracing::debug!(method, route, path = %path, status, elapsed_ms, "request");
        return;
    }
    let Some(code) = r.code else {
        tracing::warn!(method, route, path = %path, status, elapsed_ms,
            "request failed: {method} {path}: {status}");
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
    let suppressed = match budget {
        None => 0,
        Some(i) => match BUDGETS[i].admit_now() {
            Some(suppressed) => suppressed,
            None => return,
        },
    };
    tracing::warn!(
        method,
        route,
        path = %path,
        status,
        code = name,
        elapsed_ms,
        suppressed,
        "request failed: {method} {path}: {status} {name}"
    );
}

/// Whether the service is draining (see `startup::drain`).
fn draining_now<B>(res: &ServiceResponse<B>) -> bool {
    (res.request().app_data::<web::Data<AppState>>()).is_some_and(|s| s.is_draining())
}

#[cfg(test)]
mod tests {
    use super::ShortPath;

    #[test]
    fn a_logged_path_keeps_256_characters() {
        assert_eq!(
            ShortPath("/v1/tenants/acme").to_string(),
            "/v1/tenants/acme"
        );
        let long = format!("/{}", "é".repeat(400));
        let shown = ShortPath(&long).to_string();
        assert_eq!(shown.chars().count(), 257);
        assert!(shown.ends_with("é…"), "{shown}");
        let exact = format!("/{}", "a".repeat(255));
        assert_eq!(ShortPath(&exact).to_string(), exact);
    }
}
