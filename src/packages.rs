//! Running installers (pip / uv) as argv lists with no shell, bounded in time and output,
//! killing the whole process tree on timeout. Package-spec validation lives here too.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::error::PackageError;

/// Output kept from a finished command (each stream capped).
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Most bytes of each stream kept in memory.
const KEEP: usize = 256 * 1024;

impl RunOutput {
    /// The last meaningful lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> String {
        let src = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = src.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(12);
        lines.get(start..).unwrap_or_default().join("\n")
    }
}

async fn collect<R: AsyncRead + Unpin>(
    r: R,
    echo: bool,
    on_line: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> String {
    let mut lines = BufReader::new(r).lines();
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("  {line}");
        }
        if let Some(tx) = &on_line {
            let _ = tx.send(line.clone());
        }
        if kept.len() + line.len() < KEEP {
            kept.push_str(&line);
            kept.push('\n');
        } else {
            // Keep the end, which is where installers put the error.
            kept.push_str(&line);
            kept.push('\n');
            let cut = kept.len().saturating_sub(KEEP / 2);
            let cut = (cut..kept.len())
                .find(|&i| kept.is_char_boundary(i))
                .unwrap_or(0);
            kept.drain(..cut);
        }
    }
    kept
}

/// Runs `argv` (no shell) with a timeout that kills its whole process group.
/// With `echo`, output lines are copied to our stderr (never stdout, which carries MCP).
pub async fn run_logged(
    argv: &[String],
    timeout: Duration,
    echo: bool,
) -> Result<RunOutput, PackageError> {
    run_with_lines(argv, timeout, echo, None, &[]).await
}

/// Like [`run_logged`], also sending each output line to `on_line` and setting `env`.
pub async fn run_with_lines(
    argv: &[String],
    timeout: Duration,
    echo: bool,
    on_line: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    env: &[(&str, &str)],
) -> Result<RunOutput, PackageError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(PackageError::Spawn("empty command".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| PackageError::Spawn(format!("{program}: {e}")))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let out = child.stdout.take();
    let err = child.stderr.take();
    let out_task = tokio::spawn({
        let tx = on_line.clone();
        async move {
            match out {
                Some(o) => collect(o, echo, tx).await,
                None => String::new(),
            }
        }
    });
    let err_task = tokio::spawn(async move {
        match err {
            Some(e) => collect(e, echo, on_line).await,
            None => String::new(),
        }
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.map_err(|e| PackageError::Spawn(e.to_string()))?,
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            out_task.abort();
            err_task.abort();
            return Err(PackageError::Timeout {
                secs: timeout.as_secs(),
            });
        }
    };
    // Children that outlived the installer must not keep the pipes (and us) waiting.
    if let Some(pg) = pgid {
        let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
    }
    let stdout = out_task.await.unwrap_or_default();
    let stderr = err_task.await.unwrap_or_default();
    Ok(RunOutput {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    })
}
