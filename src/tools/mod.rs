//! The MCP surface: the only `#[tool_router]`. Each tool is a thin adapter: typed params, one
//! call into the session (which hides the kernel backend and where the files live), and the
//! rendering of its result; errors become MCP results here and only here.

mod params;
mod resources;

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

use crate::error::{KernelError, SessionError, Unavailable, WorkspaceError};
use crate::kernel::{KernelHandle, Restarted, SwitchError, Switched};
use crate::output::ProgressFn;
use crate::pyenv::EnvInfo;
use crate::session::{
    Installed, NotebookRun, PackageCheck, PackageList, RunCall, RunOrTask, Session, TaskView,
    WorkingDir, Written,
};
use crate::workspace::{Listing, ReadOutcome, Workspace, MAX_WRITE_BYTES};

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
        KernelError::Busy { .. } => "",
        // The environment is still being created: the call just needs to be made again later.
        KernelError::EnvironmentNotReady => {
            " The file tools work meanwhile; the tool list is updated (notifications/tools/list_changed) when it is ready."
        }
        // Nothing to retry: the server is stopping, or the caller gave up.
        KernelError::Unavailable {
            reason: Unavailable::ShuttingDown | Unavailable::Cancelled,
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
        SessionError::Refused(why) => tool_error(why),
    }
}

/// Most characters read_file returns: `max_chars`, else 2000 per line asked for with `limit`,
/// never more than the workspace reader's 100,000.
fn read_cap(limit: Option<usize>, max_chars: Option<usize>) -> usize {
    const MAX: usize = 100_000;
    match (max_chars, limit) {
        (Some(m), _) => m.clamp(1, MAX),
        (None, Some(l)) => l.saturating_mul(2000).clamp(2000, MAX),
        (None, None) => MAX,
    }
}

/// `text` cut to `cap` characters, the note saying where it stopped and how to read on.
fn cap_text(
    text: String,
    note: Option<String>,
    cap: usize,
    first: usize,
) -> (String, Option<String>) {
    let Some((cut, _)) = text.char_indices().nth(cap) else {
        return (text, note);
    };
    let shown = text.get(..cut).unwrap_or("");
    let whole_lines = shown.matches('\n').count();
    let cut_line = first + whole_lines;
    let how = if whole_lines == 0 {
        format!("line {cut_line} is longer than that and was cut; read the rest of it from Python, or raise max_chars (up to 100,000)")
    } else {
        format!("line {cut_line} was cut; call read_file with offset={cut_line} to read on, or raise max_chars (up to 100,000)")
    };
    let mut notes = vec![format!(
        "showing the first {cap} characters (max_chars); {how}"
    )];
    notes.extend(note);
    (shown.to_owned(), Some(notes.join("; ")))
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

/// An installer's output lines as MCP progress notifications, when the client sent a token:
/// the sender to give the installer and the task forwarding its lines.
fn install_progress(
    ctx: &RequestContext<RoleServer>,
) -> (
    Option<tokio::sync::mpsc::UnboundedSender<String>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let Some(token) = ctx.meta.get_progress_token() else {
        return (None, None);
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let peer = ctx.peer.clone();
    let task = tokio::spawn(async move {
        let mut n = 0.0;
        while let Some(line) = rx.recv().await {
            n += 1.0;
            let mut p = ProgressNotificationParam::new(token.clone(), n);
            p.message = Some(line.chars().take(200).collect());
            let _ = peer.notify_progress(p).await;
        }
    });
    (Some(tx), Some(task))
}

/// The MCP task id of run `id`.
///
/// Over HTTP the task id also names the session (`run-4@<session>`): `tasks/get` carries no
/// session argument, so the front finds the session by it (see [`task_session`]).
fn task_id(id: u64, scope: Option<&str>) -> String {
    match scope {
        None => format!("run-{id}"),
        Some(s) => format!("run-{id}@{s}"),
    }
}

/// The run a task id names, if it belongs to the session `scope` (`None`: stdio).
fn run_of_task(task: &str, scope: Option<&str>) -> Option<u64> {
    let (run, owner) = match task.split_once('@') {
        Some((run, owner)) => (run, Some(owner)),
        None => (task, None),
    };
    if owner != scope {
        return None;
    }
    run.strip_prefix("run-")?.parse().ok()
}

/// The HTTP session a task id names (see [`task_id`]).
pub fn task_session(task: &str) -> Option<&str> {
    task.split_once('@').map(|(_, s)| s)
}

/// A task's base fields as a run looks now.
fn task_of(id: u64, scope: Option<&str>, view: &TaskView) -> rmcp::model::Task {
    use rmcp::model::{Task, TaskStatus};
    let now = chrono::Utc::now();
    let (status, message, since) = match view {
        TaskView::Working {
            since,
            started,
            line,
        } => {
            let what = if *started { "running" } else { "queued" };
            let msg = if line.is_empty() {
                format!("{what} for {:.0} s", since.as_secs_f64())
            } else {
                format!("{what} for {:.0} s: {line}", since.as_secs_f64())
            };
            (TaskStatus::Working, Some(msg), *since)
        }
        TaskView::Completed(_) => (TaskStatus::Completed, None, Duration::ZERO),
        TaskView::Failed(why) => (TaskStatus::Failed, Some(why.clone()), Duration::ZERO),
        TaskView::Cancelled => (TaskStatus::Cancelled, None, Duration::ZERO),
        TaskView::Unknown => (
            TaskStatus::Failed,
            Some("unknown run".into()),
            Duration::ZERO,
        ),
    };
    let created = chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(now);
    let mut task = Task::new(
        task_id(id, scope),
        status,
        created.to_rfc3339(),
        now.to_rfc3339(),
    )
    .with_poll_interval_ms(1000);
    if let Some(m) = message {
        task = task.with_status_message(m);
    }
    task
}

/// An install's outcome as the tool result.
fn install_result(
    done: Result<Result<Installed, SessionError>, tokio::task::JoinError>,
) -> CallToolResult {
    match done {
        Ok(Ok(Installed::Report(text))) => CallToolResult::success(vec![Content::text(text)]),
        Ok(Ok(Installed::InKernel(cell))) => cell,
        Ok(Err(e)) => failure(e),
        Err(e) => tool_error(format!("the install stopped unexpectedly: {e}")),
    }
}

/// write_file's content as bytes: UTF-8 text as given, or base64 decoded (whitespace ignored),
/// within the per-call limit.
fn decode_content(content: String, encoding: Encoding) -> Result<Vec<u8>, String> {
    let too_big = |n: usize| {
        format!("content is {n} bytes; the limit per write_file call is {MAX_WRITE_BYTES} bytes. Nothing was written.")
    };
    let data = match encoding {
        Encoding::Utf8 => content.into_bytes(),
        Encoding::Base64 => {
            let clean: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|e| format!("content is not valid base64 ({e}); nothing was written"))?
        }
    };
    if data.len() > MAX_WRITE_BYTES {
        return Err(too_big(data.len()));
    }
    Ok(data)
}

/// list_files' text (one aligned line per entry) and structured data.
fn render_listing(listing: &Listing) -> CallToolResult {
    let mut lines = Vec::with_capacity(listing.entries.len() + 1);
    let mut data = FileListing {
        entries: Vec::with_capacity(listing.entries.len()),
        truncated: listing.truncated,
        skipped_folders: listing.skipped,
    };
    for e in &listing.entries {
        let modified = e.modified.map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        });
        data.entries.push(FileEntry {
            path: e.path.clone(),
            kind: e.kind.as_str().to_owned(),
            size: e.size,
            modified: modified.clone(),
        });
        let when = modified.unwrap_or_else(|| "-".into());
        let name = if e.kind == crate::workspace::EntryKind::Dir {
            format!("{}/", e.path)
        } else {
            e.path.clone()
        };
        lines.push(format!("{:<7} {:>12}  {}  {}", e.kind, e.size, when, name));
    }
    if lines.is_empty() {
        lines.push("(no entries)".into());
    }
    if listing.skipped > 0 {
        lines.push(format!(
            "[{} folder(s) could not be read (permissions) and were skipped]",
            listing.skipped
        ));
    }
    if listing.truncated {
        lines.push(format!(
            "[only the first {} entries are shown; narrow with path or pattern]",
            crate::workspace::MAX_LIST_ENTRIES
        ));
    }
    structured(lines.join("\n"), &data)
}

/// Quotes a word for a `%run` line the way a POSIX shell (and IPython's shlex) reads it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-=:,+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

fn py_str(s: &str) -> String {
    // JSON string literals are valid Python string literals.
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

/// The cell that runs a script like IPython's `%run` (quoting each argument for it), and the
/// `%run` line the notebook shows for it (with the workspace path the caller gave).
fn run_file_code(abs: &Path, given: &str, args: &[String]) -> (String, String) {
    let mut argv = vec![abs.to_string_lossy().into_owned()];
    argv.extend(args.iter().cloned());
    let list: Vec<String> = argv.iter().map(|a| py_str(a)).collect();
    let code = format!(
        "import shlex as __kmcp_shlex\nget_ipython().run_line_magic('run', ' '.join(__kmcp_shlex.quote(__a) for __a in [{}]))\ndel __kmcp_shlex",
        list.join(", ")
    );
    let run_line: Vec<String> = std::iter::once(given)
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect();
    (code, format!("%run {}", run_line.join(" ")))
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
            tool_router: Self::tool_router(),
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
        let env = self.session.env_info();
        let packages = env.package_summary();
        let with = if packages.is_empty() {
            String::new()
        } else {
            format!(" with {packages}")
        };
        let wd = match self.session.working_dir() {
            WorkingDir::Workspace(p) => format!("Working directory: {}.", p.display()),
            WorkingDir::WithKernel { server } => format!(
                "Working directory: the kernel's own, on the Jupyter server{}; the file tools act there.",
                server.map(|s| format!(" {s}")).unwrap_or_default()
            ),
            WorkingDir::Apart { workspace } => format!(
                "Working directory: wherever the kernel was started (another client owns it); the file tools act on {}, so use absolute paths to share files.",
                workspace.display()
            ),
        };
        let mut env_line = format!("\n\nEnvironment: Python {}{with}. {wd}", env.python_version);
        if let Some(p) = &self.session.settings().output.sandbox {
            env_line.push_str(&format!("\n\n{}", p.paragraph()));
        }
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

#[tool_router]
impl Server {
    /// Run Python code in a persistent IPython (Jupyter) kernel and return its output.
    ///
    /// State persists across calls like a notebook: variables, imports and loaded data stay
    /// available to later calls until the kernel is restarted. The working directory is the
    /// workspace, so files written with write_file can be opened by relative path
    /// (e.g. pd.read_csv("data.csv")), and files the code saves there can be read with read_file.
    ///
    /// Returns, in order: printed stdout/stderr, the value of the last expression, rich displays
    /// as text, and matplotlib figures as PNG images (plt.show() or a figure left open at the end
    /// of the code). A Python exception sets isError and gives `ename: evalue` plus the traceback.
    /// input() and getpass() are not available (they raise at once). Output beyond about 20,000
    /// characters is cut to its head and tail, with the full text saved to a file in the workspace
    /// whose path the result names. Code still running after about 45 s (return_after) keeps
    /// running in the background as a numbered run: the result is the output so far and a note
    /// with the run's number; call check_run to get the rest and the final result. Calls run
    /// one at a time in the order they were sent; one that has to wait says it is queued. On
    /// timeout (default 30 min) the kernel is interrupted and the partial output returned with a
    /// note; variables are kept unless the code would not stop, in which case the kernel is
    /// restarted and the result says that state was lost.
    #[tool(
        name = "execute_python",
        annotations(
            title = "Run Python",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn execute_python(
        &self,
        Parameters(p): Parameters<ExecuteParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if p.code.trim().is_empty() {
            return Ok(tool_error(
                "code is empty; pass the Python source to run in the code argument",
            )
            .into());
        }
        let call = RunCall {
            code: &p.code,
            journal_source: &p.code,
            timeout: p.timeout_seconds,
            return_after: self.session.return_after(p.return_after),
            arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
        };
        // A client that takes tasks gets one for a cell that outlasts return_after (MCP tasks
        // extension, SEP-2663); the others get the output so far and a run to check.
        let takes_tasks = self.tasks
            && ctx
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks());
        if takes_tasks {
            return Ok(
                match self
                    .session
                    .run_as_task(call, progress_fn(&ctx), &ctx.ct)
                    .await
                {
                    Ok(RunOrTask::Done(r)) => r.into(),
                    Ok(RunOrTask::Task(id)) => {
                        CallToolResponse::Task(rmcp::model::CreateTaskResult::new(task_of(
                            id,
                            self.arrival_scope.as_deref(),
                            &self.session.task(id),
                        )))
                    }
                    Err(e) => failure(e).into(),
                },
            );
        }
        let run = self.session.run(call, progress_fn(&ctx), &ctx.ct);
        Ok(run.await.unwrap_or_else(failure).into())
    }

    /// Read a file from the workspace.
    ///
    /// UTF-8 text comes back as text, 2000 lines per call by default (at most 100,000
    /// characters); a note says how to read on with `offset` (1-based first line). PNG, JPEG,
    /// GIF and WebP files come back as images (up to 5 MiB), so a saved plot can be looked at.
    /// Other binary files get a short description (type, size) instead of their bytes; load
    /// those from Python. Paths are relative to the workspace root; '..', '~', and symlinks
    /// leading outside the workspace are refused.
    #[tool(
        name = "read_file",
        annotations(
            title = "Read workspace file",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn read_file(
        &self,
        Parameters(p): Parameters<ReadParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let cap = read_cap(p.limit, p.max_chars);
        let first = p.offset.unwrap_or(1).max(1);
        let read =
            self.session
                .files()
                .read(p.path, p.offset, p.limit, p.line_numbers.unwrap_or(false));
        Ok(match read.await {
            Ok(ReadOutcome::Text { text, note }) => {
                let (text, note) = cap_text(text, note, cap, first);
                let mut c = vec![Content::text(text)];
                if let Some(n) = note {
                    c.push(Content::text(format!("[{n}]")));
                }
                CallToolResult::success(c)
            }
            Ok(ReadOutcome::Image { mime, bytes }) => {
                let limits = self.session.settings().output.image_fit;
                match crate::output::images::fit(mime, &bytes, &limits) {
                    crate::output::images::Fit::Fitted(f) => CallToolResult::success(vec![
                        Content::image(
                            base64::engine::general_purpose::STANDARD.encode(&f.bytes),
                            f.mime,
                        ),
                        Content::text(format!(
                            "[image: {}×{} of {} KiB shown at {}×{} ({} KiB) to fit the client's image limits (--max-image-px {}, --max-image-bytes {}); the file itself is unchanged]",
                            f.from.0, f.from.1, bytes.len() / 1024, f.to.0, f.to.1, f.bytes.len() / 1024, limits.max_px, limits.max_bytes
                        )),
                    ]),
                    crate::output::images::Fit::Refused(why) => {
                        tool_error(format!("the image could not be shown: {why}"))
                    }
                    crate::output::images::Fit::Unchanged => {
                        CallToolResult::success(vec![Content::image(
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                            mime,
                        )])
                    }
                }
            }
            Ok(ReadOutcome::Binary { description }) => {
                CallToolResult::success(vec![Content::text(description)])
            }
            Err(e) => failure(e),
        })
    }

    /// Write a file in the workspace.
    ///
    /// Creates missing parent folders. Replaces the file atomically (a failed write leaves the
    /// old file intact), or with append=true adds to the end: call it several times to build a
    /// script too long for one message, then run it with run_file. encoding "base64" writes
    /// binary data. At most 16 MiB per call. Paths are relative to the workspace root.
    #[tool(
        name = "write_file",
        annotations(
            title = "Write workspace file",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn write_file(
        &self,
        Parameters(p): Parameters<WriteParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let append = p.append.unwrap_or(false);
        let data = match decode_content(p.content, p.encoding.unwrap_or_default()) {
            Ok(d) => d,
            Err(why) => return Ok(tool_error(why)),
        };
        Ok(
            match self.session.files().write(p.path, data, append).await {
                Ok(Written { path, bytes, total }) if append => {
                    CallToolResult::success(vec![Content::text(format!(
                        "appended {bytes} bytes to {path} (now {total} bytes)"
                    ))])
                }
                Ok(Written { path, bytes, .. }) => CallToolResult::success(vec![Content::text(
                    format!("wrote {bytes} bytes to {path}"),
                )]),
                Err(e) => failure(e),
            },
        )
    }

    /// List files in the workspace.
    ///
    /// One line per entry: type, size in bytes, modification time (UTC) and the path relative to
    /// the workspace root; directories end in '/'. Sorted by path. recursive=true descends into
    /// sub-folders (symlinks are listed but never followed); pattern filters by a glob such as
    /// "*.csv". At most 1000 entries, with a note when more were left out.
    #[tool(
        name = "list_files",
        annotations(
            title = "List workspace files",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<FileListing>()
    )]
    async fn list_files(
        &self,
        Parameters(p): Parameters<ListParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.pattern.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        let list = self
            .session
            .files()
            .list(p.path, p.recursive.unwrap_or(false), p.pattern);
        Ok(match list.await {
            Ok(listing) => render_listing(&listing),
            Err(e) => failure(e),
        })
    }

    /// Run a Python script from the workspace in the kernel, like IPython's `%run`.
    ///
    /// The script runs as __main__ with sys.argv set from args, and its global variables land
    /// in the session afterwards. Output, timeout and errors work as in execute_python.
    #[tool(
        name = "run_file",
        annotations(
            title = "Run workspace script",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_file(
        &self,
        Parameters(p): Parameters<RunFileParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let abs = match self.session.files().script(p.path.clone()).await {
            Ok(a) => a,
            Err(e) => return Ok(failure(e)),
        };
        if abs.extension().and_then(|e| e.to_str()) != Some("py") {
            return Ok(tool_error(format!(
                "{}: run_file runs .py scripts only",
                p.path
            )));
        }
        let args = p.args.unwrap_or_default();
        let (code, shown) = run_file_code(&abs, &p.path, &args);
        let run = self.session.run(
            RunCall {
                code: &code,
                journal_source: &shown,
                timeout: None,
                return_after: self.session.return_after(p.return_after),
                arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
            },
            progress_fn(&ctx),
            &ctx.ct,
        );
        Ok(run.await.unwrap_or_else(failure))
    }

    /// Restart the Python kernel: all variables, imports and loaded data are lost.
    ///
    /// Use it when the kernel is stuck or broken. Files in the workspace are kept. It is a fresh
    /// start; with restore=true the variables of the last snapshot (saved automatically after
    /// calls) are loaded into the new kernel.
    #[tool(
        name = "restart_kernel",
        annotations(
            title = "Restart the kernel",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn restart_kernel(
        &self,
        Parameters(p): Parameters<RestartParams>,
    ) -> Result<CallToolResult, ErrorData> {
        self.session
            .runs()
            .cancel_queued("restart_kernel cleared the session before it started");
        let restart = self.session.restart_kernel().await;
        if restart.env_changed {
            self.tools_changed();
        }
        let outcome = match restart.outcome {
            Ok(o) => o,
            Err(e) => return Ok(failure(e)),
        };
        let restored = if p.restore == Some(true) && matches!(outcome, Restarted::Fresh { .. }) {
            Some(self.session.restore_now().await.unwrap_or_else(|| {
                "[there is no snapshot to restore (snapshots are off, or none was written yet)]"
                    .to_owned()
            }))
        } else {
            None
        };
        let mut content = vec![Content::text(match outcome {
            Restarted::Fresh { took } => format!(
                "the kernel was restarted in {:.2} s; all variables were cleared",
                took.as_secs_f64()
            ),
            Restarted::Reattached { took } => format!(
                "this kernel belongs to someone else (--existing), so kernel-mcp did not restart it: it reconnected in {:.2} s and the kernel's variables are unchanged. Restart it where it was started if you need a fresh one",
                took.as_secs_f64()
            ),
        })];
        content.extend(restored.map(Content::text));
        Ok(CallToolResult::success(content))
    }

    /// Install Python packages into the kernel's own environment (pip, or uv when available).
    ///
    /// Give package names from PyPI, optionally with extras and version specifiers, e.g.
    /// ["tabulate", "scikit-learn>=1.4", "requests[socks]"]. URLs, paths, pip options and
    /// environment markers are refused, and so are the packages the kernel itself runs on
    /// (ipykernel, pyzmq, ...). New packages can be imported at once; if a package that was
    /// already imported changed version, the result says to call restart_kernel. Installs run one
    /// at a time and are killed after the install timeout (300 s by default). An install still
    /// going after return_after (45 s by default) goes on as a numbered run: the call returns
    /// with a note, and check_run collects the result.
    #[tool(
        name = "install_package",
        annotations(
            title = "Install Python packages",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn install_package(
        &self,
        Parameters(p): Parameters<InstallParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = std::time::Instant::now();
        let (tx, progress) = install_progress(&ctx);
        // The install has a cancellation of its own: the call's cancels it only while the call
        // waits, not once the install has become a run.
        let cancel = tokio_util::sync::CancellationToken::new();
        let session = self.session.clone();
        let packages = p.packages;
        // Progress goes to this call while it waits, never after it returned.
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let report = crate::output::gated_progress(progress_fn(&ctx), &open);
        let mut work = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                session
                    .install_packages(&packages, tx, report, &cancel)
                    .await
            }
        });
        let wait = self.session.return_after(p.return_after);
        let waited = tokio::select! {
            r = &mut work => Some(r),
            _ = ctx.ct.cancelled() => {
                cancel.cancel();
                Some((&mut work).await)
            }
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        open.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = progress {
            t.abort();
        }
        Ok(match waited {
            Some(done) => install_result(done),
            None => {
                let note = self
                    .session
                    .adopt_as_run("installing", started, work, install_result);
                CallToolResult::success(vec![Content::text(note)])
            }
        })
    }

    /// Check whether packages are installed in the kernel's environment, and which version.
    ///
    /// Accepts distribution names ("scikit-learn") and import names ("sklearn", "cv2", "PIL",
    /// "yaml", "bs4"): an import name is answered with the distribution that provides it.
    /// At most 100 names per call.
    #[tool(
        name = "check_packages",
        annotations(
            title = "Check installed packages",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<PackageCheck>()
    )]
    async fn check_packages(
        &self,
        Parameters(p): Parameters<PackagesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.session.check_packages(&p.packages).await {
            Ok(check) => structured(check.to_text(), &check),
            Err(e) => failure(e),
        })
    }

    /// List the distributions installed in the kernel's environment (name and version).
    ///
    /// filter keeps names containing it (case-insensitive), or matching it as a glob such as "py*".
    #[tool(
        name = "list_packages",
        annotations(
            title = "List installed packages",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<PackageList>()
    )]
    async fn list_packages(
        &self,
        Parameters(p): Parameters<ListPackagesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.filter.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        Ok(
            match self.session.list_packages(p.filter.as_deref()).await {
                Ok(list) => structured(list.to_text(), &list),
                Err(e) => failure(e),
            },
        )
    }

    /// Describe the kernel's environment: Python version and executable, key packages, the
    /// workspace, limits, sandbox, and the named environments switch_environment accepts.
    #[tool(
        name = "get_environment",
        annotations(
            title = "Describe the Python environment",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::session::EnvironmentReport>()
    )]
    async fn get_environment(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let v = crate::session::environment_report(&self.session).await;
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        Ok(structured(text, &v))
    }

    /// Restart the kernel in another named environment (see get_environment for the names).
    ///
    /// All variables are lost. Only environments the server was started with can be chosen.
    #[tool(
        name = "switch_environment",
        annotations(
            title = "Switch Python environment",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn switch_environment(
        &self,
        Parameters(p): Parameters<SwitchParams>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.session.switch_environment(&p.name).await {
            Ok(Switched { info, took }) => {
                self.tools_changed();
                Ok(CallToolResult::success(vec![Content::text(format!(
                    "switched to environment {} (Python {}, {}); the kernel was restarted in {:.2} s and all variables were lost",
                    p.name,
                    info.python_version,
                    info.package_summary(),
                    took.as_secs_f64()
                ))]))
            }
            Err(SwitchError::Unknown { known }) => Ok(tool_error(format!(
                "no environment named {:?}; choose one of: {}",
                p.name,
                known.join(", ")
            ))),
            Err(SwitchError::Unusable { reason }) => Ok(tool_error(format!(
                "environment {} is not usable: {reason}; the kernel was not changed",
                p.name
            ))),
            Err(SwitchError::StartFailed { reason, restored }) => {
                let restored = match restored {
                    Ok(()) => {
                        "the previous environment was restarted instead (all variables were lost)"
                            .to_owned()
                    }
                    Err(e2) => format!("restarting the previous environment failed too: {e2}"),
                };
                Ok(tool_error(format!(
                    "could not start a kernel in environment {}: {reason}; {restored}",
                    p.name
                )))
            }
        }
    }

    /// List the variables in the Python session: name, type, shape or length, dtype(s), memory
    /// size and a one-line value, sorted by name.
    ///
    /// Covers DataFrames, Series, arrays, lists, dicts, scalars, functions and models; hides
    /// modules, IPython's own names (In, Out, _, _i1, exit, quit, get_ipython) and names starting
    /// with '_'. At most 200 rows (a note gives the total); filter narrows by substring or glob
    /// ("df*"). Runs silently: no execution count, nothing added to the session. Waits up to 10 s
    /// for a running call to finish.
    #[tool(
        name = "list_variables",
        annotations(
            title = "List session variables",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::variables::Listing>()
    )]
    async fn list_variables(
        &self,
        Parameters(p): Parameters<ListVariablesParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.filter.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        let expr = crate::variables::expression(p.filter.as_deref(), p.all.unwrap_or(false));
        let raw = match self.helper_answer(&expr, "list_variables").await {
            Ok(r) => r,
            Err(result) => return Ok(result),
        };
        Ok(match crate::variables::parse(&raw) {
            Ok(listing) => structured(listing.to_text(), &listing),
            Err(e) => tool_error(format!(
                "the variable listing could not be read ({e}); the session may have replaced a standard module"
            )),
        })
    }

    /// Look at one variable in depth, without running a cell.
    ///
    /// A DataFrame: shape, dtypes and nulls per column, memory, head and tail rows, describe()
    /// of the numeric columns, top values of the text and categorical ones. A Series or numpy
    /// array: shape, dtype, min/max/mean, a sample. A dict or list: length and first keys or
    /// items. A fitted model (scikit-learn style): its parameters and fitted attributes with
    /// their shapes. Anything else: its repr. Silent: no execution count, nothing added to the
    /// session. Waits up to 10 s for a running call to finish.
    #[tool(
        name = "inspect_variable",
        annotations(
            title = "Inspect a variable",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<crate::variables::Inspection>()
    )]
    async fn inspect_variable(
        &self,
        Parameters(p): Parameters<InspectParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(e) = crate::variables::check_name(&p.name) {
            return Ok(tool_error(e));
        }
        let expr = crate::variables::inspect_expression(&p.name, p.rows.unwrap_or(5));
        let raw = match self.helper_answer(&expr, "inspect_variable").await {
            Ok(r) => r,
            Err(result) => return Ok(result),
        };
        Ok(match crate::variables::parse_inspection(&raw) {
            Ok(i) => {
                let size = i
                    .size_bytes
                    .map(|b| format!(", {}", crate::limits::human_bytes(b)))
                    .unwrap_or_default();
                let text = format!("{}: {}{size}\n{}", i.name, i.type_name, i.report);
                structured(text, &i)
            }
            Err(e) => tool_error(e),
        })
    }

    /// Save the session so far as a Jupyter notebook (.ipynb, nbformat 4.5) in the workspace.
    ///
    /// Every cell run since the server started, in order, with its execution count, source and
    /// outputs (printed text, results, figures as PNG, errors with tracebacks); run_file calls
    /// appear as `%run` cells and kernel restarts as Markdown notes. Default path
    /// "session.ipynb". A file that this session did not write is not replaced unless
    /// overwrite is true. Open the file in Jupyter, or read it back with run_notebook.
    #[tool(
        name = "export_notebook",
        annotations(
            title = "Export the session as a notebook",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<ExportReport>()
    )]
    async fn export_notebook(
        &self,
        Parameters(p): Parameters<ExportParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = std::time::Instant::now();
        let path = p.path.unwrap_or_else(|| "session.ipynb".into());
        let export = self.session.export_notebook(
            path,
            p.overwrite.unwrap_or(false),
            p.since_restart.unwrap_or(false),
            p.include_errors.unwrap_or(true),
        );
        Ok(match export.await {
            Ok((path, cells, bytes)) => {
                let text = format!(
                    "wrote {path} ({cells} cells, {bytes} bytes) in {} ms",
                    started.elapsed().as_millis()
                );
                structured(text, &ExportReport { path, cells, bytes })
            }
            Err(e) => failure(e),
        })
    }

    /// Run the code cells of a workspace notebook (.ipynb) in the live session, in order.
    ///
    /// Variables defined by the notebook stay in the session afterwards, as if each cell had been
    /// sent to execute_python. Each cell's output follows a `[cell N]` marker (N counts all cells
    /// from 1, Markdown included), within the usual output budget; each cell has the usual
    /// timeout. Stops at the first error unless stop_on_error is false; a timeout or a kernel
    /// restart always stops the run. save_to writes the executed notebook with its new outputs
    /// (a file this session did not write is replaced only with overwrite: true). quiet: true
    /// (a replay, e.g. of export_notebook's since_restart notebook) shows only errors and the
    /// last cell's output, without images. With a progress token, progress is sent per cell.
    /// The notebook is a run, queued in arrival order like execute_python: still going after
    /// return_after, the call returns a note naming the run, and check_run gives its result.
    #[tool(
        name = "run_notebook",
        annotations(
            title = "Run a notebook",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_notebook(
        &self,
        Parameters(p): Parameters<RunNotebookParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let call = RunCall {
            code: "",
            journal_source: "",
            timeout: None,
            return_after: self.session.return_after(p.return_after),
            arrival: arrival_key(&ctx, self.arrival_scope.as_deref()),
        };
        // Weak: a queued job must not keep its session alive (the session holds the queue).
        let session = Arc::downgrade(&self.session);
        let work: crate::session::runs::Custom = Box::new(move |cancel, progress| {
            Box::pin(async move {
                let Some(session) = session.upgrade() else {
                    return crate::output::text_result(
                        "[the session ended before the notebook ran]",
                        true,
                    );
                };
                let run = NotebookRun {
                    path: p.path,
                    save_to: p.save_to,
                    overwrite: p.overwrite.unwrap_or(false),
                    stop_on_error: p.stop_on_error.unwrap_or(true),
                    quiet: p.quiet.unwrap_or(false),
                    progress,
                };
                session
                    .run_notebook(run, &cancel)
                    .await
                    .unwrap_or_else(failure)
            })
        });
        Ok(self
            .session
            .run_work(call, progress_fn(&ctx), work, &ctx.ct)
            .await
            .unwrap_or_else(failure))
    }

    /// Interrupt the code running in the kernel (like Ctrl-C); variables are kept.
    #[tool(
        name = "interrupt_kernel",
        annotations(
            title = "Interrupt running code",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn interrupt_kernel(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let cancelled = self.session.runs().cancel_queued(
            "interrupt_kernel cancelled the calls queued behind the interrupted one",
        );
        let queued = if cancelled > 0 {
            format!("; {cancelled} queued run(s) were cancelled and will not run")
        } else {
            String::new()
        };
        if self.session.kernel().interrupt().await {
            Ok(CallToolResult::success(vec![Content::text(format!(
                "interrupt sent to the kernel; a running call returns with its partial output (a run in the background ends as interrupted: check_run shows it){queued}"
            ))]))
        } else {
            Ok(tool_error(
                "no kernel is running; the next execute_python starts one",
            ))
        }
    }

    /// Follow a run that outlived its call: its new output since the last look, then its result.
    ///
    /// execute_python and run_file return after about 45 s with a note such as "still running
    /// as run 3" when the code is not done. check_run waits (wait_seconds, up to 45 s) for new
    /// output or the end and returns only what is new since the last look; when the run has
    /// ended it returns the final part of the result (error and traceback included) with the
    /// run's duration, once. Without `run`, the latest run.
    #[tool(
        name = "check_run",
        annotations(
            title = "Check a background run",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_run(
        &self,
        Parameters(p): Parameters<CheckRunParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let max = self.session.settings().return_after;
        let max = if max.is_zero() {
            Duration::from_secs(45)
        } else {
            max
        };
        let wait = p
            .wait_seconds
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| Duration::from_secs_f64(w.min(max.as_secs_f64())))
            .unwrap_or(max);
        Ok(self
            .session
            .check_run(p.run, wait)
            .await
            .unwrap_or_else(failure))
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
        let env = self.session.env_info();
        let env = &env;
        let packages = env.package_summary();
        let with = if packages.is_empty() {
            String::new()
        } else {
            format!(" with {packages}")
        };
        let files = match self.session.working_dir() {
            WorkingDir::Workspace(p) => format!(
                "The kernel's working directory is the workspace ({}); use write_file/read_file/list_files for files there and run_file to run scripts.",
                p.display()
            ),
            WorkingDir::WithKernel { server } => format!(
                "The kernel runs on a Jupyter server{}; write_file/read_file/list_files/run_file act in the kernel's working directory there, where relative paths in code resolve.",
                server.map(|s| format!(" ({s})")).unwrap_or_default()
            ),
            WorkingDir::Apart { workspace } => format!(
                "The kernel was started by another client, so its working directory is wherever that client started it (check with os.getcwd()); write_file/read_file/list_files/run_file act on the workspace ({}), so give code absolute paths to files there.",
                workspace.display()
            ),
        };
        let mut instructions = format!(
            "kernel-mcp runs Python {} in a persistent Jupyter (IPython) kernel{with}. \
             Variables persist between execute_python calls. {files} \
             matplotlib figures come back as images.",
            env.python_version
        );
        if let Some(reason) = self.session.kernel().env_error() {
            instructions.push_str(&format!(
                " The Python kernel is unavailable right now: {reason}. The file tools work; \
                 call restart_kernel after the fix."
            ));
        }
        if let Some(note) = &self.session.settings().workspace_note {
            instructions.push_str(&format!(" {note}."));
        }
        if let Some(line) = self.session.snapshot_announcement() {
            instructions.push_str(&format!(" {line}"));
        }
        if let Some(p) = &self.session.settings().output.sandbox {
            instructions.push_str(&format!(" {}", p.paragraph()));
            // The layers themselves are known once a kernel has started (get_environment
            // reports them at any time).
            if let Some(st) = self.session.kernel().sandbox() {
                instructions.push_str(&format!(
                    " Sandbox layers in force: namespaces: {}; Landlock {}; seccomp: {}.",
                    st.namespaces, st.landlock, st.seccomp
                ));
            }
        }
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
    #[test]
    fn read_file_caps_characters_as_well_as_lines() {
        use super::{cap_text, read_cap};
        assert_eq!(read_cap(Some(5), None), 10_000);
        assert_eq!(read_cap(None, None), 100_000);
        assert_eq!(read_cap(Some(5), Some(50)), 50);
        assert_eq!(read_cap(None, Some(10_000_000)), 100_000);
        let (t, n) = cap_text("x".repeat(30), None, 10, 1);
        assert_eq!(t.len(), 10);
        assert!(n.unwrap_or_default().contains("line 1 is longer"));
        let (t, n) = cap_text("ab\ncd\nefgh".into(), Some("more".into()), 7, 4);
        assert_eq!(t, "ab\ncd\ne");
        let n = n.unwrap_or_default();
        assert!(n.contains("offset=6") && n.ends_with("; more"), "{n}");
        let (t, n) = cap_text("short".into(), None, 10, 1);
        assert_eq!((t.as_str(), n), ("short", None));
    }

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
