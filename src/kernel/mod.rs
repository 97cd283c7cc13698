//! The kernel: spec, connection file, process, client, and `KernelHandle`, the one handle tools
//! use. The handle serializes calls, restarts dead or stuck kernels and backs off crash loops.

pub mod client;
pub mod connection;
pub mod process;
pub mod sandbox;
pub mod spec;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use client::{
    Ending, ExecLimits, Execution, Kernel, LocalLauncher, OutputSink, SandboxConfig, StopReason,
};
pub use connection::Transport;
pub use spec::{InterruptMode, KernelSpec};

use crate::error::KernelError;
use crate::wire::message::KernelInfoReply;

/// A kernel that dies this soon after starting counts towards the crash-loop back-off.
const EARLY_DEATH: Duration = Duration::from_secs(10);
/// Longest wait between start attempts of a crash-looping kernel.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What happened to the kernel around one call, for the model to read.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Plain sentences about restarts and state loss, in order.
    pub notes: Vec<String>,
    /// True when the variables of the session were lost during this call.
    pub state_lost: bool,
}

#[derive(Default)]
struct Slot {
    kernel: Option<Arc<Kernel>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The warm spare: a kernel started ahead of need, swapped in by restart and recovery.
#[derive(Debug, Clone, Default)]
pub struct SpareConfig {
    /// Keep a spare kernel started and idle.
    pub enabled: bool,
    /// Python run silently in the spare before it is used (e.g. importing the analysis stack).
    pub preload: Option<String>,
}

/// The code that pre-imports the analysis stack in a new kernel (names are not bound): the
/// imports, then one off-screen Agg render so fonts and the PNG path are warm for the first plot
/// (without pyplot, so figure numbers and the inline backend are untouched).
pub const PRELOAD_ANALYSIS_STACK: &str = "def __kmcp_preload():\n    import importlib\n    for m in ('numpy', 'pandas', 'matplotlib.pyplot'):\n        try:\n            importlib.import_module(m)\n        except Exception:\n            pass\n    try:\n        import io\n        from matplotlib.figure import Figure\n        from matplotlib.backends.backend_agg import FigureCanvasAgg\n        fig = Figure(figsize=(2, 2))\n        fig.add_subplot().plot([0, 1])\n        FigureCanvasAgg(fig).print_png(io.BytesIO())\n    except Exception:\n        pass\ntry:\n    __kmcp_preload()\nfinally:\n    del __kmcp_preload";

struct Spare {
    kernel: Kernel,
    python: PathBuf,
}

/// Imports the analysis stack in a fresh kernel without waiting for it (silent: no history, no
/// execution count), so the session's first plot does not pay for the imports. A call that
/// arrives meanwhile queues behind it in the kernel.
fn preload_in_background(k: &Arc<Kernel>, code: Option<String>) {
    let Some(code) = code else { return };
    let k = k.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        match k.run_silent(&code, Duration::from_secs(120)).await {
            Ok(()) => tracing::info!(
                ms = t.elapsed().as_millis() as u64,
                "analysis stack imported in the background"
            ),
            Err(e) => tracing::warn!(error = %e, "background import of the analysis stack failed"),
        }
    });
}

/// The single handle to "the kernel", however it was started.
pub struct KernelHandle {
    me: Weak<KernelHandle>,
    spare_cfg: SpareConfig,
    spare: StdMutex<Option<Spare>>,
    spare_filling: AtomicBool,
    launcher: StdMutex<LocalLauncher>,
    /// Set after an install: the next call first clears Python's import caches.
    invalidate_imports: AtomicBool,
    /// True while restart_kernel is replacing the kernel.
    restarting: AtomicBool,
    /// Why there is no interpreter yet (the managed environment failed to be created).
    env_error: StdMutex<Option<String>>,
    slot: tokio::sync::Mutex<Slot>,
    /// The kernel in use, readable without waiting for a running call (for interrupt/restart).
    current: StdMutex<Option<Arc<Kernel>>>,
    waiting: AtomicUsize,
    max_queue: usize,
}

impl KernelHandle {
    /// A handle that will launch kernels with `launcher`; nothing is started yet.
    pub fn new(launcher: LocalLauncher, max_queue: usize, spare: SpareConfig) -> Arc<KernelHandle> {
        Arc::new_cyclic(|me| KernelHandle {
            me: me.clone(),
            spare_cfg: spare,
            spare: StdMutex::new(None),
            spare_filling: AtomicBool::new(false),
            launcher: StdMutex::new(launcher),
            invalidate_imports: AtomicBool::new(false),
            restarting: AtomicBool::new(false),
            env_error: StdMutex::new(None),
            slot: tokio::sync::Mutex::new(Slot::default()),
            current: StdMutex::new(None),
            waiting: AtomicUsize::new(0),
            max_queue,
        })
    }

    /// A copy of the launcher's settings.
    pub fn launcher(&self) -> Option<LocalLauncher> {
        self.launcher.lock().ok().map(|l| l.clone())
    }

    /// Makes the next call clear the kernel's import caches (new packages importable at once).
    pub fn invalidate_imports(&self) {
        self.invalidate_imports.store(true, Ordering::SeqCst);
    }

    /// Sets the interpreter once the environment is ready (first run), without a restart.
    pub fn set_python(&self, python: PathBuf, paths: Vec<PathBuf>) {
        if let Ok(mut l) = self.launcher.lock() {
            l.python = python;
            if let Some(sb) = l.sandbox.as_mut() {
                sb.python_paths = paths;
            }
        }
    }

    /// Records that the environment could not be created, for every later call to report.
    pub fn set_env_error(&self, reason: String) {
        if let Ok(mut e) = self.env_error.lock() {
            *e = Some(reason);
        }
    }

    /// Switches to another interpreter and restarts the kernel in it. `paths` are the folders
    /// that interpreter reads from; the sandbox must let the new kernel read them.
    pub async fn switch_python(
        &self,
        python: PathBuf,
        paths: Vec<PathBuf>,
    ) -> Result<Duration, KernelError> {
        if let Ok(mut l) = self.launcher.lock() {
            l.python = python;
            if let Some(sb) = l.sandbox.as_mut() {
                sb.python_paths = paths;
            }
        }
        self.restart().await
    }

    /// Evaluates an expression in the kernel if it becomes free within `wait`.
    pub async fn evaluate(&self, expr: &str, wait: Duration) -> Result<String, KernelError> {
        let slot = tokio::time::timeout(wait, self.slot.lock())
            .await
            .map_err(|_| KernelError::Busy {
                queued: self.waiting.load(Ordering::SeqCst),
            })?;
        let k = slot
            .kernel
            .clone()
            .ok_or_else(|| KernelError::Unavailable {
                reason: "no kernel is running".into(),
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

    /// Starts a spare kernel in the background if one is wanted and none is there or coming.
    fn refill_spare(&self) {
        if !self.spare_cfg.enabled || self.spare_filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let has = self.spare.lock().map(|s| s.is_some()).unwrap_or(true);
        let Some(me) = self.me.upgrade().filter(|_| !has) else {
            self.spare_filling.store(false, Ordering::SeqCst);
            return;
        };
        tokio::spawn(async move {
            let result = async {
                let launcher = me.launcher()?;
                let k = Kernel::start(&launcher).await.ok()?;
                if let Some(code) = &me.spare_cfg.preload {
                    if let Err(e) = k.run_silent(code, Duration::from_secs(120)).await {
                        tracing::warn!(error = %e, "spare kernel preload failed");
                    }
                }
                Some(Spare {
                    kernel: k,
                    python: launcher.python,
                })
            }
            .await;
            match result {
                Some(spare) => {
                    tracing::info!(pid = spare.kernel.pid(), "spare kernel ready");
                    if let Ok(mut s) = me.spare.lock() {
                        *s = Some(spare);
                    }
                }
                None => tracing::warn!("could not start a spare kernel"),
            }
            me.spare_filling.store(false, Ordering::SeqCst);
        });
    }

    /// Takes the spare if it is alive and runs the interpreter wanted.
    fn take_spare(&self, python: &std::path::Path) -> Option<Kernel> {
        let spare = self.spare.lock().ok()?.take()?;
        (spare.python == python && spare.kernel.exited().is_none()).then_some(spare.kernel)
    }

    fn set_current(&self, k: Option<Arc<Kernel>>) {
        if let Ok(mut c) = self.current.lock() {
            *c = k;
        }
    }

    fn current(&self) -> Option<Arc<Kernel>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    async fn start_into(&self, slot: &mut Slot) -> Result<Arc<Kernel>, KernelError> {
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(KernelError::Unavailable {
                    reason: format!(
                        "{}; the next start attempt is in {:.0} s",
                        slot.last_error,
                        (at - now).as_secs_f64().ceil()
                    ),
                });
            }
        }
        let launcher = self.launcher().ok_or_else(|| KernelError::Unavailable {
            reason: "launcher state is poisoned".into(),
        })?;
        if launcher.python.as_os_str().is_empty() {
            // First run: the managed environment is still being created in the background.
            let reason = match self.env_error.lock().ok().and_then(|e| e.clone()) {
                Some(e) => format!("the Python environment could not be created: {e}"),
                None => "the Python environment is being created (first run: ipykernel, numpy, pandas, matplotlib; about a minute); try again shortly. The file tools work meanwhile".into(),
            };
            return Err(KernelError::Unavailable { reason });
        }
        let (started, fresh) = match self.take_spare(&launcher.python) {
            Some(k) => {
                tracing::info!(pid = k.pid(), "swapped in the warm spare kernel");
                (Ok(k), false)
            }
            None => (Kernel::start(&launcher).await, true),
        };
        match started {
            Ok(k) => {
                let k = Arc::new(k);
                if fresh {
                    preload_in_background(&k, self.spare_cfg.preload.clone());
                }
                slot.kernel = Some(k.clone());
                slot.retry_at = None;
                self.set_current(Some(k.clone()));
                self.refill_spare();
                Ok(k)
            }
            Err(e) => {
                slot.failures += 1;
                let backoff = Duration::from_secs(1u64 << slot.failures.min(5)).min(MAX_BACKOFF);
                slot.retry_at = Some(Instant::now() + backoff);
                let reason = match e {
                    KernelError::Unavailable { reason } => reason,
                    other => other.to_string(),
                };
                slot.last_error = reason.clone();
                tracing::error!(%reason, failures = slot.failures, "kernel start failed");
                Err(KernelError::Unavailable { reason })
            }
        }
    }

    /// Makes sure a live kernel is in the slot, restarting one that died since the last call.
    async fn ensure(
        &self,
        slot: &mut Slot,
        report: &mut Report,
    ) -> Result<Arc<Kernel>, KernelError> {
        if let Some(k) = &slot.kernel {
            match k.exited() {
                None => return Ok(k.clone()),
                Some(cause) => {
                    if k.age() < EARLY_DEATH {
                        slot.failures += 1;
                    }
                    report.notes.push(format!(
                        "The kernel had died since the last call ({cause}); a new kernel was started and all variables were lost."
                    ));
                    report.state_lost = true;
                    slot.kernel = None;
                    self.set_current(None);
                }
            }
        }
        self.start_into(slot).await
    }

    /// Kills the slot's kernel and starts a fresh one.
    async fn replace(&self, slot: &mut Slot) -> Result<Arc<Kernel>, KernelError> {
        if let Some(old) = slot.kernel.take() {
            self.set_current(None);
            old.kill();
        }
        self.start_into(slot).await
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
            return Err(KernelError::Busy { queued });
        }
        let mut slot = tokio::select! {
            s = self.slot.lock() => s,
            _ = cancel.cancelled() => return Err(KernelError::Unavailable { reason: "the call was cancelled while waiting for the kernel".into() }),
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
                    reason: format!(
                        "lost the connection to the kernel ({e}); it was stopped, all variables were lost, and the next call starts a new kernel"
                    ),
                });
            }
        };
        match &exec.ending {
            Ending::Completed | Ending::Interrupted { .. } => {
                slot.failures = 0;
            }
            Ending::Unresponsive { reason } => {
                let why = match reason {
                    StopReason::Timeout => {
                        format!("timed out after {:.0} s", limits.timeout.as_secs_f64())
                    }
                    StopReason::Cancelled => "was cancelled".to_owned(),
                };
                tracing::warn!("kernel ignored the interrupt; killing and restarting it");
                report.state_lost = true;
                match self.replace(&mut slot).await {
                    Ok(_) => report.notes.push(format!(
                        "The code {why} and did not stop when interrupted, so the kernel was killed and restarted; all variables were lost."
                    )),
                    Err(e) => report.notes.push(format!(
                        "The code {why} and did not stop when interrupted, so the kernel was killed; all variables were lost, and a new kernel could not be started: {e}."
                    )),
                }
            }
            Ending::Died { .. } if self.restarting.load(Ordering::SeqCst) => {
                // restart_kernel killed it on purpose and starts the next kernel itself.
                report.state_lost = true;
                slot.kernel = None;
                self.set_current(None);
                report.notes.push(
                    "restart_kernel was called while this code ran: the kernel was restarted and all variables were lost."
                        .to_owned(),
                );
            }
            Ending::Died { cause } => {
                report.state_lost = true;
                if kernel.age() < EARLY_DEATH {
                    slot.failures += 1;
                }
                slot.kernel = None;
                self.set_current(None);
                match self.start_into(&mut slot).await {
                    Ok(_) => report.notes.push(format!(
                        "The kernel died while running this code ({cause}); it was restarted and all variables were lost."
                    )),
                    Err(e) => report.notes.push(format!(
                        "The kernel died while running this code ({cause}); all variables were lost and it could not be restarted: {e}."
                    )),
                }
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

    /// Kills the kernel (ending any running call) and starts a fresh one.
    pub async fn restart(&self) -> Result<Duration, KernelError> {
        let t = Instant::now();
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
        Ok(t.elapsed())
    }

    /// kernel_info of the running kernel, starting one if needed.
    pub async fn info(&self) -> Result<(KernelInfoReply, i32), KernelError> {
        let mut slot = self.slot.lock().await;
        let mut report = Report::default();
        let k = self.ensure(&mut slot, &mut report).await?;
        Ok((k.info().clone(), k.pid()))
    }

    /// What the sandbox enforces for the running kernel.
    pub fn sandbox(&self) -> Option<sandbox::Status> {
        self.current().and_then(|k| k.sandbox().cloned())
    }

    /// The heartbeat of the running kernel, if one runs.
    pub fn heartbeat(&self) -> Option<crate::wire::Heartbeat> {
        self.current().map(|k| k.heartbeat())
    }

    /// The pid of the running kernel, if one runs.
    pub fn pid(&self) -> Option<i32> {
        self.current()
            .filter(|k| k.exited().is_none())
            .map(|k| k.pid())
    }

    /// Shuts the kernel down cleanly (bounded), then kills what is left.
    pub async fn shutdown(&self) {
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        // Dropping a kernel kills its process group and removes its runtime dir.
        drop(spare);
        if let Some(k) = self.current() {
            k.shutdown().await;
        }
        self.set_current(None);
        if let Ok(mut slot) = self.slot.try_lock() {
            slot.kernel = None;
        }
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
