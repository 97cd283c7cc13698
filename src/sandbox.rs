//! The OS sandbox for the kernel, behind one interface: the policy (what the kernel may do), the
//! status report, and the launch helper `kernel-mcp __kernel-launch [--policy JSON] -- <argv>`
//! that runs between the server and the kernel. The platform code is chosen here, once:
//! sandbox/linux.rs (Landlock, seccomp), sandbox/macos.rs (Seatbelt), sandbox/windows.rs (none).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub mod index;
pub mod seatbelt;

#[cfg(target_os = "linux")]
mod activity;
#[cfg(target_os = "linux")]
mod idmap;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub mod namespaces;
#[cfg(target_os = "linux")]
mod watch;
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

/// Exit code of the sandbox's PID 1 when it could not build its namespaces after creating them
/// (no way back to the host's view then); the server starts the kernel again without them.
pub const NS_SETUP_FAILED: i32 = 122;

/// The helper's exit code when its watch stopped the kernel for going over the resident memory
/// limit (Linux): the server words that death as the limit, not as a signal.
pub const MEMORY_LIMIT_EXIT: i32 = 123;

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
    /// Address-space limit in bytes, per process (macOS; on Linux `resident_bytes` instead).
    pub memory_bytes: Option<u64>,
    /// Linux: resident memory all the kernel's processes may use together; over it, the
    /// helper's watch stops the largest of them (the kernel itself, usually).
    #[serde(default)]
    pub resident_bytes: Option<u64>,
    /// Largest file the kernel may write, in bytes.
    pub file_size_bytes: Option<u64>,
    /// Most open files.
    pub open_files: Option<u64>,
    /// Fail instead of running with a partial sandbox.
    pub require: bool,
    /// Where to write the status report (JSON).
    pub status_file: Option<PathBuf>,
    /// Linux: run the kernel in namespaces of its own (`None`: not asked for, or turned off).
    #[serde(default)]
    pub namespaces: Option<NsPolicy>,
    /// Why the namespace layer is off, when the server turned it off (said in the status).
    #[serde(default)]
    pub namespaces_off: Option<String>,
    /// Bytes the kernel may add to `quota_paths` in total (`--disk-quota`).
    #[serde(default)]
    pub disk_quota: Option<u64>,
    /// The directories the disk quota watches (the workspace and the kernel's HOME).
    #[serde(default)]
    pub quota_paths: Vec<PathBuf>,
    /// CPU seconds a process that left the kernel's session may use (`--detached-cpu-limit`).
    #[serde(default)]
    pub detached_cpu_secs: Option<u64>,
    /// Most processes inside the sandbox (namespaces only: elsewhere the count is per user).
    #[serde(default)]
    pub processes: Option<u64>,
}

/// The namespace layer's settings (Linux).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsPolicy {
    /// The kernel's runtime dir: the new root is built below it.
    pub runtime: PathBuf,
    /// The kernel's HOME: a private tmpfs seeded with what the server put there.
    pub scratch: PathBuf,
    /// Size of each private tmpfs (HOME, /tmp, /dev/shm), in bytes.
    pub tmpfs_bytes: u64,
    /// A network namespace of its own, loopback only (network off, ipc transport).
    pub private_network: bool,
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
    /// Linux namespaces: which are in force, or why none.
    #[serde(default)]
    pub namespaces: String,
    /// The disk quota and the detached-process CPU limit.
    #[serde(default)]
    pub quota: String,
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
                "namespaces: {}; landlock {} (ABI {}); filesystem: {}; network: {}; scoping: {}; seccomp: {}; limits: {}; {}",
                self.namespaces, self.landlock, self.landlock_abi, self.filesystem, self.network, self.scoping, self.seccomp, self.limits, self.quota
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

/// The default disk quota: 10 GiB, and never more than half the space free on the
/// workspace's disk at start. Big enough for ordinary data work (a few multi-GB files), small
/// enough that a runaway cell can never fill the host's disk.
pub fn default_disk_quota(workspace: &Path) -> u64 {
    const CAP: u64 = 10 << 30;
    #[cfg(unix)]
    if let Ok(s) = nix::sys::statvfs::statvfs(workspace) {
        // The field types differ by platform (u32 on some).
        #[allow(clippy::unnecessary_cast)]
        let free = (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64);
        return CAP.min(free / 2).max(64 << 20);
    }
    let _ = workspace;
    CAP
}

/// Size of each private tmpfs (HOME, /tmp, /dev/shm): the quota, and at most half the RAM,
/// since tmpfs pages live in memory.
pub fn tmpfs_size(quota: Option<u64>) -> u64 {
    let size = quota.unwrap_or(10 << 30);
    let half_ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024) / 2)
    });
    size.min(half_ram.unwrap_or(u64::MAX)).max(16 << 20)
}

/// How `install_package` runs the installer on this machine.
#[derive(Debug, Clone)]
pub enum InstallMode {
    /// Inside the kernel's sandbox, with the network on for the installer alone.
    Sandboxed(InstallerSandbox),
    /// No sandbox for the installer here: wheels only, so no package's build code runs.
    WheelsOnly,
    /// As the user (the sandbox is off, or `--allow-source-builds` where none is available).
    Unconfined,
}

/// Environment variables to set, as (name, value).
pub type EnvVars = Vec<(String, String)>;

/// Confinement for an installer run: the kernel's namespaces and inner layers, with the network
/// on and only the environment's prefix, the download cache and a private scratch dir writable.
/// A source distribution's build backend runs in there, so it can neither read the user's files
/// nor write outside the environment.
#[derive(Debug, Clone)]
pub struct InstallerSandbox {
    /// The launch helper (this binary).
    pub helper: PathBuf,
    /// What the interpreter reads (read-only).
    pub python_paths: Vec<PathBuf>,
    /// Also readable: `--allow-read` folders. Never the workspace: build code has the network,
    /// so nothing of the user's that it could send away is shown to it.
    pub extra_read: Vec<PathBuf>,
    /// The environment's root (a venv: site-packages, scripts, data files), or its
    /// site-packages folders for an interpreter that is not a venv. Writable.
    pub writable: Vec<PathBuf>,
    /// The installer's download and build cache. Writable.
    pub cache: PathBuf,
    /// Use the namespace layer (else Landlock, seccomp and rlimits only).
    pub namespaces: bool,
}

impl InstallerSandbox {
    /// `argv` wrapped in the helper, and the environment to add. `runtime` is a fresh private
    /// directory (HOME and TMPDIR go there) that the caller removes afterwards.
    pub fn wrap(&self, argv: &[String], runtime: &Path) -> Result<(Vec<String>, EnvVars), String> {
        self.wrap_with(argv, runtime, true)
    }

    /// [`InstallerSandbox::wrap`], with the network on or off (checks and uninstalls need none).
    pub fn wrap_with(
        &self,
        argv: &[String],
        runtime: &Path,
        network: bool,
    ) -> Result<(Vec<String>, EnvVars), String> {
        let home = runtime.join("home");
        let tmp = runtime.join("tmp");
        for d in [&home, &tmp, &self.cache] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.extend(self.python_paths.iter().cloned());
        read.extend(self.extra_read.iter().cloned());
        // The user's index configuration: copies where the installer looks, and what it names.
        let index = index::discover();
        let mut env = Vec::new();
        for (from, to) in &index.copies {
            let dst = runtime.join(to);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::copy(from, &dst).map_err(|e| format!("{}: {e}", from.display()))?;
        }
        let mut xdg = Vec::new();
        for (name, rel) in &index.env {
            let v = runtime.join(rel).to_string_lossy().into_owned();
            if name == "XDG_CONFIG_DIRS" {
                xdg.push(v);
            } else {
                env.push((name.clone(), v));
            }
        }
        if !xdg.is_empty() {
            env.push(("XDG_CONFIG_DIRS".to_owned(), xdg.join(":")));
        }
        read.extend(index.read);
        // The installer binary's own folder (uv).
        if let Some(dir) = argv
            .first()
            .map(Path::new)
            .filter(|p| p.is_absolute())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            read.push(dir);
        }
        let mut write = self.writable.clone();
        write.extend([self.cache.clone(), runtime.to_path_buf()]);
        write.extend(DEV_WRITE.iter().map(PathBuf::from));
        let policy = Policy {
            read,
            write,
            network,
            open_files: Some(4096),
            status_file: Some(runtime.join("sandbox.json")),
            namespaces: self.namespaces.then(|| NsPolicy {
                runtime: runtime.to_path_buf(),
                scratch: home.clone(),
                tmpfs_bytes: 1 << 30,
                private_network: !network,
            }),
            namespaces_off: (!self.namespaces).then(|| "off for this server".to_owned()),
            processes: Some(1024),
            ..Policy::default()
        };
        let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
        let mut full = vec![
            self.helper.to_string_lossy().into_owned(),
            HELPER_ARG.to_owned(),
            "--policy".to_owned(),
            json,
            "--".to_owned(),
        ];
        full.extend(argv.iter().cloned());
        let s = |p: &Path| p.to_string_lossy().into_owned();
        env.extend([
            ("HOME".to_owned(), s(&home)),
            ("TMPDIR".to_owned(), s(&tmp)),
            ("XDG_CACHE_HOME".to_owned(), s(&home.join(".cache"))),
            ("PIP_CACHE_DIR".to_owned(), s(&self.cache)),
            ("UV_CACHE_DIR".to_owned(), s(&self.cache)),
            ("PYTHONNOUSERSITE".to_owned(), "1".to_owned()),
        ]);
        Ok((full, env))
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
/// With `namespaces`, the namespace layer must build too (Linux).
pub fn probe(network: bool, namespaces: bool) -> Result<(), String> {
    if let Some(why) = UNAVAILABLE {
        return Err(why.to_owned());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!(
        "kernel-mcp-probe-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let scratch = dir.join("home");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let mut policy = Policy::for_kernel(&[], &[], &dir, &dir);
    policy.network = network;
    if namespaces && cfg!(target_os = "linux") {
        policy.namespaces = Some(NsPolicy {
            runtime: dir.clone(),
            scratch,
            tmpfs_bytes: 16 << 20,
            private_network: !network,
        });
    }
    let json = serde_json::to_string(&policy).map_err(|e| e.to_string());
    let out = json.and_then(|json| {
        Command::new(exe)
            .arg(HELPER_ARG)
            .arg("--policy")
            .arg(json)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs the helper with the kernel's argv and never returns.
pub fn helper_main(policy: Option<&str>, argv: &[String]) -> ! {
    let mut wrap = Vec::new();
    let mut applied = None;
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
        applied = Some(policy);
    }
    if argv.is_empty() {
        eprintln!("kernel-mcp helper: no kernel command given");
        std::process::exit(2);
    }
    let full: Vec<String> = wrap.into_iter().chain(argv.iter().cloned()).collect();
    imp::supervise(&full, applied.as_ref())
}
