//! The OS sandbox for the kernel, behind one interface: the policy (what the kernel may do), the
//! status report, and the launch helper `kernel-mcp __kernel-launch [--policy JSON] -- <argv>`
//! that runs between the server and the kernel. The platform code is chosen here, once:
//! sandbox/linux.rs (Landlock, seccomp), sandbox/macos.rs (Seatbelt), sandbox/windows.rs (none).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub mod seatbelt;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(unix)]
mod unix;

/// The hidden subcommand name.
pub const HELPER_ARG: &str = "__kernel-launch";

/// What the kernel may do. Built by the server, applied by the helper before it starts the kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// Directories and files readable (and executable).
    pub read: Vec<PathBuf>,
    /// Directories and files readable and writable.
    pub write: Vec<PathBuf>,
    /// Allow network access.
    pub network: bool,
    /// TCP ports the kernel may bind (its own channels when the transport is tcp).
    pub bind_ports: Vec<u16>,
    /// Address-space limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Largest file the kernel may write, in bytes.
    pub file_size_bytes: Option<u64>,
    /// Most open files.
    pub open_files: Option<u64>,
    /// Fail instead of running with a partial sandbox.
    pub require: bool,
    /// Where to write the status report (JSON).
    pub status_file: Option<PathBuf>,
}

/// What the sandbox actually enforces on this machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The OS mechanism: "landlock+seccomp", "seatbelt" or "none".
    #[serde(default)]
    pub mechanism: String,
    /// Linux: "fully enforced", "partially enforced" or "not enforced" (empty elsewhere).
    pub landlock: String,
    /// Landlock ABI in use (0 when unavailable or not Linux).
    pub landlock_abi: i32,
    /// Filesystem rule summary.
    pub filesystem: String,
    /// Network rule summary.
    pub network: String,
    /// Signal and abstract-socket scoping.
    pub scoping: String,
    /// seccomp summary (Linux).
    pub seccomp: String,
    /// rlimits applied.
    pub limits: String,
    /// Every layer the platform offers is in force.
    #[serde(default)]
    pub enforced: bool,
    /// Problems met while applying the sandbox.
    pub warnings: Vec<String>,
}

impl Status {
    /// One line for logs and reports.
    pub fn summary(&self) -> String {
        let mut s = if self.mechanism == LINUX_MECHANISM {
            format!(
                "landlock {} (ABI {}); filesystem: {}; network: {}; scoping: {}; seccomp: {}; limits: {}",
                self.landlock, self.landlock_abi, self.filesystem, self.network, self.scoping, self.seccomp, self.limits
            )
        } else {
            format!(
                "{}; filesystem: {}; network: {}; limits: {}",
                self.mechanism, self.filesystem, self.network, self.limits
            )
        };
        if !self.warnings.is_empty() {
            s.push_str(&format!("; WARNINGS: {}", self.warnings.join(" | ")));
        }
        s
    }

    /// True when every layer asked for is in force.
    pub fn complete(&self) -> bool {
        self.enforced && self.warnings.is_empty()
    }
}

/// `Status::mechanism` on Linux.
pub const LINUX_MECHANISM: &str = "landlock+seccomp";

/// The read-only system locations every Python needs on this platform.
pub const SYSTEM_READ: &[&str] = imp::SYSTEM_READ;

/// Device files a kernel may also write.
pub const DEV_WRITE: &[&str] = imp::DEV_WRITE;

/// Why this platform runs the kernel without an OS sandbox, if it does (said at start, in
/// get_environment and in the README).
pub const UNAVAILABLE: Option<&str> = imp::UNAVAILABLE;

impl Policy {
    /// The policy for a kernel: system and Python paths read-only; workspace and scratch read-write.
    pub fn for_kernel(
        python_paths: &[PathBuf],
        extra_read: &[PathBuf],
        workspace: &Path,
        scratch: &Path,
    ) -> Policy {
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.extend(python_paths.iter().cloned());
        read.extend(extra_read.iter().cloned());
        let mut write = vec![workspace.to_path_buf(), scratch.to_path_buf()];
        write.extend(DEV_WRITE.iter().map(PathBuf::from));
        Policy {
            read,
            write,
            ..Policy::default()
        }
    }
}

/// The helper binary kernels are started through (`kernel-mcp` itself), or `None` on platforms
/// where the server binds the kernel's lifetime directly (Windows: a Job Object).
pub fn helper_exe() -> Option<PathBuf> {
    if imp::USES_HELPER {
        std::env::current_exe().ok()
    } else {
        None
    }
}

/// Checks, in a throwaway helper process, that every sandbox layer can be applied here.
pub fn probe(network: bool) -> Result<(), String> {
    if let Some(why) = UNAVAILABLE {
        return Err(why.to_owned());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tmp = std::env::temp_dir();
    let mut policy = Policy::for_kernel(&[], &[], &tmp, &tmp);
    policy.network = network;
    let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg(HELPER_ARG)
        .arg("--policy")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs the helper with the kernel's argv and never returns.
pub fn helper_main(policy: Option<&str>, argv: &[String]) -> ! {
    let mut wrap = Vec::new();
    if let Some(json) = policy {
        let policy: Policy = match serde_json::from_str(json) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kernel-mcp helper: bad sandbox policy: {e}");
                std::process::exit(2);
            }
        };
        let (status, prefix) = imp::apply(&policy);
        wrap = prefix;
        eprintln!("kernel-mcp sandbox: {}", status.summary());
        if let Some(f) = &policy.status_file {
            let _ = std::fs::write(f, serde_json::to_vec(&status).unwrap_or_default());
        }
        if policy.require && !status.complete() {
            eprintln!("kernel-mcp helper: --sandbox require: the sandbox is incomplete on this machine; refusing to start the kernel");
            std::process::exit(121);
        }
        if argv.is_empty() {
            // A probe: report and exit.
            std::process::exit(if status.complete() { 0 } else { 1 });
        }
    }
    if argv.is_empty() {
        eprintln!("kernel-mcp helper: no kernel command given");
        std::process::exit(2);
    }
    let full: Vec<String> = wrap.into_iter().chain(argv.iter().cloned()).collect();
    imp::supervise(&full)
}
