//! `/mcp` (MCP Streamable HTTP) and `GET /mcp/tools`. The bridge authenticates the caller with
//! the service's bearer rules (401/403 before any MCP processing), hands the request to rmcp's
//! service with the caller in its extensions, and streams rmcp's answer back unchanged, except
//! that rmcp's plain-text refusals become the service's JSON error body (malformed JSON-RPC is
//! 400, where rmcp says 415, and a 405 says `Allow: POST`). rmcp reads one message per request,
//! so the bridge itself takes MCP 2025-03-26's JSON-RPC batches apart and puts their answers
//! together.
//! `GET /mcp/tools` returns `{"tools": [...]}`, the same list `tools/list` returns.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use http_body_util::BodyExt as _;

use super::error::{error_response, ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::mcp::batch;
use crate::mcp::registry::ListTools;

/// `POST|GET|DELETE /mcp`
pub async fn endpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let caller = Caller::extract(&req).await?;
    if req.method() == actix_web::http::Method::POST && batch::is_array(&body) {
        return batch(&state, &req, &caller, &body).await;
    }
    let (status, headers, answer) = forward(&state, &req, &caller, body.clone()).await?;
    let json_answer = is_json(&headers);
    if status.is_client_error() && !json_answer {
        // rmcp refuses in plain text; the client gets the service's JSON error body with
        // rmcp's reason (it is small: a fixed sentence or a parser's message).
        let text = answer
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Ok(refusal(&req, status, &text, &body));
    }
    let mut out = HttpResponse::build(status);
    for (k, v) in headers.iter() {
        out.append_header((k.as_str(), v.as_bytes()));
    }
    Ok(out.streaming(answer.into_data_stream()))
}

type Answer = http_body_util::combinators::BoxBody<web::Bytes, std::convert::Infallible>;

/// Hands one request (the client's, or one message of a batch with the client's headers) to
/// rmcp's service with the caller in its extensions.
async fn forward(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    body: web::Bytes,
) -> Result<(StatusCode, http::HeaderMap, Answer), ApiError> {
    let mut b = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    let accept = actix_web::http::header::ACCEPT;
    for (k, v) in req.headers() {
        // A batch's messages are forwarded one by one, each shorter than the whole body.
        if k != actix_web::http::header::CONTENT_LENGTH && k != accept {
            b = b.header(k.as_str(), v.as_bytes());
        }
    }
    // rmcp wants both media types listed, as MCP asks of clients, but this server answers
    // JSON only: a client that accepts JSON (`*/*`, `application/json`, or no `Accept` at
    // all, RFC 9110 §12.5.1) is served; one that does not gets rmcp's 406.
    let values = || {
        req.headers()
            .get_all(&accept)
            .filter_map(|v| v.to_str().ok())
    };
    if accepts_json(values(), req.headers().contains_key(&accept)) {
        b = b.header("accept", "application/json, text/event-stream");
    } else {
        for v in values() {
            b = b.header("accept", v);
        }
    }
    let mut request = b
        .body(http_body_util::Full::new(body))
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("unusable request: {e}")))?;
    request.extensions_mut().insert(caller.clone());
    let (parts, answer) = state.mcp.handle(request).await.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16())
        .map_err(|e| ApiError::internal(format!("MCP status: {e}")))?;
    Ok((status, parts.headers, answer))
}

/// Whether `Accept` allows an `application/json` answer: its most specific range that covers
/// JSON (`application/json`, then `application/*`, then `*/*`) has a weight above 0. Without
/// the header (`present` false) any media type is acceptable.
fn accepts_json<'a>(values: impl Iterator<Item = &'a str>, present: bool) -> bool {
    if !present {
        return true;
    }
    let mut best: Option<(u8, bool)> = None; // (specificity, weight above 0)
    for range in values.flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let specificity = match media.as_str() {
            "application/json" => 3,
            "application/*" => 2,
            "*/*" => 1,
            _ => continue,
        };
        let weighted = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map(|(_, q)| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
            .unwrap_or(true);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, weighted));
        }
    }
    best.is_some_and(|(_, weighted)| weighted)
}

fn is_json(headers: &http::HeaderMap) -> bool {
    (headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// A JSON-RPC batch (MCP 2025-03-26): its messages are handed to rmcp one by one, in order,
/// each as its own request with the client's headers, and the answers go back as one JSON
/// array in the same order (notifications have none; a batch of notifications alone is 202
/// with no body). A message rmcp cannot read gets a `-32600` error in its place, and so does
/// `initialize`, which 2025-03-26 keeps out of batches. A refusal of the request itself (its
/// headers: `Accept`, `Host`, `Origin`) is the same for every message and answers the whole
/// batch, as it would a single message; when no member reaches rmcp, a notification takes
/// the headers to rmcp's checks instead.
async fn batch(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    body: &web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let messages: Vec<serde_json::Value> = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) if e.is_data() => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a batch is an array of JSON-RPC messages: {e}"),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!("the body is not JSON: {e}"),
            ))
        }
    };
    let version = (req.headers().get("mcp-protocol-version")).and_then(|v| v.to_str().ok());
    if let Some(why) = batch::refusal(version, &messages) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, why));
    }
    let mut answers = Vec::with_capacity(messages.len());
    let mut forwarded = false;
    for message in &messages {
        if let Err(error) = batch::triage(message) {
            answers.push(error);
            continue;
        }
        forwarded = true;
        let one = web::Bytes::from(serde_json::to_vec(message).map_err(ApiError::internal)?);
        let (status, headers, answer) = forward(state, req, caller, one.clone()).await?;
        let text = answer
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if status == StatusCode::ACCEPTED {
            continue; // a notification: no answer
        }
        if is_json(&headers) {
            match serde_json::from_slice::<serde_json::Value>(&text) {
                Ok(answer) => answers.push(batch::as_member_answer(answer)),
                Err(e) => return Err(ApiError::internal(format!("MCP answer: {e}"))),
            }
        } else {
            // A refusal of the request itself (its headers): the same for every member.
            return Ok(refusal(req, status, &text, &one));
        }
    }
    if !forwarded {
        // No member reached rmcp, so its checks of the request's headers have not run: a
        // notification (which a stateless server takes and ignores) runs them.
        let probe =
            web::Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let (status, _, answer) = forward(state, req, caller, probe.clone()).await?;
        if status != StatusCode::ACCEPTED {
            let text = answer
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Ok(refusal(req, status, &text, &probe));
        }
    }
    if answers.is_empty() {
        return Ok(HttpResponse::Accepted().finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(serde_json::to_vec(&answers).map_err(ApiError::internal)?))
}

/// The JSON error body for a request rmcp refused with `status` and the plain `text` reason.
/// rmcp answers 415 both for a wrong `Content-Type` and for a JSON body that is not one
/// JSON-RPC message; the second is the client's malformed input, so 400, and said precisely.
fn refusal(req: &HttpRequest, status: StatusCode, text: &[u8], body: &[u8]) -> HttpResponse {
    let declared_json = (req.headers().get(actix_web::http::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE && declared_json {
        // Read as a tree, not skipped: skipping takes numbers no f64 holds (`1e400`), which
        // rmcp's typed parse then refuses, and the client would be told of a wrong shape.
        return match serde_json::from_slice::<serde_json::Value>(body) {
            Err(e) => error_response(
                ErrorCode::InvalidJson,
                &format!("the body is not JSON: {e}"),
                None,
            ),
            Ok(_) => error_response(
                ErrorCode::InvalidRequest,
                "the body is not one JSON-RPC 2.0 message this server reads: `jsonrpc` must be \
                 \"2.0\", `id` a string or an integer, `params` an object of the method's \
                 shape",
                None,
            ),
        };
    }
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // Another content type: said as on every JSON route (what came, and curl's default).
        use actix_web::ResponseError as _;
        return super::error::content_type_refusal(req).error_response();
    }
    let reason: String = if status == StatusCode::NOT_ACCEPTABLE {
        "this server answers in application/json, which the Accept header rules out; MCP \
         clients send `Accept: application/json, text/event-stream`"
            .to_owned()
    } else {
        String::from_utf8_lossy(text).chars().take(200).collect()
    };
    let reason = match reason.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_ascii_lowercase(),
        r => r.to_owned(),
    };
    let mut res = error_response(ErrorCode::for_status(status), &reason, None);
    *res.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // The transport is stateless: POST is its one method (RFC 9110 wants a 405 to say so).
        res.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static("POST"),
        );
    }
    res
}

/// `GET /mcp/tools`: the registry's tools, as `tools/list` returns them. Any valid token may
/// read the list (the extractor answers 401 otherwise).
pub async fn tools(
    state: web::Data<AppState>,
    _authenticated: Caller,
) -> Result<HttpResponse, ApiError> {
    let tools = state.tree.mcp.call(ListTools).await.map_err(|e| {
        ApiError::new(
            ErrorCode::ActorRestarting,
            format!("the MCP registry is restarting ({e}); retry shortly"),
        )
        .retry_after(1)
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tools": tools })))
}

#[cfg(test)]
mod tests {
    use super::accepts_json;

    #[test]
    fn json_is_served_to_every_accept_that_allows_it() {
        let accepts = |v: &str| accepts_json(std::iter::once(v), true);
        for yes in [
            "application/json, text/event-stream",
            "application/json",
            "*/*",
            "application/*;q=0.5",
            "text/html, */*;q=0.1",
            "Application/JSON",
            "*/*;q=0, application/json",
        ] {
            assert!(accepts(yes), "{yes}");
        }
        for no in [
            "text/event-stream",
            "text/html",
            "",
            "application/json;q=0",
            "application/json;q=0, */*",
            "*/*;q=0",
            "application/json;q=x",
        ] {
            assert!(!accepts(no), "{no}");
        }
        assert!(accepts_json(std::iter::empty(), false), "no header at all");
        assert!(accepts_json(
            ["text/plain", "application/json"].into_iter(),
            true
        ));
    }
}
