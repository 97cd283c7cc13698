//! One running kernel: start-up handshake, execute with correlation by msg_id, interrupt and
//! shutdown. Knows the wire protocol and the process; knows nothing about MCP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::connection::{ConnectionInfo, RuntimeDir, Transport};
use super::process::{kernel_env, ExitCause, KernelProcess, LaunchCommand};
use super::spec::{InterruptMode, KernelSpec};
use crate::error::KernelError;
use crate::wire::message::{ExecuteReply, ExecuteRequest, KernelInfoReply, ShutdownRequest};
use crate::wire::{Channel, Connection, Content, ExecutionState, Message};

/// Python run silently in every new IPython kernel (see the file for why).
const STARTUP_CODE: &str = include_str!("../../kernel-spec/startup.py");

/// Everything needed to start a kernel locally.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    pub spec: KernelSpec,
    pub python: PathBuf,
    pub workspace: PathBuf,
    pub transport: Transport,
    pub startup_timeout: Duration,
    pub extra_env: BTreeMap<String, String>,
    /// The launch helper (this binary); `None` starts the kernel directly.
    pub helper: Option<PathBuf>,
    /// The OS sandbox (needs the helper); `None` runs the kernel unconfined.
    pub sandbox: Option<SandboxConfig>,
}

/// Sandbox settings that do not change from one kernel to the next.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// Paths the interpreter reads (from the environment probe).
    pub python_paths: Vec<PathBuf>,
    /// Extra read-only directories (`--allow-read`).
    pub extra_read: Vec<PathBuf>,
    pub network: bool,
    pub memory_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub require: bool,
    /// A prebuilt matplotlib font cache copied into each kernel's scratch config dir.
    pub mpl_cache: Option<PathBuf>,
}

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
    Died { cause: String },
}

/// The result of one execute_request.
#[derive(Debug, Clone)]
pub struct Execution {
    pub reply: Option<ExecuteReply>,
    pub ending: Ending,
    pub elapsed: Duration,
}

/// Limits for one execution.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    pub timeout: Duration,
    pub grace: Duration,
    pub progress: bool,
}

/// A started kernel: process, connection and what it told us about itself.
/// Field order is drop order: sockets close, then the process group dies, then files go.
pub struct Kernel {
    conn: Connection,
    process: KernelProcess,
    runtime: RuntimeDir,
    sandbox: Option<super::sandbox::Status>,
    info: KernelInfoReply,
    interrupt_mode: InterruptMode,
    started: Instant,
    /// Processes under the kernel at the last look (see [`Kernel::new_processes`]).
    known_processes: std::sync::Mutex<std::collections::BTreeSet<i32>>,
}

impl Kernel {
    /// Spawns a kernel and completes the kernel_info handshake.
    pub async fn start(l: &LocalLauncher) -> Result<Kernel, KernelError> {
        let started = Instant::now();
        let runtime = RuntimeDir::create()?;
        let info = ConnectionInfo::new(l.transport, runtime.path())?;
        let conn_file = runtime.path().join("kernel.json");
        info.write(&conn_file)?;
        let mut env = kernel_env(&l.spec.env, &l.python);
        env.extend(l.extra_env.clone());
        let mut argv = l.spec.expand_argv(&l.python, &conn_file);
        let status_file = runtime.path().join("sandbox.json");
        if let (Some(sb), Some(_)) = (&l.sandbox, &l.helper) {
            let scratch = runtime.path().join("home");
            for sub in ["", "tmp", "ipython", "mpl", "cache", "config"] {
                let _ = std::fs::create_dir_all(scratch.join(sub));
            }
            if let Some(cache) = &sb.mpl_cache {
                copy_font_cache(cache, &scratch.join("mpl"));
            }
            let s = |p: &str| scratch.join(p).to_string_lossy().into_owned();
            env.insert("HOME".into(), s(""));
            env.insert("TMPDIR".into(), s("tmp"));
            env.insert("IPYTHONDIR".into(), s("ipython"));
            env.insert("MPLCONFIGDIR".into(), s("mpl"));
            env.insert("XDG_CACHE_HOME".into(), s("cache"));
            env.insert("XDG_CONFIG_HOME".into(), s("config"));
            env.insert("PYTHONNOUSERSITE".into(), "1".into());
            let mut policy = super::sandbox::Policy::for_kernel(
                &sb.python_paths,
                &sb.extra_read,
                &l.workspace,
                runtime.path(),
            );
            policy.network = sb.network;
            policy.memory_bytes = sb.memory_bytes;
            policy.file_size_bytes = sb.file_size_bytes;
            policy.open_files = Some(4096);
            policy.require = sb.require;
            policy.status_file = Some(status_file.clone());
            if info.transport == Transport::Tcp {
                policy.bind_ports = vec![
                    info.shell_port,
                    info.iopub_port,
                    info.stdin_port,
                    info.control_port,
                    info.hb_port,
                ];
            }
            let json =
                serde_json::to_string(&policy).map_err(|e| KernelError::Protocol(e.to_string()))?;
            argv = ["--policy".to_owned(), json, "--".to_owned()]
                .into_iter()
                .chain(argv)
                .collect();
        }
        let cmd = LaunchCommand {
            argv,
            cwd: l.workspace.clone(),
            env,
            helper: l.helper.clone(),
        };
        let process = KernelProcess::spawn(&cmd)?;
        let deadline = started + l.startup_timeout;
        let died = |cause: ExitCause, process: &KernelProcess| KernelError::Unavailable {
            reason: format!(
                "the kernel exited during start-up ({cause}){}",
                process.stderr_hint()
            ),
        };
        let endpoints = info.endpoints();
        let conn = tokio::select! {
            c = Connection::open(&endpoints, info.key.as_bytes(), l.startup_timeout) => c?,
            cause = process.wait() => return Err(died(cause, &process)),
        };
        let kinfo = tokio::select! {
            r = handshake(&conn, deadline) => r.map_err(|e| match e {
                KernelError::StartTimeout { secs, .. } => KernelError::StartTimeout { secs, detail: process.stderr_hint() },
                other => other,
            })?,
            cause = process.wait() => return Err(died(cause, &process)),
        };
        let kernel_startup = kinfo.implementation == "ipython";
        tracing::info!(
            pid = process.pid(),
            implementation = %kinfo.implementation,
            version = %kinfo.implementation_version,
            ms = started.elapsed().as_millis() as u64,
            "kernel ready"
        );
        let sandbox = std::fs::read(&status_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<super::sandbox::Status>(&b).ok());
        match &sandbox {
            Some(st) if st.complete() => tracing::info!(sandbox = %st.summary(), "kernel sandbox"),
            Some(st) => tracing::warn!(sandbox = %st.summary(), "kernel sandbox is INCOMPLETE"),
            None if l.sandbox.is_some() => tracing::warn!("kernel sandbox status unknown"),
            None => {}
        }
        let kernel = Kernel {
            conn,
            process,
            runtime,
            sandbox,
            info: kinfo,
            interrupt_mode: l.spec.interrupt_mode,
            started,
            known_processes: Default::default(),
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
            None => Err(KernelError::Protocol(format!(
                "expression failed: {}",
                v.get("evalue")
                    .and_then(|e| e.as_str())
                    .unwrap_or("no value")
            ))),
        }
    }

    async fn silent(
        &self,
        code: &str,
        user_expressions: BTreeMap<String, String>,
        limit: Duration,
    ) -> Result<ExecuteReply, KernelError> {
        let msg = Message::request(
            self.conn.session(),
            Content::ExecuteRequest(ExecuteRequest {
                code: code.to_owned(),
                silent: true,
                store_history: false,
                user_expressions,
                allow_stdin: false,
                stop_on_error: false,
            }),
        );
        let mut sub = self.conn.subscribe(&msg.header.msg_id)?;
        self.conn.send(Channel::Shell, &msg).await?;
        let wait = async {
            let (mut reply, mut idle) = (None, false);
            while reply.is_none() || !idle {
                let m = sub.recv().await?;
                match m.message.content {
                    Content::ExecuteReply(r) => reply = Some(r),
                    Content::Status(s) if s.execution_state == ExecutionState::Idle => idle = true,
                    _ => {}
                }
            }
            Ok::<_, KernelError>(reply)
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(Some(r))) if r.status == crate::wire::message::ReplyStatus::Ok => Ok(r),
            Ok(Ok(r)) => Err(KernelError::Protocol(format!(
                "start-up code failed: {}",
                r.and_then(|r| r.evalue).unwrap_or_default()
            ))),
            // (an Ok reply is matched above)
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KernelError::Protocol("start-up code timed out".into())),
        }
    }

    /// What the sandbox enforces for this kernel (`None` when it runs unconfined).
    pub fn sandbox(&self) -> Option<&super::sandbox::Status> {
        self.sandbox.as_ref()
    }

    /// What the kernel said in kernel_info_reply.
    pub fn info(&self) -> &KernelInfoReply {
        &self.info
    }

    /// The latest heartbeat result (the kernel's heartbeat thread echoes even while a cell runs).
    pub fn heartbeat(&self) -> crate::wire::Heartbeat {
        self.conn.heartbeat()
    }

    /// The kernel process id.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// How long ago this kernel was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The kernel's last stderr lines, as "; kernel stderr: ..." (empty when there are none).
    pub fn stderr_hint(&self) -> String {
        self.process.stderr_hint()
    }

    /// Processes under the kernel that were not there at the last look (pid and command
    /// line), still running: what a call left behind (pool workers, background subprocesses).
    pub fn new_processes(&self) -> Vec<(i32, String)> {
        let now = super::process::descendants(self.pid());
        let Ok(mut known) = self.known_processes.lock() else {
            return Vec::new();
        };
        let fresh = now
            .iter()
            .filter(|(pid, _)| !known.contains(pid))
            .map(|(pid, cmd)| (*pid, cmd.clone()))
            .collect();
        *known = now.into_keys().collect();
        fresh
    }

    /// Why the kernel process ended, if it has.
    pub fn exited(&self) -> Option<ExitCause> {
        self.process.exited()
    }

    /// Interrupts the kernel as its spec's `interrupt_mode` says.
    pub async fn interrupt(&self) {
        match self.interrupt_mode {
            InterruptMode::Signal => self.process.interrupt(),
            InterruptMode::Message => {
                let msg = Message::request(self.conn.session(), Content::InterruptRequest);
                if let Err(e) = self.conn.send(Channel::Control, &msg).await {
                    tracing::warn!(error = %e, "interrupt_request failed; sending SIGINT");
                    self.process.interrupt();
                }
            }
        }
    }

    /// Kills the kernel's process group at once.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Asks the kernel to shut down, waits a bounded time, then kills it.
    pub async fn shutdown(&self) {
        if self.process.exited().is_none() {
            let msg = Message::request(
                self.conn.session(),
                Content::ShutdownRequest(ShutdownRequest { restart: false }),
            );
            if let Ok(mut sub) = self.conn.subscribe(&msg.header.msg_id) {
                if self.conn.send(Channel::Control, &msg).await.is_ok() {
                    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
                        while let Ok(m) = sub.recv().await {
                            if matches!(m.message.content, Content::ShutdownReply(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
            }
            if self
                .process
                .wait_for(Duration::from_secs(2))
                .await
                .is_none()
            {
                tracing::warn!(
                    pid = self.pid(),
                    "kernel did not exit after shutdown_request; killing"
                );
            }
        }
        self.process.kill();
        self.runtime.remove_now();
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
            self.conn.session(),
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
        let mut sub = self.conn.subscribe(&msg.header.msg_id)?;
        self.conn.send(Channel::Shell, &msg).await?;

        let mut reply: Option<ExecuteReply> = None;
        let mut idle = false;
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
                });
            }
            let grace_at = stopped.map(|(_, at)| tokio::time::Instant::from_std(at + limits.grace));
            tokio::select! {
                biased;
                incoming = sub.recv() => {
                    let incoming = match incoming {
                        Ok(i) => i,
                        Err(e) => {
                            // The readers stop when the kernel's sockets go away; prefer the exit cause.
                            if let Some(cause) = self.process.wait_for(Duration::from_millis(500)).await {
                                return Ok(Execution { reply, ending: Ending::Died { cause: cause.to_string() }, elapsed: start.elapsed() });
                            }
                            return Err(e.into());
                        }
                    };
                    match (incoming.channel, incoming.message.content) {
                        (Channel::Shell, Content::ExecuteReply(r)) => reply = Some(r),
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
                cause = self.process.wait() => {
                    return Ok(Execution { reply, ending: Ending::Died { cause: cause.to_string() }, elapsed: start.elapsed() });
                }
                _ = tokio::time::sleep_until(timeout_at), if stopped.is_none() => {
                    tracing::info!(secs = limits.timeout.as_secs_f64(), "execution timed out; interrupting");
                    self.interrupt().await;
                    stopped = Some((StopReason::Timeout, Instant::now()));
                }
                _ = cancel.cancelled(), if stopped.is_none() => {
                    tracing::info!("execution cancelled by the client; interrupting");
                    self.interrupt().await;
                    stopped = Some((StopReason::Cancelled, Instant::now()));
                }
                _ = async { match grace_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    let reason = stopped.map(|(r, _)| r).unwrap_or(StopReason::Timeout);
                    return Ok(Execution { reply, ending: Ending::Unresponsive { reason }, elapsed: start.elapsed() });
                }
                _ = ticker.tick(), if limits.progress => sink.tick(start.elapsed()),
            }
        }
    }
}

/// Copies matplotlib's prebuilt font list into a fresh config dir, so the first plot in a new
/// kernel does not rebuild it (about a second).
fn copy_font_cache(from: &std::path::Path, to: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("fontlist") {
            let _ = std::fs::copy(e.path(), to.join(name));
        }
    }
}

/// Sends kernel_info_request until both its reply and an IOPub status for it arrive.
///
/// IOPub is PUB/SUB: messages published before our subscription reached the kernel are lost
/// (the "slow joiner"). Seeing an IOPub status for our request proves the subscription is live.
async fn handshake(conn: &Connection, deadline: Instant) -> Result<KernelInfoReply, KernelError> {
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
