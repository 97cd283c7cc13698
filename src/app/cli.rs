//! The command line: flags, subcommands and their parsers (the binary's own; the library
//! takes already-checked values).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::kernel::Transport;
use crate::limits::{self, SizeLimit};

#[derive(Parser, Debug)]
#[command(
    name = "kernel-mcp",
    version,
    about = "MCP server: a stateful Python interpreter backed by a real Jupyter kernel"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) opts: Opts,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Opts {
    /// Folder the file tools are jailed to and the kernel's working directory (created if
    /// missing). Default ./workspace, or a per-user data folder when that is not writable or
    /// the server runs in the filesystem root.
    #[arg(long, global = true)]
    pub(crate) workspace: Option<PathBuf>,
    /// Use this Python interpreter (it must have ipykernel) instead of the managed environment.
    #[arg(long, global = true)]
    pub(crate) python: Option<PathBuf>,
    /// Use the Python of this virtualenv or uv venv (its bin/python).
    #[arg(long, global = true, conflicts_with = "python")]
    pub(crate) venv: Option<PathBuf>,
    /// Use the Python of this conda environment (found with `conda env list`).
    #[arg(long, global = true, conflicts_with_all = ["python", "venv"])]
    pub(crate) conda_env: Option<String>,
    /// Offer another environment to the model by name: NAME=PATH (a venv dir or an interpreter). Repeatable.
    #[arg(long = "env", value_name = "NAME=PATH", global = true)]
    pub(crate) envs: Vec<String>,
    /// Seconds an install_package run may take before the installer is killed.
    #[arg(long, default_value = "300", value_parser = limits::parse_seconds, global = true)]
    pub(crate) install_timeout: Duration,
    /// Kernel spec: a kernel.json file or a folder holding one (default: the built-in spec).
    #[arg(long, global = true)]
    pub(crate) kernel_spec: Option<PathBuf>,
    /// Default execute_python timeout in seconds, after which the kernel is interrupted (at
    /// most 30 days, like every duration flag). Long by default: a call returns after
    /// --return-after and the run goes on in the background until then.
    #[arg(long, default_value = "1800", value_parser = limits::parse_seconds, global = true)]
    pub(crate) timeout: Duration,
    /// Seconds a call to execute_python or run_file waits for its run before it returns the
    /// output so far and leaves the run going (check_run follows it); 0 = wait until it ends.
    /// Below the ~60 s after which desktop clients give up on a tool call.
    #[arg(long, default_value = "45", value_parser = limits::parse_seconds_or_zero, global = true)]
    pub(crate) return_after: Duration,
    /// Largest timeout_seconds a call may ask for.
    #[arg(long, default_value = "3600", value_parser = limits::parse_seconds, global = true)]
    pub(crate) max_timeout: Duration,
    /// Seconds to wait after an interrupt before the kernel is killed and restarted.
    #[arg(long, default_value = "3", value_parser = limits::parse_seconds, global = true)]
    pub(crate) interrupt_grace: Duration,
    /// Characters of text output returned per call before head/tail truncation (1000 to 100,000,000).
    #[arg(long, default_value = "20000", value_parser = |s: &str| limits::parse_count(s, limits::MAX_OUTPUT_BUDGET), global = true)]
    pub(crate) output_budget: usize,
    /// Most images returned per call.
    #[arg(long, default_value = "10", value_parser = |s: &str| limits::parse_count(s, limits::MAX_IMAGES), global = true)]
    pub(crate) max_images: usize,
    /// Longest edge, in pixels, of an image returned to the client (bigger ones are downscaled;
    /// the original is kept in the workspace). 64 to 8000.
    #[arg(long, default_value = "1568", value_parser = |s: &str| limits::parse_count(s, 8000).and_then(|n| if n < 64 { Err(format!("{s:?}: give a number of pixels from 64 to 8000")) } else { Ok(n) }), global = true)]
    pub(crate) max_image_px: usize,
    /// Largest encoded image returned to the client (re-encoded smaller past it): 16K to 64M.
    #[arg(long, default_value = "1M", value_parser = limits::parse_image_bytes, global = true)]
    pub(crate) max_image_bytes: usize,
    /// Seconds the kernel may take to start.
    #[arg(long, default_value = "60", value_parser = limits::parse_seconds, global = true)]
    pub(crate) startup_timeout: Duration,
    /// How the server talks to the kernel: ipc (unix sockets in a private dir; the default except
    /// on Windows) or tcp (127.0.0.1; the default on Windows).
    #[arg(long, value_enum, default_value_t = Transport::default(), global = true)]
    pub(crate) transport: Transport,
    /// OS sandbox for the kernel: strict (Landlock + seccomp + rlimits, best effort), require
    /// (refuse to run without every layer), or off.
    #[arg(long, value_enum, default_value_t = SandboxMode::Strict, global = true)]
    pub(crate) sandbox: SandboxMode,
    /// Let the kernel use the network (off by default under the sandbox). `--allow-network=false`
    /// is accepted too (the MCP bundle passes its checkbox that way).
    #[arg(long, global = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) allow_network: bool,
    /// Extra read-only directory for the kernel (repeatable), e.g. a shared data folder.
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) allow_read: Vec<PathBuf>,
    /// Any number of extra read-only directories after one flag (put it last); the MCP bundle's
    /// folder list arrives this way. Same as repeating --allow-read.
    #[arg(long, value_name = "DIR", num_args = 0.., global = true)]
    pub(crate) read_only_dirs: Vec<PathBuf>,
    /// Kernel memory limit, e.g. 4G, 512M (0 = none): on Linux the resident memory of all the
    /// kernel's processes together; elsewhere an address-space limit per process where the OS
    /// enforces one.
    #[arg(long, default_value = "4G", value_parser = limits::parse_size, global = true)]
    pub(crate) memory_limit: SizeLimit,
    /// Largest file the kernel may write, e.g. 8G (0 = none; at least 16M otherwise).
    #[arg(long, default_value = "8G", value_parser = parse_write_limit, global = true)]
    pub(crate) max_file_size: SizeLimit,
    /// Total bytes the kernel may add to the workspace and its HOME: auto (10 GiB, and at most
    /// half the free space on the workspace's disk at start), a size such as 20G, or 0 for none.
    /// Past it the kernel's writes fail with "File too large" until files are deleted.
    #[arg(long, default_value = "auto", value_parser = parse_quota, global = true)]
    pub(crate) disk_quota: DiskQuota,
    /// CPU seconds each process that leaves the kernel's session (setsid, a daemon) may use
    /// before it is stopped; 0 = no limit. The kernel itself and its ordinary children are not
    /// limited.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_cpu_seconds, global = true)]
    pub(crate) detached_cpu_limit: u64,
    /// Linux: do not put the kernel in namespaces of its own; keep only Landlock, seccomp and
    /// rlimits (what machines without user namespaces get). Also KERNEL_MCP_NO_NAMESPACES=1.
    #[arg(long, env = "KERNEL_MCP_NO_NAMESPACES", global = true,
          action = clap::ArgAction::SetTrue, value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_namespaces: bool,
    /// Let install_package build packages from source (run their build code) on platforms where
    /// no sandbox can hold it (macOS, Windows); without it installs there take wheels only.
    /// On Linux installs always run inside the kernel's sandbox.
    #[arg(long, global = true)]
    pub(crate) allow_source_builds: bool,
    /// Do not snapshot the kernel's variables for the next server on this workspace.
    #[arg(long, global = true)]
    pub(crate) no_persist: bool,
    /// Most bytes a snapshot of the variables may take (one object at most half of it, and
    /// 1G); bigger ones are skipped and named. 0 = no limit.
    #[arg(long, default_value = "2G", value_parser = limits::parse_size, global = true)]
    pub(crate) snapshot_max: limits::SizeLimit,
    /// Do not keep a warm spare kernel (saves its memory; restarts then take a cold start).
    #[arg(long, global = true)]
    pub(crate) no_spare: bool,
    /// Do not pre-import numpy, pandas and matplotlib (in the background in a new kernel, and in the spare).
    #[arg(long, global = true)]
    pub(crate) no_preload: bool,
    /// Most execute calls waiting behind the running one before "busy" is returned.
    #[arg(long, default_value = "16", value_parser = |s: &str| limits::parse_count(s, limits::MAX_QUEUE), global = true)]
    pub(crate) max_queue: usize,
    /// Attach to a running kernel through its connection file (as `jupyter console --existing`).
    /// kernel-mcp does not own that kernel: it keeps running when the server exits.
    #[arg(long, value_name = "CONNECTION_FILE", global = true,
          conflicts_with_all = ["python", "venv", "conda_env", "gateway_url"])]
    pub(crate) existing: Option<PathBuf>,
    /// Start kernels on a Jupyter Server, Kernel Gateway or Enterprise Gateway at this URL.
    #[arg(long, env = "JUPYTER_GATEWAY_URL", global = true,
          conflicts_with_all = ["python", "venv", "conda_env"])]
    pub(crate) gateway_url: Option<String>,
    /// Token for the gateway (sent as `Authorization: token ...`; never logged).
    #[arg(
        long,
        env = "JUPYTER_GATEWAY_AUTH_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub(crate) gateway_token: Option<String>,
    /// Kernelspec to start on the gateway (default: the gateway's default kernelspec).
    #[arg(long, global = true)]
    pub(crate) kernel_name: Option<String>,
    /// At the first kernel start, delete the gateway kernels that servers of this user now
    /// gone (killed, crashed) started on the same gateway. `--reap-orphans false` keeps them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL", global = true)]
    pub(crate) reap_orphans: bool,
    /// Keep a notebook of the session at this workspace path, rewritten after every call
    /// (e.g. "session-journal.ipynb"), so nothing is lost if the client goes away.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) journal: Option<String>,
    /// Serve MCP over Streamable HTTP at http://HOST:PORT/mcp instead of stdio, with a kernel
    /// and a workspace folder per session.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub(crate) listen: Option<String>,
    /// File holding the bearer token HTTP clients must send (default: env KERNEL_MCP_TOKEN).
    /// Required when --listen is not a loopback address.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) token_file: Option<PathBuf>,
    /// A browser origin allowed to call the HTTP endpoint, e.g. https://app.example.com (repeatable).
    #[arg(long, value_name = "ORIGIN", global = true)]
    pub(crate) allow_origin: Vec<String>,
    /// Most HTTP sessions at once; beyond it a new session gets HTTP 503.
    #[arg(long, default_value_t = 8, global = true)]
    pub(crate) max_sessions: usize,
    /// Seconds without a request after which an HTTP session and its kernel end.
    #[arg(long, default_value = "1800", value_parser = limits::parse_seconds, global = true)]
    pub(crate) session_idle_timeout: Duration,
    /// HTTP sessions share the workspace root instead of each getting its own folder in it.
    #[arg(long, global = true)]
    pub(crate) shared_workspace: bool,
    /// Largest HTTP request body, e.g. 32M.
    #[arg(long, default_value = "32M", value_parser = limits::parse_size, global = true)]
    pub(crate) max_body: SizeLimit,
}

/// `--disk-quota`: auto, or a size (0 = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DiskQuota {
    Auto,
    Size(SizeLimit),
}

pub(crate) fn parse_quota(s: &str) -> Result<DiskQuota, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(DiskQuota::Auto);
    }
    parse_write_limit(s).map(DiskQuota::Size)
}

/// The smallest write limit (`--max-file-size`, `--disk-quota`): ipykernel and matplotlib write
/// a few MB of their own at start, and a kernel that cannot would never start.
const MIN_WRITE_LIMIT: u64 = 16 << 20;

/// A size for a limit on what the kernel writes: 0 (none) or at least [`MIN_WRITE_LIMIT`].
pub(crate) fn parse_write_limit(s: &str) -> Result<SizeLimit, String> {
    let v = limits::parse_size(s)?;
    match v.0 {
        Some(n) if n < MIN_WRITE_LIMIT => Err(format!(
            "{s:?} is too small: the kernel writes a few MB of its own at start, so give at least 16M, or 0 for no limit"
        )),
        _ => Ok(v),
    }
}

pub(crate) fn parse_cpu_seconds(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of seconds"))?;
    if n > 30 * 24 * 3600 {
        return Err(format!("{s:?}: at most 30 days of CPU time"));
    }
    Ok(n)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SandboxMode {
    Strict,
    Require,
    Off,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve MCP on stdin/stdout (the default).
    Serve,
    /// Create or check the managed Python environment and print what is in it.
    Setup,
    /// Run a three-step analysis through the server, as an MCP client would, and print each result.
    Demo,
}
