//! Running helper processes (the interpreter's probes, venv creation, installers) as argv
//! lists with no shell, bounded in time and output, killing the whole process tree on timeout;
//! always from a folder the kernel cannot write and with an allow-listed environment.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::PackageError;

/// `python -I -m pip install` with no prompts, no version check and no progress bars, then
/// `rest`. Isolated mode (`-I`): neither the working directory nor `PYTHON*` variables can put
/// another `pip` in front of the environment's own.
pub fn pip_install(python: &str, rest: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        python,
        "-I",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(rest.iter().map(|s| s.to_string()));
    argv
}

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

/// Where a run's output lines go as they come (install progress). Bounded: when the reader
/// falls behind, lines are skipped there (the run's kept output still has them).
pub type LineSender = tokio::sync::mpsc::Sender<String>;

/// A channel for [`LineSender`]: 64 lines in flight at most.
pub fn line_channel() -> (LineSender, tokio::sync::mpsc::Receiver<String>) {
    tokio::sync::mpsc::channel(64)
}

/// Longest output line taken whole; the rest of a longer one is skipped (a package build can
/// print gigabytes without a newline, and all of it would otherwise be one line in memory).
const MAX_LINE: usize = 8 * 1024;

/// Reads `r` to its end (so the writer never blocks on a full pipe), line by line, whatever
/// the bytes: invalid UTF-8 is replaced, overlong lines are cut at [`MAX_LINE`] bytes. Keeps
/// at most [`KEEP`] bytes, the end when there is more.
async fn collect<R: AsyncRead + Unpin>(
    mut r: R,
    echo: bool,
    on_line: Option<LineSender>,
) -> String {
    let mut kept = String::new();
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut take = |line: &mut Vec<u8>, cut: &mut bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(line).into_owned();
        if *cut {
            text.push_str(&format!(" [line cut at {MAX_LINE} bytes]"));
        }
        line.clear();
        *cut = false;
        if echo {
            eprintln!("  {}", crate::text::sanitize(&text));
        }
        if let Some(tx) = &on_line {
            let _ = tx.try_send(text.clone());
        }
        kept.push_str(&text);
        kept.push('\n');
        if kept.len() > KEEP {
            // Keep the end, which is where installers put the error.
            let from = kept.len().saturating_sub(KEEP / 2);
            let from = (from..kept.len())
                .find(|&i| kept.is_char_boundary(i))
                .unwrap_or(0);
            kept.drain(..from);
        }
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for piece in buf
            .get(..n)
            .unwrap_or_default()
            .split_inclusive(|b| *b == b'\n')
        {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            if body.len() > room {
                line.extend_from_slice(body.get(..room).unwrap_or_default());
                cut = true;
            } else {
                line.extend_from_slice(body);
            }
            if ends {
                take(&mut line, &mut cut);
            }
        }
    }
    if !line.is_empty() || cut {
        take(&mut line, &mut cut);
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
    run_command(argv, timeout, echo, None, &[], Inherit::Base, false).await
}

/// Like [`run_logged`], also sending each output line to `on_line` and setting `env`.
pub async fn run_with_lines(
    argv: &[String],
    timeout: Duration,
    echo: bool,
    on_line: Option<LineSender>,
    env: &[(&str, &str)],
) -> Result<RunOutput, PackageError> {
    run_command(argv, timeout, echo, on_line, env, Inherit::Base, false).await
}

/// The one runner. With `lifeline`, stdin is a pipe held open until the run ends: the sandbox
/// helper takes its closing as the server's death and tears the installer down.
///
/// Whatever runs here runs outside the kernel's sandbox (or starts the sandbox helper), so it
/// never starts in a folder the kernel can write (a `json.py` or `pip/` there would shadow the
/// standard library or the installer) and gets only the variables `inherit` allows, then `env`.
pub async fn run_command(
    argv: &[String],
    timeout: Duration,
    echo: bool,
    on_line: Option<LineSender>,
    env: &[(&str, &str)],
    inherit: Inherit,
    lifeline: bool,
) -> Result<RunOutput, PackageError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(PackageError::Spawn("empty command".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if lifeline {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout can kill everything the installer started.
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.current_dir(safe_cwd()).env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| inherit.keeps(k)) {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| PackageError::Spawn(format!("{program}: {e}")))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let _lifeline = child.stdin.take();
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
            kill_group(pgid);
            let _ = child.kill().await;
            out_task.abort();
            err_task.abort();
            return Err(PackageError::Timeout {
                secs: timeout.as_secs(),
            });
        }
    };
    // Children that outlived the installer must not keep the pipes (and us) waiting.
    kill_group(pgid);
    let stdout = out_task.await.unwrap_or_default();
    let stderr = err_task.await.unwrap_or_default();
    Ok(RunOutput {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Runs `argv` with `input` on its stdin and returns its stdout (at most `max_out` bytes) when
/// it succeeds within `timeout`; else why not (its stderr's last line, or the time it took).
/// Blocking: for work already off the event loop (`cpu::heavy`). For a helper that parses
/// what the kernel sent (an SVG): a time it cannot outlast and output it cannot inflate, from
/// a safe folder with the base environment, like every helper here.
pub fn run_bytes(
    argv: &[String],
    input: &[u8],
    timeout: Duration,
    max_out: usize,
) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(safe_cwd())
        .env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| Inherit::Base.keeps(k)) {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(i) = stdin.as_mut() {
            let _ = i.write_all(&input);
        }
    });
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out {
            let limit = u64::try_from(max_out).unwrap_or(u64::MAX).saturating_add(1);
            let _ = o.take(limit).read_to_end(&mut buf);
        }
        buf
    });
    let err = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err {
            let _ = e.take(64 * 1024).read_to_end(&mut buf);
        }
        buf
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("it took over {} s", timeout.as_secs()));
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&err);
        let last = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(if last.is_empty() {
            format!("the drawing process failed ({status})")
        } else {
            last.chars().take(300).collect()
        });
    }
    if out.len() > max_out {
        return Err(format!("its output passed {max_out} bytes"));
    }
    Ok(out)
}

/// Kills the installer's process group. (Windows: only the installer itself is killed, by
/// `kill_on_drop`; pip starts no long-lived children there.)
fn kill_group(pgid: Option<i32>) {
    #[cfg(unix)]
    if let Some(pg) = pgid {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(nix::unistd::Pid::from_raw(pg), Signal::SIGKILL);
    }
    #[cfg(windows)]
    let _ = pgid;
}

/// Which of the server's environment variables a helper process keeps. Everything else (cloud
/// credentials, tokens, `KERNEL_MCP_TOKEN`, `PYTHON*` that would redirect the interpreter) is
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inherit {
    /// What any program needs to run: the search path, locale, time zone, home and temp
    /// folders, and on Windows the system's own variables.
    Base,
    /// `Base` and the package-index configuration an installer needs: `PIP_*`, `UV_*`, proxies
    /// and certificate locations.
    Installer,
}

/// Variables every helper keeps (compared without case: Windows spells them freely).
const BASE_VARS: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "USER",
    "LOGNAME",
    "HOME",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "PROGRAMDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
];

/// Certificate locations an installer's TLS stack reads.
const CERT_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NIX_SSL_CERT_FILE",
];

impl Inherit {
    /// Whether a variable named `name` is passed on.
    pub fn keeps(self, name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("LC_") || BASE_VARS.contains(&upper.as_str()) {
            return true;
        }
        match self {
            Inherit::Base => false,
            Inherit::Installer => {
                upper.starts_with("PIP_")
                    || upper.starts_with("UV_")
                    || upper.ends_with("_PROXY")
                    || CERT_VARS.contains(&upper.as_str())
            }
        }
    }
}

/// The working directory of every helper process: an empty folder of the server's own (in its
/// data dir), never the server's own working directory, which may be the workspace.
pub fn safe_cwd() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let made = crate::dirs::data_dir()
            .ok()
            .map(|d| d.join("run"))
            .filter(|d| std::fs::create_dir_all(d).is_ok() && std::fs::read_dir(d).is_ok());
        made.unwrap_or_else(|| {
            if cfg!(windows) {
                std::env::temp_dir()
            } else {
                std::path::PathBuf::from("/")
            }
        })
    })
    .clone()
}

/// Python code run before a probe's own under `-I -S`: puts the environment's site-packages
/// folders (and the plain paths its `.pth` files name) on `sys.path` without running any of
/// it. `-S` keeps `site` from executing `.pth` lines, which any installed package can ship; `-I`
/// keeps the working directory, `PYTHON*` variables and the user's site-packages out.
const PROBE_PRELUDE: &str = r#"
import os as _o, sys as _s, site as _site
def _kmcp_paths():
    exe = _o.path.abspath(_s.executable)
    root = _o.path.dirname(_o.path.dirname(exe))
    cfg = _o.path.join(root, 'pyvenv.cfg')
    prefixes = [_s.prefix]
    if _o.path.isfile(cfg):
        # What site.venv() would do: the venv is the prefix.
        _s.prefix = _s.exec_prefix = root
        prefixes = [root]
        try:
            with open(cfg, encoding='utf-8', errors='replace') as f:
                text = f.read(65536).lower().replace(' ', '')
        except OSError:
            text = ''
        if 'include-system-site-packages=true' in text:
            prefixes.append(_s.base_prefix)
    found = []
    for d in _site.getsitepackages(prefixes):
        if not _o.path.isdir(d) or d in found:
            continue
        found.append(d)
        try:
            names = sorted(n for n in _o.listdir(d) if n.endswith('.pth'))
        except OSError:
            names = []
        for n in names[:200]:
            try:
                with open(_o.path.join(d, n), encoding='utf-8', errors='replace') as f:
                    lines = f.read(65536).splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith(('#', 'import ', 'import\t')):
                    continue
                p = _o.path.normpath(_o.path.join(d, line))
                if _o.path.isdir(p) and p not in found:
                    found.append(p)
    for p in found:
        if p not in _s.path:
            _s.path.append(p)
_kmcp_paths()
del _kmcp_paths
"#;

/// The argv that runs `code` (then `args` as `sys.argv[1:]`) in `python` outside the sandbox,
/// safely: isolated mode, no `site`, the environment's packages found by [`PROBE_PRELUDE`].
pub fn probe_argv(python: &std::path::Path, code: &str, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        python.to_string_lossy().into_owned(),
        "-I".to_owned(),
        "-S".to_owned(),
        "-c".to_owned(),
        format!("{PROBE_PRELUDE}\n{code}"),
    ];
    argv.extend(args.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes of 'x' made as they are read (no buffer of that size), then `tail`.
    struct Endless {
        len: usize,
        tail: &'static [u8],
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.len > 0 {
                let n = self.len.min(buf.remaining());
                buf.put_slice(&vec![b'x'; n]);
                self.len -= n;
            } else {
                let n = self.tail.len().min(buf.remaining());
                let (now, later) = self.tail.split_at(n);
                buf.put_slice(now);
                self.tail = later;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_and_what_follows_is_kept() {
        let r = Endless {
            len: 200 << 20,
            tail: b"\nthe end\n",
        };
        let kept = collect(r, false, None).await;
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(lines.len(), 2, "{}", kept.len());
        let first = lines.first().copied().unwrap_or_default();
        assert!(first.ends_with(&format!(" [line cut at {MAX_LINE} bytes]")));
        assert!(first.len() < MAX_LINE + 40, "{}", first.len());
        assert_eq!(lines.get(1).copied(), Some("the end"));
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_stop_the_reading() {
        let input: &[u8] = b"\xff\xfebad bytes\r\nnext line\nlast without newline";
        let kept = collect(input, false, None).await;
        assert_eq!(
            kept,
            "\u{fffd}\u{fffd}bad bytes\nnext line\nlast without newline\n"
        );
    }

    /// A progress reader that takes nothing does not hold the run up or lose the kept output.
    #[tokio::test]
    async fn a_full_progress_channel_skips_lines_without_blocking() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let (tx, mut rx) = line_channel();
        let kept = tokio::time::timeout(
            Duration::from_secs(60),
            collect(text.as_bytes(), false, Some(tx)),
        )
        .await;
        assert_eq!(kept.as_deref().ok(), Some(text.as_str()));
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 64);
    }

    /// Output over the budget keeps its end, where installers put the error.
    #[tokio::test]
    async fn long_output_keeps_its_end() {
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        let kept = collect(text.as_bytes(), false, None).await;
        assert!(kept.len() <= KEEP, "{}", kept.len());
        assert!(kept.ends_with("line 99999\n"));
        assert!(!kept.contains("line 1\n"));
    }

    #[test]
    fn only_allow_listed_variables_pass() {
        for name in ["PATH", "Path", "LC_ALL", "HOME", "SystemRoot"] {
            assert!(Inherit::Base.keeps(name), "{name}");
        }
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKEN",
            "KERNEL_MCP_TOKEN",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PIP_INDEX_URL",
            "SSH_AUTH_SOCK",
            "LD_PRELOAD",
        ] {
            assert!(!Inherit::Base.keeps(name), "{name}");
        }
        for name in [
            "PIP_INDEX_URL",
            "PIP_CONFIG_FILE",
            "UV_INDEX_URL",
            "https_proxy",
            "NO_PROXY",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
        ] {
            assert!(Inherit::Installer.keeps(name), "{name}");
        }
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKEN",
            "KERNEL_MCP_TOKEN",
            "PYTHONPATH",
        ] {
            assert!(!Inherit::Installer.keeps(name), "{name}");
        }
    }
}
