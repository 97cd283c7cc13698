//! What the flags turn into before anything starts: the Python environment (and the named
//! ones the model may switch to), the sandbox policy for the kernel and the installer, and the
//! workspace folder (the default one, or a per-user folder when that is not writable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::cli::{DiskQuota, Opts, SandboxMode};
use crate::pyenv;
use crate::workspace::Workspace;

pub(super) fn env_source(o: &Opts) -> pyenv::EnvSource {
    if let Some(p) = &o.python {
        pyenv::EnvSource::Interpreter(p.clone())
    } else if let Some(v) = &o.venv {
        pyenv::EnvSource::Venv(v.clone())
    } else if let Some(c) = &o.conda_env {
        pyenv::EnvSource::Conda(c.clone())
    } else {
        pyenv::EnvSource::Managed
    }
}

pub(super) async fn resolve_env(o: &Opts) -> anyhow::Result<pyenv::EnvInfo> {
    Ok(pyenv::resolve(&env_source(o)).await?)
}

pub(super) fn named_envs(o: &Opts) -> anyhow::Result<BTreeMap<String, pyenv::EnvSource>> {
    let mut named = BTreeMap::new();
    named.insert("default".to_owned(), env_source(o));
    for e in &o.envs {
        let (name, source) =
            pyenv::parse_named(e).map_err(|m| anyhow::anyhow!("--env {e:?}: {m}"))?;
        named.insert(name, source);
    }
    Ok(named)
}

/// `--allow-read` and `--read-only-dirs` together.
pub(super) fn extra_read(o: &Opts) -> Vec<PathBuf> {
    o.allow_read
        .iter()
        .chain(&o.read_only_dirs)
        .cloned()
        .collect()
}

/// The resolved `--disk-quota` in bytes (`None`: no quota).
pub(super) fn disk_quota(o: &Opts, workspace: &std::path::Path) -> Option<u64> {
    match o.disk_quota {
        DiskQuota::Auto => Some(crate::sandbox::default_disk_quota(workspace)),
        DiskQuota::Size(s) => s.0,
    }
}

/// What the local kernel's sandbox allows, in the terms the model is told (`None` when no
/// sandbox of ours applies: off, unavailable on this OS, or a kernel someone else runs).
pub(super) fn sandbox_policy(
    o: &Opts,
    workspace: &std::path::Path,
    disk_quota: Option<u64>,
) -> Option<crate::denials::SandboxPolicy> {
    if o.sandbox == SandboxMode::Off
        || crate::sandbox::UNAVAILABLE.is_some()
        || o.existing.is_some()
        || o.gateway_url.is_some()
    {
        return None;
    }
    Some(crate::denials::SandboxPolicy {
        workspace: workspace.to_path_buf(),
        extra_read: extra_read(o),
        network: o.allow_network,
        memory_bytes: o.memory_limit.0,
        disk_quota,
        detached_cpu_secs: (o.detached_cpu_limit > 0).then_some(o.detached_cpu_limit),
    })
}

pub(super) async fn sandbox_config(
    o: &Opts,
    env: &pyenv::EnvInfo,
    disk_quota: Option<u64>,
) -> anyhow::Result<Option<crate::kernel::SandboxConfig>> {
    if let Some(why) = crate::sandbox::UNAVAILABLE {
        if o.sandbox == SandboxMode::Require {
            anyhow::bail!("--sandbox require: {why}");
        }
        tracing::warn!("NO OS SANDBOX: {why}");
        return Ok(None);
    }
    if o.sandbox == SandboxMode::Off {
        tracing::warn!("kernel sandbox is OFF (--sandbox off): the kernel can read and write everything this user can");
        return Ok(None);
    }
    let cfg = crate::kernel::SandboxConfig {
        python_paths: env.paths.clone(),
        extra_read: extra_read(o),
        network: o.allow_network,
        memory_bytes: o.memory_limit.0,
        file_size_bytes: o.max_file_size.0,
        require: o.sandbox == SandboxMode::Require,
        mpl_cache: pyenv::font_cache(env).await,
        namespaces: !o.no_namespaces,
        namespaces_off: o
            .no_namespaces
            .then(|| "--no-namespaces or KERNEL_MCP_NO_NAMESPACES".to_owned()),
        disk_quota,
        detached_cpu_secs: (o.detached_cpu_limit > 0).then_some(o.detached_cpu_limit),
        tmpfs_bytes: crate::sandbox::tmpfs_size(disk_quota),
        processes: Some(1024),
    };
    if o.sandbox == SandboxMode::Require {
        crate::sandbox::probe(o.allow_network, !o.no_namespaces).map_err(|e| {
            anyhow::anyhow!("--sandbox require: not every sandbox layer is available here: {e}")
        })?;
    }
    Ok(Some(cfg))
}

/// The default workspace, relative to where the server was started.
pub(super) const DEFAULT_WORKSPACE: &str = "./workspace";

/// True when a file can be created in `dir`.
pub(super) fn writable(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".kernel-mcp-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Opens the workspace. Without --workspace, ./workspace is used unless it cannot be created or
/// written (desktop hosts often start servers in `/`): then a per-user data folder is, and the
/// note says so for the log and the instructions.
pub(super) fn open_workspace(
    given: Option<&std::path::Path>,
) -> anyhow::Result<(Workspace, Option<String>)> {
    if let Some(dir) = given {
        let ws = Workspace::open(dir).context("opening the workspace")?;
        return Ok((ws, None));
    }
    let default = std::path::Path::new(DEFAULT_WORKSPACE);
    let here = std::env::current_dir().ok();
    // Desktop hosts often start servers in `/`; as root that is writable, but a folder made
    // at the filesystem root is no one's workspace.
    let at_root = here.as_deref().is_some_and(|d| d.parent().is_none());
    let problem = if at_root {
        "the server was started in the filesystem root, where no folder is created".to_owned()
    } else {
        match Workspace::open(default) {
            Ok(ws) => match writable(ws.root()) {
                Ok(()) => return Ok((ws, None)),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    };
    let cwd = here
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "the current folder".into());
    let fallback = crate::dirs::data_dir()?.join("workspace");
    let ws = Workspace::open(&fallback).with_context(|| {
        format!(
            "opening the fallback workspace {} (./workspace in {cwd} was not usable: {problem})",
            fallback.display()
        )
    })?;
    let note = format!(
        "The default ./workspace in {cwd} is not usable ({problem}), so the workspace is {}",
        ws.root().display()
    );
    tracing::warn!("{note}");
    Ok((ws, Some(note)))
}
