//! One `install_package` run: the kernel's whole dependency closure pinned, the installer in its
//! sandbox, then a check that a kernel can still start, with a rollback when it cannot.
//!
//! Why the closure and not a list: a kernel imports more than its named parts. Installing
//! `platformdirs==0.0.1` (a dependency of `jupyter_core`) left an environment in which no kernel
//! started; over HTTP that environment is every session's. So every distribution the kernel's
//! machinery requires, transitively, is pinned at its installed version while anything is
//! installed, and a spec asking for another version of one is refused before the installer runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    explain_failure, normalize, InstallReport, Installer, PackageSpec, INSTALLER_ENV, PROTECTED,
};
use crate::error::PackageError;
use crate::sandbox::InstallMode;

/// The distribution a kernel is started from; its closure is what is protected.
const KERNEL_ROOTS: &[&str] = &["ipykernel"];

/// What the health check imports: the modules `python -m ipykernel_launcher` needs to come up.
const KERNEL_START_CHECK: &str = "import ipykernel.kernelapp, ipykernel.ipkernel, jupyter_client.session, zmq, IPython, traitlets, tornado, comm; print('kernel-mcp: kernel machinery imports')";

/// Walks `Requires-Dist` from the roots (markers other than extras are not evaluated: a pin
/// on a distribution the platform does not use is harmless). Reads metadata as data only.
const CLOSURE_PROBE: &str = r#"
import json, re, sys
from importlib import metadata
def norm(n):
    return re.sub(r'[-_.]+', '-', n).lower()
found = {}
todo = [norm(n) for n in sys.argv[1:]]
while todo and len(found) < 2000:
    n = todo.pop()
    if n in found:
        continue
    try:
        d = metadata.distribution(n)
    except Exception:
        continue
    found[n] = d.version
    for r in d.requires or []:
        spec, _, marker = r.partition(';')
        if 'extra' in marker:
            continue
        m = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', spec)
        if m:
            todo.append(norm(m.group(1)))
print(json.dumps(found))
"#;

/// The kernel's dependency closure in `python`: normalized name → installed version.
pub async fn kernel_closure(python: &Path) -> Result<BTreeMap<String, String>, PackageError> {
    let mut roots: Vec<String> = KERNEL_ROOTS.iter().map(|s| (*s).to_owned()).collect();
    roots.extend(PROTECTED.iter().map(|s| (*s).to_owned()));
    let argv = crate::runner::probe_argv(python, CLOSURE_PROBE, &roots);
    let out = crate::runner::run_logged(&argv, Duration::from_secs(60), false).await?;
    if !out.success {
        return Err(PackageError::Failed(out.tail()));
    }
    serde_json::from_str(out.stdout.trim()).map_err(|e| {
        PackageError::Failed(format!(
            "unexpected output finding the kernel's dependencies: {e}"
        ))
    })
}

/// A private folder for one run (constraints, the installer's HOME and TMPDIR), removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<RunDir, PackageError> {
        let dir = std::env::temp_dir().join(format!(
            "kernel-mcp-install-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| PackageError::Spawn(format!("creating {}: {e}", dir.display())))?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one installer step the way `mode` says, in a fresh run dir: `build` gets that dir (to
/// put files the step reads there) and returns the argv as if unconfined. `network: false` runs
/// it offline (the health check and uninstalls).
async fn run_step(
    build: impl FnOnce(&Path) -> Result<Vec<String>, PackageError>,
    mode: &InstallMode,
    network: bool,
    timeout: Duration,
    on_line: Option<crate::runner::LineSender>,
) -> Result<crate::runner::RunOutput, PackageError> {
    let dir = RunDir::create()?;
    let mut argv = build(&dir.0)?;
    let mut env: Vec<(String, String)> = INSTALLER_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lifeline = match mode {
        InstallMode::Sandboxed(sb) => {
            let (wrapped, extra) = sb.wrap_with(&argv, &dir.0, network).map_err(|e| {
                PackageError::Spawn(format!("preparing the installer's sandbox: {e}"))
            })?;
            argv = wrapped;
            env.extend(extra);
            true
        }
        InstallMode::WheelsOnly | InstallMode::Unconfined => false,
    };
    tracing::info!(?argv, "installer: starting");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::runner::run_command(
        &argv,
        timeout,
        false,
        on_line,
        &env_refs,
        crate::runner::Inherit::Installer,
        lifeline,
    )
    .await
}

/// Installs validated `specs` into `python`, with the kernel's dependency closure pinned,
/// sending each installer output line to `on_line`; then checks that the kernel's machinery
/// still imports, and rolls the install back when it does not. `mode` says how the installer
/// is confined.
pub async fn install(
    python: &Path,
    specs: &[PackageSpec],
    timeout: Duration,
    on_line: Option<crate::runner::LineSender>,
    mode: &InstallMode,
) -> Result<InstallReport, PackageError> {
    let before = super::installed(python).await?;
    let closure = kernel_closure(python).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not list the kernel's dependencies; pinning the named ones");
        PROTECTED
            .iter()
            .filter_map(|n| before.get(*n).map(|(_, v)| ((*n).to_owned(), v.clone())))
            .collect()
    });
    // Another version of something the kernel runs on is refused before anything runs; a bare
    // name of one is already installed (and pinned, so it stays as it is).
    let touched: Vec<String> = specs
        .iter()
        .filter(|s| closure.contains_key(&s.name) && normalize(&s.raw) != s.name)
        .map(|s| {
            format!(
                "{} (installed: {})",
                s.raw,
                closure.get(&s.name).map(String::as_str).unwrap_or("?")
            )
        })
        .collect();
    if !touched.is_empty() {
        return Err(PackageError::KernelClosure { touched });
    }
    let constraints: String = closure
        .iter()
        .filter_map(|(n, v)| before.get(n).map(|(name, _)| format!("{name}=={v}\n")))
        .collect();
    let installer = Installer::detect();
    let out = run_step(
        |dir| {
            let cons_path = dir.join("constraints.txt");
            std::fs::write(&cons_path, &constraints)
                .map_err(|e| PackageError::Spawn(format!("writing the constraints file: {e}")))?;
            let mut argv = installer.argv(python, &cons_path, specs);
            if matches!(mode, InstallMode::WheelsOnly) {
                // Before the package names, after the installer's own options.
                let at = argv.len().saturating_sub(specs.len());
                argv.splice(at..at, ["--only-binary".to_owned(), ":all:".to_owned()]);
            }
            Ok(argv)
        },
        mode,
        true,
        timeout,
        on_line,
    )
    .await?;
    if !out.success {
        let mut why = explain_failure(&out);
        if why.to_ascii_lowercase().contains("conflict") || why.contains("ResolutionImpossible") {
            why.push_str(" (the kernel's own dependencies are pinned at their installed versions during installs, so a package that needs other versions of them cannot be installed into this environment; a named environment (--env) of its own can hold it)");
        }
        if matches!(mode, InstallMode::WheelsOnly) {
            why.push_str(" (installs here take wheels only, since no sandbox can hold a package's build code on this machine: a package that has only a source distribution needs the server started with --allow-source-builds)");
        }
        return Err(PackageError::Failed(why));
    }
    let after = super::installed(python).await.unwrap_or_default();
    let report = InstallReport::between(specs, &before, &after);
    // Does a kernel still start? Checked offline, in the installer's sandbox: the code is new.
    if let Err(broken) = kernel_starts(python, mode).await {
        let undone = rollback(python, mode, &installer, &before, &after, timeout).await;
        let still = kernel_starts(python, mode).await;
        return Err(PackageError::Failed(format!(
            "the install left an environment in which a kernel cannot start ({broken}); it was rolled back: {undone}{}",
            match still {
                Ok(()) => " The environment works again.".to_owned(),
                Err(e) => format!(" The kernel still cannot start after the rollback ({e}): recreate the environment (`kernel-mcp setup` after removing it)."),
            }
        )));
    }
    Ok(report)
}

/// Whether the kernel's machinery still imports in `python` (offline, confined like the
/// installer). `Err` is the import error's last line.
async fn kernel_starts(python: &Path, mode: &InstallMode) -> Result<(), String> {
    let argv = vec![
        python.to_string_lossy().into_owned(),
        "-I".to_owned(),
        "-c".to_owned(),
        KERNEL_START_CHECK.to_owned(),
    ];
    // The unconfined modes run installed code as the user anyway (wheels' own code runs on
    // import in the kernel); the check adds nothing new there.
    match run_step(|_| Ok(argv), mode, false, Duration::from_secs(120), None).await {
        Ok(out) if out.success && out.stdout.contains("kernel machinery imports") => Ok(()),
        Ok(out) => Err(out
            .tail()
            .lines()
            .last()
            .unwrap_or("the import check failed")
            .to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Undoes an install: removes what it added, puts back the versions it changed (without their
/// dependencies: those are put back one by one). Returns what was done, in words.
async fn rollback(
    python: &Path,
    mode: &InstallMode,
    installer: &Installer,
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
    timeout: Duration,
) -> String {
    let added: Vec<String> = after
        .iter()
        .filter(|(k, _)| !before.contains_key(*k))
        .map(|(_, (n, _))| n.clone())
        .collect();
    let changed: Vec<String> = before
        .iter()
        .filter(|(k, (_, v))| after.get(*k).is_none_or(|(_, now)| now != v))
        .map(|(_, (n, v))| format!("{n}=={v}"))
        .collect();
    // One installer step of the rollback, said as `ok` or `failed` with the names.
    let step = |argv: Vec<String>,
                network: bool,
                ok: &'static str,
                failed: &'static str,
                names: String| async move {
        let word = match run_step(|_| Ok(argv), mode, network, timeout, None).await {
            Ok(o) if o.success => ok,
            _ => failed,
        };
        format!("{word} {names}")
    };
    let mut done = Vec::new();
    if !added.is_empty() {
        let argv = installer.uninstall_argv(python, &added);
        done.push(step(argv, false, "removed", "could not remove", added.join(", ")).await);
    }
    if !changed.is_empty() {
        let argv = installer.reinstall_argv(python, &changed);
        done.push(
            step(
                argv,
                true,
                "put back",
                "could not put back",
                changed.join(", "),
            )
            .await,
        );
    }
    if done.is_empty() {
        "nothing had changed.".to_owned()
    } else {
        format!("{}.", done.join("; "))
    }
}
