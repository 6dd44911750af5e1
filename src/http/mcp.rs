//! `/mcp` (MCP Streamable HTTP) and `GET /mcp/tools`. The bridge authenticates the caller with
//! the service's bearer rules (401/403 before any MCP processing), hands the request to rmcp's
//! service with the caller in its extensions, and streams rmcp's answer back unchanged.
//! `GET /mcp/tools` returns `{"tools": [...]}`, the same list `tools/list` returns.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use http_body_util::BodyExt as _;

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::auth::Caller;
use crate::mcp::registry::ListTools;

/// `POST|GET|DELETE /mcp`
pub async fn endpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let caller = Caller::extract(&req).await?;
    let mut b = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (k, v) in req.headers() {
        b = b.header(k.as_str(), v.as_bytes());
    }
    let mut request = b
        .body(http_body_util::Full::new(body))
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("unusable request: {e}")))?;
    request.extensions_mut().insert(caller);
    let (parts, body) = state.mcp.handle(request).await.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16())
        .map_err(|e| ApiError::internal(format!("MCP status: {e}")))?;
    let mut out = HttpResponse::build(status);
    for (k, v) in parts.headers.iter() {
        out.append_header((k.as_str(), v.as_bytes()));
    }
    Ok(out.streaming(body.into_data_stream()))
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
