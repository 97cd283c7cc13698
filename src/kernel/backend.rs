//! A started kernel's two halves behind traits, whatever backend started it: `Channels` (how
//! messages travel) and `Lifecycle` (who owns it, how it is stopped and watched). `client.rs`
//! builds the kernel the handle uses on them; `source.rs` (the `Backend` trait) starts them.
//! Typed facts only; wording for the model lives in `output` and `tools`.

use async_trait::async_trait;
use serde::Serialize;

use crate::error::WireError;
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
