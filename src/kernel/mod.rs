//! The kernel: `KernelHandle`, the one handle tools use, over a `Backend` (local process,
//! existing kernel, Jupyter gateway). The handle serializes calls, restarts dead or stuck
//! kernels it owns, backs off crash loops and keeps a warm spare. Its parts live beside it:
//! `starting.rs` (getting a kernel: the spare or a cold start, replacing a dead one),
//! `supervision.rs` (the slot, deaths and the crash-loop back-off), `spare.rs` (the spare pool,
//! shared with the HTTP server's prepared sessions), `environments.rs` (which interpreter the
//! kernels run, and switching it).

pub mod backend;
pub mod client;
pub mod connection;
pub mod environments;
pub mod existing;
pub mod gateway;
pub mod local;
#[cfg(test)]
mod scripted;
pub mod source;
pub mod spare;
pub mod spec;
mod starting;
mod supervision;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Kernel liveness as the handle reports it (the wire layer's heartbeat state).
pub use crate::wire::Heartbeat as Health;
pub use backend::{Gone, Ownership};
pub use client::{Ending, ExecLimits, Execution, Kernel, OutputSink, StopReason};
pub use connection::Transport;
use environments::EnvState;
pub use environments::{Environments, SwitchError, Switched};
pub use local::{LocalBackend, LocalLauncher, SandboxConfig};
pub use source::{Backend, BackendInfo, BackendKind};
pub use spare::{SpareConfig, SparePool, PRELOAD_ANALYSIS_STACK};
pub use spec::{InterruptMode, KernelSpec};

use spare::Spares;
use supervision::{Slot, EARLY_DEATH};

use crate::error::{Closing, KernelError, Unavailable};
use crate::wire::message::KernelInfoReply;

/// What happened to the kernel around one call (typed; `output` words it for the model).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Events around the call, in order.
    pub notes: Vec<Notice>,
    /// True when the variables of the session were lost during this call.
    pub state_lost: bool,
}

/// One thing that happened to the kernel around a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The kernel had died since the last call; a new one was started (state lost).
    DiedBetweenCalls {
        cause: Gone,
        /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when unknown).
        stderr: String,
    },
    /// The code ignored the interrupt; the kernel was killed and (if `restart` is Ok) replaced.
    Unresponsive {
        reason: StopReason,
        timeout: Duration,
        restart: Result<(), String>,
    },
    /// The code ignored the interrupt, and the kernel is not ours to kill.
    UnresponsiveNotOwned,
    /// restart_kernel ended this call's kernel on purpose.
    RestartedDuringCall,
    /// The kernel was stopped on purpose while running this call (no restart).
    StoppedDuringCall(Closing),
    /// The kernel died while running this call; `restart` says whether a new one started.
    DiedDuringCall {
        cause: Gone,
        restart: Result<(), String>,
    },
    /// A kernel we do not own went away; it is not restarted.
    Detached { reason: String },
    /// The connection dropped and was re-established; the kernel and its state were kept.
    Reconnected,
    /// Messages from the kernel broke a size limit and were dropped; the connection (and the
    /// kernel) were kept. `reason` names the last one and the limit.
    DroppedMessages { count: u64, reason: String },
    /// The kernel's IOPub dropped messages of this call (its PUB queue overflowed: output came
    /// faster than it was taken), its final `status: idle` among them: output may be missing.
    IoPubOverflow,
    /// Processes this call left running under the kernel (pid, command line), and how many
    /// more were not listed.
    LeftBehind {
        processes: Vec<(i32, String)>,
        more: usize,
    },
}

/// How restart_kernel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarted {
    /// A fresh kernel replaced the old one (state lost).
    Fresh { took: Duration },
    /// The kernel belongs to someone else: kernel-mcp reconnected to it, its state untouched.
    Reattached { took: Duration },
}

/// The single handle to "the kernel", however it was started.
pub struct KernelHandle {
    me: Weak<KernelHandle>,
    /// The warm spare (at most one) and how it is made.
    spare: Spares,
    /// Set by `shutdown`: kernels that finish starting afterwards are ended, not kept.
    stopping: AtomicBool,
    /// Why `shutdown` was called (for the calls it cuts short).
    closing: StdMutex<Closing>,
    backend: Arc<dyn Backend>,
    /// Set after an install: the next call first clears Python's import caches.
    invalidate_imports: AtomicBool,
    /// True while restart_kernel is replacing the kernel.
    restarting: AtomicBool,
    slot: tokio::sync::Mutex<Slot>,
    /// The kernel in use, readable without waiting for a running call (for interrupt/restart).
    current: StdMutex<Option<Arc<Kernel>>>,
    waiting: AtomicUsize,
    max_queue: usize,
    /// The Python environments and why there is no usable interpreter (environments.rs).
    env: EnvState,
}

impl KernelHandle {
    /// A handle that will launch local kernels with `launcher`; nothing is started yet.
    pub fn new(launcher: LocalLauncher, max_queue: usize, spare: SpareConfig) -> Arc<KernelHandle> {
        Self::with_backend(Arc::new(LocalBackend::new(launcher)), max_queue, spare)
    }

    /// A handle over any backend; nothing is started yet.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        max_queue: usize,
        spare: SpareConfig,
    ) -> Arc<KernelHandle> {
        let spare = SpareConfig {
            enabled: spare.enabled && backend.spares(),
            ..spare
        };
        Arc::new_cyclic(|me| KernelHandle {
            me: me.clone(),
            spare: Spares {
                pool: SparePool::new(usize::from(spare.enabled)),
                cfg: spare,
            },
            stopping: AtomicBool::new(false),
            closing: StdMutex::new(Closing::default()),
            backend,
            invalidate_imports: AtomicBool::new(false),
            restarting: AtomicBool::new(false),
            slot: tokio::sync::Mutex::new(Slot::default()),
            current: StdMutex::new(None),
            waiting: AtomicUsize::new(0),
            max_queue,
            env: EnvState::default(),
        })
    }

    /// Most calls that may wait for the kernel (`--max-queue`).
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// The backend the kernels come from.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    fn owned(&self) -> bool {
        self.backend.describe().ownership == Ownership::Owned
    }

    /// Makes the next call clear the kernel's import caches (new packages importable at once).
    pub fn invalidate_imports(&self) {
        self.invalidate_imports.store(true, Ordering::SeqCst);
    }

    /// Evaluates an expression in the kernel if it becomes free within `wait`.
    pub async fn evaluate(&self, expr: &str, wait: Duration) -> Result<String, KernelError> {
        self.evaluate_if_free(expr, wait, wait).await
    }

    /// Evaluates an expression in the kernel if it becomes free within `free_within` (a run or
    /// another call holds it until then: `Busy`), waiting up to `wait` for the answer.
    pub async fn evaluate_if_free(
        &self,
        expr: &str,
        free_within: Duration,
        wait: Duration,
    ) -> Result<String, KernelError> {
        let slot = tokio::time::timeout(free_within, self.slot.lock())
            .await
            .map_err(|_| KernelError::Busy {
                // Those in `execute`, less the one holding the kernel.
                waiting: self.waiting.load(Ordering::SeqCst).saturating_sub(1),
            })?;
        let k = slot.kernel.clone().ok_or(KernelError::Unavailable {
            reason: Unavailable::NotRunning,
        })?;
        k.evaluate(expr, wait).await
    }

    /// Starts the kernel in the background so the first call does not wait for it.
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut slot = me.slot.lock().await;
            let mut report = Report::default();
            if let Err(e) = me.ensure(&mut slot, &mut report).await {
                tracing::error!(error = %e, "kernel failed to start");
            }
        });
    }

    /// Runs code on the kernel: one call at a time, in arrival order.
    pub async fn execute(
        &self,
        code: &str,
        limits: &ExecLimits,
        cancel: &CancellationToken,
        sink: &mut dyn OutputSink,
    ) -> Result<(Execution, Report), KernelError> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Decrement(&self.waiting);
        if queued > self.max_queue {
            return Err(KernelError::Busy {
                waiting: queued.saturating_sub(1),
            });
        }
        let mut slot = tokio::select! {
            s = self.slot.lock() => s,
            _ = cancel.cancelled() => return Err(KernelError::Unavailable { reason: Unavailable::Cancelled }),
        };
        let mut report = Report::default();
        let kernel = self.ensure(&mut slot, &mut report).await?;
        if self.invalidate_imports.swap(false, Ordering::SeqCst) {
            if let Err(e) = kernel
                .run_silent(
                    "import importlib as __i; __i.invalidate_caches(); del __i",
                    Duration::from_secs(10),
                )
                .await
            {
                tracing::warn!(error = %e, "could not invalidate import caches");
            }
        }
        Self::note_reconnects(&kernel, &mut slot, &mut report);
        let exec = match kernel.execute(code, limits, cancel, sink).await {
            Ok(e) => e,
            Err(e) => {
                // The process may live on with its sockets gone (a reader died): such a kernel
                // can never answer again, so stop it and let the next call start a fresh one.
                tracing::error!(error = %e, "lost the connection to the kernel; stopping it");
                kernel.kill();
                slot.kernel = None;
                self.set_current(None);
                return Err(KernelError::Unavailable {
                    reason: Unavailable::ConnectionLost {
                        detail: e.to_string(),
                    },
                });
            }
        };
        Self::note_reconnects(&kernel, &mut slot, &mut report);
        if exec.idle_lost {
            report.notes.push(Notice::IoPubOverflow);
        }
        match &exec.ending {
            Ending::Completed | Ending::Interrupted { .. } => {
                slot.failures = 0;
                if let Some(note) = left_behind(kernel.new_processes()) {
                    report.notes.push(note);
                }
            }
            Ending::Unresponsive { .. } if !self.owned() => {
                report.notes.push(Notice::UnresponsiveNotOwned);
            }
            Ending::Died { cause } if !self.owned() => {
                slot.kernel = None;
                self.set_current(None);
                let reason = self.detach_reason(cause);
                report.notes.push(Notice::Detached {
                    reason: reason.to_string(),
                });
                slot.detached = Some(reason);
            }
            Ending::Unresponsive { reason } => {
                tracing::warn!("kernel ignored the interrupt; killing and restarting it");
                report.state_lost = true;
                let restart = self
                    .replace(&mut slot)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                report.notes.push(Notice::Unresponsive {
                    reason: *reason,
                    timeout: limits.timeout,
                    restart,
                });
            }
            Ending::Died { .. } if self.restarting.load(Ordering::SeqCst) => {
                // restart_kernel killed it on purpose and starts the next kernel itself.
                report.state_lost = true;
                slot.kernel = None;
                self.set_current(None);
                report.notes.push(Notice::RestartedDuringCall);
            }
            Ending::Died { .. } if self.stopping.load(Ordering::SeqCst) => {
                // Ended on purpose (the server or this session is stopping): nothing to restart.
                report.state_lost = true;
                slot.kernel = None;
                self.set_current(None);
                report.notes.push(Notice::StoppedDuringCall(self.closing()));
            }
            Ending::Died { cause } => {
                report.state_lost = true;
                if kernel.age() < EARLY_DEATH {
                    slot.failures += 1;
                    slot.died(&cause.to_string());
                }
                slot.kernel = None;
                self.set_current(None);
                let restart = self
                    .start_into(&mut slot)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                report.notes.push(Notice::DiedDuringCall {
                    cause: cause.clone(),
                    restart,
                });
            }
        }
        Ok((exec, report))
    }

    /// Interrupts the running cell (variables are kept). Returns false when no kernel runs.
    pub async fn interrupt(&self) -> bool {
        match self.current() {
            Some(k) if k.exited().is_none() => {
                k.interrupt().await;
                true
            }
            _ => false,
        }
    }

    /// Kills the kernel (ending any running call) and starts a fresh one. A kernel kernel-mcp
    /// does not own is never killed: the handle reconnects to it instead.
    pub async fn restart(&self) -> Result<Restarted, KernelError> {
        let t = Instant::now();
        if !self.owned() {
            let mut slot = self.slot.lock().await;
            slot.detached = None;
            slot.retry_at = None;
            if let Some(old) = slot.kernel.take() {
                self.set_current(None);
                old.shutdown().await;
            }
            self.start_into(&mut slot).await?;
            return Ok(Restarted::Reattached { took: t.elapsed() });
        }
        self.restarting.store(true, Ordering::SeqCst);
        // Kill first, so a running call ends now instead of holding the slot. A kernel that
        // was still starting becomes current later, and a call may start on it meanwhile:
        // keep killing whatever is current until the slot is ours.
        let mut slot = loop {
            if let Some(k) = self.current() {
                k.kill();
            }
            if let Ok(slot) =
                tokio::time::timeout(Duration::from_millis(200), self.slot.lock()).await
            {
                break slot;
            }
        };
        slot.retry_at = None;
        let result = self.replace(&mut slot).await;
        self.restarting.store(false, Ordering::SeqCst);
        result?;
        Ok(Restarted::Fresh { took: t.elapsed() })
    }

    /// Adds a note when the kernel's connection dropped and was re-established since the last
    /// report (a gateway WebSocket); the kernel and its variables were kept.
    fn note_reconnects(kernel: &Kernel, slot: &mut Slot, report: &mut Report) {
        let n = kernel.reconnects();
        if n > slot.reconnects_seen {
            slot.reconnects_seen = n;
            report.notes.push(Notice::Reconnected);
        }
        let (dropped, why) = kernel.dropped();
        if dropped > slot.dropped_seen {
            report.notes.push(Notice::DroppedMessages {
                count: dropped - slot.dropped_seen,
                reason: why.unwrap_or_default(),
            });
            slot.dropped_seen = dropped;
        }
    }

    fn detach_reason(&self, cause: &dyn std::fmt::Display) -> Unavailable {
        Unavailable::Detached {
            target: self.backend.describe().target.unwrap_or_default(),
            cause: cause.to_string(),
        }
    }

    /// kernel_info of the running kernel, starting one if needed.
    pub async fn info(&self) -> Result<(KernelInfoReply, Option<i32>), KernelError> {
        let mut slot = self.slot.lock().await;
        let mut report = Report::default();
        let k = self.ensure(&mut slot, &mut report).await?;
        Ok((k.info().clone(), k.pid()))
    }

    /// What the sandbox enforces for the running kernel.
    pub fn sandbox(&self) -> Option<crate::sandbox::Status> {
        self.current().and_then(|k| k.sandbox().cloned())
    }

    /// The heartbeat of the running kernel, if one runs.
    pub fn heartbeat(&self) -> Option<Health> {
        self.current().map(|k| k.heartbeat())
    }

    /// The pid of the running kernel, if one runs locally.
    pub fn pid(&self) -> Option<i32> {
        self.current()
            .filter(|k| k.exited().is_none())
            .and_then(|k| k.pid())
    }

    /// True while a kernel is connected and not known to be gone.
    pub fn running(&self) -> bool {
        self.current().is_some_and(|k| k.exited().is_none())
    }

    /// The remote kernel id, when the running kernel lives on a gateway.
    pub fn kernel_id(&self) -> Option<String> {
        self.current()
            .and_then(|k| k.kernel_id().map(str::to_owned))
    }

    /// Shuts the kernel down cleanly (bounded), then kills what is left: the server is
    /// stopping.
    pub async fn shutdown(&self) {
        self.shutdown_for(Closing::ServerExit).await;
    }

    /// Why `shutdown` was called (the server's exit until it is).
    pub(super) fn closing(&self) -> Closing {
        self.closing.lock().map(|c| *c).unwrap_or_default()
    }

    /// [`Self::shutdown`] for `why`: the call it cuts short, and any that comes after, says so.
    /// The first reason given stays.
    pub async fn shutdown_for(&self, why: Closing) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            if let Ok(mut c) = self.closing.lock() {
                *c = why;
            }
        }
        let first = self.current();
        self.shutdown_present().await;
        // A kernel still starting (the first one, a spare) would outlive the server, and on a
        // gateway stay there for good: wait for it (bounded) and end it too.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.spare.pool.filling() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let late = match tokio::time::timeout_at(deadline, self.slot.lock()).await {
            Ok(mut slot) => slot.kernel.take(),
            Err(_) => {
                tracing::warn!("a kernel was still starting at exit and did not finish in time");
                None
            }
        };
        if let Some(k) = late.filter(|k| !first.as_ref().is_some_and(|f| Arc::ptr_eq(f, k))) {
            tracing::info!("ending a kernel that finished starting during shutdown");
            k.shutdown().await;
        }
        self.shutdown_present().await;
    }

    /// Ends the current kernel and the spare, as they are now.
    async fn shutdown_present(&self) {
        let spare = self.spare.pool.drain();
        // Both are ended before the server exits: a local kernel's process group dies, a
        // gateway kernel is deleted on the gateway.
        let current = self.current();
        tokio::join!(
            async {
                for s in spare {
                    s.kernel.shutdown().await;
                }
            },
            async {
                if let Some(k) = current {
                    k.shutdown().await;
                }
            }
        );
        self.set_current(None);
        if let Ok(mut slot) = self.slot.try_lock() {
            slot.kernel = None;
        }
    }
}

/// Longest `shutdown` waits for kernels still starting (a gateway start can take a while).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// Most processes named in a result; the rest are counted.
const MAX_LISTED: usize = 10;

/// A note naming the processes a call started that are still running, if any.
fn left_behind(mut processes: Vec<(i32, String)>) -> Option<Notice> {
    if processes.is_empty() {
        return None;
    }
    let more = processes.len().saturating_sub(MAX_LISTED);
    processes.truncate(MAX_LISTED);
    Some(Notice::LeftBehind { processes, more })
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_left_behind_are_named_and_capped() {
        let words = |p: Vec<(i32, String)>| left_behind(p).map(|n| crate::output::notice(&n));
        assert_eq!(words(Vec::new()), None);
        assert_eq!(
            words(vec![(12, "sleep 300".into())]).as_deref(),
            Some("This call left 1 process(es) running under the kernel: pid 12 `sleep 300`. They keep running until they end or the kernel is restarted")
        );
        let many: Vec<(i32, String)> = (0..25).map(|i| (i, format!("w{i}"))).collect();
        let note = words(many).unwrap_or_default();
        assert!(
            note.contains("left 25 process(es)") && note.contains("pid 9 `w9`, and 15 more"),
            "{note}"
        );
        assert!(!note.contains("pid 10 "), "{note}");
    }
}
