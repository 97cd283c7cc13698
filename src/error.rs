//! The crate's error types: one enum per concern, each case carrying its typed facts.
//! `thiserror` derives `Error` (the `source` chain, `#[from]`); the words each case reads as
//! (its `Display`) live in `output/render/errors.rs`, next to the rest of what the model reads,
//! and mapping to MCP results happens in `tools/` only.

use std::path::PathBuf;

/// Why a kernel process ended (worded in `output/render/errors.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    Code(i32),
    Signal(i32),
    /// The sandbox's watch stopped it for going over the resident memory limit (Linux).
    MemoryLimit,
    /// kernel-mcp ended it on purpose (restart, shutdown, a kernel that ignored an interrupt).
    Stopped,
    Unknown(String),
}

/// Errors from the Jupyter wire layer (framing, signing, sockets).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    NoDelimiter {
        frames: usize,
    },
    TooFewFrames {
        frames: usize,
    },
    TooLarge {
        bytes: usize,
        limit: usize,
    },
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    Scheme {
        scheme: String,
    },
    BadSignature,
    Json {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },
    Content {
        msg_type: String,
        #[source]
        source: serde_json::Error,
    },
    Zmq {
        op: &'static str,
        channel: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    ConnectTimeout {
        channel: &'static str,
    },
    ReaderGone {
        channel: &'static str,
    },
    Corrupt {
        reason: String,
    },
    Framing(String),
}

/// Errors from starting, talking to and stopping the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Wire(#[from] WireError),
    Spec {
        path: PathBuf,
        reason: String,
    },
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    StartTimeout {
        secs: u64,
        detail: String,
    },
    /// No kernel to run the call in; `reason` is typed, worded by its `Display`.
    Unavailable {
        reason: Unavailable,
    },
    /// First run: the managed environment is still being created in the background.
    EnvironmentNotReady,
    /// A call is running and `waiting` more already wait behind it (the `--max-queue`).
    Busy {
        waiting: usize,
    },
    /// kernel-mcp's own silent code (a listing, a probe, a snapshot) did not finish within
    /// `secs`; the kernel was interrupted, and `freed` says whether it answered after that.
    SilentTimeout {
        secs: u64,
        freed: bool,
    },
    /// kernel-mcp's own silent code raised (`ename`: `evalue`); the kernel is fine.
    HelperFailed {
        ename: String,
        evalue: String,
    },
    Protocol(String),
}

/// Why a kernel handle was shut down on purpose, for the calls it cuts short and those that
/// arrive after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Closing {
    /// The server is stopping.
    #[default]
    ServerExit,
    /// One hosted session ended (`serve --listen`); the server goes on.
    SessionEnded(SessionEnd),
}

/// How a hosted session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The `end_session` tool.
    EndSession,
    /// The client's HTTP `DELETE` of its MCP session.
    Deleted,
    /// No request for `--session-idle-timeout`.
    Idle,
    /// The least recently used idle session, ended for a new one at `--max-sessions`.
    Evicted,
}

/// Why there is no kernel to run a call in (reasons are data: each case carries its facts,
/// and only `Display` words them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    ConnectionFile(#[from] ConnectionFileError),
    /// A local kernel process ended before it answered `kernel_info`.
    StartupExit {
        cause: ExitCause,
        /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when unknown).
        stderr: String,
    },
    /// A kernel reached over a network or a connection file went away before it answered.
    StartupLost {
        reason: String,
        stderr: String,
    },
    CrashLoop(CrashLoop),
    /// The kernel died between calls, again soon after a start: a crash loop.
    DiedInCrashLoop {
        cause: String,
        looping: CrashLoop,
    },
    /// The last start failed; the next is not due yet.
    BackingOff {
        last_error: String,
        secs: u64,
    },
    /// A kernel kernel-mcp does not own (`--existing`) went away; it is never restarted.
    Detached {
        target: String,
        cause: String,
    },
    /// The handle was shut down on purpose (see [`Closing`]).
    ShuttingDown(Closing),
    NotRunning,
    Cancelled,
    ConnectionLost {
        detail: String,
    },
    /// The kernel ended while silent code (a snapshot, a probe) waited for its answer.
    EndedDuringSilentCode {
        cause: String,
    },
    InterpreterNotOurs,
    /// The configured interpreter cannot run a kernel (words from `pyenv::explain`).
    Environment(String),
    Poisoned,
    /// A start that failed otherwise (spawn, time-out, protocol), in words.
    StartFailed(String),
    NoGateway,
}

/// A kernel that keeps failing or dying right after its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLoop {
    /// Failed starts and early deaths in the crash window.
    pub deaths: usize,
    /// Seconds since the first of them (at least 1).
    pub span_secs: u64,
    /// The latest cause, in words.
    pub last: String,
    /// When the next start is tried: in `secs`, at `at` (HH:MM:SS UTC); `None`: the next call.
    pub next: Option<(u64, String)>,
}

/// Why a Jupyter gateway gave no kernel (`at` is the gateway's URL as shown, without secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    BadUrl {
        url: String,
        why: String,
    },
    BadPath {
        path: String,
        detail: String,
    },
    Unreachable {
        at: String,
        detail: String,
        /// The TLS certificate was the problem.
        certificate: bool,
    },
    Refused {
        at: String,
        what: String,
        status: u16,
    },
    Status {
        at: String,
        what: String,
        status: u16,
        snippet: String,
    },
    BadJson {
        at: String,
        what: String,
        detail: String,
    },
    NoKernelId {
        at: String,
    },
    BadWebSocketUrl {
        at: String,
        detail: String,
    },
    WebSocketTimeout {
        at: String,
        secs: u64,
    },
    WebSocketRefused {
        at: String,
        detail: String,
    },
    /// The gateway could not be configured (from the environment or flags).
    Config(String),
}

/// Why a connection file (`--existing`) gave no kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionFileError {
    TooLarge {
        path: PathBuf,
    },
    Invalid {
        path: PathBuf,
        field: String,
        detail: String,
    },
    PortZero {
        path: PathBuf,
    },
    BadIp {
        path: PathBuf,
    },
    Unreadable {
        path: PathBuf,
        detail: String,
    },
    Unreachable {
        path: PathBuf,
        detail: String,
    },
}

/// Errors from the managed Python environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    BadInterpreter {
        path: PathBuf,
        reason: String,
    },
    NoIpykernel {
        python: String,
    },
    Create {
        path: PathBuf,
        reason: String,
    },
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    NoDataDir,
}

/// Errors from the workspace jail and the file tools.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    BadPath(String),
    /// The kernel's file helper (a gateway kernel's folder) answered something unusable.
    BadAnswer {
        what: KernelAnswer,
    },
    /// The kernel's file helper refused (its words, sanitized).
    Remote(String),
    Denied {
        path: String,
        reason: String,
    },
    NotFound {
        path: String,
    },
    NotRegular {
        path: String,
    },
    IsDirectory {
        path: String,
    },
    TooLarge {
        what: String,
    },
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What was wrong with a kernel's answer to a file helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelAnswer {
    Unreadable,
    FileData,
    Image,
}

/// Errors from validating and installing packages.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    BadSpec {
        spec: String,
        reason: String,
    },
    /// The kernel's own machinery (ipykernel, the wire libraries): never installed over.
    Protected {
        name: String,
    },
    /// Specs that would change the kernel's dependency closure (each "spec (installed x)").
    KernelClosure {
        touched: Vec<String>,
    },
    Failed(String),
    Timeout {
        secs: u64,
    },
    Spawn(String),
}

/// Why a session operation (a tool's one call into `session`) did not happen. Kernel and
/// workspace errors keep their type, so the MCP layer can add the advice each one needs.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The call was refused or could not be done, for a reason of its own (typed below).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why a session operation was refused: each case carries its facts; `Display` words it as the
/// one sentence the model reads (what happened, and what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    SaveToNotIpynb {
        path: String,
    },
    ExportNotIpynb {
        path: String,
    },
    BadNotebook {
        path: String,
        detail: String,
    },
    /// The notebook (run, or the session's journal) could not be encoded.
    NotebookBuild(String),
    FileTask(String),
    NoRemoteKernel(String),
    RemoteWriteTooLarge {
        bytes: usize,
        max: u64,
    },
    RemoteNotebookTooLarge {
        path: String,
        bytes: usize,
        max: u64,
    },
    /// A `timeout` argument that is no number of seconds (words from `limits::call_timeout`).
    BadTimeout(String),
    NoSuchRun {
        id: u64,
        latest: Option<u64>,
    },
    NoRunYet,
    /// The kernel's interpreter lives with the kernel (`None`: its answer was unreadable).
    KernelPackages {
        detail: Option<String>,
    },
    InstalledPackages(String),
    NoPackageNames,
    NothingToInstall,
    TooManyPackages {
        given: usize,
        max: usize,
    },
    /// Specs that are not valid requirements, each worded (nothing is installed).
    BadSpecs(Vec<String>),
    BadPackageName(String),
    TooManyNames {
        given: usize,
        max: usize,
    },
    /// The installer ran and failed; nothing was changed. `renamed` is the note on names
    /// taken for others (empty when none).
    InstallFailed {
        error: String,
        renamed: String,
    },
    /// The installer could not be run to its end (time-out, spawn, refusal).
    InstallIncomplete {
        error: String,
        renamed: String,
    },
}
