//! Where kernel-mcp keeps its own files: the per-user data directory (the managed environment,
//! caches, session snapshots, the gateway ledger, helper processes' working folder).

use std::path::PathBuf;

use crate::error::EnvError;

/// The per-user data directory: `KERNEL_MCP_DATA_DIR`, else the platform's place for it
/// (Linux: `$XDG_DATA_HOME/kernel-mcp` or `~/.local/share/kernel-mcp`; macOS:
/// `~/Library/Application Support/kernel-mcp`; Windows: `%LOCALAPPDATA%\kernel-mcp`).
pub fn data_dir() -> Result<PathBuf, EnvError> {
    let var = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
    if let Some(d) = var("KERNEL_MCP_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    if cfg!(windows) {
        let local = var("LOCALAPPDATA").ok_or(EnvError::NoDataDir)?;
        return Ok(PathBuf::from(local).join("kernel-mcp"));
    }
    if cfg!(target_os = "macos") {
        let home = var("HOME").ok_or(EnvError::NoDataDir)?;
        return Ok(PathBuf::from(home).join("Library/Application Support/kernel-mcp"));
    }
    if let Some(d) = var("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("kernel-mcp"));
    }
    let home = var("HOME").ok_or(EnvError::NoDataDir)?;
    Ok(PathBuf::from(home).join(".local/share/kernel-mcp"))
}
