//! The crate error type: one `thiserror` enum per module, wrapped here with `#[from]`.
//! Mapping to MCP results happens in `tools/` only.

use std::path::PathBuf;

/// Errors from the Jupyter wire layer (framing, signing, sockets).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message has no <IDS|MSG> delimiter ({frames} frames)")]
    NoDelimiter { frames: usize },
    #[error("message has {frames} frames after the delimiter, expected at least 5")]
    TooFewFrames { frames: usize },
    #[error("message of {bytes} bytes exceeds the {limit} byte limit")]
    TooLarge { bytes: usize, limit: usize },
    #[error("message has {count} {what}, more than the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("signature scheme {scheme:?} is not supported (kernel-mcp speaks hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224)")]
    Scheme { scheme: String },
    #[error("bad signature on message")]
    BadSignature,
    #[error("invalid json in {part}: {source}")]
    Json {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("content of {msg_type} does not match its schema: {source}")]
    Content {
        msg_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("zeromq {op} on {channel} failed: {source}")]
    Zmq {
        op: &'static str,
        channel: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("timed out connecting to the kernel's {channel} channel")]
    ConnectTimeout { channel: &'static str },
    #[error("the {channel} reader has stopped; the connection to the kernel is gone")]
    ReaderGone { channel: &'static str },
    #[error("could not relay the kernel's {channel} socket: {reason}")]
    Relay {
        channel: &'static str,
        reason: String,
    },
    #[error("{reason}; that connection is corrupt and was cut")]
    Corrupt { reason: String },
    #[error("malformed {0}")]
    Framing(String),
}

/// Errors from starting, talking to and stopping the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("kernel spec {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("could not start the kernel ({program}): {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel did not answer kernel_info within {secs} s{detail}")]
    StartTimeout { secs: u64, detail: String },
    /// No kernel to run the call in; `reason` is typed, worded by its `Display`.
    #[error("kernel unavailable: {reason}")]
    Unavailable { reason: Unavailable },
    /// First run: the managed environment is still being created in the background.
    #[error("kernel unavailable: the Python environment is being created (first run: ipykernel, numpy, pandas, matplotlib; about a minute); try again shortly. The file tools work meanwhile")]
    EnvironmentNotReady,
    #[error(
        "the kernel is busy with {queued} queued calls; try again when the running call finishes"
    )]
    Busy { queued: usize },
    #[error("the kernel sent an unexpected reply: {0}")]
    Protocol(String),
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
    #[error("the kernel exited during start-up ({cause}){stderr}")]
    StartupExit {
        cause: crate::process::ExitCause,
        /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when unknown).
        stderr: String,
    },
    /// A kernel reached over a network or a connection file went away before it answered.
    #[error("the kernel went away during start-up ({reason}){stderr}")]
    StartupLost { reason: String, stderr: String },
    #[error("{0}")]
    CrashLoop(CrashLoop),
    /// The kernel died between calls, again soon after a start: a crash loop.
    #[error(
        "the kernel had died since the last call ({cause}) and all variables were lost; {looping}"
    )]
    DiedInCrashLoop { cause: String, looping: CrashLoop },
    /// The last start failed; the next is not due yet.
    #[error("{last_error}; the next start attempt is in {secs} s")]
    BackingOff { last_error: String, secs: u64 },
    /// A kernel kernel-mcp does not own (`--existing`) went away; it is never restarted.
    #[error("the kernel from {target} went away ({cause}); kernel-mcp does not own it and did not restart it. Start it again, then call restart_kernel to reconnect")]
    Detached { target: String, cause: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no kernel is running")]
    NotRunning,
    #[error("the call was cancelled while waiting for the kernel")]
    Cancelled,
    #[error("lost the connection to the kernel ({detail}); it was stopped, all variables were lost, and the next call starts a new kernel")]
    ConnectionLost { detail: String },
    /// The kernel ended while silent code (a snapshot, a probe) waited for its answer.
    #[error("the kernel ended while kernel-mcp waited for it ({cause}); all variables were lost, and the next call starts a new kernel")]
    EndedDuringSilentCode { cause: String },
    #[error("this kernel's interpreter is chosen where the kernel runs, not by kernel-mcp")]
    InterpreterNotOurs,
    /// The configured interpreter cannot run a kernel (words from `pyenv::explain`).
    #[error("{0}")]
    Environment(String),
    #[error("launcher state is poisoned")]
    Poisoned,
    /// A start that failed otherwise (spawn, time-out, protocol), in words.
    #[error("{0}")]
    StartFailed(String),
    #[error("no gateway configured")]
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

impl std::fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the kernel is crash-looping: it failed or died {} times in the last {} s (last cause: {}); ",
            self.deaths, self.span_secs, self.last
        )?;
        match &self.next {
            Some((secs, at)) => write!(f, "the next start attempt is in {secs} s (at {at} UTC)"),
            None => write!(f, "the next call starts it again"),
        }
    }
}

/// Why a Jupyter gateway gave no kernel (`at` is the gateway's URL as shown, without secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("--gateway-url {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("bad gateway path {path}: {detail}")]
    BadPath { path: String, detail: String },
    #[error("the Jupyter gateway at {at} is not reachable ({detail}); {}", if *.certificate { "its TLS certificate is not trusted here: add the CA that signed it to the system's trust store, or point SSL_CERT_FILE at a PEM file holding it" } else { "is it running, and is --gateway-url right?" })]
    Unreachable {
        at: String,
        detail: String,
        /// The TLS certificate was the problem.
        certificate: bool,
    },
    #[error("the Jupyter gateway at {at} refused the request {what} (HTTP {status}); check the token (--gateway-token or JUPYTER_GATEWAY_AUTH_TOKEN)")]
    Refused {
        at: String,
        what: String,
        status: u16,
    },
    #[error("the Jupyter gateway at {at} answered HTTP {status} to {what}: {snippet}")]
    Status {
        at: String,
        what: String,
        status: u16,
        snippet: String,
    },
    #[error("the Jupyter gateway at {at} sent invalid JSON for {what}: {detail}")]
    BadJson {
        at: String,
        what: String,
        detail: String,
    },
    #[error("the Jupyter gateway at {at} started a kernel but sent no id")]
    NoKernelId { at: String },
    #[error("bad WebSocket URL for {at}: {detail}")]
    BadWebSocketUrl { at: String, detail: String },
    #[error("the Jupyter gateway at {at} did not open the kernel's WebSocket within {secs} s")]
    WebSocketTimeout { at: String, secs: u64 },
    #[error("the Jupyter gateway at {at} refused the kernel's WebSocket ({detail}); check the token and that the gateway allows WebSocket connections")]
    WebSocketRefused { at: String, detail: String },
    /// The gateway could not be configured (from the environment or flags).
    #[error("{0}")]
    Config(String),
}

/// Why a connection file (`--existing`) gave no kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionFileError {
    #[error("connection file {path} is larger than 64 KiB")]
    TooLarge { path: PathBuf },
    #[error("connection file {path} is not a valid Jupyter connection file: `{field}`: {detail}")]
    Invalid {
        path: PathBuf,
        field: String,
        detail: String,
    },
    #[error("connection file {path} names port 0; the kernel has not bound its ports yet")]
    PortZero { path: PathBuf },
    #[error("connection file {path} has an invalid ip")]
    BadIp { path: PathBuf },
    #[error("connection file {path}: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("could not connect to the kernel of {path} ({detail}); is it running?")]
    Unreachable { path: PathBuf, detail: String },
}

/// Errors from the managed Python environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("python interpreter {path} not usable: {reason}")]
    BadInterpreter { path: PathBuf, reason: String },
    #[error("ipykernel is not installed for {python}; fix: `{python} -m pip install ipykernel` (or run without --python to use the managed environment)")]
    NoIpykernel { python: String },
    #[error("could not create the managed environment at {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no home or data directory: set HOME, XDG_DATA_HOME or KERNEL_MCP_DATA_DIR")]
    NoDataDir,
}

/// Errors from the workspace jail and the file tools.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}")]
    BadPath(String),
    /// The kernel's file helper (a gateway kernel's folder) answered something unusable.
    #[error("{what}")]
    BadAnswer { what: KernelAnswer },
    /// The kernel's file helper refused (its words, sanitized).
    #[error("{0}")]
    Remote(String),
    #[error("{path}: {reason}")]
    Denied { path: String, reason: String },
    #[error("{path}: not found in the workspace")]
    NotFound { path: String },
    #[error("{path}: not a regular file")]
    NotRegular { path: String },
    #[error("{path}: is a directory")]
    IsDirectory { path: String },
    #[error("{what}")]
    TooLarge { what: String },
    #[error("{path}: {source}")]
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

impl std::fmt::Display for KernelAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelAnswer::Unreadable => "unexpected answer from the kernel",
            KernelAnswer::FileData => "the kernel sent unreadable file data",
            KernelAnswer::Image => "the kernel sent an unreadable image",
        })
    }
}

/// Errors from validating and installing packages.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    /// The kernel's own machinery (ipykernel, the wire libraries): never installed over.
    #[error("{name} is part of the kernel's own machinery (the kernel runs on it); installing or upgrading it could break the running kernel, so it is refused")]
    Protected { name: String },
    /// Specs that would change the kernel's dependency closure (each "spec (installed x)").
    #[error("{} {} part of what the kernel itself runs on (ipykernel and its dependencies); another version could stop every kernel in this environment from starting, so it is refused and the installed version stays", .touched.join(", "), if .touched.len() == 1 { "is" } else { "are" })]
    KernelClosure { touched: Vec<String> },
    #[error("installer failed: {0}")]
    Failed(String),
    #[error("installer timed out after {secs} s and was killed")]
    Timeout { secs: u64 },
    #[error("could not run the installer: {0}")]
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
    #[error("save_to {path}: a notebook path must end in .ipynb; nothing was run")]
    SaveToNotIpynb { path: String },
    #[error("{path}: a notebook path must end in .ipynb, e.g. \"analysis.ipynb\"")]
    ExportNotIpynb { path: String },
    #[error("{path}: {detail}; nothing was run")]
    BadNotebook { path: String, detail: String },
    /// The notebook (run, or the session's journal) could not be encoded.
    #[error("could not build the notebook: {0}")]
    NotebookBuild(String),
    #[error("the file task failed: {0}")]
    FileTask(String),
    #[error("the file tools act on the kernel's working directory on the gateway, and no kernel is available: {0}")]
    NoRemoteKernel(String),
    #[error("content is {bytes} bytes; at most {max} bytes can be written into a gateway kernel's folder per write_file call (one WebSocket message). Nothing was written; send the rest in further calls with append: true")]
    RemoteWriteTooLarge { bytes: usize, max: u64 },
    #[error("{path}: the notebook is {bytes} bytes; at most {max} bytes can be written into a gateway kernel's folder in one piece (it travels inside one WebSocket message)")]
    RemoteNotebookTooLarge {
        path: String,
        bytes: usize,
        max: u64,
    },
    /// A `timeout` argument that is no number of seconds (words from `limits::call_timeout`).
    #[error("{0}")]
    BadTimeout(String),
    #[error("there is no run {id} (runs are numbered from 1 in this session; the latest is {})", latest.map(|l| l.to_string()).unwrap_or_else(|| "none yet".into()))]
    NoSuchRun { id: u64, latest: Option<u64> },
    #[error("no run has been started in this session yet")]
    NoRunYet,
    /// The kernel's interpreter lives with the kernel (`None`: its answer was unreadable).
    #[error("could not list the kernel's packages: {}", detail.as_deref().unwrap_or("unexpected answer from the kernel"))]
    KernelPackages { detail: Option<String> },
    #[error("could not list the installed packages: {0}")]
    InstalledPackages(String),
    #[error("packages is empty; pass a list of package names")]
    NoPackageNames,
    #[error("packages is empty; pass a list of package names such as [\"tabulate\"]")]
    NothingToInstall,
    #[error("{given} packages given; install at most {max} per call")]
    TooManyPackages { given: usize, max: usize },
    /// Specs that are not valid requirements, each worded (nothing is installed).
    #[error("nothing was installed: {}", .0.join("; "))]
    BadSpecs(Vec<String>),
    #[error("{0:?} is not a package name (letters, digits, '-', '_' and '.' only)")]
    BadPackageName(String),
    #[error("{given} names given; check at most {max} per call")]
    TooManyNames { given: usize, max: usize },
    /// The installer ran and failed; nothing was changed. `renamed` is the note on names
    /// taken for others (empty when none).
    #[error("nothing was changed{renamed}: {error}")]
    InstallFailed { error: String, renamed: String },
    /// The installer could not be run to its end (time-out, spawn, refusal).
    #[error("{error}{renamed}. Nothing may have been installed; try fewer packages, check the names, or start the server with a larger --install-timeout.")]
    InstallIncomplete { error: String, renamed: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ExitCause;

    /// The typed reasons read as the sentences the model has always been given.
    #[test]
    fn typed_reasons_are_worded_as_before() {
        let e = KernelError::Unavailable {
            reason: Unavailable::StartupExit {
                cause: ExitCause::Code(1),
                stderr: "; kernel stderr: boom".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "kernel unavailable: the kernel exited during start-up (exit code 1); kernel stderr: boom"
        );
        let looping = CrashLoop {
            deaths: 3,
            span_secs: 1,
            last: "exit code 1".into(),
            next: Some((8, "10:00:08".into())),
        };
        assert_eq!(
            Unavailable::CrashLoop(looping.clone()).to_string(),
            "the kernel is crash-looping: it failed or died 3 times in the last 1 s (last cause: exit code 1); the next start attempt is in 8 s (at 10:00:08 UTC)"
        );
        assert!(Unavailable::DiedInCrashLoop {
            cause: "killed by signal 9 (SIGKILL)".into(),
            looping: CrashLoop { next: None, ..looping },
        }
        .to_string()
        .ends_with("all variables were lost; the kernel is crash-looping: it failed or died 3 times in the last 1 s (last cause: exit code 1); the next call starts it again"));
        let unreachable = |certificate| {
            Unavailable::from(GatewayError::Unreachable {
                at: "http://gw:8888/".into(),
                detail: "connection refused".into(),
                certificate,
            })
            .to_string()
        };
        assert_eq!(
            unreachable(false),
            "the Jupyter gateway at http://gw:8888/ is not reachable (connection refused); is it running, and is --gateway-url right?"
        );
        assert!(unreachable(true).contains("TLS certificate is not trusted"));
        assert_eq!(
            Unavailable::from(ConnectionFileError::PortZero {
                path: PathBuf::from("/r/k.json")
            })
            .to_string(),
            "connection file /r/k.json names port 0; the kernel has not bound its ports yet"
        );
    }

    /// Refusals carry their facts and read as the sentences the model has always been given.
    #[test]
    fn refusals_are_worded_from_their_facts() {
        let e = SessionError::from(Refusal::NoSuchRun {
            id: 7,
            latest: Some(3),
        });
        assert_eq!(
            e.to_string(),
            "there is no run 7 (runs are numbered from 1 in this session; the latest is 3)"
        );
        assert!(Refusal::NoSuchRun {
            id: 1,
            latest: None
        }
        .to_string()
        .ends_with("the latest is none yet)"));
        assert_eq!(
            Refusal::KernelPackages { detail: None }.to_string(),
            "could not list the kernel's packages: unexpected answer from the kernel"
        );
        assert_eq!(
            Refusal::BadPackageName("a b".into()).to_string(),
            "\"a b\" is not a package name (letters, digits, '-', '_' and '.' only)"
        );
        assert_eq!(
            Refusal::BadSpecs(vec!["\"x\": bad".into(), "\"y\": bad".into()]).to_string(),
            "nothing was installed: \"x\": bad; \"y\": bad"
        );
        assert_eq!(
            Refusal::InstallFailed {
                error: "installer failed: no such package".into(),
                renamed: " (sklearn is the import name of scikit-learn; installing scikit-learn)"
                    .into()
            }
            .to_string(),
            "nothing was changed (sklearn is the import name of scikit-learn; installing scikit-learn): installer failed: no such package"
        );
        let closure = |touched: &[&str]| {
            PackageError::KernelClosure {
                touched: touched.iter().map(|t| t.to_string()).collect(),
            }
            .to_string()
        };
        assert!(closure(&["a==1 (installed 2)"]).starts_with("a==1 (installed 2) is part of"));
        assert!(closure(&["a", "b"]).starts_with("a, b are part of what the kernel"));
        assert!(PackageError::Protected {
            name: "pyzmq".into()
        }
        .to_string()
        .starts_with("pyzmq is part of the kernel's own machinery"));
    }
}
