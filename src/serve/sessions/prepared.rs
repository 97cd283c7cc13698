//! Sessions prepared ahead: a kernel and workspace started before a session asks for them,
//! kept in the registry's pool of warm spares and refilled in the background.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{OpenError, Registry, PRELOAD_EXPR};
use crate::kernel::KernelHandle;
use crate::workspace::Workspace;

/// A kernel and workspace started ahead of a session.
pub(super) struct Prepared {
    pub(super) kernel: Arc<KernelHandle>,
    pub(super) workspace: Arc<Workspace>,
    /// The session's own folder (None with a shared workspace).
    pub(super) folder: Option<PathBuf>,
}

impl Registry {
    /// A kernel and workspace for a new session, its kernel starting in the background.
    pub(super) fn prepare(&self) -> Result<Prepared, OpenError> {
        if self.limits.shared_workspace {
            return self.prepare_in(None);
        }
        let name = format!("session-{}", hex::encode(rand::random::<[u8; 6]>()));
        self.prepare_in(Some(self.root.root().join(name)))
    }

    /// A kernel for a session working in `dir` (created if missing; `None`: the workspace
    /// root), starting in the background.
    pub(super) fn prepare_in(&self, dir: Option<PathBuf>) -> Result<Prepared, OpenError> {
        let (workspace, folder) = match dir {
            None => (self.root.clone(), None),
            Some(dir) => {
                let ws = Workspace::open(&dir).map_err(|e| OpenError::Workspace(e.to_string()))?;
                (Arc::new(ws), Some(dir))
            }
        };
        let kernel = self
            .template
            .kernels
            .handle(workspace.root(), self.template.max_queue)
            .map_err(|e| OpenError::Workspace(e.to_string()))?;
        kernel.warm_up();
        Ok(Prepared {
            kernel,
            workspace,
            folder,
        })
    }

    pub(super) fn pool_short(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst) && self.pool.short()
    }

    /// Starts spare kernels until the pool holds `spares` of them.
    pub(super) fn fill_pool(&self) {
        // Whoever holds the claim fills; a spare taken meanwhile is seen by the re-check below.
        while self.pool_short() && self.pool.claim() {
            self.fill_pool_once();
            self.pool.release();
        }
    }

    pub(super) fn fill_pool_once(&self) {
        while self.pool_short() {
            let prepared = match self.prepare() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "could not prepare a spare session");
                    return;
                }
            };
            if self.template.preload {
                let k = prepared.kernel.clone();
                tokio::spawn(async move {
                    // Waits for the kernel the warm-up is starting, then imports in it.
                    if k.info().await.is_ok() {
                        if let Err(e) = k.evaluate(PRELOAD_EXPR, Duration::from_secs(120)).await {
                            tracing::debug!(error = %e, "spare session preload failed");
                        }
                    }
                });
            }
            if let Err(extra) = self.pool.put(prepared) {
                // Only the claimer adds, so this is not expected; do not leave it running.
                tokio::spawn(async move { extra.kernel.shutdown().await });
                return;
            }
        }
    }
}
