//! Running helper processes (the interpreter's probes, venv creation, installers) as argv
//! lists with no shell, bounded in time and output, killing the whole process tree on timeout;
//! always from a folder the kernel cannot write and with an allow-listed environment.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

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
    run_command(argv, timeout, echo, None, &[], Inherit::Base, false).await
}

/// Like [`run_logged`], also sending each output line to `on_line` and setting `env`.
pub async fn run_with_lines(
    argv: &[String],
    timeout: Duration,
    echo: bool,
    on_line: Option<tokio::sync::mpsc::UnboundedSender<String>>,
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
    on_line: Option<tokio::sync::mpsc::UnboundedSender<String>>,
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
