//! Spawning, signalling and killing the kernel process (and its whole process group).
//! The kernel's stdout/stderr go to the log, never to our stdout; stdin is /dev/null.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::KernelError;

// Process-tree lifetime and interrupt delivery, chosen once: a process group and signals on
// unix, a Job Object and an interrupt event on Windows.
#[cfg(unix)]
#[path = "process/unix.rs"]
mod tree;
#[cfg(windows)]
#[path = "process/windows.rs"]
mod tree;

/// Environment variables passed from the server to the kernel; everything else is dropped
/// so tokens and agent sockets in the server's environment do not reach model-run code.
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "USER",
    "LOGNAME",
    "TERM",
    "SHELL",
    "SYSTEMROOT",
];

pub use crate::error::ExitCause;

/// The name of signal `sig` ("SIGKILL"), or "" where signals are not named (Windows).
pub fn signal_name(sig: i32) -> &'static str {
    tree::signal_name(sig)
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchCommand {
    pub argv: Vec<String>,
    /// The launch helper binary (`kernel-mcp` itself); `None` starts the kernel directly.
    pub helper: Option<PathBuf>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// A running kernel process that leads its own process tree (group or job).
#[derive(Debug)]
pub struct KernelProcess {
    pid: i32,
    tree: tree::Tree,
    /// Write end of the helper's lifeline pipe: closing it makes the helper kill the kernel and
    /// every descendant (also detached ones). Closed by `kill`, on drop, and when we exit.
    lifeline: StdMutex<Option<tokio::process::ChildStdin>>,
    /// Started through the helper: the helper alone tears the tree down (a SIGKILL to its
    /// group would kill it before it could reach detached descendants).
    helper: bool,
    /// Set by `kill` while the process lives: its end is then ours, not a crash.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    stderr_tail: Arc<StdMutex<VecDeque<String>>>,
    exit: watch::Receiver<Option<ExitCause>>,
    tasks: Vec<JoinHandle<()>>,
}

impl KernelProcess {
    /// Starts the kernel in its own process tree (a process group, or a Job Object on Windows).
    pub fn spawn(cmd: &LaunchCommand) -> Result<KernelProcess, KernelError> {
        let helper_argv;
        let argv: &[String] = match &cmd.helper {
            Some(h) => {
                let mut v = vec![
                    h.to_string_lossy().into_owned(),
                    crate::sandbox::HELPER_ARG.into(),
                ];
                if cmd.argv.first().map(String::as_str) != Some("--policy") {
                    v.push("--".into());
                }
                v.extend(cmd.argv.iter().cloned());
                helper_argv = v;
                &helper_argv
            }
            None => &cmd.argv,
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(KernelError::Spawn {
                program: String::new(),
                source: std::io::Error::other("empty argv"),
            });
        };
        let mut c = tokio::process::Command::new(program);
        c.args(args)
            .current_dir(&cmd.cwd)
            .env_clear()
            .envs(&cmd.env)
            .stdin(if cmd.helper.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // With the helper, dropping must not SIGKILL it: it needs a moment to tear down
            // detached descendants after the lifeline closes, and then exits by itself.
            .kill_on_drop(cmd.helper.is_none());
        let spawn_err = |source| KernelError::Spawn {
            program: program.clone(),
            source,
        };
        let pending = tree::prepare(&mut c, cmd.helper.is_some()).map_err(spawn_err)?;
        let mut child = c.spawn().map_err(|source| KernelError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| KernelError::Spawn {
                program: program.clone(),
                source: std::io::Error::other("kernel exited at once"),
            })?;
        let tree = pending.adopt(pid, &child).map_err(spawn_err)?;
        let lifeline = child.stdin.take();
        let mut tasks = Vec::new();
        let stderr_tail = Arc::new(StdMutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            tasks.push(tokio::spawn(log_lines(out, pid, "stdout", None)));
        }
        if let Some(err) = child.stderr.take() {
            tasks.push(tokio::spawn(log_lines(
                err,
                pid,
                "stderr",
                Some(stderr_tail.clone()),
            )));
        }
        let (tx, rx) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stopping.clone();
        let sandboxed = cmd.helper.is_some();
        tasks.push(tokio::spawn(async move {
            let cause = match child.wait().await {
                Ok(status) => tree::exit_cause(status),
                Err(e) => ExitCause::Unknown(e.to_string()),
            };
            let cause = match cause {
                ExitCause::Code(crate::sandbox::MEMORY_LIMIT_EXIT) if sandboxed => {
                    ExitCause::MemoryLimit
                }
                // Not "possibly the out-of-memory killer": we sent that SIGKILL.
                _ if stopped.load(std::sync::atomic::Ordering::SeqCst) => ExitCause::Stopped,
                other => other,
            };
            tracing::info!(pid, %cause, "kernel process ended");
            let _ = tx.send(Some(cause));
        }));
        tracing::info!(pid, argv = ?cmd.argv, "kernel process started");
        Ok(KernelProcess {
            pid,
            tree,
            helper: lifeline.is_some(),
            stopping,
            lifeline: StdMutex::new(lifeline),
            stderr_tail,
            exit: rx,
            tasks,
        })
    }

    /// The last lines the kernel wrote to stderr, formatted for an error message.
    pub fn stderr_hint(&self) -> String {
        self.stderr_source().hint()
    }

    /// A handle on the kernel's stderr tail that outlives borrows of the process.
    pub fn stderr_source(&self) -> StderrTail {
        StderrTail(self.stderr_tail.clone())
    }

    /// The kernel's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Why the process ended, if it has.
    pub fn exited(&self) -> Option<ExitCause> {
        self.exit.borrow().clone()
    }

    /// Waits until the process has ended.
    pub async fn wait(&self) -> ExitCause {
        let mut rx = self.exit.clone();
        loop {
            if let Some(c) = rx.borrow_and_update().clone() {
                return c;
            }
            if rx.changed().await.is_err() {
                return rx
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| ExitCause::Unknown("process watcher stopped".into()));
            }
        }
    }

    /// Waits up to `limit` for the process to end.
    pub async fn wait_for(&self, limit: Duration) -> Option<ExitCause> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    /// Interrupts the kernel (interrupt_mode `signal`): SIGINT to its process group on unix,
    /// its interrupt event on Windows.
    pub fn interrupt(&self) {
        self.tree.interrupt();
    }

    /// Kills the kernel, its process group and (through the helper) every descendant.
    pub fn kill(&self) {
        if self.exit.borrow().is_none() {
            self.stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let lifeline = self.lifeline.lock().ok().and_then(|mut l| l.take());
        if self.helper {
            // The helper sees EOF at once and tears the whole tree down, then exits.
            drop(lifeline);
        } else if self.exit.borrow().is_none() {
            self.tree.kill();
        }
    }
}

impl Drop for KernelProcess {
    fn drop(&mut self) {
        // The group also holds anything the kernel started; kill it all. Without a helper,
        // signal the group directly, even if the kernel itself has exited.
        self.kill();
        if !self.helper {
            self.tree.kill();
        }
        // The helper exits by itself once the lifeline is closed; its watcher and log readers
        // then end on their own (and log the exit). Without a helper, stop them now.
        for t in self.tasks.iter().filter(|_| !self.helper) {
            t.abort();
        }
    }
}

/// Copies a kernel output pipe into the log, one line at a time; a line is cut at 64 KiB
/// so a kernel writing without newlines cannot grow this buffer.
async fn log_lines<R: AsyncRead + Unpin>(
    r: R,
    pid: i32,
    stream: &'static str,
    tail: Option<Arc<StdMutex<VecDeque<String>>>>,
) {
    const CAP: usize = 64 * 1024;
    let mut reader = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(c) => c,
        };
        let (take, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = CAP.saturating_sub(line.len());
        line.extend_from_slice(chunk.get(..take.min(room)).unwrap_or_default());
        reader.consume(take);
        if ends_line || line.len() >= CAP {
            emit(&line, pid, stream, tail.as_deref());
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line, pid, stream, tail.as_deref());
    }
}

fn emit(line: &[u8], pid: i32, stream: &'static str, tail: Option<&StdMutex<VecDeque<String>>>) {
    let text = String::from_utf8_lossy(line);
    // Escape sequences and bidi overrides would mislead whoever reads the log in a terminal.
    let text = crate::text::sanitize(text.trim_end());
    let text = text.as_ref();
    tracing::info!(target: "kernel", pid, stream, "{text}");
    // The helper's own sandbox report is in the log; it is not the kernel's error.
    if let (Some(tail), false) = (
        tail,
        text.is_empty() || text.starts_with("kernel-mcp sandbox:"),
    ) {
        if let Ok(mut t) = tail.lock() {
            if t.len() >= 6 {
                t.pop_front();
            }
            t.push_back(text.chars().take(300).collect());
        }
    }
}

/// Most processes [`descendants`] reports; a fork bomb must not make the server walk forever.
const MAX_DESCENDANTS: usize = 256;

/// The live descendants of `root` (not `root` itself) with their command lines, read from
/// `/proc/<pid>/task/<tid>/children`. Processes re-parented to `root` (the launch helper is a
/// child subreaper) are found too. Empty where /proc does not say.
pub fn descendants(root: i32) -> BTreeMap<i32, String> {
    crate::pids::below(root, MAX_DESCENDANTS, |pid| !ended(pid))
        .unwrap_or_default()
        .into_iter()
        .map(|pid| (pid, command_line(pid)))
        .collect()
}

/// The pid most recently handed out on this machine (the last field of /proc/loadavg), where
/// the OS says; threads count too. `None` elsewhere.
pub fn newest_pid() -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        // Opened once (close-on-exec): a read at offset 0 has the OS write the file afresh, so
        // a look (once per call) is one `pread` instead of an open, a stat, two reads and a
        // close (0.5 µs against 4.4 µs on an idle machine; ~3% of the server's CPU per `x + 1`
        // call in a profile before).
        static LOADAVG: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
        let file = LOADAVG
            .get_or_init(|| std::fs::File::open("/proc/loadavg").ok())
            .as_ref()?;
        let mut buf = [0u8; 256];
        let n = file.read_at(&mut buf, 0).ok()?;
        let s = std::str::from_utf8(buf.get(..n)?).ok()?;
        s.split_whitespace().last()?.parse().ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The pid `pid` has in its own (innermost) PID namespace: what the kernel itself calls it.
/// The same number when no namespace is involved or /proc does not say.
pub fn pid_as_seen_inside(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(pid)
}

/// True for a process that has ended but not been reaped yet (a zombie): nothing runs.
fn ended(pid: i32) -> bool {
    let Some(fields) = crate::pids::stat_after_name(pid) else {
        return true;
    };
    fields.starts_with('Z') || fields.starts_with('X')
}

/// A process's command line for a report: arguments joined by spaces, at most 120 characters.
fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // Empty while the process is in the middle of exec: fall back to its name.
    let text = if text.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        format!("[{}]", comm.trim())
    } else {
        text
    };
    let text = crate::text::sanitize(&text).into_owned();
    if text.chars().count() > 120 {
        format!("{}...", text.chars().take(117).collect::<String>())
    } else {
        text
    }
}

/// The kernel's environment: the allow-listed server variables plus the spec's and ours.
pub fn kernel_env(extra: &BTreeMap<String, String>, python: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            // Windows names are case-insensitive ("Path"); keep them in upper case there.
            let k = if cfg!(windows) {
                k.to_ascii_uppercase()
            } else {
                k
            };
            let allowed = ENV_ALLOW.iter().chain(tree::ENV_ALLOW).any(|a| *a == k);
            (allowed || k.starts_with("LC_")).then_some((k, v))
        })
        .collect();
    // Put the interpreter's bin dir first so `!pip` and subprocesses use the kernel's env.
    if let Some(bin) = python.parent() {
        let path = env
            .get("PATH")
            .cloned()
            .unwrap_or_else(|| tree::DEFAULT_PATH.into());
        let sep = tree::PATH_SEP;
        env.insert("PATH".into(), format!("{}{sep}{path}", bin.display()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The last lines a kernel wrote to stderr.
#[derive(Clone)]
pub struct StderrTail(Arc<StdMutex<VecDeque<String>>>);

impl StderrTail {
    /// The tail formatted for an error message ("; kernel stderr: a | b"), or "".
    pub fn hint(&self) -> String {
        let Ok(tail) = self.0.lock() else {
            return String::new();
        };
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("; kernel stderr: {}", lines.join(" | "))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The file is opened once and read at offset 0 each time: each look must see the pids
    /// handed out since the last, not the first look's contents.
    #[test]
    fn the_newest_pid_is_read_afresh_each_time() {
        let before = super::newest_pid();
        assert!(before.is_some(), "/proc/loadavg gave no pid");
        let status = std::process::Command::new("true").status();
        assert!(status.as_ref().is_ok_and(|s| s.success()), "{status:?}");
        let after = super::newest_pid();
        assert!(after.is_some(), "the second look gave no pid");
        assert_ne!(after, before);
    }
}
