//! Connection info for one kernel: a private 0700 runtime dir, a fresh 32-byte key, and the
//! user-only (0600) connection file. The dir and everything in it is removed on drop.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::KernelError;
use crate::wire::Endpoints;

/// Transport for the kernel's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Unix domain sockets inside the private runtime dir (no ports, nothing on the network).
    #[default]
    Ipc,
    /// TCP on 127.0.0.1 with ports picked by the OS.
    Tcp,
}

/// Prefix of runtime dir names; the server's pid follows so stale dirs can be swept.
const DIR_PREFIX: &str = "kernel-mcp-";

/// The contents of a Jupyter connection file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    #[serde(default)]
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
                reason: format!("connection file {} is larger than 64 KiB", path.display()),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&text);
        let info: ConnectionInfo =
            serde_path_to_error::deserialize(de).map_err(|e| KernelError::Unavailable {
                reason: format!(
                    "connection file {} is not a valid Jupyter connection file: `{}`: {}",
                    path.display(),
                    e.path(),
                    e.inner()
                ),
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
                reason: format!(
                    "connection file {} names port 0; the kernel has not bound its ports yet",
                    path.display()
                ),
            });
        }
        if info.ip.len() > 4096 || info.ip.contains('\0') {
            return Err(KernelError::Unavailable {
                reason: format!("connection file {} has an invalid ip", path.display()),
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
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
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
        let base = std::env::temp_dir();
        let mut rnd = [0u8; 6];
        rand::rng().fill_bytes(&mut rnd);
        let path = base.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(rnd)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| KernelError::Io {
                what: format!("creating runtime dir {}", path.display()),
                source,
            })?;
        // DirBuilder's mode is filtered by the umask; make sure it is exactly 0700.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
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
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return 0;
        };
        let me = nix::unistd::getuid();
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
            if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != me.as_raw() {
                continue;
            }
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
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
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn connection_file_is_private_and_complete() -> Result<(), Box<dyn std::error::Error>> {
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
