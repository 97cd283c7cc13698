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
    #[error("kernel unavailable: {reason}")]
    Unavailable { reason: String },
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

/// Errors from validating and installing packages.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    #[error("{0}")]
    Refused(String),
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
    /// Anything else the model should read: one sentence saying what to do.
    #[error("{0}")]
    Refused(String),
}
