//! One hosted session: its kernel, workspace folder and tool server, how long it has been
//! idle, whether runs are still live in it, and the facts a session reports about itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResponse, ContentBlock as Content};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::kernel::KernelHandle;
use crate::tools::Server;

/// How a session is named by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// A 2025-11-25 session: the `Mcp-Session-Id` of the HTTP transport.
    Legacy,
    /// A 2026-07-28 handle passed as the `session` tool argument.
    Handle,
}

impl Era {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Era::Legacy => "MCP session (Mcp-Session-Id)",
            Era::Handle => "session handle (the `session` tool argument)",
        }
    }
}

/// One session: its kernel, its workspace and the tool server over them.
pub struct HostedSession {
    pub id: String,
    pub era: Era,
    pub(in crate::serve) server: Server,
    pub(super) kernel: Arc<KernelHandle>,
    pub(super) folder: Option<PathBuf>,
    pub(super) started: Instant,
    pub(super) last_used: Mutex<Instant>,
    pub(in crate::serve) active: AtomicUsize,
    pub(super) closed: AtomicBool,
    /// Started by a handle-era call made without `session` (not by new_session or initialize).
    pub(super) implicit: bool,
    /// Tool calls made in the session.
    pub(super) calls: AtomicUsize,
    /// When the revival book last recorded the session alive.
    pub(super) remembered: Mutex<Option<Instant>>,
    /// The session's runs numbered below this have ended (see [`HostedSession::runs_live`]).
    pub(super) runs_settled: Mutex<u64>,
    /// Its requests' response streams still open (over HTTP, an MCP session's).
    pub(super) streams: Arc<Streams>,
}

/// Counts the response streams of a session's requests still open, so that ending the
/// session can wait for their answers before rmcp drops its side (a DELETE while a call runs
/// would otherwise end that call's stream with no response at all).
#[derive(Default)]
pub struct Streams {
    open: AtomicUsize,
    closed: tokio::sync::Notify,
}

/// One open response stream (see [`Streams`]); closed when dropped.
pub struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl Streams {
    /// Waits until no stream is open, at most `within`; false when some still were.
    pub async fn all_closed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl HostedSession {
    /// A session a forgetful client started and never came back to: given up first when the
    /// server is full.
    pub(super) fn orphaned(&self) -> bool {
        self.implicit
            && self.calls.load(Ordering::SeqCst) <= 1
            && self.active.load(Ordering::SeqCst) == 0
    }

    /// May give its slot to a new session: nothing running, and either an orphan or idle for
    /// longer than `grace` (clients that open, call and leave never end their sessions).
    pub(super) fn evictable(&self, grace: Duration) -> bool {
        !self.busy() && (self.orphaned() || self.idle_for() >= grace)
    }

    /// Something runs for the session: a tool call, or a run that outlived its call's
    /// `return_after` or waits in its queue (its client comes back for it with check_run, so
    /// ending the session would lose the work). While a run is live the session counts as used
    /// now, so its idle time starts when its last run ends, not when the call returned.
    pub(super) fn busy(&self) -> bool {
        if self.active.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let live = self.runs_live();
        if live {
            self.touch();
        }
        live
    }

    /// Whether a run of the session is queued or going. Runs are numbered from 1 and end in
    /// any order; those below `runs_settled` are known ended (a run never restarts), so each
    /// check looks only at runs from the oldest one still live on.
    pub(super) fn runs_live(&self) -> bool {
        let runs = self.server.session().runs();
        let Some(latest) = runs.latest() else {
            return false;
        };
        let mut first = self.runs_settled.lock().unwrap_or_else(|p| p.into_inner());
        // `None`: forgotten, which only a reported (so ended) run is.
        while *first <= latest && runs.ended(*first) != Some(false) {
            *first += 1;
        }
        *first <= latest
    }

    /// How the log names the session: an MCP session id in full, a handle by its first 12
    /// characters (a handle is the session's credential; the log is not a place for it).
    pub fn log_name(&self) -> String {
        log_name(&self.id, self.era)
    }

    pub(in crate::serve) fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    pub(super) fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Counts a response stream of this session's as open until the returned guard drops.
    pub fn stream_opened(&self) -> OpenStream {
        self.streams.open.fetch_add(1, Ordering::SeqCst);
        OpenStream(self.streams.clone())
    }

    /// The session's open response streams.
    pub(in crate::serve) fn streams(&self) -> Arc<Streams> {
        self.streams.clone()
    }

    /// The pid of the session's kernel, if one runs.
    pub fn kernel_pid(&self) -> Option<i32> {
        self.kernel.pid()
    }

    /// Runs a tool call in this session, keeping it alive while the call runs.
    pub(in crate::serve) async fn call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
        idle_timeout: Duration,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.clone();
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
        let result = ServerHandler::call_tool(&self.server, request, ctx).await;
        self.touch();
        self.active.fetch_sub(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            // A call queued behind the session's end may have started a new kernel: end it too.
            self.kernel.shutdown().await;
        }
        let mut result = result?;
        if tool == "get_environment" {
            if let CallToolResponse::Complete(r) = &mut result {
                r.content.push(Content::text(self.facts(idle_timeout)));
            }
        }
        Ok(result)
    }

    pub(super) fn facts(&self, idle_timeout: Duration) -> String {
        let v = serde_json::json!({
            "session": {
                "id": self.id,
                "kind": self.era.describe(),
                "age_seconds": self.started.elapsed().as_secs(),
                "ends_after_idle_seconds": idle_timeout.as_secs(),
                "own_workspace_folder": self.folder.is_some(),
            }
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

pub(in crate::serve) fn log_name(id: &str, era: Era) -> String {
    match era {
        Era::Legacy => id.to_owned(),
        Era::Handle => format!("handle:{}…", id.chars().take(12).collect::<String>()),
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn open(s: &Arc<Streams>) -> OpenStream {
        s.open.fetch_add(1, Ordering::SeqCst);
        OpenStream(s.clone())
    }

    #[tokio::test]
    async fn ending_waits_for_open_streams_and_no_longer() {
        let s = Arc::new(Streams::default());
        assert!(s.all_closed(Duration::ZERO).await);
        let (a, b) = (open(&s), open(&s));
        drop(a);
        // One still open: not closed within the bound.
        assert!(!s.all_closed(Duration::from_millis(20)).await);
        // Closed while waited for: seen at once (the bound is far away).
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.all_closed(Duration::from_secs(60)).await }
        });
        drop(b);
        assert!(tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .is_ok_and(|r| r.is_ok_and(|closed| closed)));
    }
}
