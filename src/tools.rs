//! The MCP surface: the only `#[tool_router]`. Thin adapters from typed params to the kernel,
//! output, workspace and packages modules, and the one place errors become MCP results.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::PackageError;
use crate::error::{KernelError, WorkspaceError};
use crate::kernel::{ExecLimits, KernelHandle, Restarted};
use crate::kernel::{SwitchError, Switched};
use crate::notebook::{Journal, Recorder, MAX_CELL_OUTPUT_BYTES};
use crate::output::{Collector, OutputLimits, ProgressFn, SpillTarget};
use crate::packages;
use crate::pyenv::{self, EnvInfo};
use crate::workspace::{ReadOutcome, Workspace, MAX_WRITE_BYTES};

/// Tool arguments, deserialized with the failing field named in the error
/// (rmcp's own extractor says only "invalid type: null, expected a string").
/// The message keeps rmcp's "failed to deserialize parameters:" prefix, which rmcp's router turns
/// into an `isError` tool result: the MCP spec (2025-11-25, "Error Handling") wants input
/// validation errors reported to the model as tool execution errors so it can correct itself.
/// The `#[tool]` macro takes the input schema from any type named `Parameters`.
pub struct Parameters<P>(pub P);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = serde_json::Value::from(P::json_schema(generator));
        strip_null(&mut schema);
        // Referenced definitions (enums such as `Encoding`) live in the generator until the end.
        for def in generator.definitions_mut().values_mut() {
            strip_null(def);
        }
        // A schema that was an object stays one after the rewrite.
        schemars::Schema::try_from(schema).unwrap_or_default()
    }
}

/// Rewrites a schema so optional fields are plain types: `"type": ["number", "null"]` becomes
/// `"type": "number"`, `anyOf: [X, {"type": "null"}]` becomes X, and `"default": null` goes.
/// Optional fields are already absent from `required`; some clients' function-calling layers
/// reject type arrays (MCP Inspector's `--strict` warns about them), and a client sends nothing
/// rather than null for a field it leaves out.
pub fn strip_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    let is_null_type = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t.as_str() != Some("null"));
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                let Some(Value::Array(alts)) = map.get_mut(key) else {
                    continue;
                };
                let before = alts.len();
                alts.retain(|a| !is_null_type(a));
                if alts.len() == 1 && before > 1 {
                    if let Some(Value::Object(only)) = alts.pop() {
                        map.remove(key);
                        for (k, val) in only {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|e| !e.is_null());
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            for child in map.values_mut() {
                strip_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

impl<S, P>
    rmcp::handler::server::common::FromContextPart<
        rmcp::handler::server::tool::ToolCallContext<'_, S>,
    > for Parameters<P>
where
    P: serde::de::DeserializeOwned,
{
    fn from_context_part(
        context: &mut rmcp::handler::server::tool::ToolCallContext<'_, S>,
    ) -> Result<Self, ErrorData> {
        let mut args = context.arguments.take().unwrap_or_default();
        if let Some(reason) = args.remove(crate::stdin_guard::REJECT_KEY) {
            let reason = reason
                .as_str()
                .unwrap_or("the request was malformed")
                .to_owned();
            return Err(ErrorData::invalid_params(
                format!("failed to deserialize parameters: {reason}"),
                None,
            ));
        }
        let args = serde_json::Value::Object(args);
        serde_path_to_error::deserialize::<_, P>(args)
            .map(Parameters)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = if path == "." {
                    format!(
                        "failed to deserialize parameters: {inner} (tool {})",
                        context.name
                    )
                } else {
                    format!(
                        "failed to deserialize parameters: `{path}`: {inner} (tool {})",
                        context.name
                    )
                };
                ErrorData::invalid_params(msg, None)
            })
    }
}

/// Server settings that shape tool behaviour.
#[derive(Debug, Clone)]
pub struct Settings {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub interrupt_grace: Duration,
    pub output: OutputLimits,
    pub install_timeout: Duration,
    /// Said in the instructions when the workspace is not where it would normally be.
    pub workspace_note: Option<String>,
    /// Workspace path of a notebook kept up to date with the session after every call.
    pub journal: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(3600),
            interrupt_grace: Duration::from_secs(3),
            output: OutputLimits::default(),
            install_timeout: Duration::from_secs(300),
            workspace_note: None,
            journal: None,
        }
    }
}

pub use crate::kernel::Environments;

struct Inner {
    kernel: Arc<KernelHandle>,
    workspace: Arc<Workspace>,
    settings: Settings,
    install_lock: tokio::sync::Mutex<()>,
    /// Every executed cell of this server session, with restart markers.
    journal: std::sync::Mutex<Journal>,
    /// Notebooks this server wrote (workspace path → size and mtime after the write), so it
    /// only ever replaces its own files.
    written: std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::SystemTime)>>,
    /// Serializes writes of the live journal so an older state never lands last.
    journal_write: tokio::sync::Mutex<u64>,
    /// The client, once initialized, for notifications/tools/list_changed.
    peer: std::sync::Mutex<Option<rmcp::Peer<RoleServer>>>,
}

/// The MCP server.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
    tool_router: ToolRouter<Server>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteParams {
    /// Python source to run in the persistent kernel (IPython syntax: `%magic` and `!shell` work).
    pub code: String,
    /// Seconds before the run is interrupted (default 60; at most the server's maximum, 3600 by default).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadParams {
    /// File path relative to the workspace root, e.g. "data/sales.csv".
    pub path: String,
    /// First line to return, counting from 1 (for paging through big text files).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Most lines to return (default 2000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Prefix each line with its number (off by default).
    #[serde(default)]
    pub line_numbers: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteParams {
    /// File path relative to the workspace root; missing parent folders are created.
    pub path: String,
    /// The text to write (or base64 data when encoding is "base64").
    pub content: String,
    /// Add to the end of the file instead of replacing it (build long scripts in parts).
    #[serde(default)]
    pub append: Option<bool>,
    /// "utf-8" (default) or "base64" for binary data.
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListParams {
    /// Folder relative to the workspace root (default: the root).
    #[serde(default)]
    pub path: Option<String>,
    /// List sub-folders too (symlinks are listed, never followed).
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Glob on the file name such as "*.csv" (or on the relative path when it contains '/').
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunFileParams {
    /// Path of a .py script in the workspace.
    pub path: String,
    /// Command-line arguments for the script (its sys.argv[1:]).
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
pub struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PackagesParams {
    /// Package names, optionally with extras and version specifiers, e.g. ["tabulate", "pandas>=2"].
    pub packages: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListPackagesParams {
    /// Keep only names containing this text (or matching it as a glob like "py*").
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SwitchParams {
    /// Name of an environment listed by get_environment.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListVariablesParams {
    /// Keep only names containing this text (case-insensitive), or matching it as a glob like "df*".
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExportParams {
    /// Where to write the notebook, relative to the workspace (default "session.ipynb"; must end in ".ipynb").
    #[serde(default)]
    pub path: Option<String>,
    /// Replace a file that this session's export_notebook did not write (default false).
    #[serde(default)]
    pub overwrite: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunNotebookParams {
    /// Workspace path of the .ipynb notebook to run.
    pub path: String,
    /// Write the executed notebook, with its new outputs, to this workspace path (may equal path).
    #[serde(default)]
    pub save_to: Option<String>,
    /// Stop at the first cell that raises (default true); false runs every cell.
    #[serde(default)]
    pub stop_on_error: Option<bool>,
    /// Let save_to replace a file this session did not write (default false).
    #[serde(default)]
    pub overwrite: Option<bool>,
}

/// What export_notebook wrote.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct ExportReport {
    /// Workspace path of the notebook.
    pub path: String,
    /// Cells written (code cells and restart markers).
    pub cells: usize,
    /// Size of the file in bytes.
    pub bytes: usize,
}

/// list_files as data.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct FileListing {
    /// Entries sorted by path.
    pub entries: Vec<FileEntry>,
    /// True when more than 1000 entries matched and the rest were left out.
    pub truncated: bool,
    /// Folders that could not be read (permissions).
    pub skipped_folders: usize,
}

/// One listed file or folder.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct FileEntry {
    /// Path relative to the workspace root.
    pub path: String,
    /// "file", "dir", "symlink" or "other".
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, UTC, "YYYY-MM-DD HH:MM".
    pub modified: Option<String>,
}

/// check_packages as data.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct PackageCheck {
    /// One entry per name asked about, in order.
    pub packages: Vec<PackageStatus>,
}

/// Whether one package is installed.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct PackageStatus {
    /// The name as given (a distribution name or an import name).
    pub name: String,
    /// True when installed.
    pub installed: bool,
    /// The distribution that provides it, when installed or known.
    pub distribution: Option<String>,
    /// Installed version.
    pub version: Option<String>,
}

/// list_packages as data.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct PackageList {
    /// Matching distributions (at most 500).
    pub packages: Vec<PackageVersion>,
    /// How many matched.
    pub total: usize,
}

/// A distribution and its version.
#[derive(Debug, serde::Serialize, JsonSchema)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

/// get_environment's output schema: an object with the fields the tool documents.
fn environment_schema() -> std::sync::Arc<rmcp::model::JsonObject> {
    let v = serde_json::json!({
        "type": "object",
        "properties": {
            "active_environment": {"type": "string"},
            "kind": {"type": "string"},
            "python_version": {"type": "string"},
            "python_executable": {"type": "string"},
            "key_packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            "kernel_pid": {"type": ["integer", "null"]},
            "workspace": {"type": "string"},
            "limits": {"type": "object"},
            "kernel": {"type": "string"},
            "kernel_heartbeat": {"type": "string"},
            "sandbox": {},
            "named_environments": {"type": "object", "additionalProperties": {"type": "string"}}
        },
        "required": ["active_environment", "python_version", "python_executable", "workspace", "kernel"]
    });
    match v {
        serde_json::Value::Object(m) => std::sync::Arc::new(m),
        _ => std::sync::Arc::new(rmcp::model::JsonObject::new()),
    }
}

/// Longest glob or filter accepted.
const MAX_PATTERN: usize = 256;

fn pattern_problem(p: &str) -> Option<String> {
    (p.chars().count() > MAX_PATTERN).then(|| format!("the pattern is longer than {MAX_PATTERN} characters; use a shorter glob such as \"*.csv\""))
}

fn tool_error(msg: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![Content::text(msg.into())])
}

/// A result with the text for older clients and the same data as structuredContent.
fn structured<T: serde::Serialize>(text: String, data: &T) -> CallToolResult {
    let mut r = CallToolResult::success(vec![Content::text(text)]);
    r.structured_content = serde_json::to_value(data).ok();
    r
}

fn kernel_error(e: KernelError) -> CallToolResult {
    let hint = match &e {
        KernelError::Busy { .. } => "",
        // The environment is still being created: the call just needs to be made again later.
        KernelError::Unavailable { reason } if reason.contains("is being created") => {
            " The file tools work meanwhile; the tool list is updated (notifications/tools/list_changed) when it is ready."
        }
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

struct WorkspaceSpill(Arc<Workspace>);

impl SpillTarget for WorkspaceSpill {
    fn create(&mut self, suffix: &str) -> std::io::Result<(String, std::fs::File)> {
        self.0.create_output_file(suffix)
    }
}

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

impl Server {
    /// Builds the server around a kernel handle and a workspace.
    pub fn new(
        kernel: Arc<KernelHandle>,
        workspace: Arc<Workspace>,
        settings: Settings,
        envs: Environments,
    ) -> Server {
        let tool_router = Self::tool_router();
        kernel.set_environments(envs);
        Server {
            inner: Arc::new(Inner {
                kernel,
                workspace,
                settings,
                install_lock: tokio::sync::Mutex::new(()),
                journal: std::sync::Mutex::new(Journal::default()),
                written: std::sync::Mutex::new(std::collections::HashMap::new()),
                journal_write: tokio::sync::Mutex::new(0),
                peer: std::sync::Mutex::new(None),
            }),
            tool_router,
        }
    }

    /// Replaces what the server reports about the active environment (after a first-run set-up).
    pub fn set_env_info(&self, info: EnvInfo) {
        self.inner.kernel.set_env_info(info);
        self.tools_changed();
    }

    /// Tells the client that the tool descriptions changed (they name the environment), per
    /// MCP "Tools: List Changed Notification"; a no-op before the client has initialized.
    fn tools_changed(&self) {
        let peer = self.inner.peer.lock().ok().and_then(|p| p.clone());
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
        let env = self.env_info();
        let packages = env.package_summary();
        let with = if packages.is_empty() {
            String::new()
        } else {
            format!(" with {packages}")
        };
        let mut env_line = format!(
            "\n\nEnvironment: Python {}{with}. Working directory: {}.",
            env.python_version,
            self.inner.workspace.root().display()
        );
        if let Some(p) = &self.inner.settings.output.sandbox {
            env_line.push_str(&format!("\n\n{}", p.paragraph()));
        }
        let mut tools = self.tool_router.list_all();
        for t in tools.iter_mut().filter(|t| t.name == "execute_python") {
            let base = t.description.clone().unwrap_or_default();
            t.description = Some(format!("{base}{env_line}").into());
        }
        tools
    }

    /// The workspace this server's file tools and kernel use.
    pub fn workspace_root(&self) -> &std::path::Path {
        self.inner.workspace.root()
    }

    /// Runs blocking file work on the workspace off the async threads.
    async fn on_workspace<T, F>(&self, f: F) -> Result<Result<T, WorkspaceError>, ErrorData>
    where
        T: Send + 'static,
        F: FnOnce(&Workspace) -> Result<T, WorkspaceError> + Send + 'static,
    {
        let ws = self.inner.workspace.clone();
        tokio::task::spawn_blocking(move || f(&ws))
            .await
            .map_err(|e| ErrorData::internal_error(format!("file task failed: {e}"), None))
    }

    /// The kernel environment's distributions, or the tool error to return.
    async fn installed_packages(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (String, String)>, CallToolResult> {
        if self.kernel_elsewhere() {
            // The interpreter lives with the kernel: ask the kernel.
            let repr = self
                .inner
                .kernel
                .evaluate(crate::pyenv::KERNEL_PROBE_EXPR, Duration::from_secs(30))
                .await
                .map_err(|e| tool_error(format!("could not list the kernel's packages: {e}")))?;
            let raw = crate::pyenv::parse_kernel_packages(&repr).ok_or_else(|| {
                tool_error(
                    "could not list the kernel's packages: unexpected answer from the kernel",
                )
            })?;
            return Ok(raw
                .into_iter()
                .map(|(n, v)| (packages::normalize(&n), (n, v)))
                .collect());
        }
        packages::installed(&self.env_info().python)
            .await
            .map_err(|e| tool_error(format!("could not list the installed packages: {e}")))
    }

    /// True when the file tools act where a gateway kernel runs, not on the local workspace.
    fn files_remote(&self) -> bool {
        self.inner.kernel.backend().files_live_with_kernel()
    }

    /// Runs a file operation in the gateway kernel (silently, nothing left behind).
    async fn remote_files(
        &self,
        op: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, CallToolResult> {
        // The files are where the kernel runs: make sure there is one, and say why not.
        // (Only when none runs: info() waits for the kernel, which a long cell holds.)
        if !self.inner.kernel.running() {
            if let Err(e) = self.inner.kernel.info().await {
                return Err(tool_error(format!(
                    "the file tools act on the kernel's working directory on the gateway, and no kernel is available: {e}"
                )));
            }
        }
        let expr = crate::remote_files::expression(op, &args);
        let repr = self
            .inner
            .kernel
            .evaluate(&expr, Duration::from_secs(60))
            .await
            .map_err(kernel_error)?;
        crate::remote_files::decode(&repr).map_err(workspace_error)
    }

    /// True when the kernel runs somewhere kernel-mcp does not launch it (existing, gateway):
    /// its interpreter is not ours to run.
    fn kernel_elsewhere(&self) -> bool {
        !self.inner.kernel.backend().interpreter_is_local()
    }

    fn env_info(&self) -> EnvInfo {
        self.inner
            .kernel
            .env_info()
            .unwrap_or_else(|| pyenv::unavailable("no environment was set"))
    }

    async fn run_code(
        &self,
        code: &str,
        journal_source: &str,
        timeout: Option<f64>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = &self.inner.settings;
        let mut notes = Vec::new();
        let timeout = match crate::limits::call_timeout(timeout, s.default_timeout, s.max_timeout) {
            Ok((t, note)) => {
                notes.extend(note.map(|n| format!("[{n}]")));
                t
            }
            Err(e) => return Ok(tool_error(e)),
        };
        let progress = progress_fn(ctx);
        let limits = ExecLimits {
            timeout,
            grace: s.interrupt_grace,
            progress: progress.is_some(),
        };
        let mut collector = Collector::new(
            s.output.clone(),
            Some(Box::new(WorkspaceSpill(self.inner.workspace.clone()))),
            progress,
        );
        let cancel: CancellationToken = ctx.ct.clone();
        let mut recorder = Recorder::new(&mut collector, MAX_CELL_OUTPUT_BYTES);
        let result = self
            .inner
            .kernel
            .execute(code, &limits, &cancel, &mut recorder)
            .await;
        let outputs = recorder.into_outputs();
        let mut res = match result {
            Ok((exec, report)) => {
                self.journal_cell(journal_source, &exec, outputs, &report);
                collector.finish(Some(&exec), &report, timeout)
            }
            Err(e) => return Ok(kernel_error(e)),
        };
        for n in notes {
            res.content.push(Content::text(n));
        }
        self.update_live_journal().await;
        Ok(res)
    }

    /// Records one executed cell in the journal, and a marker when the kernel's state was lost.
    fn journal_cell(
        &self,
        source: &str,
        exec: &crate::kernel::Execution,
        outputs: Vec<crate::notebook::Output>,
        report: &crate::kernel::Report,
    ) {
        let count = exec.reply.as_ref().and_then(|r| r.execution_count);
        if let Ok(mut j) = self.inner.journal.lock() {
            j.record(source, count, outputs);
            if report.state_lost {
                let words: Vec<String> = report.notes.iter().map(crate::output::notice).collect();
                j.marker(&format!("*{}*", words.join(" ")));
            }
        }
    }

    /// Adds a Markdown marker to the journal (kernel restarts) and updates the live journal.
    async fn journal_marker(&self, text: &str) {
        if let Ok(mut j) = self.inner.journal.lock() {
            j.marker(text);
        }
        self.update_live_journal().await;
    }

    /// The journal as .ipynb bytes with kernelspec and language metadata.
    fn journal_bytes(&self) -> Result<(Vec<u8>, usize, u64), String> {
        let meta = crate::notebook::python_metadata(&self.env_info().python_version);
        let j = self
            .inner
            .journal
            .lock()
            .map_err(|_| "the session journal is unavailable".to_owned())?;
        let bytes = j.to_bytes(meta).map_err(|e| e.to_string())?;
        Ok((bytes, j.len(), j.version()))
    }

    /// Writes a notebook into the workspace, refusing to replace a file this server did not
    /// write unless `overwrite`. Returns the workspace path written.
    async fn write_notebook(
        &self,
        path: &str,
        bytes: Vec<u8>,
        overwrite: bool,
    ) -> Result<Result<String, WorkspaceError>, ErrorData> {
        let path = path.to_owned();
        let inner = self.inner.clone();
        self.on_workspace(move |ws| {
            let p = ws.path(&path)?;
            let key = p.display();
            let ours = |stamp: &(u64, std::time::SystemTime)| {
                inner
                    .written
                    .lock()
                    .map(|w| w.get(&key) == Some(stamp))
                    .unwrap_or(false)
            };
            if let Some(stamp) = ws.stamp(&p)? {
                if !overwrite && !ours(&stamp) {
                    return Err(WorkspaceError::Denied {
                        path: key,
                        reason: "the file exists and was not written by this session's export_notebook; pass overwrite: true to replace it, or choose another path".into(),
                    });
                }
            }
            ws.write_limited(&p, &bytes, false, crate::notebook::MAX_WRITE_NOTEBOOK_BYTES)?;
            if let Some(stamp) = ws.stamp(&p)? {
                if let Ok(mut w) = inner.written.lock() {
                    w.insert(key.clone(), stamp);
                }
            }
            Ok(key)
        })
        .await
    }

    /// Rewrites the live journal notebook (`--journal`), if one is configured.
    async fn update_live_journal(&self) {
        let Some(path) = self.inner.settings.journal.clone() else {
            return;
        };
        let mut last = self.inner.journal_write.lock().await;
        let (bytes, _, version) = match self.journal_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "could not build the journal notebook");
                return;
            }
        };
        if version == *last {
            return;
        }
        match self.write_notebook(&path, bytes, false).await {
            Ok(Ok(_)) => *last = version,
            Ok(Err(e)) => tracing::warn!(error = %e, path, "could not write the journal notebook"),
            Err(e) => {
                tracing::warn!(error = %e.message, path, "could not write the journal notebook")
            }
        }
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
    /// whose path the result names. On timeout (default 60 s) the kernel is interrupted and the
    /// partial output returned with a note; variables are kept unless the code would not stop,
    /// in which case the kernel is restarted and the result says that state was lost.
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
    ) -> Result<CallToolResult, ErrorData> {
        if p.code.trim().is_empty() {
            return Ok(tool_error(
                "code is empty; pass the Python source to run in the code argument",
            ));
        }
        self.run_code(&p.code, &p.code, p.timeout_seconds, &ctx)
            .await
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
        let r = if self.files_remote() {
            let args = match crate::remote_files::check_path(&p.path) {
                Ok(path) => crate::remote_files::read_args(
                    &path,
                    p.offset,
                    p.limit,
                    p.line_numbers.unwrap_or(false),
                ),
                Err(e) => return Ok(workspace_error(e)),
            };
            match self.remote_files("read", args).await {
                Ok(v) => crate::remote_files::read_outcome(&v),
                Err(r) => return Ok(r),
            }
        } else {
            self.on_workspace(move |ws| {
                let path = ws.path(&p.path)?;
                ws.read(&path, p.offset, p.limit, p.line_numbers.unwrap_or(false))
            })
            .await?
        };
        Ok(match r {
            Ok(ReadOutcome::Text { text, note }) => {
                let mut c = vec![Content::text(text)];
                if let Some(n) = note {
                    c.push(Content::text(format!("[{n}]")));
                }
                CallToolResult::success(c)
            }
            Ok(ReadOutcome::Image { mime, bytes }) => {
                CallToolResult::success(vec![Content::image(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                    mime,
                )])
            }
            Ok(ReadOutcome::Binary { description }) => {
                CallToolResult::success(vec![Content::text(description)])
            }
            Err(e) => workspace_error(e),
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
        let encoding = p.encoding.unwrap_or_default();
        if encoding == Encoding::Utf8 && p.content.len() > MAX_WRITE_BYTES {
            return Ok(tool_error(format!(
                "content is {} bytes; the limit per write_file call is {MAX_WRITE_BYTES} bytes. Nothing was written.",
                p.content.len()
            )));
        }
        if self.files_remote() {
            let path = match crate::remote_files::check_path(&p.path) {
                Ok(path) => path,
                Err(e) => return Ok(workspace_error(e)),
            };
            let data = match encoding {
                Encoding::Utf8 => base64::engine::general_purpose::STANDARD.encode(p.content),
                Encoding::Base64 => {
                    let clean: String = p.content.chars().filter(|c| !c.is_whitespace()).collect();
                    match base64::engine::general_purpose::STANDARD.decode(&clean) {
                        Ok(b) if b.len() <= MAX_WRITE_BYTES => clean,
                        Ok(b) => return Ok(tool_error(format!("content is {} bytes; the limit per write_file call is {MAX_WRITE_BYTES} bytes. Nothing was written.", b.len()))),
                        Err(e) => return Ok(tool_error(format!("content is not valid base64 ({e}); nothing was written"))),
                    }
                }
            };
            let args = crate::remote_files::write_args(&path, &data, append);
            return Ok(match self.remote_files("write", args).await {
                Ok(v) => {
                    let n = v
                        .get("bytes")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    let total = v
                        .get("total")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    CallToolResult::success(vec![Content::text(if append {
                        format!("appended {n} bytes to {path} (now {total} bytes)")
                    } else {
                        format!("wrote {n} bytes to {path}")
                    })])
                }
                Err(r) => r,
            });
        }
        let r = self
            .on_workspace(move |ws| {
                let path = ws.path(&p.path)?;
                let data = match encoding {
                    Encoding::Utf8 => p.content.into_bytes(),
                    Encoding::Base64 => {
                        let clean: String =
                            p.content.chars().filter(|c| !c.is_whitespace()).collect();
                        base64::engine::general_purpose::STANDARD
                            .decode(clean)
                            .map_err(|e| {
                                WorkspaceError::BadPath(format!(
                                    "content is not valid base64 ({e}); nothing was written"
                                ))
                            })?
                    }
                };
                let n = data.len();
                let total = ws.write(&path, &data, append)?;
                Ok::<_, WorkspaceError>((path.display(), n, total))
            })
            .await?;
        Ok(match r {
            Ok((path, n, total)) if append => CallToolResult::success(vec![Content::text(
                format!("appended {n} bytes to {path} (now {total} bytes)"),
            )]),
            Ok((path, n, _)) => {
                CallToolResult::success(vec![Content::text(format!("wrote {n} bytes to {path}"))])
            }
            Err(e) => workspace_error(e),
        })
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
        let r = if self.files_remote() {
            let path = match crate::remote_files::check_path(p.path.as_deref().unwrap_or(".")) {
                Ok(path) => path,
                Err(e) => return Ok(workspace_error(e)),
            };
            let args = crate::remote_files::list_args(
                &path,
                p.recursive.unwrap_or(false),
                p.pattern.as_deref(),
            );
            match self.remote_files("list", args).await {
                Ok(v) => Ok(crate::remote_files::listing(&v)),
                Err(r) => return Ok(r),
            }
        } else {
            self.on_workspace(move |ws| {
                let path = ws.path(p.path.as_deref().unwrap_or("."))?;
                ws.list(&path, p.recursive.unwrap_or(false), p.pattern.as_deref())
            })
            .await?
        };
        let listing = match r {
            Ok(l) => l,
            Err(e) => return Ok(workspace_error(e)),
        };
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
        Ok(structured(lines.join("\n"), &data))
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
        let rel = p.path.clone();
        let abs = if self.files_remote() {
            // The script is in the kernel's working directory on the gateway; %run reports a
            // missing file itself.
            match crate::remote_files::check_path(&rel) {
                Ok(path) => std::path::PathBuf::from(path),
                Err(e) => return Ok(workspace_error(e)),
            }
        } else {
            let r = self
                .on_workspace(move |ws| {
                    let path = ws.path(&rel)?;
                    ws.regular_file(&path)
                })
                .await?;
            match r {
                Ok(a) => a,
                Err(e) => return Ok(workspace_error(e)),
            }
        };
        if abs.extension().and_then(|e| e.to_str()) != Some("py") {
            return Ok(tool_error(format!(
                "{}: run_file runs .py scripts only",
                p.path
            )));
        }
        let mut argv = vec![abs.to_string_lossy().into_owned()];
        argv.extend(p.args.unwrap_or_default());
        let list: Vec<String> = argv.iter().map(|a| py_str(a)).collect();
        let code = format!(
            "import shlex as __kmcp_shlex\nget_ipython().run_line_magic('run', ' '.join(__kmcp_shlex.quote(__a) for __a in [{}]))\ndel __kmcp_shlex",
            list.join(", ")
        );
        // The notebook shows what the call meant: IPython's %run with the workspace path.
        let run_line: Vec<String> = std::iter::once(p.path.as_str())
            .chain(argv.iter().skip(1).map(String::as_str))
            .map(shell_quote)
            .collect();
        let journal_source = format!("%run {}", run_line.join(" "));
        self.run_code(&code, &journal_source, None, &ctx).await
    }

    /// Restart the Python kernel: all variables, imports and loaded data are lost.
    ///
    /// Use it when the kernel is stuck or broken. Files in the workspace are kept.
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
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.inner.kernel.recheck_environment().await {
            Ok(true) => self.tools_changed(),
            Ok(false) => {}
            Err(reason) => return Ok(kernel_error(KernelError::Unavailable { reason })),
        }
        let r = self.inner.kernel.restart().await;
        if matches!(r, Ok(Restarted::Fresh { .. })) {
            self.journal_marker("*Kernel restarted (restart_kernel): all variables were cleared.*")
                .await;
        }
        match r {
            Ok(Restarted::Fresh { took }) => Ok(CallToolResult::success(vec![Content::text(format!(
                "the kernel was restarted in {:.2} s; all variables were cleared",
                took.as_secs_f64()
            ))])),
            Ok(Restarted::Reattached { took }) => Ok(CallToolResult::success(vec![Content::text(format!(
                "this kernel belongs to someone else (--existing), so kernel-mcp did not restart it: it reconnected in {:.2} s and the kernel's variables are unchanged. Restart it where it was started if you need a fresh one",
                took.as_secs_f64()
            ))])),
            Err(e) => Ok(kernel_error(e)),
        }
    }

    /// Install Python packages into the kernel's own environment (pip, or uv when available).
    ///
    /// Give package names from PyPI, optionally with extras and version specifiers, e.g.
    /// ["tabulate", "scikit-learn>=1.4", "requests[socks]"]. URLs, paths, pip options and
    /// environment markers are refused, and so are the packages the kernel itself runs on
    /// (ipykernel, pyzmq, ...). New packages can be imported at once; if a package that was
    /// already imported changed version, the result says to call restart_kernel. Installs run one
    /// at a time and are killed after the install timeout (300 s by default).
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
        Parameters(p): Parameters<PackagesParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (specs, renamed) = match packages::prepare(&p.packages) {
            Ok(prepared) => prepared,
            Err(why) => return Ok(tool_error(why)),
        };
        let _one_at_a_time = self.inner.install_lock.lock().await;
        if self.kernel_elsewhere() {
            // pip runs inside the kernel, so it installs into the kernel's own interpreter
            // wherever that is; the result is that cell's output.
            let code = packages::kernel_install_code(&specs);
            let secs = self.inner.settings.install_timeout.as_secs_f64();
            let shown = format!(
                "%pip install {}",
                specs
                    .iter()
                    .map(|s| s.raw.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let out = self.run_code(&code, &shown, Some(secs), &ctx).await;
            self.inner.kernel.invalidate_imports();
            return out;
        }
        let python = self.env_info().python;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let progress = ctx.meta.get_progress_token().map(|token| {
            let peer = ctx.peer.clone();
            tokio::spawn(async move {
                let mut n = 0.0;
                while let Some(line) = rx.recv().await {
                    n += 1.0;
                    let mut p = ProgressNotificationParam::new(token.clone(), n);
                    p.message = Some(line.chars().take(200).collect());
                    let _ = peer.notify_progress(p).await;
                }
            })
        });
        let mode = self.inner.kernel.backend().install_mode();
        let result = packages::install(
            &python,
            &specs,
            self.inner.settings.install_timeout,
            Some(tx),
            &mode,
        )
        .await;
        if let Some(t) = progress {
            t.abort();
        }
        let report = match result {
            Ok(r) => r,
            Err(e @ PackageError::Failed(_)) => {
                return Ok(tool_error(format!("nothing was changed{renamed}: {e}")));
            }
            Err(e) => {
                return Ok(tool_error(format!(
                    "{e}{renamed}. Nothing may have been installed; try fewer packages, check the names, or start the server with a larger --install-timeout."
                )))
            }
        };
        self.inner.kernel.invalidate_imports();
        let mut text = report.describe(&python, &renamed);
        if let Some(expr) = report.stale_imports_expr() {
            match self.inner.kernel.evaluate(&expr, Duration::from_secs(3)).await {
                Ok(v) if v != "[]" => text.push_str(&format!(
                    "\nThe kernel had already imported {v} at the old version: call restart_kernel to use the new version (this clears all variables)."
                )),
                Ok(_) => {}
                Err(_) => text.push_str("\nIf any of these were already imported in the kernel, call restart_kernel to use the new version."),
            }
        }
        Ok(CallToolResult::success(vec![Content::text(text)]))
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
        if p.packages.is_empty() {
            return Ok(tool_error(
                "packages is empty; pass a list of package names",
            ));
        }
        if let Some(bad) = p.packages.iter().find(|n| {
            n.is_empty()
                || n.len() > 100
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }) {
            return Ok(tool_error(format!(
                "{bad:?} is not a package name (letters, digits, '-', '_' and '.' only)"
            )));
        }
        if p.packages.len() > 100 {
            return Ok(tool_error(format!(
                "{} names given; check at most 100 per call",
                p.packages.len()
            )));
        }
        let installed = match self.installed_packages().await {
            Ok(i) => i,
            Err(e) => return Ok(e),
        };
        // Names that are not distributions may be import names: ask the environment which
        // distributions provide them (importlib.metadata.packages_distributions()).
        let unknown: Vec<String> = p
            .packages
            .iter()
            .filter(|n| !installed.contains_key(&packages::normalize(n)))
            .cloned()
            .collect();
        let owners = if unknown.is_empty() {
            Default::default()
        } else {
            packages::import_owners(&self.env_info().python, &unknown)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not map import names to distributions");
                    Default::default()
                })
        };
        let mut lines = Vec::new();
        let mut data = PackageCheck {
            packages: Vec::new(),
        };
        for n in &p.packages {
            if let Some((name, v)) = installed.get(&packages::normalize(n)) {
                lines.push(format!("{name}: {v}"));
                data.packages.push(PackageStatus {
                    name: n.clone(),
                    installed: true,
                    distribution: Some(name.clone()),
                    version: Some(v.clone()),
                });
                continue;
            }
            let owner = owners
                .get(n)
                .and_then(|o| o.first().cloned())
                .or_else(|| packages::distribution_for_import(n).map(str::to_owned));
            match owner
                .as_deref()
                .and_then(|o| installed.get(&packages::normalize(o)))
            {
                Some((dist, v)) => {
                    lines.push(format!("{n}: {v} (import name of {dist})"));
                    data.packages.push(PackageStatus {
                        name: n.clone(),
                        installed: true,
                        distribution: Some(dist.clone()),
                        version: Some(v.clone()),
                    });
                }
                None => {
                    lines.push(match &owner {
                        Some(dist) => format!(
                            "{n}: not installed ({n} is the import name of {dist}; install_package([\"{dist}\"]))"
                        ),
                        None => format!("{n}: not installed"),
                    });
                    data.packages.push(PackageStatus {
                        name: n.clone(),
                        installed: false,
                        distribution: owner,
                        version: None,
                    });
                }
            }
        }
        Ok(structured(lines.join("\n"), &data))
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
        let installed = match self.installed_packages().await {
            Ok(i) => i,
            Err(e) => return Ok(e),
        };
        let filter = p.filter.as_deref().map(str::to_ascii_lowercase);
        let matching: Vec<&(String, String)> = installed
            .values()
            .filter(|(n, _)| match &filter {
                None => true,
                Some(f) if f.contains(['*', '?', '[']) => {
                    crate::workspace::glob_match(f, &n.to_ascii_lowercase())
                }
                Some(f) => n.to_ascii_lowercase().contains(f.as_str()),
            })
            .collect();
        let data = PackageList {
            packages: matching
                .iter()
                .take(500)
                .map(|(n, v)| PackageVersion {
                    name: n.clone(),
                    version: v.clone(),
                })
                .collect(),
            total: matching.len(),
        };
        let rows: Vec<String> = matching.iter().map(|(n, v)| format!("{n}=={v}")).collect();
        let total = rows.len();
        let mut text = rows.into_iter().take(500).collect::<Vec<_>>().join("\n");
        if total > 500 {
            text.push_str(&format!("\n[{} more not shown; use filter]", total - 500));
        }
        if total == 0 {
            text = "(no matching packages)".into();
        }
        Ok(structured(text, &data))
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
        output_schema = environment_schema()
    )]
    async fn get_environment(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        // A kernel that is starting is waited for (briefly), so the sandbox report is about a
        // real kernel; a running one is not disturbed, even when it is busy.
        let kernel_state = if self.inner.kernel.running() {
            "running".to_owned()
        } else {
            match tokio::time::timeout(Duration::from_secs(15), self.inner.kernel.info()).await {
                Ok(Ok(_)) => "running".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "busy running a call".to_owned(),
            }
        };
        let sandbox_configured = self.inner.kernel.backend().sandboxed();
        let backend = self.inner.kernel.backend().describe();
        let envs = self
            .inner
            .kernel
            .environments()
            .unwrap_or_else(|| Environments {
                active: "default".into(),
                info: self.env_info(),
                named: Default::default(),
            });
        let s = &self.inner.settings;
        let named: serde_json::Map<String, serde_json::Value> = envs
            .named
            .iter()
            .map(|(n, src)| (n.clone(), serde_json::Value::String(src.describe())))
            .collect();
        let v = serde_json::json!({
            "active_environment": envs.active,
            "kind": envs.info.kind,
            "python_version": envs.info.python_version,
            "python_executable": envs.info.python,
            "key_packages": envs.info.packages.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "backend": backend,
            "kernel_id": self.inner.kernel.kernel_id(),
            "kernel_pid": self.inner.kernel.pid(),
            "workspace": self.inner.workspace.root(),
            "limits": {
                "default_timeout_seconds": s.default_timeout.as_secs_f64(),
                "max_timeout_seconds": s.max_timeout.as_secs_f64(),
                "interrupt_grace_seconds": s.interrupt_grace.as_secs_f64(),
                "output_budget_chars": s.output.text_budget,
                "max_images_per_call": s.output.max_images,
                "install_timeout_seconds": s.install_timeout.as_secs_f64(),
                "max_write_bytes": MAX_WRITE_BYTES,
            },
            "kernel": kernel_state,
            "kernel_heartbeat": match self.inner.kernel.heartbeat() {
                Some(crate::kernel::Health::Alive) => "alive".to_owned(),
                Some(crate::kernel::Health::Missed(n)) => format!("missed {n} (the kernel may be frozen)"),
                Some(crate::kernel::Health::Unknown) => "not checked yet".to_owned(),
                Some(crate::kernel::Health::NotApplicable) => "not used (the connection itself shows liveness)".to_owned(),
                None => "no kernel".to_owned(),
            },
            "sandbox": match (self.inner.kernel.sandbox(), sandbox_configured) {
                (Some(st), _) => serde_json::to_value(&st).unwrap_or_default(),
                (None, true) => serde_json::Value::String("strict (status not known until a kernel runs)".into()),
                (None, false) if !self.inner.kernel.backend().interpreter_is_local() => serde_json::Value::String("not applied by kernel-mcp: the kernel runs where it was started, confined only by that machine's own setup".into()),
                (None, false) => serde_json::Value::String(match crate::kernel::sandbox::UNAVAILABLE {
                    Some(why) => format!("none: {why}"),
                    None => "off: the kernel runs with this user's full rights".into(),
                }),
            },
            "sandbox_policy": self.inner.settings.output.sandbox.as_ref().map(|p| p.paragraph()),
            "named_environments": named,
        });
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
        match self.inner.kernel.switch_environment(&p.name).await {
            Ok(Switched { info, took }) => {
                self.tools_changed();
                self.journal_marker(&format!(
                    "*Kernel restarted in environment {} (switch_environment): all variables were cleared.*",
                    p.name
                ))
                .await;
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
                self.journal_marker(
                    "*Kernel restarted (a failed switch_environment): all variables were cleared.*",
                )
                .await;
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
        let expr = crate::variables::expression(p.filter.as_deref());
        let raw = match self
            .inner
            .kernel
            .evaluate(&expr, Duration::from_secs(10))
            .await
        {
            Ok(r) => r,
            Err(KernelError::Busy { .. }) => {
                return Ok(tool_error(
                    "the kernel is busy running a call; call list_variables again when it has finished (or interrupt_kernel)",
                ))
            }
            Err(e) => return Ok(kernel_error(e)),
        };
        let listing = match crate::variables::parse(&raw) {
            Ok(l) => l,
            Err(e) => {
                return Ok(tool_error(format!(
                    "the variable listing could not be read ({e}); the session may have replaced a standard module"
                )))
            }
        };
        Ok(structured(listing.to_text(), &listing))
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
        let path = p.path.unwrap_or_else(|| "session.ipynb".into());
        if !path.to_ascii_lowercase().ends_with(".ipynb") {
            return Ok(tool_error(format!(
                "{path}: a notebook path must end in .ipynb, e.g. \"analysis.ipynb\""
            )));
        }
        let started = std::time::Instant::now();
        let (bytes, cells, _) = match self.journal_bytes() {
            Ok(b) => b,
            Err(e) => return Ok(tool_error(format!("could not build the notebook: {e}"))),
        };
        let size = bytes.len();
        match self
            .write_notebook(&path, bytes, p.overwrite.unwrap_or(false))
            .await?
        {
            Ok(path) => {
                let report = ExportReport {
                    path,
                    cells,
                    bytes: size,
                };
                let text = format!(
                    "wrote {} ({} cells, {} bytes) in {} ms",
                    report.path,
                    report.cells,
                    report.bytes,
                    started.elapsed().as_millis()
                );
                Ok(structured(text, &report))
            }
            Err(e) => Ok(workspace_error(e)),
        }
    }

    /// Run the code cells of a workspace notebook (.ipynb) in the live session, in order.
    ///
    /// Variables defined by the notebook stay in the session afterwards, as if each cell had been
    /// sent to execute_python. Each cell's output follows a `[cell N]` marker (N counts all cells
    /// from 1, Markdown included), within the usual output budget; each cell has the usual
    /// timeout. Stops at the first error unless stop_on_error is false; a timeout or a kernel
    /// restart always stops the run. save_to writes the executed notebook with its new outputs
    /// (a file this session did not write is replaced only with overwrite: true).
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
        if let Some(to) = &p.save_to {
            if !to.to_ascii_lowercase().ends_with(".ipynb") {
                return Ok(tool_error(format!(
                    "save_to {to}: a notebook path must end in .ipynb; nothing was run"
                )));
            }
        }
        let rel = p.path.clone();
        let r = self
            .on_workspace(move |ws| {
                let path = ws.path(&rel)?;
                ws.read_bytes(&path, crate::notebook::MAX_NOTEBOOK_BYTES)
            })
            .await?;
        let bytes = match r {
            Ok(b) => b,
            Err(e) => return Ok(workspace_error(e)),
        };
        let mut nb = match crate::notebook::Notebook::parse(&bytes) {
            Ok(nb) => nb,
            Err(e) => return Ok(tool_error(format!("{}: {e}; nothing was run", p.path))),
        };
        drop(bytes);
        let stop_on_error = p.stop_on_error.unwrap_or(true);
        let s = &self.inner.settings;
        let limits = ExecLimits {
            timeout: s.default_timeout,
            grace: s.interrupt_grace,
            progress: false,
        };
        let mut collector = Collector::new(
            s.output.clone(),
            Some(Box::new(WorkspaceSpill(self.inner.workspace.clone()))),
            None,
        );
        let mut report = crate::kernel::Report::default();
        let mut last_exec = None;
        let mut ran = 0usize;
        let mut kept = 0usize;
        let mut stopped: Option<String> = None;
        let code_cells = nb
            .cells
            .iter()
            .filter(|c| matches!(c, crate::notebook::Cell::Code { .. }))
            .count();
        for (i, cell) in nb.cells.iter_mut().enumerate() {
            let crate::notebook::Cell::Code {
                source,
                execution_count,
                outputs,
                ..
            } = cell
            else {
                continue;
            };
            if ctx.ct.is_cancelled() {
                stopped = Some("the call was cancelled".into());
                break;
            }
            collector.section(&format!("[cell {}]\n", i + 1));
            if source.0.trim().is_empty() {
                *execution_count = None;
                outputs.clear();
                continue;
            }
            let mut recorder = Recorder::new(&mut collector, MAX_CELL_OUTPUT_BYTES);
            let result = self
                .inner
                .kernel
                .execute(&source.0, &limits, &ctx.ct, &mut recorder)
                .await;
            let recorded = recorder.into_outputs();
            let (exec, cell_report) = match result {
                Ok(x) => x,
                Err(e) => {
                    stopped = Some(format!("the kernel could not run cell {}: {e}", i + 1));
                    break;
                }
            };
            ran += 1;
            self.journal_cell(&source.0, &exec, recorded.clone(), &cell_report);
            *execution_count = exec.reply.as_ref().and_then(|r| r.execution_count);
            // The executed notebook is held until it is saved: bounded like the journal.
            let n: usize = recorded.iter().map(crate::notebook::output_bytes).sum();
            *outputs = if kept + n > crate::notebook::MAX_JOURNAL_BYTES {
                vec![crate::notebook::note_output(
                    "this cell's output was not kept; the notebook's outputs passed the size limit",
                )]
            } else {
                kept += n;
                recorded
            };
            report.notes.extend(cell_report.notes);
            report.state_lost |= cell_report.state_lost;
            let failed = exec
                .reply
                .as_ref()
                .is_some_and(|r| r.status == crate::wire::message::ReplyStatus::Error);
            let completed = exec.ending == crate::kernel::Ending::Completed;
            last_exec = Some(exec);
            if !completed || cell_report.state_lost {
                stopped = Some(format!("cell {} did not complete", i + 1));
                break;
            }
            if failed && stop_on_error {
                stopped = Some(format!(
                    "cell {} raised an error (pass stop_on_error: false to run past errors)",
                    i + 1
                ));
                break;
            }
        }
        self.update_live_journal().await;
        let mut res = collector.finish(last_exec.as_ref(), &report, limits.timeout);
        let mut summary = format!("[ran {ran} of {code_cells} code cells of {}", p.path);
        if let Some(why) = &stopped {
            summary.push_str(&format!("; stopped: {why}"));
            res.is_error = Some(true);
        }
        summary.push(']');
        res.content.push(Content::text(summary));
        if let Some(to) = &p.save_to {
            // A notebook without kernel metadata gets ours, so Jupyter opens it with Python.
            let ours = crate::notebook::python_metadata(&self.env_info().python_version);
            if let (Some(meta), serde_json::Value::Object(ours)) =
                (nb.metadata.as_object_mut(), ours)
            {
                for (k, v) in ours {
                    meta.entry(k).or_insert(v);
                }
            }
            let bytes = match nb.to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    res.content.push(Content::text(format!(
                        "[the executed notebook could not be saved: {e}]"
                    )));
                    return Ok(res);
                }
            };
            let note = match self
                .write_notebook(to, bytes, p.overwrite.unwrap_or(false))
                .await?
            {
                Ok(path) => format!("[executed notebook saved as {path}]"),
                Err(e) => {
                    res.is_error = Some(true);
                    format!("[the executed notebook was not saved: {e}]")
                }
            };
            res.content.push(Content::text(note));
        }
        Ok(res)
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
        if self.inner.kernel.interrupt().await {
            Ok(CallToolResult::success(vec![Content::text(
                "interrupt sent to the kernel; a running call returns with its partial output",
            )]))
        } else {
            Ok(tool_error(
                "no kernel is running; the next execute_python starts one",
            ))
        }
    }
}

fn mime_for(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "csv" => "text/csv",
        "json" => "application/json",
        "md" => "text/markdown",
        "py" => "text/x-python",
        "html" | "htm" => "text/html",
        "txt" | "log" | "tsv" | "yaml" | "yml" | "toml" | "ini" | "sql" => "text/plain",
        _ => "application/octet-stream",
    }
}

const RESOURCE_MAX_BYTES: u64 = 10 * 1024 * 1024;

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        Ok(rmcp::model::ListToolsResult::with_all_items(self.tools()))
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        if let Ok(mut p) = self.inner.peer.lock() {
            *p = Some(context.peer);
        }
    }

    fn get_info(&self) -> ServerConfig {
        let env = self.env_info();
        let env = &env;
        let packages = env.package_summary();
        let with = if packages.is_empty() {
            String::new()
        } else {
            format!(" with {packages}")
        };
        let mut instructions = format!(
            "kernel-mcp runs Python {} in a persistent Jupyter (IPython) kernel{with}. \
             Variables persist between execute_python calls. The kernel's working directory is the workspace ({}); \
             use write_file/read_file/list_files for files there and run_file to run scripts. \
             matplotlib figures come back as images.",
            env.python_version,
            self.inner.workspace.root().display()
        );
        if let Some(reason) = self.inner.kernel.env_error() {
            instructions.push_str(&format!(
                " The Python kernel is unavailable right now: {reason}. The file tools work; \
                 call restart_kernel after the fix."
            ));
        }
        if let Some(note) = &self.inner.settings.workspace_note {
            instructions.push_str(&format!(" {note}."));
        }
        if let Some(p) = &self.inner.settings.output.sandbox {
            instructions.push_str(&format!(" {}", p.paragraph()));
            // The layers themselves are known once a kernel has started (get_environment
            // reports them at any time).
            if let Some(st) = self.inner.kernel.sandbox() {
                instructions.push_str(&format!(
                    " Sandbox layers in force: namespaces: {}; Landlock {}; seccomp: {}.",
                    st.namespaces, st.landlock, st.seccomp
                ));
            }
        }
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .build(),
        )
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
        let listing = self
            .on_workspace(move |ws| {
                let root = ws.path(".")?;
                ws.list(&root, true, None)
                    .map(|l| (l, ws.root().to_path_buf()))
            })
            .await?;
        let (listing, root) =
            listing.map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let resources = listing
            .entries
            .into_iter()
            .filter(|e| e.kind == crate::workspace::EntryKind::File)
            .map(|e| {
                let uri = format!("file://{}", root.join(&e.path).display());
                Resource::new(uri, e.path.clone())
                    .with_mime_type(mime_for(&e.path))
                    .with_size(e.size)
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let Some(path) = uri.strip_prefix("file://") else {
            return Err(ErrorData::invalid_params(
                format!("{uri}: only file:// URIs of workspace files are served"),
                None,
            ));
        };
        let path = path.to_owned();
        let r = self
            .on_workspace(move |ws| {
                let p = ws.path(&path)?;
                ws.read_bytes(&p, RESOURCE_MAX_BYTES)
                    .map(|b| (b, p.display()))
            })
            .await?;
        let (bytes, rel) = match r {
            Ok(x) => x,
            Err(WorkspaceError::NotFound { path }) => {
                return Err(ErrorData::resource_not_found(
                    format!("{path}: not found in the workspace"),
                    Some(serde_json::json!({ "uri": uri })),
                ))
            }
            Err(e) => return Err(ErrorData::invalid_params(e.to_string(), None)),
        };
        let mime = mime_for(&rel);
        let contents = match String::from_utf8(bytes) {
            Ok(text) if !mime.starts_with("image/") && !text.contains('\0') => {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type: Some(
                        if mime == "application/octet-stream" {
                            "text/plain"
                        } else {
                            mime
                        }
                        .into(),
                    ),
                    text,
                    meta: None,
                }
            }
            Ok(text) => ResourceContents::BlobResourceContents {
                uri,
                mime_type: Some(mime.into()),
                blob: base64::engine::general_purpose::STANDARD.encode(text.into_bytes()),
                meta: None,
            },
            Err(e) => ResourceContents::BlobResourceContents {
                uri,
                mime_type: Some(mime.into()),
                blob: base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                meta: None,
            },
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
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
