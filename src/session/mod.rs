//! One analysis session below the MCP surface: a kernel handle, the workspace its files live in,
//! the journal of every cell run, and the operations the tools are thin adapters for (run code,
//! run a notebook, export, files, packages, describe). Returns typed results or output's
//! rendered content; never names a backend (the kernel handle hides them) and never imports
//! `rmcp`.

mod environment;
mod files;
mod journal;
mod notebooks;
mod packages;
pub mod persist;
mod running;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

pub use environment::{environment_report, EnvironmentReport};
pub use files::{Files, Written};
pub use notebooks::NotebookRun;
pub use packages::{
    Installed, LocalInstall, PackageCheck, PackageList, PackageStatus, PackageVersion, StaleImports,
};

use crate::error::{KernelError, Refusal, SessionError};
use crate::kernel::{
    ExecLimits, Execution, KernelHandle, Report, Restarted, SwitchError, Switched,
};
use crate::output::{Collector, OutputLimits, Rendered, SpillTarget};
use crate::pyenv::{self, EnvInfo};
use crate::workspace::Workspace;
use journal::SessionJournal;

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
    /// How long a call waits for its run before it returns what it has and leaves the run
    /// going (`--return-after`; zero: until the run ends).
    pub return_after: Duration,
    /// Snapshots of the namespace that outlive the server: the size limit (`--snapshot-max`),
    /// `None` with `--no-persist`.
    pub snapshot_max: Option<u64>,
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
            return_after: Duration::from_secs(45),
            snapshot_max: None,
        }
    }
}

/// Over-budget output goes to a file in the workspace.
struct WorkspaceSpill(Arc<Workspace>);

impl SpillTarget for WorkspaceSpill {
    fn create(&mut self, suffix: &str) -> std::io::Result<(String, std::fs::File)> {
        self.0.create_output_file(suffix)
    }

    /// Files of the local workspace are its `file://` resources (see tools/resources.rs).
    fn uri(&self, path: &str) -> Option<String> {
        Some(crate::workspace::file_uri(&self.0.root().join(path)))
    }
}

/// Where the kernel's working directory is, seen from the file tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkingDir {
    /// The local workspace is the kernel's working directory.
    Workspace(std::path::PathBuf),
    /// The kernel runs elsewhere (a Jupyter server), and the file tools act in its working
    /// directory there.
    WithKernel { server: Option<String> },
    /// Someone else started the kernel: its working directory is wherever they started it, and
    /// the file tools act on the local workspace.
    Apart { workspace: std::path::PathBuf },
}

/// What restart_kernel did.
#[derive(Debug)]
pub struct Restart {
    pub outcome: Result<Restarted, SessionError>,
    /// The environment changed since the kernel started (tool descriptions name it).
    pub env_changed: bool,
}

/// How long the kernel stays idle after a run before its namespace is snapshotted.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(2);

/// How long the snapshot at exit waits for the kernel to be free (a call's last messages, a
/// snapshot after idle already under way); past it, a run holds the kernel and none is taken.
const EXIT_FREE_WITHIN: Duration = Duration::from_secs(2);

/// One execute_python / run_file call, as the session runs it.
pub struct RunCall<'a> {
    /// The code the kernel runs.
    pub code: &'a str,
    /// What the journal records as the cell's source.
    pub journal_source: &'a str,
    /// The caller's timeout_seconds, checked against the server's bounds.
    pub timeout: Option<f64>,
    /// How long the call waits for its run (`None`: until it ends).
    pub return_after: Option<Duration>,
    /// The stdin filter's key for the request, to queue in arrival order.
    pub arrival: Option<String>,
}

/// What export_notebook wrote (the tool's result and, derived from it, its output schema).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ExportReport {
    /// Workspace path of the notebook.
    pub path: String,
    /// Cells written (code cells and restart markers).
    pub cells: usize,
    /// Size of the file in bytes.
    pub bytes: usize,
}

/// A call that either finished or goes on as a task.
pub enum RunOrTask {
    Done(Rendered),
    /// Still going: the run's id.
    Task(u64),
}

/// A task (a run followed through MCP tasks) as `tasks/get` reports it.
#[derive(Clone)]
pub enum TaskView {
    Unknown,
    /// Going (or queued, when `started` is false) for `since`; its latest output line.
    Working {
        since: Duration,
        started: bool,
        line: String,
    },
    Completed(Rendered),
    Failed(String),
    Cancelled,
}

/// One client's session: kernel, workspace, settings and journal.
pub struct Session {
    kernel: Arc<KernelHandle>,
    workspace: Arc<Workspace>,
    settings: Settings,
    files: Files,
    journal: SessionJournal,
    /// Installs run one at a time.
    install_lock: tokio::sync::Mutex<()>,
    /// Cells as runs that outlive their call, in arrival order.
    runs: Arc<runs::Runs>,
    /// Results of runs followed as MCP tasks, kept for repeated `tasks/get`.
    tasks: std::sync::Mutex<std::collections::BTreeMap<u64, TaskView>>,
    /// Runs whose task was cancelled (`tasks/cancel`): they end as cancelled.
    cancelled_tasks: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Snapshots of the namespace (local kernels in the workspace, unless --no-persist).
    persist: Option<persist::Persist>,
    /// A snapshot waits to be restored before the first run.
    restore_pending: std::sync::atomic::AtomicBool,
    /// The restore's note, for the first result after it.
    restore_note: std::sync::Mutex<Option<String>>,
    /// Counts runs submitted, so a debounced snapshot knows whether the kernel stayed idle.
    generation: std::sync::atomic::AtomicU64,
    /// One snapshot at a time.
    snapshot_lock: tokio::sync::Mutex<()>,
}

impl Session {
    /// A session around a kernel handle and a workspace.
    pub fn new(kernel: Arc<KernelHandle>, workspace: Arc<Workspace>, settings: Settings) -> Self {
        let mut s = Session {
            files: Files::new(kernel.clone(), workspace.clone()),
            journal: SessionJournal::new(),
            kernel,
            workspace,
            settings,
            install_lock: tokio::sync::Mutex::new(()),
            runs: Arc::new(runs::Runs::default()),
            tasks: Default::default(),
            cancelled_tasks: Default::default(),
            persist: None,
            restore_pending: std::sync::atomic::AtomicBool::new(false),
            restore_note: std::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            snapshot_lock: tokio::sync::Mutex::new(()),
        };
        // Only a kernel of our own working in the workspace is snapshotted and restored.
        if let (Some(max), WorkingDir::Workspace(root), Ok(data)) = (
            s.settings.snapshot_max,
            s.working_dir(),
            crate::dirs::data_dir(),
        ) {
            s.persist = Some(persist::Persist::new(data, &root, max));
            s.restore_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        s
    }

    /// A line for the server instructions when a snapshot of this workspace will be restored.
    pub fn snapshot_announcement(&self) -> Option<String> {
        let p = self.persist.as_ref()?;
        let m = p.pending(&self.env_info().python)?.ok()?;
        Some(format!(
            "The variables of this workspace's previous session (snapshot of {}: {} variable(s)) are restored into the kernel before the first call runs; that call's result says what came back.",
            persist::when(m.unix),
            m.saved.len()
        ))
    }

    /// Saves the namespace as the workspace's snapshot (when snapshots are on, the kernel is
    /// running and has run something since start). The summary, or why it failed.
    pub async fn snapshot_now(&self) -> Option<Result<String, String>> {
        self.snapshot_if_free(Duration::from_secs(600)).await
    }

    /// The snapshot at exit: taken only if the kernel is free within a moment. A run still
    /// going (the client left, or the server was told to stop, during a long cell) would hold
    /// the exit up until it ends, and what it leaves is half-done anyway; the snapshot taken
    /// after the last idle run stays.
    pub async fn snapshot_at_exit(&self) -> Option<Result<String, String>> {
        self.snapshot_if_free(EXIT_FREE_WITHIN).await
    }

    async fn snapshot_if_free(&self, free_within: Duration) -> Option<Result<String, String>> {
        use std::sync::atomic::Ordering;
        let p = self.persist.as_ref()?;
        // Before the first run the namespace is empty, and a pending snapshot is still wanted.
        if self.restore_pending.load(Ordering::SeqCst) || !self.kernel.running() {
            return None;
        }
        let _one = self.snapshot_lock.lock().await;
        let python = self.env_info().python;
        let began = std::time::Instant::now();
        let result = match self
            .kernel
            .evaluate_if_free(&p.save_expr(), free_within, Duration::from_secs(600))
            .await
        {
            Err(crate::error::KernelError::Busy { .. }) => {
                return Some(Err(format!(
                    "skipped: a run was still going after {:.1} s (the snapshot after the last idle run stays)",
                    free_within.as_secs_f64()
                )));
            }
            r => r
                .map_err(|e| e.to_string())
                .and_then(|repr| p.record(&python, &repr)),
        };
        Some(match result {
            Ok(m) => {
                let s = format!(
                    "snapshot: {} variable(s), {} bytes, {} skipped, in {:.2} s",
                    m.saved.len(),
                    m.bytes,
                    m.skipped.len(),
                    began.elapsed().as_secs_f64()
                );
                tracing::info!("{s}");
                Ok(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshot failed");
                Err(e)
            }
        })
    }

    /// Forgets the workspace's snapshot (its session ended on purpose): manifest and files.
    pub fn forget_snapshot(&self) {
        if let Some(p) = &self.persist {
            p.discard(&self.env_info().python);
            let _ = crate::workspace::remove_below(
                self.workspace.root(),
                crate::session::persist::FOLDER,
                true,
            );
        }
    }

    /// Restores the workspace's snapshot into the kernel, if there is one; the note saying what
    /// came back (or why nothing did).
    pub async fn restore_now(&self) -> Option<String> {
        let p = self.persist.as_ref()?;
        let python = self.env_info().python;
        let refused = |why: String| {
            format!("[a snapshot of this workspace's earlier session was not restored ({why}); the kernel started fresh]")
        };
        let m = match p.pending(&python)? {
            Ok(m) => m,
            Err(why) => {
                p.discard(&python);
                return Some(refused(why));
            }
        };
        let began = std::time::Instant::now();
        // `evaluate` needs a running kernel: the first call may come before the warm-up's start
        // has taken the kernel's slot, so start (or wait for) it first.
        if let Err(e) = self.kernel.info().await {
            return Some(refused(format!("the kernel did not start: {e}")));
        }
        let loaded = self
            .kernel
            .evaluate(&p.load_expr(&m), Duration::from_secs(600))
            .await;
        tracing::info!(seconds = began.elapsed().as_secs_f64(), "snapshot restore");
        match loaded {
            Ok(repr) => match persist::Persist::describe_restore(&m, &repr) {
                Ok(note) => Some(note),
                Err(why) => {
                    p.discard(&python);
                    Some(refused(why))
                }
            },
            Err(e) => {
                // Never a half-restored kernel: start over.
                let _ = self.kernel.restart().await;
                Some(refused(format!("loading failed: {e}")))
            }
        }
    }

    /// The kernel handle.
    pub fn kernel(&self) -> &Arc<KernelHandle> {
        &self.kernel
    }

    /// The local workspace (the kernel's working directory for local kernels).
    pub fn workspace(&self) -> &Arc<Workspace> {
        &self.workspace
    }

    /// The settings the session runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The file operations, wherever the files live.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// What the server reports about the active environment.
    pub fn env_info(&self) -> EnvInfo {
        self.kernel
            .env_info()
            .unwrap_or_else(|| pyenv::unavailable("no environment was set"))
    }

    /// Where the kernel's working directory is, relative to the file tools.
    pub fn working_dir(&self) -> WorkingDir {
        let backend = self.kernel.backend();
        let info = backend.describe();
        if backend.files_live_with_kernel() {
            WorkingDir::WithKernel {
                server: info.target,
            }
        } else if info.ownership == crate::kernel::Ownership::Borrowed {
            WorkingDir::Apart {
                workspace: self.workspace.root().to_path_buf(),
            }
        } else {
            WorkingDir::Workspace(self.workspace.root().to_path_buf())
        }
    }

    /// True when the kernel runs somewhere kernel-mcp does not launch it (existing, gateway):
    /// its interpreter is not ours to run.
    pub fn kernel_elsewhere(&self) -> bool {
        !self.kernel.backend().interpreter_is_local()
    }

    fn collector(&self) -> Collector {
        Collector::new(
            self.settings.output.clone(),
            Some(Box::new(WorkspaceSpill(self.workspace.clone()))),
        )
    }

    /// The limits of one cell from the caller's `timeout` (checked against the server's
    /// bounds), and the note saying how it was adjusted.
    fn exec_limits(
        &self,
        timeout: Option<f64>,
        progress: bool,
    ) -> Result<(ExecLimits, Option<String>), SessionError> {
        let s = &self.settings;
        let (timeout, note) =
            crate::limits::call_timeout(timeout, s.default_timeout, s.max_timeout)
                .map_err(Refusal::BadTimeout)?;
        Ok((
            ExecLimits {
                timeout,
                grace: s.interrupt_grace,
                progress,
            },
            note,
        ))
    }

    /// Evaluates an expression silently in the kernel (no history, no execution count).
    pub async fn evaluate(&self, expr: &str, wait: Duration) -> Result<String, SessionError> {
        Ok(self.kernel.evaluate(expr, wait).await?)
    }

    /// Adds a Markdown marker to the journal (kernel restarts) and updates the live journal.
    pub async fn journal_marker(&self, text: &str) {
        self.journal.marker(text);
        self.update_live_journal().await;
    }

    /// Saves the session so far as a notebook at `path` (a file the session did not write is
    /// replaced only with `overwrite`). Returns the path written, cells and bytes.
    pub async fn export_notebook(
        &self,
        path: String,
        overwrite: bool,
        since_restart: bool,
        include_errors: bool,
    ) -> Result<ExportReport, SessionError> {
        if !path.to_ascii_lowercase().ends_with(".ipynb") {
            return Err(Refusal::ExportNotIpynb { path }.into());
        }
        let (bytes, cells) = self
            .journal
            .bytes_filtered(
                &self.env_info().python_version,
                since_restart,
                include_errors,
            )
            .map_err(|e| Refusal::NotebookBuild(e.to_string()))?;
        let size = bytes.len();
        let path = self.write_notebook(path, bytes, overwrite).await?;
        Ok(ExportReport {
            path,
            cells,
            bytes: size,
        })
    }

    /// Writes a notebook where the files live, refusing to replace a file this session did
    /// not write unless `overwrite`. Returns the workspace path written.
    async fn write_notebook(
        &self,
        path: String,
        bytes: Vec<u8>,
        overwrite: bool,
    ) -> Result<String, SessionError> {
        self.files
            .write_own(path, bytes, overwrite, self.journal.written(), false)
            .await
    }

    /// Rewrites the live journal notebook (`--journal`), if one is configured, in the local
    /// workspace.
    async fn update_live_journal(&self) {
        let Some(path) = self.settings.journal.clone() else {
            return;
        };
        let mut last = self.journal.write_lock().await;
        let (bytes, _, version) = match self.journal.bytes(&self.env_info().python_version) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "could not build the journal notebook");
                return;
            }
        };
        if version == *last {
            return;
        }
        // Always in the local --workspace: the journal is for the person watching the session
        // (and writing it into a gateway kernel's folder would cost kernel round trips on
        // every call).
        let write = self
            .files
            .write_own(path.clone(), bytes, false, self.journal.written(), true);
        match write.await {
            Ok(_) => *last = version,
            Err(e) => tracing::warn!(error = %e, path, "could not write the journal notebook"),
        }
    }

    /// Restarts the kernel (re-checking its environment first: a changed one is reported so the
    /// tool descriptions can be refreshed) and marks the journal when the state was cleared.
    pub async fn restart_kernel(&self) -> Restart {
        let env_changed = match self.kernel.recheck_environment().await {
            Ok(changed) => changed,
            Err(reason) => {
                return Restart {
                    outcome: Err(KernelError::Unavailable {
                        reason: crate::error::Unavailable::Environment(reason),
                    }
                    .into()),
                    env_changed: false,
                }
            }
        };
        let outcome = self.kernel.restart().await.map_err(SessionError::from);
        if matches!(outcome, Ok(Restarted::Fresh { .. })) {
            self.journal_marker("*Kernel restarted (restart_kernel): all variables were cleared.*")
                .await;
        }
        Restart {
            outcome,
            env_changed,
        }
    }

    /// Restarts the kernel in the named environment; the journal notes that state was cleared
    /// whenever a kernel was restarted (also when the switch failed and the old one came back).
    pub async fn switch_environment(&self, name: &str) -> Result<Switched, SwitchError> {
        let r = self.kernel.switch_environment(name).await;
        match &r {
            Ok(_) => {
                self.journal_marker(&format!(
                    "*Kernel restarted in environment {name} (switch_environment): all variables were cleared.*"
                ))
                .await
            }
            Err(SwitchError::StartFailed { .. }) => {
                self.journal_marker(
                    "*Kernel restarted (a failed switch_environment): all variables were cleared.*",
                )
                .await
            }
            Err(_) => {}
        }
        r
    }

    /// Records a cell run outside [`Session::run`] (run_notebook's cells).
    fn record(
        &self,
        source: &str,
        exec: &Execution,
        outputs: Vec<crate::notebook::Output>,
        report: &Report,
    ) {
        self.journal.cell(source, exec, outputs, report);
    }
}
