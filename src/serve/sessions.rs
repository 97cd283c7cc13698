//! Sessions of the HTTP transport: one kernel handle, workspace folder and tool server per MCP
//! session, a pool of warm spares, idle reaping and revival (`revive.rs`). The MCP handler that
//! routes each request to its session lives in `front.rs`; HTTP itself (auth, headers, the
//! listener) in `http.rs`. Sessions prepared ahead (the pool's kernels) are in
//! `sessions/prepared.rs`, one session's own state and its reports in `sessions/hosted.rs`.

mod hosted;
mod prepared;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use crate::error::SessionEnd;
use crate::error::{Closing, KernelError};
use crate::kernel::{Backend, KernelHandle, LocalLauncher, SpareConfig, SparePool};
use crate::tools::{Environments, Server, Settings};
use crate::workspace::Workspace;
pub(super) use hosted::log_name;
pub use hosted::{Era, HostedSession, Streams};
use prepared::Prepared;

/// The tool argument that carries a 2026-07-28 session handle.
pub const SESSION_ARG: &str = "session";
/// The tool that mints a session handle.
pub const NEW_SESSION_TOOL: &str = "new_session";
/// The tool that ends a handle-era session.
pub const END_SESSION_TOOL: &str = "end_session";
/// The HTTP header of a 2025-11-25 MCP session.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// Where each session's kernel comes from.
#[derive(Clone)]
pub enum KernelSource {
    /// A local kernel; the launcher's `workspace` is replaced by the session's folder.
    Local(Box<LocalLauncher>),
    /// A backend of its own per session (a Jupyter gateway: each session's kernel lives there).
    Remote(Arc<dyn Fn() -> Result<Arc<dyn Backend>, KernelError> + Send + Sync>),
}

impl KernelSource {
    /// A handle for one session working in `workspace`; its kernel is not started yet.
    pub fn handle(
        &self,
        workspace: &std::path::Path,
        max_queue: usize,
    ) -> Result<Arc<KernelHandle>, KernelError> {
        // Each session's restarts are cold: a spare per session would double the kernels.
        Ok(match self {
            KernelSource::Local(l) => {
                let mut launcher = (**l).clone();
                launcher.workspace = workspace.to_path_buf();
                KernelHandle::new(launcher, max_queue, SpareConfig::default())
            }
            KernelSource::Remote(make) => {
                KernelHandle::with_backend(make()?, max_queue, SpareConfig::default())
            }
        })
    }
}

/// What every session's kernel and tools are built from.
pub struct SessionTemplate {
    /// Where each session's kernel comes from.
    pub kernels: KernelSource,
    pub max_queue: usize,
    pub settings: Settings,
    pub envs: Environments,
    /// Pre-import numpy, pandas and matplotlib in a spare kernel before a session takes it.
    pub preload: bool,
}

/// Limits and layout of the sessions.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Most sessions at once (MCP sessions and handles together).
    pub max_sessions: usize,
    /// A session with no request for this long is ended.
    pub idle_timeout: Duration,
    /// Every session works in the workspace root instead of its own folder.
    pub shared_workspace: bool,
    /// Warm kernels kept started for sessions to come.
    pub spares: usize,
}

/// All sessions of one server, and the spares waiting for new ones.
pub struct Registry {
    me: Weak<Registry>,
    pub(super) template: SessionTemplate,
    root: Arc<Workspace>,
    pub(super) limits: SessionLimits,
    sessions: Mutex<HashMap<String, Arc<HostedSession>>>,
    /// Prepared sessions (`--spares` of them), the same pool type as a handle's spare kernel.
    pool: SparePool<Prepared>,
    /// Handle sessions' folders, for the next server (with snapshots on, each session in a
    /// folder of its own, local kernels).
    book: Option<super::revive::Book>,
    stopping: AtomicBool,
    /// MCP sessions evicted by the registry whose rmcp session is still to be closed (by the
    /// reaper, see `Manager::reap`).
    evicted: Mutex<Vec<String>>,
    evicted_changed: tokio::sync::Notify,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the server already runs {max} sessions, its limit (--max-sessions); {}", next_free_words(*next, *grace))]
    Full {
        max: usize,
        /// Seconds until a session becomes idle long enough to give way, when one can.
        next: Option<u64>,
        /// How long a session must be idle to give way.
        grace: Duration,
    },
    #[error("the server is shutting down")]
    Stopping,
    #[error("could not create the session's workspace folder: {0}")]
    Workspace(String),
}

/// How long a session must have been idle (no call or run in flight) before a new one may
/// take its slot at --max-sessions: a fresh session of another client is never ended. With a
/// short --session-idle-timeout it is half that timeout (see [`Registry::evict_grace`]).
pub const EVICT_GRACE: Duration = Duration::from_secs(60);

/// When the next slot frees, in words; `grace` is [`Registry::evict_grace`].
pub fn next_free_words(next: Option<u64>, grace: Duration) -> String {
    match next {
        Some(0) => "try again now".to_owned(),
        Some(s) => format!(
            "the least recently used idle session gives way in about {s} s (after {} s without a call); try again then, or end a session (end_session, or DELETE for an MCP session)",
            grace.as_secs_f64().ceil()
        ),
        None => "every session has a call or a run going (check_run follows runs that outlived their call); try again when one ends, or end a session (end_session, or DELETE for an MCP session)".to_owned(),
    }
}

/// Python that pre-imports the analysis stack (an expression, for `KernelHandle::evaluate`).
const PRELOAD_EXPR: &str =
    "[__import__(m) for m in ('numpy', 'pandas', 'matplotlib.pyplot')] and None";

/// Seconds until one of `sessions` may give way after `grace` idle (`None`: all have a call
/// or run going).
fn next_evictable<'a>(
    sessions: impl Iterator<Item = &'a Arc<HostedSession>>,
    grace: Duration,
) -> Option<u64> {
    sessions
        .filter(|s| !s.busy())
        .map(|s| grace.saturating_sub(s.idle_for()).as_secs() + 1)
        .min()
}

impl Registry {
    /// A registry for sessions under `root`; starts the spare kernels.
    pub fn new(
        template: SessionTemplate,
        root: Arc<Workspace>,
        limits: SessionLimits,
    ) -> Arc<Self> {
        let spares = limits.spares;
        let book = (template.settings.snapshot_max.is_some()
            && !limits.shared_workspace
            && matches!(template.kernels, KernelSource::Local(_)))
        .then(crate::pyenv::data_dir)
        .and_then(Result::ok)
        .and_then(|d| match super::revive::Book::open(&d, root.root()) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "handle sessions will not outlive the server");
                None
            }
        });
        if let Some(b) = &book {
            let gone = b.sweep(limits.idle_timeout);
            if gone > 0 {
                tracing::info!(
                    sessions = gone,
                    "forgot sessions of an earlier server older than the idle timeout"
                );
            }
        }
        let reg = Arc::new_cyclic(|me| Registry {
            me: me.clone(),
            template,
            root,
            limits,
            sessions: Mutex::new(HashMap::new()),
            pool: SparePool::new(spares),
            book,
            stopping: AtomicBool::new(false),
            evicted: Mutex::new(Vec::new()),
            evicted_changed: tokio::sync::Notify::new(),
        });
        reg.fill_pool();
        reg
    }

    /// The limits the registry was built with.
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// How long a session must be idle before a new one may take its slot: [`EVICT_GRACE`],
    /// or half the idle timeout when that is shorter, since the session would be ended for
    /// idling soon after anyway (a newcomer need not wait for the reaper).
    pub fn evict_grace(&self) -> Duration {
        EVICT_GRACE.min(self.limits.idle_timeout / 2)
    }

    /// Takes the MCP sessions (`Mcp-Session-Id`) the registry ended on its own (evicted for a
    /// newcomer), so rmcp's session ends too: its client then gets 404 and starts anew.
    pub(super) fn take_evicted(&self) -> Vec<String> {
        self.evicted
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// Resolves when [`Registry::take_evicted`] has something (or had since it was last
    /// called).
    pub(super) async fn evicted_notified(&self) {
        self.evicted_changed.notified().await
    }

    /// How many sessions are open.
    pub fn count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// `Some(next)` when a new session would be refused (idle sessions give way; see `open`),
    /// with the seconds until one can.
    pub fn full(&self) -> Option<Option<u64>> {
        let m = self.sessions.lock().ok()?;
        let grace = self.evict_grace();
        if m.len() < self.limits.max_sessions || m.values().any(|s| s.evictable(grace)) {
            return None;
        }
        Some(next_evictable(m.values(), grace))
    }

    /// The open session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<HostedSession>> {
        self.sessions.lock().ok()?.get(id).cloned()
    }

    /// Marks a session as used now.
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.get(id) {
            s.touch();
        }
    }

    /// Pids of the kernels of open sessions and spares (for tests and the log).
    pub fn kernel_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .sessions
            .lock()
            .map(|s| s.values().filter_map(|s| s.kernel.pid()).collect())
            .unwrap_or_default();
        pids.extend(self.pool.inspect(|p| p.kernel.pid()));
        pids
    }

    /// Opens a session named `id`, on a warm spare when one is ready. At the limit, the least
    /// recently used orphaned session (started by a call without `session`, never used again,
    /// nothing running) is ended to make room; otherwise the server is full.
    pub fn open(
        &self,
        id: String,
        era: Era,
        implicit: bool,
    ) -> Result<Arc<HostedSession>, OpenError> {
        self.open_on(id, era, implicit, None)
    }

    /// A handle session of an earlier server, back in its folder with its variables (restored
    /// before its first call), if the handle was known alive within the idle timeout.
    pub fn revive(&self, handle: &str) -> Result<Option<Arc<HostedSession>>, OpenError> {
        let Some(book) = &self.book else {
            return Ok(None);
        };
        let Some(folder) = book.find(handle, self.limits.idle_timeout) else {
            return Ok(None);
        };
        let dir = self.root.root().join(&folder);
        if !dir.is_dir() {
            book.forget(handle);
            return Ok(None);
        }
        let prepared = self.prepare_in(Some(dir))?;
        let s = self.open_on(handle.to_owned(), Era::Handle, false, Some(prepared))?;
        tracing::info!(session = %s.log_name(), "session of an earlier server back in its folder");
        Ok(Some(s))
    }

    /// Records that a handle session is alive, for the next server (at most once a minute
    /// unless `now`).
    pub(super) fn remember_now(&self, s: &HostedSession, now: bool) {
        let (Some(book), Era::Handle, Some(folder)) = (&self.book, s.era, &s.folder) else {
            return;
        };
        if s.closed.load(Ordering::SeqCst) && !now {
            return;
        }
        if let Ok(mut at) = s.remembered.lock() {
            if !now && at.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *at = Some(Instant::now());
        }
        if let Some(name) = folder.file_name().and_then(|n| n.to_str()) {
            book.remember(&s.id, name);
        }
    }

    fn open_on(
        &self,
        id: String,
        era: Era,
        implicit: bool,
        prepared: Option<Prepared>,
    ) -> Result<Arc<HostedSession>, OpenError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(OpenError::Stopping);
        }
        let mut evicted = None;
        let session = {
            let mut sessions = self.sessions.lock().map_err(|_| OpenError::Stopping)?;
            // Two calls reviving the same handle at once (parallel calls right after a
            // restart): the second gets the session the first opened, and its kernel stops.
            if let Some(existing) = sessions.get(&id) {
                let existing = existing.clone();
                if let Some(p) = prepared {
                    tokio::spawn(async move { p.kernel.shutdown().await });
                }
                return Ok(existing);
            }
            if sessions.len() >= self.limits.max_sessions {
                let grace = self.evict_grace();
                // Least recently used first, among those that may give way.
                let oldest = sessions
                    .values()
                    .filter(|s| s.evictable(grace))
                    .max_by_key(|s| s.idle_for())
                    .map(|s| s.id.clone());
                let Some(old) = oldest.and_then(|o| sessions.remove(&o)) else {
                    return Err(OpenError::Full {
                        max: self.limits.max_sessions,
                        next: next_evictable(sessions.values(), grace),
                        grace,
                    });
                };
                evicted = Some(old);
            }
            // A spare whose kernel runs already, else one still starting, else a new one.
            let spare = match prepared {
                Some(p) => Some(p),
                None => self.pool.take(|s| s.kernel.pid().is_some()),
            };
            let spare_was_ready = spare.is_some();
            let spare = match spare.or_else(|| self.pool.take(|_| true)) {
                Some(s) => s,
                None => self.prepare()?,
            };
            // Only a handle session can come back to a later server, so only its variables
            // are snapshotted.
            let mut settings = self.template.settings.clone();
            if era != Era::Handle || self.book.is_none() {
                settings.snapshot_max = None;
            }
            let server = Server::new(
                spare.kernel.clone(),
                spare.workspace.clone(),
                settings,
                self.template.envs.clone(),
            )
            .in_http_session(&id)
            .with_tasks();
            // Handles name no MCP session, and resources are served per MCP session.
            let server = if era == Era::Handle {
                server.without_resource_links()
            } else {
                server
            };
            let s = Arc::new(HostedSession {
                id: id.clone(),
                era,
                server,
                kernel: spare.kernel,
                folder: spare.folder,
                started: Instant::now(),
                last_used: Mutex::new(Instant::now()),
                // An implicit session is opened for a call about to run: count it as running
                // from the start, so it is never mistaken for an orphan before the call begins.
                active: AtomicUsize::new(usize::from(implicit)),
                closed: AtomicBool::new(false),
                implicit,
                calls: AtomicUsize::new(0),
                remembered: Mutex::new(None),
                runs_settled: Mutex::new(1),
                streams: Arc::new(Streams::default()),
            });
            sessions.insert(id.clone(), s.clone());
            self.remember_now(&s, true);
            tracing::info!(
                session = %s.log_name(),
                kind = era.describe(),
                workspace = %s.server.workspace_root().display(),
                warm_kernel = spare_was_ready,
                open = sessions.len(),
                "session opened"
            );
            s
        };
        if let Some(old) = evicted {
            old.closed.store(true, Ordering::SeqCst);
            tracing::info!(session = %old.log_name(), idle_seconds = old.idle_for().as_secs(), "session ended: --max-sessions reached and it was the least recently used idle one");
            self.forget(&old);
            if old.era == Era::Legacy {
                if let Ok(mut e) = self.evicted.lock() {
                    e.push(old.id.clone());
                }
                // A stored permit: the reaper sees it even if it is busy right now.
                self.evicted_changed.notify_one();
            }
            tokio::spawn(async move {
                old.kernel
                    .shutdown_for(Closing::SessionEnded(SessionEnd::Evicted))
                    .await;
                old.server.session().forget_snapshot();
                remove_if_empty(old.folder.as_ref());
            });
        }
        if let Some(me) = self.me.upgrade() {
            // Starting the next spare does file work; keep it off the caller's path.
            tokio::task::spawn_blocking(move || me.fill_pool());
        }
        Ok(session)
    }

    /// Ends a session: its kernel and every process it started stop; files stay on disk.
    pub fn close(&self, id: &str, why: SessionEnd) {
        let Some(s) = self.sessions.lock().ok().and_then(|mut m| m.remove(id)) else {
            return;
        };
        s.closed.store(true, Ordering::SeqCst);
        let why = Closing::SessionEnded(why);
        tracing::info!(session = %s.log_name(), reason = %why, lived_seconds = s.started.elapsed().as_secs(), "session ended");
        self.forget(&s);
        tokio::spawn(async move {
            s.kernel.shutdown_for(why).await;
            // Ended on purpose: its variables are not for a later server.
            s.server.session().forget_snapshot();
            remove_if_empty(s.folder.as_ref());
            tracing::debug!(session = %s.log_name(), "session folder tidied");
        });
    }

    /// A session that ended is not revived by a later server.
    fn forget(&self, s: &HostedSession) {
        if let (Some(book), Era::Handle) = (&self.book, s.era) {
            book.forget(&s.id);
        }
    }

    /// Sessions without a request (and no call or run going) for longer than the idle timeout.
    pub(super) fn idle(&self) -> Vec<(String, Era)> {
        self.sessions
            .lock()
            .map(|m| {
                m.values()
                    .filter(|s| !s.busy() && s.idle_for() > self.limits.idle_timeout)
                    .map(|s| (s.id.clone(), s.era))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends every session and spare and waits for their kernels to stop.
    /// The response streams of every session (see [`Streams`]).
    pub fn streams(&self) -> Vec<Arc<Streams>> {
        self.sessions
            .lock()
            .map(|m| m.values().map(|s| s.streams()).collect())
            .unwrap_or_default()
    }

    pub async fn shutdown_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<HostedSession>> = self
            .sessions
            .lock()
            .map(|mut m| m.drain().map(|(_, s)| s).collect())
            .unwrap_or_default();
        let spares: Vec<Prepared> = self.pool.drain();
        // An orderly stop keeps each handle session's variables for the next server (as a
        // stdio session's are kept at exit), all at once, each bounded like stdio's.
        futures::future::join_all(sessions.iter().map(|s| async move {
            let snap = s.server.session().snapshot_at_exit();
            match tokio::time::timeout(Duration::from_secs(120), snap).await {
                Ok(Some(Ok(what))) => {
                    tracing::info!(session = %s.log_name(), "at exit: {what}");
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(session = %s.log_name(), "at exit: no snapshot: {e}");
                }
                Ok(None) => {}
                Err(_) => tracing::warn!(session = %s.log_name(), "at exit: the snapshot took over 120 s and was abandoned"),
            }
            self.remember_now(s, true);
        }))
        .await;
        let mut ends = Vec::new();
        for s in sessions {
            s.closed.store(true, Ordering::SeqCst);
            tracing::info!(session = %s.log_name(), "session ended: server stopping");
            ends.push((s.kernel.clone(), s.folder.clone()));
        }
        for p in spares {
            ends.push((p.kernel, p.folder));
        }
        futures::future::join_all(ends.into_iter().map(|(k, folder)| async move {
            k.shutdown().await;
            remove_if_empty(folder.as_ref());
        }))
        .await;
    }
}

/// Removes a session folder the session left empty (files a session wrote are kept).
fn remove_if_empty(folder: Option<&PathBuf>) {
    if let Some(f) = folder {
        // Inside the folder the kernel may have put links to elsewhere: never followed.
        let _ = crate::workspace::remove_below(f, ".kernel-mcp/outputs", false);
        let _ = crate::workspace::remove_below(f, ".kernel-mcp", false);
        let _ = std::fs::remove_dir(f);
    }
}
