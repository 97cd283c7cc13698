//! Connection info for one kernel: a private 0700 runtime dir, a fresh 32-byte key, and the
//! user-only (0600) connection file. The dir and everything in it is removed on drop.
//! (On Windows the dir is in the user's own temp folder, which other users cannot read.)

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectionFileError, KernelError};
use crate::wire::Endpoints;

/// Transport for the kernel's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Unix domain sockets inside the private runtime dir (no ports, nothing on the network).
    Ipc,
    /// TCP on 127.0.0.1 with ports picked by the OS.
    Tcp,
}

impl Default for Transport {
    /// `ipc` where zeromq has unix sockets; `tcp` on Windows.
    fn default() -> Transport {
        if cfg!(windows) {
            Transport::Tcp
        } else {
            Transport::Ipc
        }
    }
}

/// Prefix of runtime dir names; the server's pid follows so stale dirs can be swept.
const DIR_PREFIX: &str = "kernel-mcp-";

/// The contents of a Jupyter connection file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// jupyter_client reads a file without `transport` as tcp.
    #[serde(default = "default_transport")]
    pub transport: Transport,
    pub ip: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    #[serde(default)]
    pub key: String,
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
    #[serde(default)]
    pub kernel_name: String,
}

fn default_transport() -> Transport {
    Transport::Tcp
}

fn default_scheme() -> String {
    "hmac-sha256".into()
}

impl ConnectionInfo {
    /// Fresh connection info with a random hex key of 32 bytes.
    pub fn new(transport: Transport, runtime_dir: &Path) -> Result<ConnectionInfo, KernelError> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let (ip, ports) = match transport {
            Transport::Ipc => (
                runtime_dir.join("k").to_string_lossy().into_owned(),
                [1, 2, 3, 4, 5],
            ),
            Transport::Tcp => ("127.0.0.1".to_owned(), free_ports()?),
        };
        let [shell_port, iopub_port, stdin_port, control_port, hb_port] = ports;
        Ok(ConnectionInfo {
            transport,
            ip,
            shell_port,
            iopub_port,
            stdin_port,
            control_port,
            hb_port,
            key: hex::encode(key),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: "kernel-mcp".into(),
        })
    }

    fn endpoint(&self, port: u16) -> String {
        match self.transport {
            Transport::Ipc => format!("ipc://{}-{}", self.ip, port),
            // A kernel bound to every interface is reached on loopback (as jupyter_client does).
            Transport::Tcp if matches!(self.ip.as_str(), "0.0.0.0" | "*" | "") => {
                format!("tcp://127.0.0.1:{port}")
            }
            Transport::Tcp if self.ip.contains(':') => format!("tcp://[{}]:{}", self.ip, port),
            Transport::Tcp => format!("tcp://{}:{}", self.ip, port),
        }
    }

    /// Reads a connection file written by another Jupyter client or kernel (`--existing`).
    ///
    /// # Errors
    /// An unreadable, oversized or malformed file, named with the field at fault.
    pub fn read(path: &Path) -> Result<ConnectionInfo, KernelError> {
        use std::io::Read;
        let what = || format!("reading connection file {}", path.display());
        let f = std::fs::File::open(path).map_err(|source| KernelError::Io {
            what: what(),
            source,
        })?;
        // A connection file is a few hundred bytes; refuse anything that is not.
        let mut text = Vec::new();
        f.take(64 * 1024 + 1)
            .read_to_end(&mut text)
            .map_err(|source| KernelError::Io {
                what: what(),
                source,
            })?;
        if text.len() > 64 * 1024 {
            return Err(KernelError::Unavailable {
                reason: ConnectionFileError::TooLarge {
                    path: path.to_path_buf(),
                }
                .into(),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&text);
        let info: ConnectionInfo =
            serde_path_to_error::deserialize(de).map_err(|e| KernelError::Unavailable {
                reason: ConnectionFileError::Invalid {
                    path: path.to_path_buf(),
                    field: e.path().to_string(),
                    detail: e.inner().to_string(),
                }
                .into(),
            })?;
        let ports = [
            info.shell_port,
            info.iopub_port,
            info.stdin_port,
            info.control_port,
            info.hb_port,
        ];
        if info.transport == Transport::Tcp && ports.contains(&0) {
            return Err(KernelError::Unavailable {
                reason: ConnectionFileError::PortZero {
                    path: path.to_path_buf(),
                }
                .into(),
            });
        }
        if info.ip.len() > 4096 || info.ip.contains('\0') {
            return Err(KernelError::Unavailable {
                reason: ConnectionFileError::BadIp {
                    path: path.to_path_buf(),
                }
                .into(),
            });
        }
        Ok(info)
    }

    /// The five zeromq endpoints.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            shell: self.endpoint(self.shell_port),
            iopub: self.endpoint(self.iopub_port),
            stdin: self.endpoint(self.stdin_port),
            control: self.endpoint(self.control_port),
            heartbeat: self.endpoint(self.hb_port),
        }
    }

    /// Writes the connection file, readable by the user only.
    pub fn write(&self, path: &Path) -> Result<(), KernelError> {
        let io = |source| KernelError::Io {
            what: format!("writing connection file {}", path.display()),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(path).map_err(io)?;
        std::io::Write::write_all(&mut f, &json).map_err(io)
    }
}

/// Asks the OS for five free loopback ports (released again before the kernel binds them).
fn free_ports() -> Result<[u16; 5], KernelError> {
    let mut ports = [0u16; 5];
    let mut held = Vec::new();
    for p in &mut ports {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| KernelError::Io {
            what: "picking a free port".into(),
            source,
        })?;
        *p = l.local_addr().map(|a| a.port()).unwrap_or(0);
        held.push(l);
    }
    Ok(ports)
}

/// A private runtime directory (mode 0700), removed with its contents on drop.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates a new private dir under the system temp dir, named after this process.
    pub fn create() -> Result<RuntimeDir, KernelError> {
        let base = runtime_base();
        let mut rnd = [0u8; 6];
        rand::rng().fill_bytes(&mut rnd);
        let path = base.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(rnd)
        ));
        #[cfg_attr(windows, allow(unused_mut))]
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&path).map_err(|source| KernelError::Io {
            what: format!("creating runtime dir {}", path.display()),
            source,
        })?;
        // DirBuilder's mode is filtered by the umask; make sure it is exactly 0700.
        #[cfg(unix)]
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        Ok(RuntimeDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now (idempotent; drop does it too).
    pub fn remove_now(&self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }

    /// Removes runtime dirs left behind by kernel-mcp servers that no longer run.
    pub fn sweep_stale() -> usize {
        let Ok(entries) = std::fs::read_dir(runtime_base()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() || !owned_by_me(&meta) {
                continue;
            }
            if !pid_alive(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Where runtime dirs go. macOS's per-user temp dir (`/var/folders/…/T/`) is long, and a unix
/// socket path may hold only 104 bytes there, so macOS uses `/tmp` (the dir itself is 0700),
/// resolved (`/private/tmp`) because its Seatbelt profile matches real paths.
fn runtime_base() -> PathBuf {
    if cfg!(target_os = "macos") {
        std::fs::canonicalize("/tmp").unwrap_or_else(|_| PathBuf::from("/tmp"))
    } else {
        std::env::temp_dir()
    }
}

#[cfg(unix)]
fn owned_by_me(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::MetadataExt::uid(meta) == nix::unistd::getuid().as_raw()
}

#[cfg(unix)]
fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

// Windows: the temp dir is the user's own.
#[cfg(windows)]
fn owned_by_me(_meta: &std::fs::Metadata) -> bool {
    true
}

#[cfg(windows)]
fn pid_alive(pid: i32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    // SAFETY: plain Win32 calls; the handle is closed before returning.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return false;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code) != 0;
        CloseHandle(h);
        ok && code == STILL_ACTIVE as u32
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove runtime dir");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn connection_file_is_private_and_complete() -> Result<(), Box<dyn std::error::Error>> {
        use super::*;
        use std::os::unix::fs::MetadataExt;
        let dir = RuntimeDir::create()?;
        let mode = std::fs::metadata(dir.path())?.mode() & 0o777;
        assert_eq!(mode, 0o700);
        let info = ConnectionInfo::new(Transport::Ipc, dir.path())?;
        assert_eq!(info.key.len(), 64);
        let file = dir.path().join("conn.json");
        info.write(&file)?;
        assert_eq!(std::fs::metadata(&file)?.mode() & 0o777, 0o600);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        assert_eq!(v["transport"], "ipc");
        assert_eq!(v["signature_scheme"], "hmac-sha256");
        assert_eq!(v["key"], info.key.as_str());
        let eps = info.endpoints();
        assert_eq!(eps.shell, format!("ipc://{}/k-1", dir.path().display()));
        let other = ConnectionInfo::new(Transport::Tcp, dir.path())?;
        assert_ne!(other.key, info.key);
        assert!(other.endpoints().control.starts_with("tcp://127.0.0.1:"));
        let p = dir.path().to_path_buf();
        drop(dir);
        assert!(!p.exists());
        Ok(())
    }
}
