//! The file tools' operations wherever the files are: the local workspace (the cap-std jail) or,
//! for a kernel on a gateway, the kernel's working directory on that machine (the same path
//! policy checked here, then `workspace::remote`'s helper run silently in the kernel). Both give
//! the same typed results. Knows nothing about MCP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::journal::WrittenFiles;
use crate::error::{Refusal, SessionError, WorkspaceError};
use crate::kernel::KernelHandle;
use crate::workspace::{remote, Listing, ReadOutcome, Workspace};

/// How long a file operation in a gateway kernel may wait (for a busy kernel, then the work).
const REMOTE_WAIT: Duration = Duration::from_secs(60);
/// Most bytes written into a gateway kernel's folder by one call: they travel as base64 inside
/// one WebSocket message, and Tornado-based servers (Jupyter Server, Kernel Gateway,
/// Enterprise Gateway) refuse client messages over `websocket_max_message_size`, 10 MiB by
/// default; 7 MiB is 9.3 MiB of base64.
pub const MAX_REMOTE_BYTES: u64 = 7 * 1024 * 1024;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The path written, relative to the workspace.
    pub path: String,
    /// Bytes this call wrote.
    pub bytes: u64,
    /// The file's size afterwards.
    pub total: u64,
}

/// The file tools' view of the workspace: local, or where the kernel runs.
#[derive(Clone)]
pub struct Files {
    kernel: Arc<KernelHandle>,
    workspace: Arc<Workspace>,
}

impl Files {
    /// File operations for the session's kernel and workspace.
    pub fn new(kernel: Arc<KernelHandle>, workspace: Arc<Workspace>) -> Files {
        Files { kernel, workspace }
    }

    /// True when the files live with the kernel (a gateway), not in the local workspace.
    pub fn remote(&self) -> bool {
        self.kernel.backend().files_live_with_kernel()
    }

    /// Runs blocking file work on the local workspace off the async threads.
    pub async fn local<T, F>(&self, f: F) -> Result<T, SessionError>
    where
        T: Send + 'static,
        F: FnOnce(&Workspace) -> Result<T, WorkspaceError> + Send + 'static,
    {
        let ws = self.workspace.clone();
        tokio::task::spawn_blocking(move || f(&ws))
            .await
            .map_err(|e| Refusal::FileTask(e.to_string()))?
            .map_err(SessionError::from)
    }

    /// Runs one operation of the helper in the gateway kernel (silently, nothing left behind).
    async fn helper(&self, op: &str, args: Value) -> Result<Value, SessionError> {
        // The files are where the kernel runs: make sure there is one, and say why not.
        // (Only when none runs: info() waits for the kernel, which a long cell holds.)
        if !self.kernel.running() {
            let why = match tokio::time::timeout(REMOTE_WAIT, self.kernel.info()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("none was ready within {} s", REMOTE_WAIT.as_secs())),
            };
            if let Some(e) = why {
                return Err(Refusal::NoRemoteKernel(e).into());
            }
        }
        let repr = self
            .kernel
            .evaluate(&remote::expression(op, &args), REMOTE_WAIT)
            .await?;
        Ok(remote::decode(&repr)?)
    }

    /// Reads a text file by lines, an image as bytes, or describes another binary file.
    pub async fn read(
        &self,
        path: String,
        offset: Option<usize>,
        limit: Option<usize>,
        line_numbers: bool,
    ) -> Result<ReadOutcome, SessionError> {
        // Saved over-budget output is written by the server, so it is local in every mode.
        if self.remote() && !crate::workspace::is_saved_output(&path) {
            let path = remote::check_path(&path)?;
            let v = self
                .helper(
                    "read",
                    remote::read_args(&path, offset, limit, line_numbers),
                )
                .await?;
            return Ok(remote::read_outcome(&v)?);
        }
        self.local(move |ws| {
            let path = ws.path(&path)?;
            ws.read(&path, offset, limit, line_numbers)
        })
        .await
    }

    /// Writes (atomically replacing) or appends `data`.
    pub async fn write(
        &self,
        path: String,
        data: Vec<u8>,
        append: bool,
    ) -> Result<Written, SessionError> {
        if self.remote() {
            let path = remote::check_path(&path)?;
            if data.len() as u64 > MAX_REMOTE_BYTES {
                return Err(Refusal::RemoteWriteTooLarge {
                    bytes: data.len(),
                    max: MAX_REMOTE_BYTES,
                }
                .into());
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            let v = self
                .helper("write", remote::write_args(&path, &b64, append))
                .await?;
            let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            return Ok(Written {
                path,
                bytes: num("bytes"),
                total: num("total"),
            });
        }
        self.local(move |ws| {
            let path = ws.path(&path)?;
            let total = ws.write(&path, &data, append)?;
            Ok(Written {
                path: path.display(),
                bytes: data.len() as u64,
                total,
            })
        })
        .await
    }

    /// Lists a folder (the workspace root when `path` is None), optionally recursively and
    /// filtered by a glob.
    pub async fn list(
        &self,
        path: Option<String>,
        recursive: bool,
        pattern: Option<String>,
    ) -> Result<Listing, SessionError> {
        let path = path.unwrap_or_else(|| ".".into());
        if self.remote() {
            let path = remote::check_path(&path)?;
            let v = self
                .helper(
                    "list",
                    remote::list_args(&path, recursive, pattern.as_deref()),
                )
                .await?;
            return Ok(remote::listing(&v));
        }
        self.local(move |ws| {
            let path = ws.path(&path)?;
            ws.list(&path, recursive, pattern.as_deref())
        })
        .await
    }

    /// The path the kernel should run a script by: checked to be a regular file in the local
    /// workspace; in a gateway kernel only checked by policy (`%run` reports a missing file).
    pub async fn script(&self, path: String) -> Result<PathBuf, SessionError> {
        if self.remote() {
            return Ok(PathBuf::from(remote::check_path(&path)?));
        }
        self.local(move |ws| {
            let path = ws.path(&path)?;
            ws.regular_file(&path)
        })
        .await
    }

    /// A whole file's bytes (notebooks), at most `max`.
    pub async fn read_bytes(&self, path: String, max: u64) -> Result<Vec<u8>, SessionError> {
        if self.remote() {
            let path = remote::check_path(&path)?;
            let max = max.min(MAX_REMOTE_BYTES);
            let v = self.helper("bytes", remote::bytes_args(&path, max)).await?;
            return Ok(remote::decode_bytes(&v)?);
        }
        self.local(move |ws| {
            let path = ws.path(&path)?;
            ws.read_bytes(&path, max)
        })
        .await
    }

    /// The checks [`Files::write_own`] makes before it writes, made before the work whose
    /// result it will write (run_notebook's `save_to`), so a target the save would refuse
    /// stops the work before anything runs: the path policy, and (locally) a folder, a special
    /// file, a link leading out, or a file this session did not write (without `overwrite`).
    pub(super) async fn check_target(
        &self,
        path: String,
        overwrite: bool,
        written: WrittenFiles,
    ) -> Result<(), SessionError> {
        if self.remote() {
            remote::check_path(&path)?;
            return Ok(());
        }
        self.local(move |ws| may_replace(ws, &path, overwrite, &written).map(|_| ()))
            .await
    }

    /// Writes a notebook, refusing to replace a file this session did not write (as recorded
    /// in `written`) unless `overwrite`; where the files live, or in the local workspace when
    /// `local`. Returns the path written.
    pub(super) async fn write_own(
        &self,
        path: String,
        bytes: Vec<u8>,
        overwrite: bool,
        written: WrittenFiles,
        local: bool,
    ) -> Result<String, SessionError> {
        if self.remote() && !local {
            let path = remote::check_path(&path)?;
            if bytes.len() as u64 > MAX_REMOTE_BYTES {
                return Err(Refusal::RemoteNotebookTooLarge {
                    path,
                    bytes: bytes.len(),
                    max: MAX_REMOTE_BYTES,
                }
                .into());
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let args = remote::write_own_args(&path, &b64, overwrite, written.get(&path));
            drop(b64);
            let v = self.helper("write_own", args).await?;
            if v.get("not_ours").and_then(Value::as_bool) == Some(true) {
                return Err(not_ours(path).into());
            }
            if let Some(stamp) = remote::decode_stat(&v, &path)? {
                written.insert(path.clone(), stamp);
            }
            return Ok(path);
        }
        self.local(move |ws| {
            let (p, key) = may_replace(ws, &path, overwrite, &written)?;
            ws.write_limited(&p, &bytes, false, crate::notebook::MAX_WRITE_NOTEBOOK_BYTES)?;
            if let Some(stamp) = ws.stamp(&p)? {
                written.insert(key.clone(), stamp);
            }
            Ok(key)
        })
        .await
    }
}

/// The local checks before a notebook is written to `path` (its path, and a file there this
/// session did not write without `overwrite`), made by [`Files::write_own`] and, before the
/// work whose result it writes, by [`Files::check_target`]: the checked path and its display.
fn may_replace(
    ws: &crate::workspace::Workspace,
    path: &str,
    overwrite: bool,
    written: &WrittenFiles,
) -> Result<(crate::workspace::WorkspacePath, String), WorkspaceError> {
    let p = ws.path(path)?;
    let key = p.display();
    match ws.stamp(&p)? {
        Some(stamp) if !overwrite && !written.is(&key, &stamp) => Err(not_ours(key)),
        _ => Ok((p, key)),
    }
}

/// The refusal to replace a file this session did not write.
fn not_ours(path: String) -> WorkspaceError {
    WorkspaceError::Denied {
        path,
        reason: "the file exists and was not written by this session's export_notebook; pass overwrite: true to replace it, or choose another path".into(),
    }
}
