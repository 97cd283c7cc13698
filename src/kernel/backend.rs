//! The seam under `KernelHandle`: a `Backend` is a way to get kernels (a local process, a kernel
//! someone else started, a Jupyter gateway). A started kernel is two halves behind traits:
//! `Channels` (how messages travel) and `Lifecycle` (who owns it, how it is stopped and watched).
//! Typed facts only; wording for the model lives in `output` and `tools`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

use super::client::Kernel;
use crate::error::{KernelError, WireError};
use crate::process::ExitCause;
use crate::wire::{Channel, Heartbeat, Message, MsgId, Subscription};

/// How messages reach a running kernel and its replies come back, routed by parent msg_id.
#[async_trait]
pub trait Channels: Send + Sync {
    /// This client's session id (goes into every header we send).
    fn session(&self) -> &str;
    /// Registers interest in messages whose parent is `id`. Call before sending the request.
    fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError>;
    /// Sends `message` on `channel` (shell or control).
    async fn send(&self, channel: Channel, message: &Message) -> Result<(), WireError>;
    /// The latest heartbeat state.
    fn heartbeat(&self) -> Heartbeat;
    /// True once the connection is gone for good (its readers stopped).
    fn closed(&self) -> bool;
    /// How often a dropped connection was re-established with the kernel kept.
    fn reconnects(&self) -> u32 {
        0
    }
    /// Messages from the kernel dropped so far for breaking a limit (the connection was kept),
    /// and why the last one was.
    fn dropped(&self) -> (u64, Option<String>) {
        (0, None)
    }
}

#[async_trait]
impl Channels for crate::wire::Connection {
    fn session(&self) -> &str {
        crate::wire::Connection::session(self)
    }
    fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError> {
        crate::wire::Connection::subscribe(self, id)
    }
    async fn send(&self, channel: Channel, message: &Message) -> Result<(), WireError> {
        crate::wire::Connection::send(self, channel, message).await
    }
    fn heartbeat(&self) -> Heartbeat {
        crate::wire::Connection::heartbeat(self)
    }
    fn closed(&self) -> bool {
        crate::wire::Connection::closed(self)
    }
    fn dropped(&self) -> (u64, Option<String>) {
        crate::wire::Connection::dropped(self)
    }
}

/// Why a kernel is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// The local kernel process ended.
    Exited(ExitCause),
    /// The kernel stopped answering or its connection closed (kernels we reach over a network
    /// or through a connection file).
    Lost { reason: String },
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gone::Exited(c) => write!(f, "{c}"),
            Gone::Lost { reason } => write!(f, "{reason}"),
        }
    }
}

/// Whether kernel-mcp may stop and restart the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// kernel-mcp started it and ends it.
    Owned,
    /// Someone else started it (`--existing`): never killed, restarted or shut down by us.
    Borrowed,
}

/// The lifecycle half of a running kernel.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Resolves when the kernel is gone, with the cause.
    async fn gone(&self) -> Gone;
    /// The cause if the kernel is already gone.
    fn is_gone(&self) -> Option<Gone>;
    /// Interrupts the running cell (signal, `interrupt_request`, or the gateway's REST call).
    async fn interrupt(&self, channels: &dyn Channels);
    /// Stops the kernel at once (no-op for a kernel we do not own).
    fn kill(&self);
    /// Stops the kernel cleanly within a bounded time (no-op for a kernel we do not own).
    async fn shutdown(&self, channels: &dyn Channels);
    /// Whether kernel-mcp started this kernel (and may run its own set-up code in it).
    fn owned(&self) -> bool {
        true
    }
    /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when unknown).
    fn stderr_hint(&self) -> String {
        String::new()
    }
    /// The local process id, when the kernel is a local process.
    fn pid(&self) -> Option<i32> {
        None
    }
    /// What the OS sandbox enforces, when there is one.
    fn sandbox(&self) -> Option<&crate::sandbox::Status> {
        None
    }
    /// The remote kernel's id, when it has one (a gateway kernel).
    fn kernel_id(&self) -> Option<&str> {
        None
    }
}

/// Which kind of backend serves kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Local,
    Existing,
    Gateway,
}

/// What `get_environment` shows about the backend (never credentials).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BackendInfo {
    pub kind: BackendKind,
    pub ownership: Ownership,
    /// The connection file or the gateway URL (without credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The kernelspec name the backend starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
}

/// A way to get kernels.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Starts (or attaches to) a kernel and completes the kernel_info handshake.
    async fn start(&self) -> Result<Kernel, KernelError>;
    /// What this backend is, for reports.
    fn describe(&self) -> BackendInfo;
    /// Whether warm spare kernels can be kept for this backend.
    fn spares(&self) -> bool {
        self.describe().ownership == Ownership::Owned
    }
    /// The interpreter the next kernel runs, when this backend chooses it (local only).
    fn python(&self) -> Option<PathBuf> {
        None
    }
    /// Points the next kernel at another interpreter and the folders it reads (local only).
    /// Returns false when the backend does not choose interpreters.
    fn set_python(&self, _python: PathBuf, _paths: Vec<PathBuf>) -> bool {
        false
    }
    /// Whether an OS sandbox is configured for the kernels this backend starts.
    fn sandboxed(&self) -> bool {
        false
    }
    /// How install_package confines the installer it runs for this backend's interpreter
    /// (only asked when `interpreter_is_local`).
    fn install_mode(&self) -> crate::sandbox::InstallMode {
        crate::sandbox::InstallMode::Unconfined
    }
    /// Whether the kernel's interpreter is one kernel-mcp runs on this machine (so installs and
    /// package listings can run it directly); otherwise they go through the kernel.
    fn interpreter_is_local(&self) -> bool {
        false
    }
    /// Whether the file tools act on the kernel's own working directory (a kernel on another
    /// machine) instead of the local workspace.
    fn files_live_with_kernel(&self) -> bool {
        false
    }
}
