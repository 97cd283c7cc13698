//! The MCP side of the sessions: rmcp's session manager, wrapped so each MCP session opens
//! and closes a kernel session (`Manager`), and the MCP handler that finds each request's
//! session (by `Mcp-Session-Id` or by the `session` argument) and hands the request to that
//! session's tool server (`Front`). The sessions themselves live in `sessions.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock as Content,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

use super::sessions::*;
use crate::tools::Server;
/// How long closing rmcp's side of a session may take. rmcp hands the close to the session's
/// worker, which waits while a client leaves a stream of that session unread; the kernel side
/// is closed first and never waits for it, and the reaper's other work neither.
const RMCP_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long ending an MCP session waits for the answers of its calls still running (their
/// kernel is stopping: a busy kernel is killed after ~3.5 s).
const ANSWERS_WAIT: Duration = Duration::from_secs(10);

/// rmcp's in-memory session manager, with a kernel session opened and closed alongside each
/// MCP session.
pub struct Manager {
    inner: LocalSessionManager,
    reg: Arc<Registry>,
}

impl Manager {
    /// A manager whose sessions live in `reg`.
    pub fn new(reg: Arc<Registry>) -> Manager {
        let mut inner = LocalSessionManager::default();
        // Idle sessions are ended by `reap` (it knows which calls still run), not by rmcp.
        inner.session_config.keep_alive = None;
        Manager { inner, reg }
    }

    /// Ends idle sessions every little while, and closes rmcp's side of sessions the
    /// registry evicted as soon as it does, until `ct` is cancelled.
    pub async fn reap(self: Arc<Self>, ct: CancellationToken) {
        let every = (self.reg.limits.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut next = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = ct.cancelled() => return,
                _ = self.reg.evicted_notified() => {
                    self.close_evicted().await;
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            next = tokio::time::Instant::now() + every;
            self.close_evicted().await;
            let mut legacy = Vec::new();
            for (id, era) in self.reg.idle() {
                tracing::info!(session = %log_name(&id, era), "session idle past --session-idle-timeout");
                self.reg.close(&id, SessionEnd::Idle);
                if era == Era::Legacy {
                    legacy.push(SessionId::from(id));
                }
            }
            self.close_rmcp(&legacy).await;
        }
    }

    /// Closes rmcp's session (its worker, its streams) for each MCP session the registry
    /// evicted: without this its client would get tool errors instead of the 404 that tells
    /// it to initialize again, and the rmcp session would stay for good (no keep-alive).
    async fn close_evicted(&self) {
        let ids: Vec<SessionId> = self
            .reg
            .take_evicted()
            .into_iter()
            .map(SessionId::from)
            .collect();
        self.close_rmcp(&ids).await;
    }

    /// Closes rmcp's side of `ids` together, each given [`RMCP_CLOSE_WAIT`]. A close that
    /// times out has still taken the session out of rmcp's table (its first step): requests
    /// for it get 404, and its worker ends when the client's connection does.
    async fn close_rmcp(&self, ids: &[SessionId]) {
        let closes = ids.iter().map(|id| async move {
            let closed = tokio::time::timeout(RMCP_CLOSE_WAIT, self.inner.close_session(id)).await;
            if closed.is_err() {
                tracing::warn!(session = %id, secs = RMCP_CLOSE_WAIT.as_secs(), "rmcp's side of a session did not close in time (its client is not reading); left to end with the connection");
            }
        });
        futures::future::join_all(closes).await;
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl SessionManager for Manager {
    type Error = std::io::Error;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.inner.create_session().await.map_err(io_err)?;
        if let Err(e) = self.reg.open(id.to_string(), Era::Legacy, false) {
            self.close_rmcp(std::slice::from_ref(&id)).await;
            return Err(io_err(e));
        }
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<rmcp::model::ServerJsonRpcMessage, Self::Error> {
        self.inner
            .initialize_session(id, message)
            .await
            .map_err(io_err)
    }

    /// rmcp answers 404 (re-initialize) for a session this says is gone. A session the
    /// registry ended (evicted) is gone even before the reaper closes rmcp's side of it, so
    /// it is closed here at once; a session is always in the registry before its id is sent.
    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        if !self.inner.has_session(id).await.map_err(io_err)? {
            return Ok(false);
        }
        if self.reg.get(id).is_some_and(|s| s.era == Era::Legacy) {
            return Ok(true);
        }
        self.close_rmcp(std::slice::from_ref(id)).await;
        Ok(false)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // Unknown ids (already ended) are not an error: the session is gone either way. The
        // kernel side first: it must not wait on rmcp's. A call still running is cut short
        // by its kernel's end and answers with why; rmcp's side is closed once those answers
        // have gone out (closing it drops the streams they travel on).
        let streams = self.reg.get(id).map(|s| s.streams());
        self.reg.close(id, SessionEnd::Deleted);
        if let Some(streams) = streams {
            if !streams.all_closed(ANSWERS_WAIT).await {
                tracing::warn!(session = %id, secs = ANSWERS_WAIT.as_secs(), "a call of the ended session did not answer in time; its stream is closed without an answer");
            }
        }
        self.close_rmcp(std::slice::from_ref(id)).await;
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        self.reg.touch(id);
        self.inner.create_stream(id, message).await.map_err(io_err)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: rmcp::model::ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.reg.touch(id);
        self.inner.accept_message(id, message).await.map_err(io_err)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        self.inner
            .create_standalone_stream(id)
            .await
            .map_err(io_err)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        self.inner.resume(id, last_event_id).await.map_err(io_err)
    }
}

/// The MCP handler rmcp builds per session and per stateless request: it finds the request's
/// session and hands the request to that session's tool server.
#[derive(Clone)]
pub struct Front {
    reg: Arc<Registry>,
    template: Server,
    info: ServerConfig,
    /// The tool list for handle-era clients (built once; rmcp asks for it on every request).
    handle_tools: Arc<Vec<Tool>>,
}

impl Front {
    /// The handler over `reg`; `template` supplies the tool list (it never runs a kernel).
    pub fn new(reg: Arc<Registry>, template: Server) -> Front {
        let env = template_env(&reg);
        let idle = reg.limits.idle_timeout.as_secs();
        let instructions =
            crate::tools::instructions::hosted(&env, idle, NEW_SESSION_TOOL, SESSION_ARG);
        // An empty prompt list is declared so generic clients (and the conformance suite's
        // caching checks) get a cacheable answer to prompts/list instead of method-not-found.
        let info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_tasks()
                .build(),
        )
        .with_instructions(instructions)
        .with_server_info(rmcp::model::Implementation::new(
            "kernel-mcp",
            env!("CARGO_PKG_VERSION"),
        ));
        let mut front = Front {
            reg,
            template,
            info,
            handle_tools: Arc::default(),
        };
        front.handle_tools = Arc::new(front.build_handle_tools());
        front
    }

    /// The 2025-11-25 session named by the request's `Mcp-Session-Id` header.
    fn legacy_session(&self, ctx: &RequestContext<RoleServer>) -> Option<Arc<HostedSession>> {
        let parts = ctx.extensions.get::<http::request::Parts>()?;
        let id = parts.headers.get(SESSION_HEADER)?.to_str().ok()?;
        self.reg.get(id).filter(|s| s.era == Era::Legacy)
    }

    /// The session whose run a task is: the one the task id names, which must also be the
    /// request's `Mcp-Session-Id` session when it has one.
    fn task_owner(
        &self,
        task: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Arc<HostedSession>, ErrorData> {
        let unknown = || {
            ErrorData::invalid_params(
                format!(
                    "no task {:?} here (tasks end with their session)",
                    crate::text::sanitize(task)
                ),
                None,
            )
        };
        let named = crate::tools::task_session(task)
            .and_then(|id| self.reg.get(id))
            .ok_or_else(unknown)?;
        let allowed = match named.era {
            Era::Legacy => self.legacy_session(ctx).is_some_and(|s| s.id == named.id),
            Era::Handle => !Self::has_session_header(ctx),
        };
        if allowed {
            Ok(named)
        } else {
            Err(unknown())
        }
    }

    fn has_session_header(ctx: &RequestContext<RoleServer>) -> bool {
        ctx.extensions
            .get::<http::request::Parts>()
            .is_some_and(|p| p.headers.contains_key(SESSION_HEADER))
    }

    /// The tools for clients that name sessions by handle: a `session` argument on each, plus
    /// `new_session`.
    fn build_handle_tools(&self) -> Vec<Tool> {
        let idle = self.reg.limits.idle_timeout.as_secs();
        let root = self.template.workspace_root().display().to_string();
        let own_folders = !self.reg.limits.shared_workspace;
        let mut tools: Vec<Tool> = self
            .template
            .tools()
            .into_iter()
            .map(|mut t| {
                // The template names the workspace root; each session works in its own folder.
                if let Some(d) = t.description.as_mut().filter(|_| own_folders) {
                    *d = d.replace(&root, "the session's own folder").into();
                }
                let mut schema = (*t.input_schema).clone();
                let props = schema
                    .entry("properties")
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let Some(props) = props.as_object_mut() {
                    props.insert(
                        SESSION_ARG.into(),
                        serde_json::json!({
                            "type": "string",
                            "description": format!("Session handle from {NEW_SESSION_TOOL} (or from an earlier result). Omit it to start a new session; the result then names the handle to pass on later calls. A session ends after {idle} s without a call."),
                        }),
                    );
                }
                t.input_schema = Arc::new(schema);
                t
            })
            .collect();
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), "object".into());
        schema.insert("properties".into(), serde_json::json!({}));
        let mut t = Tool::new(
            NEW_SESSION_TOOL,
            format!("Start an isolated Python session: its own kernel, variables and workspace folder. Returns the session handle; pass it as the `{SESSION_ARG}` argument of every other tool to keep using that session. The session ends after {idle} s without a call (its variables are then lost); an unknown or expired handle gives an error that says to call {NEW_SESSION_TOOL} again."),
            schema,
        );
        t.annotations = Some(
            rmcp::model::ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .open_world(false),
        );
        tools.push(t);
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), "object".into());
        schema.insert(
            "properties".into(),
            serde_json::json!({ SESSION_ARG: {"type": "string", "description": format!("The handle of the session to end (from {NEW_SESSION_TOOL}).")} }),
        );
        schema.insert("required".into(), serde_json::json!([SESSION_ARG]));
        let mut t = Tool::new(
            END_SESSION_TOOL,
            "End a session when done with it: its kernel and everything it started stop, its variables are gone, its files stay. Frees its slot for other clients at once (otherwise it ends after the idle timeout).".to_owned(),
            schema,
        );
        t.annotations = Some(
            rmcp::model::ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .open_world(false),
        );
        tools.push(t);
        tools
    }

    fn open_handle(&self, implicit: bool) -> Result<Arc<HostedSession>, OpenError> {
        let handle = hex::encode(rand::random::<[u8; 32]>());
        self.reg.open(handle, Era::Handle, implicit)
    }

    fn handle_note(&self, s: &HostedSession, why: &str) -> String {
        format!(
            "[{why}: session handle \"{}\". Pass it as the `{SESSION_ARG}` argument of later calls to keep these variables and files; it ends after {} s without a call.]",
            s.id,
            self.reg.limits.idle_timeout.as_secs()
        )
    }
}

fn template_env(reg: &Registry) -> crate::pyenv::EnvInfo {
    reg.template.envs.info.clone()
}

fn tool_error(msg: impl Into<String>) -> CallToolResponse {
    CallToolResult::error(vec![Content::text(msg.into())]).into()
}

impl ServerHandler for Front {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    /// Tasks extension: each session's runs are its tasks; the task id names the session.
    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        let s = self.task_owner(&request.task_id, &ctx)?;
        s.touch();
        ServerHandler::get_task(&s.server, request, ctx).await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let s = self.task_owner(&request.task_id, &ctx)?;
        s.touch();
        ServerHandler::cancel_task(&s.server, request, ctx).await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let s = self.task_owner(&request.task_id, &ctx)?;
        ServerHandler::update_task(&s.server, request, ctx).await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = match self.legacy_session(&ctx) {
            Some(s) => s.server.tools(),
            None if Self::has_session_header(&ctx) => self.template.tools(),
            None => self.handle_tools.to_vec(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.handle_tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let idle = self.reg.limits.idle_timeout;
        if let Some(s) = self.legacy_session(&ctx) {
            return s.call(request, ctx, idle).await;
        }
        if Self::has_session_header(&ctx) {
            return Ok(tool_error(
                "this MCP session has ended (idle timeout or DELETE); start a new session (initialize again)",
            ));
        }
        let legacy_peer = ctx
            .protocol_version()
            .is_some_and(|v| v < ProtocolVersion::V_2026_07_28);
        if legacy_peer {
            return Err(ErrorData::invalid_request(
                "no MCP session: send initialize first and pass its Mcp-Session-Id header",
                None,
            ));
        }
        if request.name == NEW_SESSION_TOOL {
            return Ok(match self.open_handle(false) {
                Ok(s) => CallToolResult::success(vec![Content::text(
                    self.handle_note(&s, "a new session was started"),
                )])
                .into(),
                Err(e) => tool_error(format!("no session was started: {e}")),
            });
        }
        if request.name == END_SESSION_TOOL {
            let args = request.arguments.take().unwrap_or_default();
            return Ok(match args.get(SESSION_ARG) {
                Some(serde_json::Value::String(h)) => {
                    match self.reg.get(h).filter(|s| s.era == Era::Handle) {
                        Some(s) => {
                            self.reg.close(&s.id, SessionEnd::EndSession);
                            CallToolResult::success(vec![Content::text(
                                "the session ended: its kernel stopped and its variables are gone; its files stay on disk",
                            )])
                            .into()
                        }
                        None => tool_error("unknown or expired session handle; nothing to end"),
                    }
                }
                _ => tool_error(format!(
                    "pass the handle of the session to end as `{SESSION_ARG}`"
                )),
            });
        }
        let mut args = request.arguments.take().unwrap_or_default();
        let (session, note) = match args.remove(SESSION_ARG) {
            None => match self.open_handle(true) {
                Ok(s) => {
                    let note = self.handle_note(&s, "this call started a new session");
                    (s, Some(note))
                }
                Err(e) => return Ok(tool_error(format!("nothing was run: {e}"))),
            },
            Some(serde_json::Value::String(h)) => {
                let known = match self.reg.get(&h) {
                    Some(s) => Some(s).filter(|s| s.era == Era::Handle),
                    // A session of an earlier server on this workspace comes back.
                    None => match self.reg.revive(&h) {
                        Ok(s) => s,
                        Err(e) => return Ok(tool_error(format!("nothing was run: {e}"))),
                    },
                };
                match known {
                    Some(s) => (s, None),
                    None => {
                        return Ok(tool_error(format!(
                            "unknown or expired session handle; nothing was run. Sessions end after {} s without a call, and their variables are lost (a session survives a server restart only when the server stopped in order and its handle comes back within that time). Call {NEW_SESSION_TOOL} (or call this tool without `{SESSION_ARG}`) to start a new session and use the handle it returns.",
                            idle.as_secs()
                        )))
                    }
                }
            }
            Some(_) => {
                return Ok(tool_error(format!(
                    "`{SESSION_ARG}` must be the handle string returned by {NEW_SESSION_TOOL}; nothing was run"
                )))
            }
        };
        request.arguments = Some(args);
        let result = session.call(request, ctx, idle).await;
        self.reg.remember_now(&session, false);
        if note.is_some() {
            // The call that opened this session has ended (see `Registry::open`).
            session.active.fetch_sub(1, Ordering::SeqCst);
        }
        let mut result = result?;
        if let (Some(n), CallToolResponse::Complete(r)) = (note, &mut result) {
            r.content.push(Content::text(n));
        }
        Ok(result)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        match self.legacy_session(&ctx) {
            Some(s) => ServerHandler::list_resources(&s.server, request, ctx).await,
            // Handles are tool arguments; resources have none, so there is no session to list.
            None => Ok(ListResourcesResult::with_all_items(Vec::new())),
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match self.legacy_session(&ctx) {
            Some(s) => ServerHandler::read_resource(&s.server, request, ctx).await,
            None => Err(ErrorData::resource_not_found(
                format!(
                    "{}: resources are served per MCP session; read files with read_file and a session handle",
                    request.uri
                ),
                Some(serde_json::json!({ "uri": request.uri })),
            )),
        }
    }
}
