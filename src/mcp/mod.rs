//! MCP (SPEC §10): the tool registry served as a real MCP server, over Streamable HTTP at
//! `/mcp` (through `http/mcp.rs`) and over stdio (`tai-autonomics mcp-stdio`).
//!
//! The protocol (both eras: the `initialize` handshake of 2025-03-26 … 2025-11-25 and the
//! stateless 2026-07-28 revision with `server/discover`) is the official `rmcp` SDK's; this
//! module only adapts it: [`TaiMcp`] answers `tools/list` and `tools/call` by asking the
//! supervised [`registry::McpRegistry`], with the caller the HTTP layer authenticated (stdio
//! runs as admin: whoever can start the process owns it). The HTTP service runs stateless with
//! JSON answers, so any instance serves any request and nothing is lost on a restart.

pub mod batch;
pub mod registry;
pub mod stdio;
pub mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, CustomRequest,
    CustomResult, DiscoverRequestParams, ErrorCode, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};
use supervisors::ChildRef;

use crate::auth::Caller;
use crate::config::{McpSettings, ToolNames};
use registry::{CallTool, ListTools, McpRegistry};

/// The HTTP service `/mcp` hands requests to.
pub type HttpService = StreamableHttpService<TaiMcp, LocalSessionManager>;

/// One MCP server handler: the registry, and the caller when it is fixed (stdio).
#[derive(Clone)]
pub struct TaiMcp {
    registry: ChildRef<McpRegistry>,
    caller: Option<Caller>,
    /// How the instructions spell the tools' names, as `tools/list` does.
    names: ToolNames,
}

impl TaiMcp {
    /// For HTTP: the caller comes with each request.
    pub fn per_request(registry: ChildRef<McpRegistry>, names: ToolNames) -> Self {
        TaiMcp {
            registry,
            caller: None,
            names,
        }
    }

    /// For stdio: one caller for the whole process.
    pub fn with_caller(registry: ChildRef<McpRegistry>, caller: Caller, names: ToolNames) -> Self {
        TaiMcp {
            registry,
            caller: Some(caller),
            names,
        }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        if let Some(c) = &self.caller {
            return Ok(c.clone());
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .ok_or_else(|| {
                McpError::internal_error("the request carries no authenticated caller", None)
            })
    }
}

fn restarting(e: supervisors::CallError) -> McpError {
    McpError::internal_error(
        format!("the MCP registry is restarting ({e}); retry shortly"),
        None,
    )
}

/// The server's name, version and instructions (which name tools as `tools/list` does).
pub fn server_info(names: ToolNames) -> InitializeResult {
    let name = |n| tools::spelled(n, names);
    InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new(
            "tai-autonomics",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "TAI Autonomics governs tenants: one governor per tenant decides on signals, and \
             every decision leaves a hash-chained receipt. Use {} and {} to look, {} to act, {} \
             to check a chain.",
            name("taiea.governor.state"),
            name("taiea.audit.log"),
            name("taiea.governor.signal"),
            name("taiea.receipts.verify_chain"),
        ))
}

impl ServerHandler for TaiMcp {
    fn get_info(&self) -> InitializeResult {
        server_info(self.names)
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self.registry.call(ListTools).await.map_err(restarting)?;
        let tools = tools
            .into_iter()
            .map(serde_json::from_value::<Tool>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| McpError::internal_error(format!("tool table: {e}"), None))?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    // The methods of capabilities this server does not declare: rmcp's own answer is -32601
    // with the bare method name for a message; these say what is missing, as
    // [`unread_request`] does for methods rmcp does not know.
    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Err(not_offered("resources/list"))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Err(not_offered("resources/templates/list"))
    }

    async fn read_resource(
        &self,
        _: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        Err(not_offered("resources/read"))
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Err(not_offered("prompts/list"))
    }

    async fn get_prompt(
        &self,
        _: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        Err(not_offered("prompts/get"))
    }

    async fn complete(
        &self,
        _: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        Err(not_offered("completion/complete"))
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        Err(unread_request(&request.method, request.params))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&ctx)?;
        let msg = CallTool {
            name: request.name.to_string(),
            arguments: request
                .arguments
                .map(Value::Object)
                .unwrap_or_else(|| json!({})),
            caller,
        };
        match self.registry.call(msg).await.map_err(restarting)? {
            Ok(result) => serde_json::from_value(result)
                .map(CallToolResponse::Complete)
                .map_err(|e| McpError::internal_error(format!("tool result: {e}"), None)),
            Err(unknown) => Err(McpError::invalid_params(unknown, None)),
        }
    }
}

/// `-32601` for a method of a capability this server does not declare (it offers tools only).
fn not_offered(method: &str) -> McpError {
    McpError::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!("method not found: {method} (this server offers tools only)"),
        Some(json!({ "method": method })),
    )
}

/// The error for a request rmcp could not read as any method it knows. rmcp tries each
/// method's shape in turn and hands what fits none over as a "custom" request, whose default
/// answer is -32601 with the bare method name, also when the method is one this server serves
/// and only its params were wrong (`tools/call` without `name`, say). Those get -32602 with
/// serde's reason; any other method -32601 saying so.
fn unread_request(method: &str, params: Option<Value>) -> McpError {
    fn reason<T: serde::de::DeserializeOwned>(params: Value) -> String {
        match serde_json::from_value::<T>(params) {
            Err(e) => e.to_string(),
            Ok(_) => "not of the method's shape".to_owned(),
        }
    }
    let params = params.unwrap_or_else(|| json!({}));
    let why = match method {
        "tools/call" => reason::<CallToolRequestParams>(params),
        "tools/list" => reason::<PaginatedRequestParams>(params),
        "initialize" => reason::<InitializeRequestParams>(params),
        "server/discover" => reason::<DiscoverRequestParams>(params),
        _ => return not_offered(&method.chars().take(64).collect::<String>()),
    };
    McpError::invalid_params(format!("params of {method}: {why}"), None)
}

/// The Streamable HTTP service: stateless, JSON answers, Host and Origin allow-lists.
pub fn http_service(
    registry: ChildRef<McpRegistry>,
    cfg: &McpSettings,
    max_body: usize,
) -> HttpService {
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = false;
    config.json_response = true;
    config.max_request_body_bytes = max_body;
    config = if cfg.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(cfg.allowed_hosts.clone())
    };
    config = config.with_allowed_origins(cfg.allowed_origins.clone());
    let names = cfg.tool_names;
    StreamableHttpService::new(
        move || Ok(TaiMcp::per_request(registry.clone(), names)),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
