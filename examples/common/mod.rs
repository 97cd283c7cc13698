//! Helpers shared by the benchmark examples (not an example itself).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Builds the `kernel-mcp` binary in the same profile as the running example and returns its path.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .context("locating target dir")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", "kernel-mcp"]);
    if release {
        cmd.arg("--release");
    }
    anyhow::ensure!(cmd.status()?.success(), "building kernel-mcp failed");
    Ok(profile_dir.join("kernel-mcp"))
}
