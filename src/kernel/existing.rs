//! The existing-kernel backend (`--existing FILE`, the `jupyter console --existing`
//! convention): attach to a kernel someone else started, through its connection file. We do
//! not own it: it is never killed, restarted or shut down; interrupts go as `interrupt_request`
//! on control; a kernel that goes away is reported; its heartbeat is advisory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::backend::{Channels, Gone, Lifecycle, Ownership};
use super::client::Kernel;
use super::connection::ConnectionInfo;
use super::source::{Backend, BackendInfo, BackendKind};
use crate::error::{ConnectionFileError, KernelError};
use crate::wire::{Channel, Connection, Content, Heartbeat, Message, Signer};

/// Heartbeats missed in a row, after the heartbeat once answered, that mean the kernel is gone.
/// Each miss takes 1–4 s, so a dead kernel is noticed within about 5–20 s.
const GONE_AFTER_MISSES: u32 = 5;

/// Attaches to the kernel named by a connection file.
pub struct ExistingBackend {
    path: PathBuf,
    timeout: Duration,
}

impl ExistingBackend {
    /// A backend for the kernel described by the connection file at `path`.
    pub fn new(path: PathBuf, timeout: Duration) -> ExistingBackend {
        ExistingBackend { path, timeout }
    }
}

#[async_trait]
impl Backend for ExistingBackend {
    async fn start(&self) -> Result<Kernel, KernelError> {
        // Read the file on every attach: an owner who restarted the kernel may have new ports.
        let info = ConnectionInfo::read(&self.path)?;
        let signer =
            Signer::with_scheme(&info.signature_scheme, info.key.as_bytes()).map_err(|e| {
                KernelError::Unavailable {
                    reason: ConnectionFileError::Unreadable {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    }
                    .into(),
                }
            })?;
        let started = Instant::now();
        let deadline = started + self.timeout;
        let conn = Connection::open(&info.endpoints(), signer, self.timeout)
            .await
            .map_err(|e| KernelError::Unavailable {
                reason: ConnectionFileError::Unreachable {
                    path: self.path.clone(),
                    detail: e.to_string(),
                }
                .into(),
            })?;
        let chan: Arc<dyn Channels> = Arc::new(conn);
        let life = Attached {
            chan: chan.clone(),
            seen_alive: AtomicBool::new(false),
        };
        let path = self.path.display().to_string();
        let hint = move || format!("; is the kernel of {path} still running?");
        Kernel::connect(chan, Box::new(life), started, deadline, &hint).await
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Existing,
            ownership: Ownership::Borrowed,
            target: Some(self.path.display().to_string()),
            kernel_name: None,
        }
    }
}

/// A kernel we are attached to but do not own.
struct Attached {
    chan: Arc<dyn Channels>,
    /// The heartbeat answered at least once: only then do missed beats mean "gone" (a kernel
    /// whose heartbeat never worked still runs code, as jupyter_client allows).
    seen_alive: AtomicBool,
}

impl Attached {
    fn check(&self) -> Option<Gone> {
        if self.chan.closed() {
            return Some(Gone::Lost {
                reason: "the connection to the kernel closed".into(),
            });
        }
        match self.chan.heartbeat() {
            Heartbeat::Alive => {
                self.seen_alive.store(true, Ordering::SeqCst);
                None
            }
            Heartbeat::Missed(n)
                if n >= GONE_AFTER_MISSES && self.seen_alive.load(Ordering::SeqCst) =>
            {
                Some(Gone::Lost {
                    reason: format!("its heartbeat stopped answering ({n} beats missed)"),
                })
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Lifecycle for Attached {
    async fn gone(&self) -> Gone {
        loop {
            if let Some(g) = self.check() {
                return g;
            }
            // The heartbeat task publishes at most once a second; polling its latest value
            // twice as often costs nothing and needs no second subscriber.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn is_gone(&self) -> Option<Gone> {
        self.check()
    }

    async fn interrupt(&self, chan: &dyn Channels) {
        // Messaging spec, "Kernel interrupt": a client that did not start the kernel cannot
        // signal it, so the request goes on the control channel.
        let msg = Message::request(chan.session(), Content::InterruptRequest);
        if let Err(e) = chan.send(Channel::Control, &msg).await {
            tracing::warn!(error = %e, "interrupt_request to the existing kernel failed");
        }
    }

    fn owned(&self) -> bool {
        false
    }

    fn kill(&self) {
        tracing::info!("not killing the existing kernel: kernel-mcp does not own it");
    }

    async fn shutdown(&self, _chan: &dyn Channels) {
        // Leaving is just closing our sockets; the kernel keeps running for its owner.
    }
}
