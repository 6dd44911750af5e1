//! The one error type of the HTTP API and its catalogue of stable codes.
//!
//! Every error leaves as `{"type":"refusal","code":"…","message":"…"}` (plus `receipt` when one
//! was appended). Codes are the public contract: once shipped, never renamed (a unit test pins
//! the list). Client mistakes are 4xx; only our own faults are 5xx.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// The stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON.
    InvalidJson,
    /// Well-formed, but a field is missing, of the wrong type or out of range.
    InvalidRequest,
    /// The tenant id does not match `^[a-z0-9][a-z0-9._-]{0,62}$`.
    InvalidTenantId,
    /// No such route or resource.
    NotFound,
    /// The tenant does not exist (it was never granted).
    TenantNotFound,
    /// No receipt has that id.
    ReceiptNotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// No bearer token, or one that matches no configured token.
    Unauthorized,
    /// The marketplace signature is missing, invalid, or does not match the body.
    InvalidSignature,
    /// The token is valid but not for this tenant or role.
    Forbidden,
    /// A valid entitlement request the current state refuses (with its receipt).
    EntitlementConflict,
    /// The tenant's request budget is spent; retry after `Retry-After`.
    RateLimited,
    /// The governor is `refusing` (entitlement lost, action failed or timed out).
    GovernorRefusing,
    /// The governor is `intervening` (an action or tool is in flight).
    Intervening,
    /// The input does not apply to the governor's state (reset when not refusing, stale callback).
    InvalidState,
    /// Too many signals are queued behind the action in flight.
    PostponeQueueFull,
    /// Too many actions are in flight across all tenants.
    ActionsSaturated,
    /// The tenant's governor crashed and is being restarted; retry shortly.
    GovernorRestarting,
    /// Body over `http.max_body_bytes`.
    PayloadTooLarge,
    /// The body stopped arriving for `http.body_timeout_ms`.
    RequestTimeout,
    /// Body is not `application/json`.
    UnsupportedMediaType,
    /// The instance is draining after SIGTERM.
    Draining,
    /// The actor that would answer is down and being restarted.
    ActorRestarting,
    /// A dependency is unavailable; retry later.
    Unavailable,
    /// The input was handed to its governor but not decided within the deadline (the ledger is
    /// slow): it may still be decided and recorded, so look at the receipts before resending.
    DecisionPending,
    /// The `Idempotency-Key` was used before for another request (another kind, or other
    /// members); nothing was decided. A key names one request.
    IdempotencyKeyReused,
    /// Our fault.
    Internal,
    /// Stored ledger data cannot be read back: the file (or a document) is damaged, or was
    /// written by something this build does not know. Retrying does not help; the operator
    /// restores the ledger (the log says what was found).
    LedgerCorrupt,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest | ErrorCode::InvalidTenantId => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::NotFound | ErrorCode::TenantNotFound | ErrorCode::ReceiptNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized | ErrorCode::InvalidSignature => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::EntitlementConflict => StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited | ErrorCode::PostponeQueueFull | ErrorCode::ActionsSaturated => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::GovernorRefusing | ErrorCode::Intervening | ErrorCode::InvalidState => {
                StatusCode::CONFLICT
            }
            ErrorCode::GovernorRestarting => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Draining
            | ErrorCode::ActorRestarting
            | ErrorCode::Unavailable
            | ErrorCode::DecisionPending => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal | ErrorCode::LedgerCorrupt => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code a bare error status maps to when a response was produced without our body.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status.as_u16() {
            404 => ErrorCode::NotFound,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            405 => ErrorCode::MethodNotAllowed,
            429 => ErrorCode::RateLimited,
            413 => ErrorCode::PayloadTooLarge,
            408 => ErrorCode::RequestTimeout,
            415 => ErrorCode::UnsupportedMediaType,
            503 => ErrorCode::Unavailable,
            400..=499 => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// An API error: a code, a message safe to show, and optionally a `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// The receipt appended for this refusal, if one was.
    pub receipt: Option<serde_json::Value>,
    /// Every receipt a governor appended for the refused input, in order (a JSON array whose
    /// last element is `receipt`): a refusal can follow the record of what led to it, such as
    /// `entitlement_changed` before `signal_refused`.
    pub receipts: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retry_after_secs = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        ApiError {
            code,
            message: message.into(),
            retry_after_secs,
            receipt: None,
            receipts: None,
        }
    }

    /// Attaches the refusal's receipt.
    pub fn with_receipt(mut self, receipt: &crate::receipts::Receipt) -> Self {
        self.receipt = serde_json::to_value(receipt).ok();
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// Our own fault: logged with its cause, shown as "internal error".
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }

    /// Stored ledger data that cannot be read back: logged, and shown as it is (it names a
    /// receipt or what SQLite found, never a secret), so that nobody retries in vain.
    pub fn ledger_corrupt(what: impl std::fmt::Display) -> Self {
        log_ledger_corrupt(&what);
        ApiError::new(
            ErrorCode::LedgerCorrupt,
            format!("the ledger's stored data cannot be read: {what}"),
        )
    }
}

/// The ERROR line for stored ledger data that cannot be read back, at most once a second.
pub fn log_ledger_corrupt(what: &dyn std::fmt::Display) {
    static LOG: crate::telemetry::budget::LogBudget = crate::telemetry::budget::LogBudget::new();
    if let Some(suppressed) = LOG.admit_now() {
        tracing::error!(error = %what, suppressed, "stored ledger data cannot be read; restore the ledger (README, Backup and restore)");
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipts: Option<&'a serde_json::Value>,
}

/// The JSON error response for `code` and `message`.
pub fn error_response(
    code: ErrorCode,
    message: &str,
    retry_after_secs: Option<u64>,
) -> HttpResponse {
    error_response_with(code, message, retry_after_secs, None, None)
}

fn error_response_with(
    code: ErrorCode,
    message: &str,
    retry_after_secs: Option<u64>,
    receipt: Option<&serde_json::Value>,
    receipts: Option<&serde_json::Value>,
) -> HttpResponse {
    let mut res = HttpResponse::build(code.status());
    if let Some(secs) = retry_after_secs {
        res.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    if code == ErrorCode::Unauthorized {
        res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    // For the request log (`http::middleware`), which names the code of each failure.
    res.extensions_mut().insert(code);
    res.json(ErrorBody {
        kind: "refusal",
        code,
        message,
        receipt,
        receipts,
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }
    fn error_response(&self) -> HttpResponse {
        error_response_with(
            self.code,
            &self.message,
            self.retry_after_secs,
            self.receipt.as_ref(),
            self.receipts.as_ref(),
        )
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Unauthenticated => {
                ApiError::new(ErrorCode::Unauthorized, e.to_string())
            }
            crate::auth::AuthError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m),
        }
    }
}

impl From<supervisors::CallError> for ApiError {
    fn from(e: supervisors::CallError) -> Self {
        match e {
            supervisors::CallError::Timeout => {
                ApiError::new(ErrorCode::Unavailable, "the actor did not answer in time")
            }
            other => ApiError::new(
                ErrorCode::ActorRestarting,
                format!("{other}; retry shortly"),
            ),
        }
    }
}

/// Maps JSON body errors: syntax → 400 `invalid_json`, shape → 400 `invalid_request`,
/// size → 413, content type → 415.
pub fn json_error(err: actix_web::error::JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    match err {
        actix_web::error::JsonPayloadError::ContentType => content_type_refusal(req).into(),
        err => json_api_error(&err).into(),
    }
}

/// 415 for a JSON route's body of another type, saying what the request declared. `curl -d`
/// without `-H 'content-type: application/json'` sends `application/x-www-form-urlencoded`,
/// the most common way to get here, and the answer says how to send JSON instead.
pub fn content_type_refusal(req: &HttpRequest) -> ApiError {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(100)
                .collect::<String>()
        });
    let message = match declared.as_deref().map(str::trim) {
        None | Some("") => {
            "expected content-type application/json; the request has none".to_owned()
        }
        Some(form) if form.starts_with("application/x-www-form-urlencoded") => format!(
            "expected content-type application/json, not {form:?} (what curl -d sends unless \
             given -H 'content-type: application/json')"
        ),
        Some(other) => format!("expected content-type application/json, not {other:?}"),
    };
    ApiError::new(ErrorCode::UnsupportedMediaType, message)
}

/// The [`ApiError`] for a JSON body that could not be read (see [`json_error`]).
pub fn json_api_error(err: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body is larger than the limit",
        ),
        J::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected content-type application/json",
        ),
        J::Deserialize(e) if e.is_data() => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request body: {e}"),
        ),
        J::Deserialize(e) => ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}")),
        J::Payload(actix_web::error::PayloadError::Overflow) => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body is larger than the limit",
        ),
        J::Payload(actix_web::error::PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::new(ErrorCode::RequestTimeout, e.to_string())
        }
        other => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("could not read the request body: {other}"),
        ),
    }
}

/// Maps query-string errors to 400 `invalid_request`.
/// A query string the route's parameters do not read: 400 `invalid_request`. A parameter the
/// route does not have is named with those it has (`unknown field `after`, expected
/// `after_seq` or `limit``), so a misspelt cursor is not ignored into a first page again.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let why = match &err {
        actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    // A hostile parameter name is cut short, and the names the route has still said.
    let why = match why
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.rsplit_once("`, expected "))
    {
        Some((name, known)) if name.chars().count() > 64 => {
            let name: String = name.chars().take(64).collect();
            format!("unknown field `{name}…`, expected {known}")
        }
        _ => why,
    };
    let why: String = why.chars().take(300).collect();
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("invalid query string: {why}"),
    )
    .into()
}

/// A non-negative integer query parameter (`after_seq`, `limit`): absent or empty is `None`,
/// anything else that is not such an integer is 400 `invalid_request` naming the parameter.
pub fn query_uint<T: std::str::FromStr>(
    name: &str,
    raw: Option<&str>,
) -> Result<Option<T>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    raw.parse().map(Some).map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{name} must be a non-negative integer, found {shown:?}"),
        )
    })
}

/// A page size from the query: 100 when absent, else 1 to 1000 (400 otherwise), on every
/// paged route alike (and as the MCP tools' schemas say).
pub fn query_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match query_uint::<usize>("limit", raw)? {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit must be between 1 and 1000, found {n}"),
        )),
    }
}

/// Maps path-parameter errors to 400 `invalid_request`.
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("invalid path parameter: {err}"),
    )
    .into()
}

/// Catch-all for error responses produced without our JSON body (unknown route, wrong method,
/// framework errors): keeps the status, replaces the body with the JSON error body.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    // A body read as bytes (Pub/Sub push, MCP) that stopped arriving: 408 as on JSON routes.
    let stalled = (res.response().error())
        .and_then(|e| e.as_error::<actix_web::error::PayloadError>())
        .and_then(|p| match p {
            actix_web::error::PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Some(e.to_string())
            }
            _ => None,
        });
    let status = match &stalled {
        Some(_) => StatusCode::REQUEST_TIMEOUT,
        None => res.status(),
    };
    let code = ErrorCode::for_status(status);
    // Every GET route answers HEAD too (see `middleware::observe`).
    let allow = res
        .headers()
        .get(header::ALLOW)
        .map(|allow| match allow.to_str() {
            Ok(a) if a.split(',').any(|m| m.trim() == "GET") && !a.contains("HEAD") => {
                HeaderValue::from_str(&format!("{a}, HEAD")).unwrap_or_else(|_| allow.clone())
            }
            _ => allow.clone(),
        });
    let message = match (stalled, code) {
        (Some(stalled), _) => stalled,
        (None, ErrorCode::NotFound) => "no such route".to_owned(),
        (None, ErrorCode::MethodNotAllowed) => {
            let takes = (allow.as_ref().and_then(|a| a.to_str().ok()))
                .map(|a| format!("; this route takes {a}"))
                .unwrap_or_default();
            format!(
                "method {} is not allowed here{takes}",
                res.request().method()
            )
        }
        (None, _) => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let (req, _) = res.into_parts();
    let mut new = error_response(code, &message, None);
    if status != code.status() {
        *new.status_mut() = status;
    }
    if let Some(allow) = allow {
        new.headers_mut().insert(header::ALLOW, allow);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        new.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    let res = ServiceResponse::new(req, new.map_into_boxed_body()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code, in catalogue order.
    const ALL: &[ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidTenantId,
        ErrorCode::NotFound,
        ErrorCode::TenantNotFound,
        ErrorCode::ReceiptNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidSignature,
        ErrorCode::Forbidden,
        ErrorCode::EntitlementConflict,
        ErrorCode::RateLimited,
        ErrorCode::GovernorRefusing,
        ErrorCode::Intervening,
        ErrorCode::InvalidState,
        ErrorCode::PostponeQueueFull,
        ErrorCode::ActionsSaturated,
        ErrorCode::GovernorRestarting,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Draining,
        ErrorCode::ActorRestarting,
        ErrorCode::Unavailable,
        ErrorCode::DecisionPending,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Internal,
        ErrorCode::LedgerCorrupt,
    ];

    #[test]
    fn the_code_catalogue_is_stable() {
        let all = ALL;
        let names: Vec<String> = all
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "invalid_json",
                "invalid_request",
                "invalid_tenant_id",
                "not_found",
                "tenant_not_found",
                "receipt_not_found",
                "method_not_allowed",
                "unauthorized",
                "invalid_signature",
                "forbidden",
                "entitlement_conflict",
                "rate_limited",
                "governor_refusing",
                "intervening",
                "invalid_state",
                "postpone_queue_full",
                "actions_saturated",
                "governor_restarting",
                "payload_too_large",
                "request_timeout",
                "unsupported_media_type",
                "draining",
                "actor_restarting",
                "unavailable",
                "decision_pending",
                "idempotency_key_reused",
                "internal",
                "ledger_corrupt"
            ]
        );
    }

    #[test]
    fn only_our_own_faults_are_5xx_apart_from_unavailability() {
        for c in ALL {
            let s = c.status();
            let server_side = matches!(
                c,
                ErrorCode::Draining
                    | ErrorCode::ActorRestarting
                    | ErrorCode::Unavailable
                    | ErrorCode::DecisionPending
                    | ErrorCode::GovernorRestarting
                    | ErrorCode::Internal
                    | ErrorCode::LedgerCorrupt
            );
            assert_eq!(s.is_server_error(), server_side, "{c:?}");
            assert!(s.is_client_error() || server_side, "{c:?}");
        }
        assert_eq!(ErrorCode::Draining.status(), 503);
    }

    #[test]
    fn query_numbers_name_the_parameter_and_treat_empty_as_absent() {
        assert_eq!(query_uint::<u64>("after_seq", None).unwrap(), None);
        assert_eq!(query_uint::<u64>("after_seq", Some("")).unwrap(), None);
        assert_eq!(
            query_uint::<u64>("after_seq", Some("12")).unwrap(),
            Some(12)
        );
        for bad in ["-1", "1.5", "abc", "99999999999999999999999"] {
            let e = query_uint::<u64>("after_seq", Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert_eq!(
                e.message,
                format!("after_seq must be a non-negative integer, found {bad:?}")
            );
        }
        // A long value is shown cut short.
        let long = "x".repeat(10_000);
        let e = query_uint::<usize>("limit", Some(&long)).unwrap_err();
        assert!(e.message.len() < 100, "{}", e.message);
    }
}
