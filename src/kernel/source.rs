//! The seam under `KernelHandle`: a `Backend` is a way to get kernels (a local process, a kernel
//! someone else started, a Jupyter gateway), each started one a `client::Kernel` over the two
//! halves of `backend.rs`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

use super::backend::Ownership;
use super::client::Kernel;
use crate::error::KernelError;

/// Which kind of backend serves kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Local,
    Existing,
    Gateway,
}

/// What `get_environment` shows about the backend (never credentials).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BackendInfo {
    pub kind: BackendKind,
    pub ownership: Ownership,
    /// The connection file or the gateway URL (without credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The kernelspec name the backend starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
}

/// A way to get kernels.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Starts (or attaches to) a kernel and completes the kernel_info handshake.
    async fn start(&self) -> Result<Kernel, KernelError>;
    /// What this backend is, for reports.
    fn describe(&self) -> BackendInfo;
    /// Whether warm spare kernels can be kept for this backend.
    fn spares(&self) -> bool {
        self.describe().ownership == Ownership::Owned
    }
    /// The interpreter the next kernel runs, when this backend chooses it (local only).
    fn python(&self) -> Option<PathBuf> {
        None
    }
    /// Points the next kernel at another interpreter and the folders it reads (local only).
    /// Returns false when the backend does not choose interpreters.
    fn set_python(&self, _python: PathBuf, _paths: Vec<PathBuf>) -> bool {
        false
    }
    /// Whether an OS sandbox is configured for the kernels this backend starts.
    fn sandboxed(&self) -> bool {
        false
    }
    /// How install_package confines the installer it runs for this backend's interpreter
    /// (only asked when `interpreter_is_local`).
    fn install_mode(&self) -> crate::sandbox::InstallMode {
        crate::sandbox::InstallMode::Unconfined
    }
    /// Whether the kernel's interpreter is one kernel-mcp runs on this machine (so installs and
    /// package listings can run it directly); otherwise they go through the kernel.
    fn interpreter_is_local(&self) -> bool {
        false
    }
    /// Whether the file tools act on the kernel's own working directory (a kernel on another
    /// machine) instead of the local workspace.
    fn files_live_with_kernel(&self) -> bool {
        false
    }
}
