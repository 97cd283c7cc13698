//! The MCP surface. Each tool is a thin adapter: typed params, one call into the session (which
//! hides the kernel backend and where the files live), and the rendering of its result; errors
//! become MCP results here and only here. The tools live in three routers, joined into the one
//! router the server serves: `code.rs` (running code and looking at the kernel), `files.rs`,
//! `environment.rs` (packages and interpreters), each with the helpers only it uses; this file
//! keeps the server, the helpers they share and the protocol handlers (tasks, with their ids
//! and views in `tasks.rs`; resources; subscriptions).

mod code;
mod environment;
mod files;
pub mod instructions;
mod params;
mod resources;
mod tasks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock as Content, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};

pub use crate::kernel::Environments;
pub use crate::session::Settings;
pub use params::*;
pub use tasks::task_session;

use crate::error::{KernelError, SessionError, Unavailable, WorkspaceError};
use crate::kernel::{KernelHandle, Restarted, SwitchError, Switched};
use crate::output::ProgressFn;
use crate::pyenv::EnvInfo;
use crate::session::{
    Installed, NotebookRun, PackageCheck, PackageList, RunCall, RunOrTask, Session, TaskView,
    Written,
};
use crate::workspace::{Listing, ReadOutcome, Workspace, MAX_WRITE_BYTES};
use tasks::{run_of_task, task_of};

/// Longest glob or filter accepted.
const MAX_PATTERN: usize = 256;

fn pattern_problem(p: &str) -> Option<String> {
    (p.chars().count() > MAX_PATTERN).then(|| format!("the pattern is longer than {MAX_PATTERN} characters; use a shorter glob such as \"*.csv\""))
}

fn tool_error(msg: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![Content::text(msg.into())])
}

/// A result with the text for older clients and the same data as structuredContent. The only
/// place structuredContent is attached, and it carries text alone: some clients drop a result's
/// content, images included, when structuredContent is present, so no result with an image
/// ever gets it.
fn structured<T: serde::Serialize>(text: String, data: &T) -> CallToolResult {
    let mut r = CallToolResult::success(vec![Content::text(text)]);
    r.structured_content = serde_json::to_value(data).ok();
    r
}

fn kernel_error(e: KernelError) -> CallToolResult {
    let hint = match &e {
        // Their words say what to do, and the kernel is fine.
        KernelError::Busy { .. }
        | KernelError::SilentTimeout { .. }
        | KernelError::HelperFailed { .. } => "",
        // The environment is still being created: the call just needs to be made again later.
        KernelError::EnvironmentNotReady => {
            " The file tools work meanwhile; the tool list is updated (notifications/tools/list_changed) when it is ready."
        }
        // Nothing to retry: the server is stopping, or the caller gave up.
        KernelError::Unavailable {
            reason: Unavailable::ShuttingDown(_) | Unavailable::Cancelled,
        } => "",
        KernelError::Unavailable { .. } => {
            " The file tools still work; call restart_kernel to try again (after the fix, if one is named)."
        }
        _ => " Call restart_kernel to start a fresh kernel.",
    };
    tool_error(format!("{e}.{hint}"))
}

fn workspace_error(e: WorkspaceError) -> CallToolResult {
    tool_error(format!("{e}"))
}

/// A session operation that did not happen, as the tool result the model reads.
fn failure(e: SessionError) -> CallToolResult {
    match e {
        SessionError::Kernel(e) => kernel_error(e),
        SessionError::Workspace(e) => workspace_error(e),
        SessionError::Refused(why) => tool_error(why.to_string()),
    }
}

/// The key the stdin filter or the HTTP front numbered this request under (see `arrival`);
/// `scope` is the HTTP session's id.
fn arrival_key(ctx: &RequestContext<RoleServer>, scope: Option<&str>) -> Option<String> {
    serde_json::to_value(&ctx.id)
        .ok()
        .map(|v| crate::arrival::scoped_key(scope, &v))
}

/// MCP progress notifications for a long cell, when the client sent a progress token.
fn progress_fn(ctx: &RequestContext<RoleServer>) -> Option<ProgressFn> {
    let token = ctx.meta.get_progress_token()?;
    let peer = ctx.peer.clone();
    Some(Box::new(move |elapsed: Duration, line: &str| {
        let mut p = ProgressNotificationParam::new(token.clone(), elapsed.as_secs_f64());
        p.message = Some(if line.is_empty() {
            format!("running for {:.0} s", elapsed.as_secs_f64())
        } else {
            format!("running for {:.0} s: {line}", elapsed.as_secs_f64())
        });
        let peer = peer.clone();
        tokio::spawn(async move {
            let _ = peer.notify_progress(p).await;
        });
    }))
}

/// The MCP server.
#[derive(Clone)]
pub struct Server {
    session: Arc<Session>,
    /// The client, once initialized, for notifications/tools/list_changed.
    peer: Arc<std::sync::Mutex<Option<rmcp::Peer<RoleServer>>>>,
    /// Bumped each time the tool list changes: each 2026-07-28 `subscriptions/listen` stream
    /// waits on it (that era has no initialized peer to notify).
    tools_version: Arc<tokio::sync::watch::Sender<u64>>,
    /// MCP tasks (`io.modelcontextprotocol/tasks`) are offered: the session's runs (on stdio
    /// the one session; over HTTP each session's, the task id naming the session).
    tasks: bool,
    /// The HTTP session this server serves (the scope of its requests' arrival order);
    /// `None` on stdio.
    arrival_scope: Option<String>,
    /// The client can read the workspace's files as resources (not a 2026-07-28 handle
    /// session over HTTP), so results may link to them.
    resource_links: bool,
    tool_router: ToolRouter<Server>,
}

impl Server {
    /// Builds the server around a kernel handle and a workspace.
    pub fn new(
        kernel: Arc<KernelHandle>,
        workspace: Arc<Workspace>,
        settings: Settings,
        envs: Environments,
    ) -> Server {
        kernel.set_environments(envs);
        Server {
            session: Arc::new(Session::new(kernel, workspace, settings)),
            peer: Arc::new(std::sync::Mutex::new(None)),
            tools_version: Arc::new(tokio::sync::watch::Sender::new(0)),
            tasks: false,
            arrival_scope: None,
            resource_links: true,
            tool_router: Self::code_router() + Self::file_router() + Self::environment_router(),
        }
    }

    /// Serves the HTTP session `id`: its run requests are ordered among themselves, as the
    /// HTTP front numbered them (see `arrival`).
    pub fn in_http_session(mut self, id: &str) -> Server {
        self.arrival_scope = Some(id.to_owned());
        self
    }

    /// Results carry no `resource_link`s: the client cannot read this session's files as
    /// resources (a handle session over HTTP).
    pub fn without_resource_links(mut self) -> Server {
        self.resource_links = false;
        self
    }

    /// Offers MCP tasks: this session's runs.
    pub fn with_tasks(mut self) -> Server {
        self.tasks = true;
        self
    }

    /// Replaces what the server reports about the active environment (after a first-run set-up).
    pub fn set_env_info(&self, info: EnvInfo) {
        self.session.kernel().set_env_info(info);
        self.tools_changed();
    }

    /// Tells the client that the tool descriptions changed (they name the environment), per
    /// MCP "Tools: List Changed Notification": unsolicited to a client of the initialize era,
    /// on each `subscriptions/listen` stream that asked for it in the 2026-07-28 era.
    fn tools_changed(&self) {
        self.tools_version.send_modify(|v| *v = v.wrapping_add(1));
        let peer = self.peer.lock().ok().and_then(|p| p.clone());
        if let Some(peer) = peer {
            tokio::spawn(async move {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!(error = %e, "could not send tools/list_changed");
                }
            });
        }
    }

    /// The tools this server offers, as `tools/list` returns them: execute_python's description
    /// names the current environment and working directory.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        let env_line = instructions::environment_line(&self.session);
        let mut tools = self.tool_router.list_all();
        for t in tools.iter_mut().filter(|t| t.name == "execute_python") {
            let base = t.description.clone().unwrap_or_default();
            t.description = Some(format!("{base}{env_line}").into());
        }
        tools
    }

    /// The answer of a silent kernel-side helper (`expr`), waiting up to 10 s for a running
    /// call; `Err` is the result `tool` gives instead.
    async fn helper_answer(&self, expr: &str, tool: &str) -> Result<String, CallToolResult> {
        match self.session.evaluate(expr, Duration::from_secs(10)).await {
            Ok(r) => Ok(r),
            Err(SessionError::Kernel(KernelError::Busy { .. })) => Err(tool_error(format!(
                "the kernel is busy running a call; call {tool} again when it has finished (or interrupt_kernel)"
            ))),
            Err(e) => Err(failure(e)),
        }
    }

    /// The session this server serves.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The workspace this server's file tools and kernel use.
    pub fn workspace_root(&self) -> &Path {
        self.session.workspace().root()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    /// Every tool call; `resource_link` content (MCP 2025-06-18: the saved original of a
    /// fitted image) reaches only clients that know the type and can read the resource.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let links = self.resource_links
            && context
                .protocol_version()
                .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2025_06_18);
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let mut response = self.tool_router.call(tcc).await?;
        if !links {
            if let CallToolResponse::Complete(r) = &mut response {
                r.content.retain(|c| c.as_resource_link().is_none());
            }
        }
        Ok(response)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        Ok(rmcp::model::ListToolsResult::with_all_items(self.tools()))
    }

    /// 2026-07-28 `subscriptions/listen`: the tool list is the one list that changes here.
    fn accepted_subscription_filter(
        &self,
        _requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(
            rmcp::model::SubscriptionFilter::builder()
                .tools_list_changed()
                .build(),
        )
    }

    /// Holds one listen stream open until the client cancels it, sending
    /// `notifications/tools/list_changed` on it each time the tool list changes.
    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.tools_version.subscribe();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if let Err(e) = context.sink().notify_tool_list_changed().await {
                        tracing::debug!(error = %e, "could not send tools/list_changed on a listen stream");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Tasks extension `tasks/get`: a run still going is `working` with its latest output
    /// line; an ended one is `completed` with the cell's whole result (kept for repeated gets).
    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        use rmcp::model::{DetailedTask, GetTaskResult, TaskPayload};
        let Some(id) = run_of_task(&request.task_id, self.arrival_scope.as_deref()) else {
            return Err(ErrorData::invalid_params(
                format!("no task {:?} here", request.task_id),
                None,
            ));
        };
        let view = self.session.task(id);
        let payload = match &view {
            TaskView::Unknown => {
                return Err(ErrorData::invalid_params(
                    format!("no task {:?} here", request.task_id),
                    None,
                ))
            }
            TaskView::Working { .. } => TaskPayload::Working,
            TaskView::Completed(r) => match serde_json::to_value(if self.resource_links {
                r.clone()
            } else {
                let mut r = r.clone();
                r.content.retain(|c| c.as_resource_link().is_none());
                r
            }) {
                Ok(serde_json::Value::Object(result)) => TaskPayload::Completed { result },
                _ => TaskPayload::Failed {
                    error: serde_json::Map::from_iter([(
                        "message".to_owned(),
                        serde_json::Value::String("the result could not be encoded".into()),
                    )]),
                },
            },
            TaskView::Failed(why) => TaskPayload::Failed {
                error: serde_json::Map::from_iter([
                    ("code".to_owned(), serde_json::json!(-32603)),
                    ("message".to_owned(), serde_json::Value::String(why.clone())),
                ]),
            },
            TaskView::Cancelled => TaskPayload::Cancelled,
        };
        Ok(GetTaskResult::new(DetailedTask::new(
            task_of(id, self.arrival_scope.as_deref(), &view),
            payload,
        )))
    }

    /// Tasks extension `tasks/cancel`: interrupts the run (cooperative; the task reports
    /// `cancelled` once the cell has stopped).
    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        match run_of_task(&request.task_id, self.arrival_scope.as_deref()) {
            // Tasks extension: a task in a terminal status cannot be cancelled (-32602).
            Some(id) if self.session.runs().ended(id) == Some(true) => {
                Err(ErrorData::invalid_params(
                    format!(
                        "task {:?} has already ended; a finished task cannot be cancelled (tasks/get gives its result)",
                        request.task_id
                    ),
                    None,
                ))
            }
            Some(id) if self.session.cancel_task(id) => Ok(()),
            _ => Err(ErrorData::invalid_params(
                format!("no task {:?} here", request.task_id),
                None,
            )),
        }
    }

    /// Tasks extension `tasks/update`: no run asks the client for input (a cell's `input()`
    /// is refused as before), so there is never an outstanding request to answer.
    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Err(ErrorData::invalid_params(
            format!(
                "task {:?} has no outstanding input requests",
                request.task_id
            ),
            None,
        ))
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        if let Ok(mut p) = self.peer.lock() {
            *p = Some(context.peer);
        }
    }

    fn get_info(&self) -> ServerConfig {
        let instructions = instructions::one_session(&self.session);
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources();
        let capabilities = if self.tasks {
            capabilities.enable_tasks().build()
        } else {
            capabilities.build()
        };
        ServerConfig::new(capabilities)
            .with_instructions(instructions)
            .with_server_info(rmcp::model::Implementation::new(
                "kernel-mcp",
                env!("CARGO_PKG_VERSION"),
            ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.session).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.session, request.uri).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `"type"` in the schema, wherever it sits.
    fn types(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(t) = m.get("type") {
                    out.push(t.clone());
                }
                m.values().for_each(|c| types(c, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| types(c, out)),
            _ => {}
        }
    }

    #[test]
    fn optional_fields_have_plain_types_and_are_not_required() {
        use rmcp::handler::server::common::schema_for_type;
        let write =
            serde_json::Value::Object((*schema_for_type::<Parameters<WriteParams>>()).clone());
        assert_eq!(write["required"], serde_json::json!(["path", "content"]));
        assert_eq!(write["properties"]["append"]["type"], "boolean");
        let exec =
            serde_json::Value::Object((*schema_for_type::<Parameters<ExecuteParams>>()).clone());
        assert_eq!(exec["properties"]["timeout_seconds"]["type"], "number");
        assert_eq!(exec["required"], serde_json::json!(["code"]));
        for schema in [&write, &exec] {
            let mut found = Vec::new();
            types(schema, &mut found);
            assert!(
                found.iter().all(|t| t.is_string() && t != "null"),
                "{schema}"
            );
            assert!(!schema.to_string().contains("null"), "{schema}");
        }
    }

    #[test]
    fn strip_null_rewrites_every_nullable_form() {
        let mut v = serde_json::json!({
            "properties": {
                "a": {"type": ["array", "null"], "items": {"type": "string"}, "default": null},
                "b": {"anyOf": [{"$ref": "#/$defs/E"}, {"type": "null"}], "description": "d"},
                "c": {"type": ["string", "integer", "null"]},
                "d": {"enum": ["x", null]}
            }
        });
        strip_null(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "properties": {
                    "a": {"type": "array", "items": {"type": "string"}},
                    "b": {"$ref": "#/$defs/E", "description": "d"},
                    "c": {"type": ["string", "integer"]},
                    "d": {"enum": ["x"]}
                }
            })
        );
    }
}
