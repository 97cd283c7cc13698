//! One running kernel, whatever backend started it: start-up handshake, execute with
//! correlation by msg_id, silent helpers. Talks through `Channels` and watches `Lifecycle`;
//! knows nothing about MCP or HTTP. The one look at processes is `new_processes` (what a call
//! left running under a local kernel), through `crate::process`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backend::{Channels, Gone, Lifecycle};
use crate::error::KernelError;
use crate::wire::message::{ExecuteReply, ExecuteRequest, KernelInfoReply};
use crate::wire::{Channel, Content, ExecutionState, Message};

/// Python run silently in every new IPython kernel (see the file for why).
const STARTUP_CODE: &str = include_str!("../../kernel-spec/startup.py");

/// How long silent code that ran out of time gets, once interrupted, to give the kernel back.
const SILENT_GRACE: Duration = Duration::from_secs(5);

/// Receives a running execution's output, in kernel order.
pub trait OutputSink: Send {
    /// One IOPub output message (stream, display_data, execute_result, error, clear_output...).
    fn output(&mut self, content: &Content);
    /// Called about once a second while the cell runs, when progress was asked for.
    fn tick(&mut self, _elapsed: Duration) {}
}

/// Why an execution stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Timeout,
    Cancelled,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Reply and idle both arrived.
    Completed,
    /// Stopped by an interrupt that the kernel honoured.
    Interrupted { reason: StopReason },
    /// The kernel ignored the interrupt for the whole grace period.
    Unresponsive { reason: StopReason },
    /// The kernel process died while running the cell.
    Died { cause: super::backend::Gone },
}

/// The result of one execute_request.
#[derive(Debug, Clone)]
pub struct Execution {
    pub reply: Option<ExecuteReply>,
    pub ending: Ending,
    pub elapsed: Duration,
    /// The request's IOPub `status: idle` never came, and a probe proved it was lost (see
    /// [`IDLE_PROBE_AFTER`]): the kernel dropped IOPub messages, so output may be missing.
    pub idle_lost: bool,
}

/// How long after a request's `execute_reply` kernel-mcp waits for its `status: idle` before
/// asking whether that idle was lost.
///
/// The kernel's IOPub is a ZeroMQ PUB socket, which drops messages for a subscriber that is
/// more than its high-water mark (1000 messages by default) behind, without telling anyone;
/// a flood of output can therefore lose the idle that ends the request, and waiting for it
/// would never end. The probe is a `kernel_info_request` on shell: the kernel handles it after
/// our request, and publishes its `status: busy` on the same IOPub socket after our idle
/// (messaging spec, "Kernel status": every shell request is wrapped in busy/idle), so once
/// any IOPub message for the probe arrives, our idle either came before it or was dropped.
/// Output queued before the probe's status still arrives first, so a slow reader loses none of
/// it. No timing decides the outcome: the wait only keeps probes away from calls that end
/// normally (their idle follows the reply within milliseconds), and output that keeps coming
/// (a thread still printing) does not postpone the probe.
const IDLE_PROBE_AFTER: Duration = Duration::from_millis(500);

/// An unanswered probe is sent again after this long (a kernel still flooding IOPub from a
/// background thread can drop the probe's status too).
const IDLE_PROBE_AGAIN: Duration = Duration::from_secs(2);

/// Limits for one execution.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    pub timeout: Duration,
    pub grace: Duration,
    pub progress: bool,
}

/// A started kernel: its channels, its lifecycle and what it told us about itself.
/// Field order is drop order: the channels close, then the lifecycle ends what it owns.
pub struct Kernel {
    chan: Arc<dyn Channels>,
    life: Box<dyn Lifecycle>,
    info: KernelInfoReply,
    started: Instant,
    /// Processes under the kernel at the last look (see [`Kernel::new_processes`]).
    known_processes: std::sync::Mutex<std::collections::BTreeSet<i32>>,
    /// The newest pid on the system at the last look (see `new_processes`).
    last_pid_seen: std::sync::Mutex<Option<i32>>,
}

impl Kernel {
    /// Completes the kernel_info handshake over `chan` (racing the kernel's death), then runs
    /// kernel-mcp's start-up code in IPython kernels.
    pub async fn connect(
        chan: Arc<dyn Channels>,
        life: Box<dyn Lifecycle>,
        started: Instant,
        deadline: Instant,
        hint: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Kernel, KernelError> {
        let kinfo = tokio::select! {
            r = handshake(&*chan, deadline) => r.map_err(|e| match e {
                KernelError::StartTimeout { .. } => KernelError::StartTimeout {
                    secs: deadline.saturating_duration_since(started).as_secs(),
                    detail: hint(),
                },
                other => other,
            })?,
            gone = life.gone() => return Err(KernelError::Unavailable {
                reason: match gone {
                    super::backend::Gone::Exited(cause) => {
                        crate::error::Unavailable::StartupExit { cause, stderr: hint() }
                    }
                    super::backend::Gone::Lost { reason } => {
                        crate::error::Unavailable::StartupLost { reason, stderr: hint() }
                    }
                },
            }),
        };
        // kernel-mcp's set-up code goes only into kernels it owns; a borrowed kernel is left as
        // its owner configured it.
        let kernel_startup = kinfo.implementation == "ipython" && life.owned();
        tracing::info!(
            pid = life.pid(),
            implementation = %kinfo.implementation,
            version = %kinfo.implementation_version,
            ms = started.elapsed().as_millis() as u64,
            "kernel ready"
        );
        let kernel = Kernel {
            chan,
            life,
            info: kinfo,
            started,
            known_processes: Default::default(),
            last_pid_seen: Default::default(),
        };
        if kernel_startup {
            if let Err(e) = kernel
                .run_silent(STARTUP_CODE, Duration::from_secs(30))
                .await
            {
                tracing::warn!(error = %e, "kernel start-up code failed; continuing without it");
            }
        }
        // The kernel itself (under the launch helper) is not something a call left behind.
        let _ = kernel.new_processes();
        Ok(kernel)
    }

    /// Runs code silently (no history, no execution count, no output kept) and waits for it.
    /// Past `limit` the code is interrupted (see [`SILENT_GRACE`]).
    pub async fn run_silent(&self, code: &str, limit: Duration) -> Result<(), KernelError> {
        self.silent(code, BTreeMap::new(), limit).await.map(|_| ())
    }

    /// Evaluates a Python expression silently and returns its `repr` (messaging spec,
    /// "Execute": `user_expressions` are evaluated after the code and returned in the reply).
    pub async fn evaluate(&self, expr: &str, limit: Duration) -> Result<String, KernelError> {
        let mut exprs = BTreeMap::new();
        exprs.insert("value".to_owned(), expr.to_owned());
        let reply = self.silent("", exprs, limit).await?;
        let v = reply.user_expressions.unwrap_or_default();
        let v = v.get("value").cloned().unwrap_or_default();
        match v
            .get("data")
            .and_then(|d| d.get("text/plain"))
            .and_then(|t| t.as_str())
        {
            Some(text) => Ok(text.to_owned()),
            None => Err(KernelError::HelperFailed {
                ename: v
                    .get("ename")
                    .and_then(|e| e.as_str())
                    .unwrap_or("an error")
                    .chars()
                    .take(100)
                    .collect(),
                evalue: v
                    .get("evalue")
                    .and_then(|e| e.as_str())
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect(),
            }),
        }
    }

    async fn silent(
        &self,
        code: &str,
        user_expressions: BTreeMap<String, String>,
        limit: Duration,
    ) -> Result<ExecuteReply, KernelError> {
        let msg = Message::request(
            self.chan.session(),
            Content::ExecuteRequest(ExecuteRequest {
                code: code.to_owned(),
                silent: true,
                store_history: false,
                user_expressions,
                allow_stdin: false,
                stop_on_error: false,
            }),
        );
        let mut sub = self.chan.subscribe(&msg.header.msg_id)?;
        self.chan.send(Channel::Shell, &msg).await?;
        match tokio::time::timeout(limit, self.silent_reply(&mut sub)).await {
            Ok(Ok(Some(r))) if r.status == crate::wire::message::ReplyStatus::Ok => Ok(r),
            Ok(Ok(r)) => Err(KernelError::Protocol(format!(
                "silent code failed: {}",
                r.and_then(|r| r.evalue).unwrap_or_default()
            ))),
            // (an Ok reply is matched above)
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // The code still runs in the kernel, and every later call would wait behind
                // it: interrupt it, and see whether the kernel comes back.
                self.interrupt().await;
                let freed = tokio::time::timeout(SILENT_GRACE, self.silent_reply(&mut sub))
                    .await
                    .is_ok_and(|r| r.is_ok());
                tracing::warn!(
                    secs = limit.as_secs(),
                    freed,
                    "silent code did not finish in time; interrupted"
                );
                Err(KernelError::SilentTimeout {
                    secs: limit.as_secs(),
                    freed,
                })
            }
        }
    }

    /// The reply to a silent request and its `idle`, or the kernel's end.
    async fn silent_reply(
        &self,
        sub: &mut crate::wire::Subscription,
    ) -> Result<Option<ExecuteReply>, KernelError> {
        let wait = async {
            let (mut reply, mut idle) = (None, false);
            let mut probe = IdleProbe::default();
            while reply.is_none() || !idle {
                tokio::select! {
                    biased;
                    m = sub.recv() => match m?.message.content {
                        Content::ExecuteReply(r) => {
                            reply = Some(r);
                            probe.arm();
                        }
                        Content::Status(s) if s.execution_state == ExecutionState::Idle => idle = true,
                        _ => {}
                    },
                    // The idle was lost in an IOPub flood (of a thread still printing).
                    _ = probe.lost(&*self.chan), if reply.is_some() => idle = true,
                }
            }
            Ok::<_, KernelError>(reply)
        };
        // A kernel that dies meanwhile never answers: end with it, not at the limit (a
        // snapshot's save waits up to 10 minutes, and holds the kernel's slot while it waits).
        tokio::select! {
            r = wait => r,
            gone = self.life.gone() => Err(KernelError::Unavailable {
                reason: crate::error::Unavailable::EndedDuringSilentCode {
                    cause: gone.to_string(),
                },
            }),
        }
    }

    /// What the sandbox enforces for this kernel (`None` when it runs unconfined).
    pub fn sandbox(&self) -> Option<&crate::sandbox::Status> {
        self.life.sandbox()
    }

    /// What the kernel said in kernel_info_reply.
    pub fn info(&self) -> &KernelInfoReply {
        &self.info
    }

    /// The latest heartbeat result (the kernel's heartbeat thread echoes even while a cell runs).
    pub fn heartbeat(&self) -> crate::wire::Heartbeat {
        self.chan.heartbeat()
    }

    /// The local process id, when the kernel is a local process.
    pub fn pid(&self) -> Option<i32> {
        self.life.pid()
    }

    /// The remote kernel id, when the kernel lives on a gateway.
    pub fn kernel_id(&self) -> Option<&str> {
        self.life.kernel_id()
    }

    /// How often the connection dropped and was re-established with the kernel kept.
    pub fn reconnects(&self) -> u32 {
        self.chan.reconnects()
    }

    /// Messages from the kernel dropped for breaking a limit, and why the last one was.
    pub fn dropped(&self) -> (u64, Option<String>) {
        self.chan.dropped()
    }

    /// How long ago this kernel was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Why the kernel is gone, if it is.
    pub fn exited(&self) -> Option<Gone> {
        self.life.is_gone()
    }

    /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when there are none).
    pub fn stderr_hint(&self) -> String {
        self.life.stderr_hint()
    }

    /// Processes under the kernel that were not there at the last look (pid and command
    /// line), still running: what a call left behind (pool workers, background subprocesses).
    pub fn new_processes(&self) -> Vec<(i32, String)> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        // Walking the tree reads a few /proc files per process and thread (~0.3 ms). When no
        // pid was handed out anywhere since the last look, no process can be new: skip it.
        let newest = crate::process::newest_pid();
        if let (Some(n), Ok(mut last)) = (newest, self.last_pid_seen.lock()) {
            if *last == Some(n) {
                return Vec::new();
            }
            *last = Some(n);
        }
        let now = crate::process::descendants(pid);
        let Ok(mut known) = self.known_processes.lock() else {
            return Vec::new();
        };
        // Named as the kernel sees them (its PID namespace), so code can act on them.
        let fresh = now
            .iter()
            .filter(|(pid, _)| !known.contains(pid))
            .map(|(pid, cmd)| (crate::process::pid_as_seen_inside(*pid), cmd.clone()))
            .collect();
        *known = now.into_keys().collect();
        fresh
    }

    /// Interrupts the running cell as the backend does it.
    pub async fn interrupt(&self) {
        self.life.interrupt(&*self.chan).await;
    }

    /// Stops the kernel at once (never one kernel-mcp does not own).
    pub fn kill(&self) {
        self.life.kill();
    }

    /// Stops the kernel cleanly within a bounded time (never one kernel-mcp does not own).
    pub async fn shutdown(&self) {
        self.life.shutdown(&*self.chan).await;
    }

    /// Runs `code`, streaming output to `sink`, until done, timed out, cancelled or dead.
    ///
    /// Done means both the shell `execute_reply` and the IOPub `status: idle` whose parent is
    /// our request have arrived (messaging spec, "Request-Reply" and "Kernel status"): output
    /// can trail the reply, so stopping at the reply would lose it.
    pub async fn execute(
        &self,
        code: &str,
        limits: &ExecLimits,
        cancel: &CancellationToken,
        sink: &mut dyn OutputSink,
    ) -> Result<Execution, KernelError> {
        let start = Instant::now();
        let msg = Message::request(
            self.chan.session(),
            Content::ExecuteRequest(ExecuteRequest {
                code: code.to_owned(),
                silent: false,
                store_history: true,
                user_expressions: BTreeMap::new(),
                // input() and getpass() raise StdinNotImplementedError at once instead of blocking.
                allow_stdin: false,
                // A failing call must not abort calls queued after it.
                stop_on_error: false,
            }),
        );
        let mut sub = self.chan.subscribe(&msg.header.msg_id)?;
        self.chan.send(Channel::Shell, &msg).await?;

        let mut reply: Option<ExecuteReply> = None;
        let mut idle = false;
        let mut idle_lost = false;
        let mut probe = IdleProbe::default();
        let mut stopped: Option<(StopReason, Instant)> = None;
        let timeout_at = tokio::time::Instant::from_std(start + limits.timeout);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.reset();

        loop {
            if reply.is_some() && idle {
                let ending = match stopped {
                    Some((reason, _)) => Ending::Interrupted { reason },
                    None => Ending::Completed,
                };
                return Ok(Execution {
                    reply,
                    ending,
                    elapsed: start.elapsed(),
                    idle_lost,
                });
            }
            // Once the reply is in, the code has finished (or honoured the interrupt): what is
            // left is delivering its output, which the timeout, a cancellation and the grace
            // period still bound, but by ending the call (its output may be incomplete), never
            // by interrupting, or killing, a kernel that is done.
            let running = reply.is_none();
            let grace_at = stopped.map(|(_, at)| tokio::time::Instant::from_std(at + limits.grace));
            let finished = |reply: Option<ExecuteReply>, stopped: Option<(StopReason, Instant)>| {
                tracing::warn!("the call's output did not end after its reply; ending the call (its idle may have been dropped)");
                Ok(Execution {
                    reply,
                    ending: match stopped {
                        Some((reason, _)) => Ending::Interrupted { reason },
                        None => Ending::Completed,
                    },
                    elapsed: start.elapsed(),
                    idle_lost: true,
                })
            };
            tokio::select! {
                biased;
                incoming = sub.recv() => {
                    let incoming = match incoming {
                        Ok(i) => i,
                        Err(e) => {
                            // The readers stop when the kernel's sockets go away; prefer the exit cause.
                            if let Ok(cause) = tokio::time::timeout(Duration::from_millis(500), self.life.gone()).await {
                                return Ok(Execution { reply, ending: Ending::Died { cause }, elapsed: start.elapsed(), idle_lost });
                            }
                            return Err(e.into());
                        }
                    };
                    match (incoming.channel, incoming.message.content) {
                        (Channel::Shell, Content::ExecuteReply(r)) => {
                            reply = Some(r);
                            probe.arm();
                        }
                        (Channel::IoPub, Content::Status(s)) => {
                            if s.execution_state == ExecutionState::Idle {
                                idle = true;
                            }
                        }
                        (Channel::IoPub, Content::ExecuteInput(_)) => {}
                        (Channel::IoPub, other) => sink.output(&other),
                        (ch, other) => tracing::debug!(channel = ch.name(), msg_type = %crate::text::sanitize(other.msg_type()), "ignored"),
                    }
                }
                _ = probe.lost(&*self.chan), if reply.is_some() && !idle => {
                    tracing::warn!("the kernel's IOPub dropped this call's status: idle (output flood); ending the call");
                    idle = true;
                    idle_lost = true;
                }
                cause = self.life.gone() => {
                    return Ok(Execution { reply, ending: Ending::Died { cause }, elapsed: start.elapsed(), idle_lost });
                }
                _ = tokio::time::sleep_until(timeout_at), if stopped.is_none() => {
                    if !running {
                        return finished(reply, stopped);
                    }
                    tracing::info!(secs = limits.timeout.as_secs_f64(), "execution timed out; interrupting");
                    self.interrupt().await;
                    stopped = Some((StopReason::Timeout, Instant::now()));
                }
                _ = cancel.cancelled(), if stopped.is_none() => {
                    if !running {
                        return finished(reply, stopped);
                    }
                    tracing::info!("execution cancelled by the client; interrupting");
                    self.interrupt().await;
                    stopped = Some((StopReason::Cancelled, Instant::now()));
                }
                _ = async { match grace_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    if !running {
                        return finished(reply, stopped);
                    }
                    let reason = stopped.map(|(r, _)| r).unwrap_or(StopReason::Timeout);
                    return Ok(Execution { reply, ending: Ending::Unresponsive { reason }, elapsed: start.elapsed(), idle_lost });
                }
                _ = ticker.tick(), if limits.progress => sink.tick(start.elapsed()),
            }
        }
    }
}

/// Finds out whether a request's IOPub `status: idle` was lost (see [`IDLE_PROBE_AFTER`]).
/// Its state lives here, so [`IdleProbe::lost`] may be dropped and called again (in a
/// `select!` loop) without sending more probes than its schedule says.
struct IdleProbe {
    /// The subscription of the last probe sent.
    sub: Option<crate::wire::Subscription>,
    /// When to send the next probe.
    at: tokio::time::Instant,
}

impl Default for IdleProbe {
    fn default() -> Self {
        IdleProbe {
            sub: None,
            at: tokio::time::Instant::now(),
        }
    }
}

impl IdleProbe {
    /// The request's reply has come: the first probe goes after [`IDLE_PROBE_AFTER`].
    fn arm(&mut self) {
        self.at = tokio::time::Instant::now() + IDLE_PROBE_AFTER;
    }

    /// Completes when an IOPub message for a probe arrives, which proves the request's idle
    /// lost when it has not come before (poll the request's own subscription first, `biased`).
    async fn lost(&mut self, chan: &dyn Channels) {
        loop {
            let at = self.at;
            let answered = async {
                let Some(sub) = self.sub.as_mut() else {
                    return std::future::pending().await;
                };
                loop {
                    match sub.recv().await {
                        Ok(m) if m.channel == Channel::IoPub => return,
                        Ok(_) => {}
                        // The connection is gone; the caller's own receive reports that.
                        Err(_) => return std::future::pending().await,
                    }
                }
            };
            tokio::select! {
                () = answered => return,
                _ = tokio::time::sleep_until(at) => {
                    let ask = Message::request(chan.session(), Content::KernelInfoRequest);
                    self.sub = chan.subscribe(&ask.header.msg_id).ok();
                    self.at = tokio::time::Instant::now() + IDLE_PROBE_AGAIN;
                    if let Err(e) = chan.send(Channel::Shell, &ask).await {
                        tracing::debug!(error = %e, "could not send the idle probe");
                    }
                }
            }
        }
    }
}

/// Sends kernel_info_request until both its reply and an IOPub status for it arrive.
///
/// IOPub is PUB/SUB: messages published before our subscription reached the kernel are lost
/// (the "slow joiner"). Seeing an IOPub status for our request proves the subscription is live.
async fn handshake(conn: &dyn Channels, deadline: Instant) -> Result<KernelInfoReply, KernelError> {
    let timeout = || KernelError::StartTimeout {
        secs: 0,
        detail: String::new(),
    };
    loop {
        let msg = Message::request(conn.session(), Content::KernelInfoRequest);
        let mut sub = conn.subscribe(&msg.header.msg_id)?;
        conn.send(Channel::Shell, &msg).await?;
        let mut reply = None;
        let mut saw_iopub = false;
        // Shell requests queue up until the kernel is ready, so wait for the reply as long as
        // start-up may take; once it is there, the IOPub status follows within moments if
        // our subscription is live.
        let mut until = tokio::time::Instant::from_std(deadline);
        loop {
            if reply.is_some() && saw_iopub {
                break;
            }
            match tokio::time::timeout_at(until, sub.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(m)) => match (m.channel, m.message.content) {
                    (Channel::Shell, Content::KernelInfoReply(r)) => {
                        reply = Some(r);
                        until = until.min(tokio::time::Instant::now() + Duration::from_millis(300));
                    }
                    (Channel::IoPub, _) => saw_iopub = true,
                    _ => {}
                },
            }
        }
        match (reply, saw_iopub) {
            (Some(r), true) => return Ok(r),
            (None, _) => return Err(timeout()),
            (Some(_), false) if Instant::now() >= deadline => return Err(timeout()),
            (Some(_), false) => {}
        }
    }
}
