//! The sandbox policy in words: one paragraph for the server instructions and get_environment,
//! and the note that ends a result whose error looks like a sandbox denial (a path outside the
//! workspace, the network, a memory or disk limit), naming the flag that relaxes it.
//!
//! Pure text logic, except one check on the host: whether a path the kernel could not find
//! exists outside the sandbox (then it was hidden, not missing).

use std::path::{Path, PathBuf};

use crate::limits::human_bytes;

/// What the kernel's sandbox allows, as the server was started.
#[derive(Debug, Clone, Default)]
pub struct SandboxPolicy {
    pub workspace: PathBuf,
    /// `--allow-read` folders.
    pub extra_read: Vec<PathBuf>,
    pub network: bool,
    pub memory_bytes: Option<u64>,
    pub disk_quota: Option<u64>,
    pub detached_cpu_secs: Option<u64>,
}

/// Which kind of denial an error shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A path outside what the sandbox lets the kernel see or change.
    Path {
        path: String,
        write: bool,
    },
    /// The host's /tmp, denied (no private /tmp without the namespace layer).
    HostTmp {
        path: String,
    },
    Network,
    Memory,
    DiskQuota,
    Scratch,
}

/// What `--memory-limit` counts, per platform: on Linux the sandbox's watch counts resident
/// memory of all the kernel's processes; on macOS it is an address-space limit per process.
const PER: &str = if cfg!(target_os = "linux") {
    "for all its processes together"
} else {
    "per process"
};

impl SandboxPolicy {
    /// The policy in one short paragraph.
    pub fn paragraph(&self) -> String {
        let mut s = format!(
            "Sandbox: the kernel reads and writes only the workspace ({}); the Python installation and system libraries are read-only",
            self.workspace.display()
        );
        if !self.extra_read.is_empty() {
            let dirs: Vec<String> = self
                .extra_read
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            s.push_str(&format!(", and so are {}", dirs.join(", ")));
        }
        s.push_str(
            "; other folders are hidden or denied (the server's --allow-read DIR adds one). ",
        );
        if self.network {
            s.push_str("The network is on (--allow-network). ");
        } else {
            s.push_str("The network is off (the server's --allow-network turns it on); install_package still installs packages. ");
        }
        let mut limits = Vec::new();
        if let Some(m) = self.memory_bytes {
            limits.push(format!(
                "{} of memory {PER} (--memory-limit)",
                human_bytes(m)
            ));
        }
        if let Some(q) = self.disk_quota {
            limits.push(format!(
                "{} of new files in total (--disk-quota)",
                human_bytes(q)
            ));
        }
        if let Some(c) = self.detached_cpu_secs {
            limits.push(format!(
                "{c} CPU seconds for each process that detaches from the kernel (--detached-cpu-limit)"
            ));
        }
        if !limits.is_empty() {
            s.push_str(&format!("Limits: {}.", limits.join(", ")));
        }
        s.trim_end().to_owned()
    }

    /// The kind of denial `error` (an error's `ename: evalue` and traceback) shows, if any.
    pub fn classify(&self, error: &str) -> Option<Denial> {
        let head = error.lines().next().unwrap_or("");
        if head.contains("[Errno 27]") || head.contains("File too large") {
            return self.disk_quota.map(|_| Denial::DiskQuota);
        }
        if head.contains("[Errno 28]") || head.contains("No space left on device") {
            return Some(Denial::Scratch);
        }
        if head.starts_with("MemoryError")
            || head.starts_with("_ArrayMemoryError")
            || head.contains("Unable to allocate")
            || head.contains("[Errno 12]")
            || head.contains("Cannot allocate memory")
        {
            return self.memory_bytes.map(|_| Denial::Memory);
        }
        if !self.network && network_failure(error) {
            return Some(Denial::Network);
        }
        if let Some((errno, path)) = errno_path(head) {
            let p = Path::new(&path);
            if !p.is_absolute() || within(p, &self.workspace) {
                return None;
            }
            let write = head.contains("Read-only file system");
            if matches!(errno, 1 | 13) && p.starts_with("/tmp") {
                return Some(Denial::HostTmp { path });
            }
            match errno {
                // Denied outright (Landlock), or read-only (a mount of the sandbox).
                1 | 13 | 30 => return Some(Denial::Path { path, write }),
                // Missing inside, but there on the host: hidden by the sandbox's mount view.
                2 if host_has(p) => return Some(Denial::Path { path, write }),
                _ => {}
            }
        }
        None
    }

    /// The note for `error`, if it looks like a sandbox denial.
    pub fn note(&self, error: &str) -> Option<String> {
        Some(match self.classify(error)? {
            Denial::HostTmp { path } => format!(
                "[sandbox: {path} is in the host's /tmp, which the kernel may not use here (a private /tmp needs the namespace layer, which is off on this machine). Use tempfile (it writes to the kernel's own TMPDIR) or a folder in the workspace ({}).]",
                self.workspace.display()
            ),
            Denial::Path { path, write } => {
                let dir = Path::new(&path)
                    .parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| path.clone());
                if write {
                    format!("[sandbox: {path} is outside the workspace, and only the workspace is writable. Write under {} instead.]", self.workspace.display())
                } else {
                    format!("[sandbox: {path} is outside what the kernel may see (the workspace, the Python installation{}). To let it read that folder, the server must be started with --allow-read {dir}; or copy the file into the workspace.]",
                        if self.extra_read.is_empty() { "" } else { " and the --allow-read folders" })
                }
            }
            Denial::Network => "[sandbox: the network is off for the kernel, so names do not resolve and connections fail or are refused. `localhost` (127.0.0.1) inside the sandbox is the kernel's own, not this machine's: a database or web API running on the host is not reachable either. The server must be started with --allow-network to allow it; install_package still installs packages.]".to_owned(),
            Denial::Memory => format!(
                "[sandbox: the kernel's memory limit is {} {PER} (--memory-limit); work on smaller pieces (chunks, fewer columns, smaller dtypes) or restart the server with a larger --memory-limit.]",
                self.memory_bytes.map(human_bytes).unwrap_or_default()
            ),
            Denial::DiskQuota => format!(
                "[sandbox: the disk quota is used up: the kernel may add {} of files in total (--disk-quota); writes fail until files are deleted. Delete what is not needed, or restart the server with a larger --disk-quota.]",
                self.disk_quota.map(human_bytes).unwrap_or_default()
            ),
            Denial::Scratch => "[sandbox: a private scratch space (HOME, /tmp or /dev/shm, in memory) is full; write large files into the workspace instead.]".to_owned(),
        })
    }
}

impl SandboxPolicy {
    /// The note for a kernel that died of `cause`, if the sandbox's memory limit may be why:
    /// the sandbox's own stop, or SIGKILL, which is what the out-of-memory killer sends.
    pub fn death_note(&self, cause: &crate::kernel::Gone) -> Option<String> {
        use crate::process::ExitCause;
        let m = self.memory_bytes?;
        let crate::kernel::Gone::Exited(cause) = cause else {
            return None;
        };
        if *cause == ExitCause::MemoryLimit {
            return Some(format!(
                "[sandbox: the kernel's processes may use {} of memory {PER} (--memory-limit); the kernel went over it and was stopped, so its variables are lost. Work on smaller pieces (chunks, fewer columns, smaller dtypes), or restart the server with a larger --memory-limit.]",
                human_bytes(m)
            ));
        }
        (*cause == ExitCause::Signal(9)).then(|| format!(
            "[sandbox: a kernel killed by SIGKILL has usually run out of memory: the machine's out-of-memory killer sends it when the machine's own memory runs out, which may be before the sandbox's {} {PER} (--memory-limit). Work on smaller pieces, or restart the server with a smaller --memory-limit so the sandbox stops the kernel first, with a note.]",
            human_bytes(m)
        ))
    }
}

fn within(p: &Path, base: &Path) -> bool {
    p.starts_with(base)
        || std::fs::canonicalize(base)
            .map(|b| p.starts_with(b))
            .unwrap_or(false)
}

fn host_has(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Name resolution or connection failures as Python, urllib3, requests and pandas word them.
fn network_failure(error: &str) -> bool {
    const SIGNS: &[&str] = &[
        "Temporary failure in name resolution",
        "Name or service not known",
        "nodename nor servname provided",
        "No address associated with hostname",
        "[Errno -2]",
        "[Errno -3]",
        "[Errno -5]",
        "Network is unreachable",
        "[Errno 101]",
        "Connection refused",
        "[Errno 111]",
        "ConnectionRefusedError",
        "No route to host",
        "[Errno 113]",
        "NewConnectionError",
        "NameResolutionError",
        "Failed to resolve",
        "gaierror",
    ];
    SIGNS.iter().any(|s| error.contains(s))
}

/// `[Errno N] message: 'path'` from an OSError line.
fn errno_path(line: &str) -> Option<(i32, String)> {
    let start = line.find("[Errno ")? + "[Errno ".len();
    let rest = line.get(start..)?;
    let end = rest.find(']')?;
    let errno: i32 = rest.get(..end)?.trim().parse().ok()?;
    let after = rest.get(end..)?;
    let q = after.find(": '").map(|i| i + 3)?;
    let tail = after.get(q..)?;
    let close = tail.find('\'')?;
    Some((errno, tail.get(..close)?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SandboxPolicy {
        SandboxPolicy {
            workspace: PathBuf::from("/w/ws"),
            extra_read: vec![],
            network: false,
            memory_bytes: Some(4 << 30),
            disk_quota: Some(1 << 30),
            detached_cpu_secs: Some(300),
        }
    }

    #[test]
    fn denied_and_hidden_paths_outside_the_workspace() {
        let p = policy();
        assert_eq!(
            p.classify("PermissionError: [Errno 13] Permission denied: '/root/.ssh/id_rsa'"),
            Some(Denial::Path {
                path: "/root/.ssh/id_rsa".into(),
                write: false
            })
        );
        // Inside the workspace a permission error is the user's own business.
        assert_eq!(
            p.classify("PermissionError: [Errno 13] Permission denied: '/w/ws/x'"),
            None
        );
        // Relative paths are in the workspace.
        assert_eq!(
            p.classify("FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'"),
            None
        );
        // A missing path that exists on the host was hidden; one that does not is just missing.
        let here = std::env::current_dir()
            .unwrap_or_default()
            .join("Cargo.toml");
        let msg = format!(
            "FileNotFoundError: [Errno 2] No such file or directory: '{}'",
            here.display()
        );
        assert!(matches!(p.classify(&msg), Some(Denial::Path { .. })));
        assert_eq!(
            p.classify("FileNotFoundError: [Errno 2] No such file or directory: '/no/such/thing'"),
            None
        );
        assert_eq!(
            p.classify("OSError: [Errno 30] Read-only file system: '/usr/x'"),
            Some(Denial::Path {
                path: "/usr/x".into(),
                write: true
            })
        );
        let note = p
            .note("PermissionError: [Errno 13] Permission denied: '/data/a.csv'")
            .unwrap_or_default();
        assert!(note.contains("--allow-read /data"), "{note}");
        // The host's /tmp, denied (no namespaces): --allow-read would not help; say what does.
        let tmp = "PermissionError: [Errno 13] Permission denied: '/tmp/x'";
        assert_eq!(
            p.classify(tmp),
            Some(Denial::HostTmp {
                path: "/tmp/x".into()
            })
        );
        let note = p.note(tmp).unwrap_or_default();
        assert!(
            note.contains("tempfile") && !note.contains("--allow-read"),
            "{note}"
        );
    }

    #[test]
    fn network_memory_and_disk() {
        let mut p = policy();
        let dns = "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>";
        assert_eq!(p.classify(dns), Some(Denial::Network));
        assert!(p.note(dns).unwrap_or_default().contains("--allow-network"));
        assert_eq!(
            p.classify("_ArrayMemoryError: Unable to allocate 16.0 GiB for an array"),
            Some(Denial::Memory)
        );
        assert!(p
            .note("MemoryError: ")
            .unwrap_or_default()
            .contains("4.0 GiB"));
        assert_eq!(
            p.classify("OSError: [Errno 27] File too large"),
            Some(Denial::DiskQuota)
        );
        assert!(p
            .note("OSError: [Errno 27] File too large")
            .unwrap_or_default()
            .contains("1.0 GiB"));
        let refused = "ConnectionRefusedError: [Errno 111] Connection refused";
        assert_eq!(p.classify(refused), Some(Denial::Network));
        assert!(p.note(refused).unwrap_or_default().contains("localhost"));
        p.network = true;
        assert_eq!(p.classify(dns), None);
        p.memory_bytes = None;
        assert_eq!(p.classify("MemoryError: "), None);
        assert_eq!(p.classify("ValueError: bad"), None);
    }

    #[test]
    fn a_memory_limit_stop_names_the_limit() {
        let cause = crate::kernel::Gone::Exited(crate::process::ExitCause::MemoryLimit);
        let n = policy().death_note(&cause).unwrap_or_default();
        assert!(
            n.contains("4.0 GiB") && n.contains("--memory-limit") && n.contains("was stopped"),
            "{n}"
        );
    }

    #[test]
    fn a_sigkill_death_names_the_memory_limit() {
        use crate::kernel::Gone;
        use crate::process::ExitCause;
        let p = policy();
        let n = p
            .death_note(&Gone::Exited(ExitCause::Signal(9)))
            .unwrap_or_default();
        assert!(n.contains("4.0 GiB") && n.contains("--memory-limit"), "{n}");
        assert_eq!(p.death_note(&Gone::Exited(ExitCause::Signal(11))), None);
        // A gateway kernel's loss is not the local sandbox's doing, whatever its words say.
        let lost = Gone::Lost {
            reason: "killed by signal 9 (SIGKILL)".into(),
        };
        assert_eq!(p.death_note(&lost), None);
    }

    #[test]
    fn paragraph_names_every_flag() {
        let t = policy().paragraph();
        for f in [
            "--allow-read",
            "--allow-network",
            "--memory-limit",
            "--disk-quota",
            "--detached-cpu-limit",
        ] {
            assert!(t.contains(f), "{f}: {t}");
        }
    }

    #[test]
    fn errno_path_parses_only_well_formed_lines() {
        assert_eq!(
            errno_path("PermissionError: [Errno 13] Permission denied: '/a b/c'"),
            Some((13, "/a b/c".into()))
        );
        assert_eq!(
            errno_path("PermissionError: [Errno 13] Permission denied"),
            None
        );
        assert_eq!(errno_path("[Errno x]: '/a'"), None);
        assert_eq!(errno_path("[Errno 13"), None);
    }
}
