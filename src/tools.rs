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
use crate::kernel::{ExecLimits, KernelHandle};
use crate::output::{Collector, OutputLimits, ProgressFn, SpillTarget};
use crate::packages::{self, PackageSpec};
use crate::pyenv::{self, EnvInfo, EnvSource};
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
        P::json_schema(generator)
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(3600),
            interrupt_grace: Duration::from_secs(3),
            output: OutputLimits::default(),
            install_timeout: Duration::from_secs(300),
        }
    }
}

/// The kernel's environment and the named ones the model may switch to.
#[derive(Debug, Clone)]
pub struct Environments {
    /// Name of the active environment ("default" for the one the server started with).
    pub active: String,
    pub info: EnvInfo,
    /// Environments offered to the model by name (`--env NAME=PATH`, plus "default").
    pub named: std::collections::BTreeMap<String, EnvSource>,
}

struct Inner {
    kernel: Arc<KernelHandle>,
    workspace: Arc<Workspace>,
    settings: Settings,
    envs: std::sync::RwLock<Environments>,
    install_lock: tokio::sync::Mutex<()>,
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

/// Longest glob or filter accepted.
const MAX_PATTERN: usize = 256;

fn pattern_problem(p: &str) -> Option<String> {
    (p.chars().count() > MAX_PATTERN).then(|| format!("the pattern is longer than {MAX_PATTERN} characters; use a shorter glob such as \"*.csv\""))
}

fn tool_error(msg: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![Content::text(msg.into())])
}

fn kernel_error(e: KernelError) -> CallToolResult {
    let hint = match &e {
        KernelError::Busy { .. } => "",
        KernelError::Unavailable { .. } => {
            " The file tools still work; call restart_kernel to try again."
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
        let env = envs.info.clone();
        let mut tool_router = Self::tool_router();
        let env_line = format!(
            "\n\nEnvironment: Python {} with {}. Working directory: {}.",
            env.python_version,
            env.package_summary(),
            workspace.root().display()
        );
        if let Some(route) = tool_router.map.get_mut("execute_python") {
            let base = route.attr.description.clone().unwrap_or_default();
            route.attr.description = Some(format!("{base}{env_line}").into());
        }
        Server {
            inner: Arc::new(Inner {
                kernel,
                workspace,
                settings,
                envs: std::sync::RwLock::new(envs),
                install_lock: tokio::sync::Mutex::new(()),
            }),
            tool_router,
        }
    }

    /// Replaces what the server reports about the active environment (after a first-run set-up).
    pub fn set_env_info(&self, info: EnvInfo) {
        if let Ok(mut e) = self.inner.envs.write() {
            e.info = info;
        }
    }

    /// The tools this server offers, as `tools/list` returns them.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
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
        packages::installed(&self.env_info().python)
            .await
            .map_err(|e| tool_error(format!("could not list the installed packages: {e}")))
    }

    fn env_info(&self) -> EnvInfo {
        self.inner
            .envs
            .read()
            .map(|e| e.info.clone())
            .unwrap_or_else(|e| e.into_inner().info.clone())
    }

    async fn run_code(
        &self,
        code: &str,
        timeout: Option<f64>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = &self.inner.settings;
        let mut notes = Vec::new();
        let timeout = match timeout {
            None => s.default_timeout,
            Some(t) if !t.is_finite() || t <= 0.0 => {
                return Ok(tool_error(format!(
                    "timeout_seconds must be a positive number of seconds (got {t}); at most {}. Nothing was run.",
                    s.max_timeout.as_secs()
                )))
            }
            Some(t) if t > s.max_timeout.as_secs_f64() => {
                notes.push(format!(
                    "[timeout_seconds={t} is above the server maximum; {} s was used]",
                    s.max_timeout.as_secs()
                ));
                s.max_timeout
            }
            Some(t) => Duration::from_secs_f64(t.max(0.1)),
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
        let result = self
            .inner
            .kernel
            .execute(code, &limits, &cancel, &mut collector)
            .await;
        let mut res = match result {
            Ok((exec, report)) => collector.finish(Some(&exec), &report, timeout),
            Err(e) => return Ok(kernel_error(e)),
        };
        for n in notes {
            res.content.push(Content::text(n));
        }
        Ok(res)
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
        self.run_code(&p.code, p.timeout_seconds, &ctx).await
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
        let r = self
            .on_workspace(move |ws| {
                let path = ws.path(&p.path)?;
                ws.read(&path, p.offset, p.limit, p.line_numbers.unwrap_or(false))
            })
            .await?;
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
        )
    )]
    async fn list_files(
        &self,
        Parameters(p): Parameters<ListParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.pattern.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        let r = self
            .on_workspace(move |ws| {
                let path = ws.path(p.path.as_deref().unwrap_or("."))?;
                ws.list(&path, p.recursive.unwrap_or(false), p.pattern.as_deref())
            })
            .await?;
        let listing = match r {
            Ok(l) => l,
            Err(e) => return Ok(workspace_error(e)),
        };
        let mut lines = Vec::with_capacity(listing.entries.len() + 1);
        for e in &listing.entries {
            let when = e
                .modified
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|| "-".into());
            let name = if e.kind == "dir" {
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
        Ok(CallToolResult::success(vec![Content::text(
            lines.join("\n"),
        )]))
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
        let r = self
            .on_workspace(move |ws| {
                let path = ws.path(&rel)?;
                ws.regular_file(&path)
            })
            .await?;
        let abs = match r {
            Ok(a) => a,
            Err(e) => return Ok(workspace_error(e)),
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
        self.run_code(&code, None, &ctx).await
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
        match self.inner.kernel.restart().await {
            Ok(d) => Ok(CallToolResult::success(vec![Content::text(format!(
                "the kernel was restarted in {:.2} s; all variables were cleared",
                d.as_secs_f64()
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
        if p.packages.is_empty() {
            return Ok(tool_error(
                "packages is empty; pass a list of package names such as [\"tabulate\"]",
            ));
        }
        if p.packages.len() > packages::MAX_SPECS {
            return Ok(tool_error(format!(
                "{} packages given; install at most {} per call",
                p.packages.len(),
                packages::MAX_SPECS
            )));
        }
        let mut specs: Vec<PackageSpec> = Vec::new();
        let mut problems = Vec::new();
        for raw in &p.packages {
            match packages::validate_spec(raw) {
                Ok(s) => specs.push(s),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Ok(tool_error(format!(
                "nothing was installed: {}",
                problems.join("; ")
            )));
        }
        let _one_at_a_time = self.inner.install_lock.lock().await;
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
        let result = packages::install(
            &python,
            &specs,
            self.inner.settings.install_timeout,
            Some(tx),
        )
        .await;
        if let Some(t) = progress {
            t.abort();
        }
        let report = match result {
            Ok(r) => r,
            Err(e @ PackageError::Failed(_)) => {
                return Ok(tool_error(format!("nothing was changed: {e}")));
            }
            Err(e) => {
                return Ok(tool_error(format!(
                    "{e}. Nothing may have been installed; try fewer packages, check the names, or start the server with a larger --install-timeout."
                )))
            }
        };
        self.inner.kernel.invalidate_imports();
        let (lines, added, changed) = (report.requested, report.added, report.changed);
        let mut text = format!("installed into {}:\n{}", python.display(), lines.join("\n"));
        if !added.is_empty() {
            text.push_str(&format!(
                "\nnewly installed (with dependencies): {}",
                added.join(", ")
            ));
        }
        if !changed.is_empty() {
            let desc: Vec<String> = changed
                .iter()
                .map(|(n, a, b)| format!("{n} {a} -> {b}"))
                .collect();
            text.push_str(&format!("\nchanged versions: {}", desc.join(", ")));
            let names: Vec<String> = changed
                .iter()
                .map(|(n, _, _)| packages::normalize(n))
                .collect();
            let expr = format!(
                "sorted({{m for m, ds in __import__('importlib.metadata').metadata.packages_distributions().items() for d in ds if __import__('re').sub(r'[-_.]+', '-', d).lower() in {names:?} and m in __import__('sys').modules}})"
            );
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
    #[tool(
        name = "check_packages",
        annotations(
            title = "Check installed packages",
            read_only_hint = true,
            open_world_hint = false
        )
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
        let installed = match self.installed_packages().await {
            Ok(i) => i,
            Err(e) => return Ok(e),
        };
        let lines: Vec<String> = p
            .packages
            .iter()
            .map(|n| match installed.get(&packages::normalize(n)) {
                Some((name, v)) => format!("{name}: {v}"),
                None => format!("{n}: not installed"),
            })
            .collect();
        Ok(CallToolResult::success(vec![Content::text(
            lines.join("\n"),
        )]))
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
        )
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
        let rows: Vec<String> = installed
            .values()
            .filter(|(n, _)| match &filter {
                None => true,
                Some(f) if f.contains(['*', '?', '[']) => {
                    crate::workspace::glob_match(f, &n.to_ascii_lowercase())
                }
                Some(f) => n.to_ascii_lowercase().contains(f.as_str()),
            })
            .map(|(n, v)| format!("{n}=={v}"))
            .collect();
        let total = rows.len();
        let mut text = rows.into_iter().take(500).collect::<Vec<_>>().join("\n");
        if total > 500 {
            text.push_str(&format!("\n[{} more not shown; use filter]", total - 500));
        }
        if total == 0 {
            text = "(no matching packages)".into();
        }
        Ok(CallToolResult::success(vec![Content::text(text)]))
    }

    /// Describe the kernel's environment: Python version and executable, key packages, the
    /// workspace, limits, sandbox, and the named environments switch_environment accepts.
    #[tool(
        name = "get_environment",
        annotations(
            title = "Describe the Python environment",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_environment(
        &self,
        Parameters(_p): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        // A kernel that is starting is waited for (briefly), so the sandbox report is about a
        // real kernel; a running one is not disturbed, even when it is busy.
        let kernel_state = if self.inner.kernel.pid().is_some() {
            "running".to_owned()
        } else {
            match tokio::time::timeout(Duration::from_secs(15), self.inner.kernel.info()).await {
                Ok(Ok(_)) => "running".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "busy running a call".to_owned(),
            }
        };
        let sandbox_configured = self
            .inner
            .kernel
            .launcher()
            .is_some_and(|l| l.sandbox.is_some());
        let envs = self
            .inner
            .envs
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
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
                Some(crate::wire::Heartbeat::Alive) => "alive".to_owned(),
                Some(crate::wire::Heartbeat::Missed(n)) => format!("missed {n} (the kernel may be frozen)"),
                Some(crate::wire::Heartbeat::Unknown) => "not checked yet".to_owned(),
                None => "no kernel".to_owned(),
            },
            "sandbox": match (self.inner.kernel.sandbox(), sandbox_configured) {
                (Some(st), _) => serde_json::to_value(&st).unwrap_or_default(),
                (None, true) => serde_json::Value::String("strict (status not known until a kernel runs)".into()),
                (None, false) => serde_json::Value::String("off: the kernel runs with this user's full rights".into()),
            },
            "named_environments": named,
        });
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        Ok(CallToolResult::success(vec![Content::text(text)]))
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
        let (source, known) = {
            let envs = self
                .inner
                .envs
                .read()
                .map(|e| e.clone())
                .unwrap_or_else(|e| e.into_inner().clone());
            (
                envs.named.get(&p.name).cloned(),
                envs.named.keys().cloned().collect::<Vec<_>>(),
            )
        };
        let Some(source) = source else {
            return Ok(tool_error(format!(
                "no environment named {:?}; choose one of: {}",
                p.name,
                known.join(", ")
            )));
        };
        let info = match pyenv::resolve(&source).await {
            Ok(i) => i,
            Err(e) => {
                return Ok(tool_error(format!(
                    "environment {} is not usable: {e}; the kernel was not changed",
                    p.name
                )))
            }
        };
        match self
            .inner
            .kernel
            .switch_python(info.python.clone(), info.paths.clone())
            .await
        {
            Ok(d) => {
                let text = format!(
                    "switched to environment {} (Python {}, {}); the kernel was restarted in {:.2} s and all variables were lost",
                    p.name,
                    info.python_version,
                    info.package_summary(),
                    d.as_secs_f64()
                );
                if let Ok(mut e) = self.inner.envs.write() {
                    e.active = p.name.clone();
                    e.info = info;
                }
                Ok(CallToolResult::success(vec![Content::text(text)]))
            }
            Err(e) => {
                // Go back to the environment that worked, so the session is not left without one.
                let current = self.env_info();
                let back = self
                    .inner
                    .kernel
                    .switch_python(current.python, current.paths)
                    .await;
                let restored = match back {
                    Ok(_) => {
                        "the previous environment was restarted instead (all variables were lost)"
                            .to_owned()
                    }
                    Err(e2) => format!("restarting the previous environment failed too: {e2}"),
                };
                Ok(tool_error(format!(
                    "could not start a kernel in environment {}: {e}; {restored}",
                    p.name
                )))
            }
        }
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
    fn get_info(&self) -> ServerConfig {
        let env = self.env_info();
        let env = &env;
        let instructions = format!(
            "kernel-mcp runs Python {} in a persistent Jupyter (IPython) kernel with {}. \
             Variables persist between execute_python calls. The kernel's working directory is the workspace ({}); \
             use write_file/read_file/list_files for files there and run_file to run scripts. \
             matplotlib figures come back as images.",
            env.python_version,
            env.package_summary(),
            self.inner.workspace.root().display()
        );
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
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
            .filter(|e| e.kind == "file")
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
