//! The Python environment the kernel runs in: find or create the managed venv (locked against
//! concurrent first runs), or check a user-given interpreter; report what is installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EnvError;
use crate::runner::{run_logged, RunOutput};

/// The requirements of the managed environment, compiled in.
pub const REQUIREMENTS: &str = include_str!("../kernel-spec/requirements.txt");

/// Packages whose versions are reported in tool descriptions and `setup`.
pub const KEY_PACKAGES: &[&str] = &["ipykernel", "numpy", "pandas", "matplotlib"];

const READY_MARKER: &str = ".kernel-mcp-ready.json";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);

/// What is in an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvInfo {
    pub python: PathBuf,
    pub python_version: String,
    pub packages: Vec<(String, Option<String>)>,
    #[serde(default)]
    pub requirements_hash: String,
    #[serde(default)]
    pub kind: String,
    /// Directories the interpreter reads from (prefixes and sys.path), for the sandbox.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

impl EnvInfo {
    /// "numpy 2.1.0, pandas 2.2.3, ..." for the packages that are installed.
    pub fn package_summary(&self) -> String {
        let parts: Vec<String> = self
            .packages
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n} {v}")))
            .collect();
        parts.join(", ")
    }

    /// Version of `name`, if installed.
    pub fn version_of(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

pub use crate::dirs::data_dir;

/// The managed environment's directory.
pub fn managed_env_dir() -> Result<PathBuf, EnvError> {
    Ok(data_dir()?.join("env"))
}

fn requirements_hash() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(REQUIREMENTS.as_bytes()))
}

/// The interpreter of a venv (`bin/python`; `Scripts\python.exe` on Windows).
fn venv_python(env: &Path) -> PathBuf {
    if cfg!(windows) {
        env.join("Scripts").join("python.exe")
    } else {
        env.join("bin").join("python")
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let exe = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&path)
        .map(|d| d.join(&exe))
        .find(|p| p.is_file())
}

const PROBE: &str = r#"
import sys, json
from importlib import metadata
pk = sys.argv[1:]
def v(n):
    try:
        return metadata.version(n)
    except Exception:
        return None
paths = sorted({p for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path] if p})
print(json.dumps({"python": sys.executable, "python_version": sys.version.split()[0], "packages": [[n, v(n)] for n in pk], "paths": paths}))
"#;

/// Asks `python` for its version and the versions of the key packages.
pub async fn probe(python: &Path) -> Result<EnvInfo, EnvError> {
    let keys: Vec<String> = KEY_PACKAGES.iter().map(|s| s.to_string()).collect();
    let argv = crate::runner::probe_argv(python, PROBE, &keys);
    let out = run_logged(&argv, Duration::from_secs(60), false)
        .await
        .map_err(|e| EnvError::BadInterpreter {
            path: python.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !out.success {
        return Err(EnvError::BadInterpreter {
            path: python.to_path_buf(),
            reason: out.tail(),
        });
    }
    #[derive(Deserialize)]
    struct P {
        python: PathBuf,
        python_version: String,
        packages: Vec<(String, Option<String>)>,
        #[serde(default)]
        paths: Vec<PathBuf>,
    }
    let p: P = serde_json::from_str(out.stdout.trim()).map_err(|e| EnvError::BadInterpreter {
        path: python.to_path_buf(),
        reason: format!("unexpected probe output: {e}"),
    })?;
    Ok(EnvInfo {
        python: p.python,
        python_version: p.python_version,
        packages: p.packages,
        requirements_hash: String::new(),
        kind: String::new(),
        paths: p.paths,
    })
}

/// Checks a user-given interpreter: it must run and have ipykernel.
pub async fn use_interpreter(python: &Path, kind: &str) -> Result<EnvInfo, EnvError> {
    if !python.exists() {
        return Err(EnvError::BadInterpreter {
            path: python.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut info = probe(python).await?;
    if info.version_of("ipykernel").is_none() {
        return Err(EnvError::NoIpykernel {
            python: python.display().to_string(),
        });
    }
    // Keep the path the user gave (a venv's bin/python symlink), not the resolved base interpreter,
    // so the kernel runs with the venv's site-packages.
    info.python = python.to_path_buf();
    info.kind = kind.to_owned();
    Ok(info)
}

fn read_marker(env: &Path) -> Option<EnvInfo> {
    let text = std::fs::read_to_string(env.join(READY_MARKER)).ok()?;
    let info: EnvInfo = serde_json::from_str(&text).ok()?;
    (info.requirements_hash == requirements_hash() && info.python.exists()).then_some(info)
}

/// True when the managed environment exists and matches the requirements (no set-up needed).
pub fn managed_ready() -> bool {
    managed_env_dir()
        .ok()
        .and_then(|env| read_marker(&env))
        .is_some()
}

/// A stand-in while the managed environment is being created in the background.
pub fn preparing() -> EnvInfo {
    EnvInfo {
        python: PathBuf::new(),
        python_version: "(being installed)".into(),
        packages: Vec::new(),
        requirements_hash: String::new(),
        kind: "managed (being created)".into(),
        paths: Vec::new(),
    }
}

/// What the server reports before it has asked a kernel it did not start about its interpreter.
pub fn remote(kind: &str) -> EnvInfo {
    EnvInfo {
        python: PathBuf::new(),
        python_version: "(the kernel's own)".into(),
        packages: Vec::new(),
        requirements_hash: String::new(),
        kind: kind.into(),
        paths: Vec::new(),
    }
}

/// A stand-in for an environment that cannot be used; `reason` says why (and how to fix it).
pub fn unavailable(reason: &str) -> EnvInfo {
    EnvInfo {
        python: PathBuf::new(),
        python_version: "(unavailable)".into(),
        packages: Vec::new(),
        requirements_hash: String::new(),
        kind: format!("unavailable: {reason}"),
        paths: Vec::new(),
    }
}

/// A Python expression that describes the kernel's own interpreter: hex of a JSON object with
/// the executable, version and installed distributions (hex, so its repr needs no unescaping).
pub const KERNEL_PROBE_EXPR: &str = "__import__('json').dumps({'python': __import__('sys').executable, 'version': __import__('platform').python_version(), 'packages': {str(d.metadata['Name'] or '').lower(): d.version for d in __import__('importlib.metadata', fromlist=['x']).distributions()}}).encode().hex()";

pub(crate) fn decode_probe<T: serde::de::DeserializeOwned>(repr: &str) -> Option<T> {
    let hex_text = repr.trim().trim_matches(|c| c == '\'' || c == '"');
    let bytes = hex::decode(hex_text).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The installed distributions (name → version) from an answer to `KERNEL_PROBE_EXPR`.
pub fn parse_kernel_packages(repr: &str) -> Option<std::collections::BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Probe {
        packages: std::collections::BTreeMap<String, String>,
    }
    decode_probe::<Probe>(repr).map(|p| p.packages)
}

/// Reads the answer to `KERNEL_PROBE_EXPR` (the repr of a hex string) into an `EnvInfo`.
pub fn parse_kernel_probe(repr: &str, kind: &str) -> Option<EnvInfo> {
    #[derive(Deserialize)]
    struct Probe {
        python: PathBuf,
        version: String,
        packages: std::collections::BTreeMap<String, String>,
    }
    let p: Probe = decode_probe(repr)?;
    Some(EnvInfo {
        python: p.python,
        python_version: p.version.chars().take(40).collect(),
        packages: KEY_PACKAGES
            .iter()
            .map(|n| {
                (
                    (*n).to_owned(),
                    p.packages.get(*n).map(|v| v.chars().take(40).collect()),
                )
            })
            .collect(),
        requirements_hash: String::new(),
        kind: kind.into(),
        paths: Vec::new(),
    })
}

/// Why an environment cannot be used, ending with the command that fixes it.
pub fn explain(e: &EnvError) -> String {
    match e {
        // The message already names the fix.
        EnvError::NoIpykernel { .. } | EnvError::NoDataDir => e.to_string(),
        EnvError::BadInterpreter { .. } | EnvError::Io { .. } => format!(
            "{e}; fix: point --python, --venv or --conda-env at an interpreter that runs and has ipykernel (`python3 -m venv ~/.venvs/kmcp && ~/.venvs/kmcp/bin/pip install ipykernel`), or leave them out to use the managed environment (`kernel-mcp setup`)"
        ),
        EnvError::Create { .. } => {
            format!("{e}; fix: run `kernel-mcp setup` in a terminal to see the whole error")
        }
    }
}

/// Finds the managed environment, creating it on first use; safe against concurrent first runs.
pub async fn ensure_managed() -> Result<EnvInfo, EnvError> {
    let env = managed_env_dir()?;
    if let Some(mut info) = read_marker(&env) {
        if info.paths.is_empty() {
            // A marker from an older kernel-mcp: learn the paths once and keep them.
            if let Ok(fresh) = probe(&info.python).await {
                info.paths = fresh.paths;
                if let Ok(json) = serde_json::to_vec_pretty(&info) {
                    let _ = std::fs::write(env.join(READY_MARKER), json);
                }
            }
        }
        return Ok(info);
    }
    let data = data_dir()?;
    std::fs::create_dir_all(&data).map_err(|source| EnvError::Io {
        what: format!("creating {}", data.display()),
        source,
    })?;
    let lock_path = data.join("env.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| EnvError::Io {
            what: format!("opening {}", lock_path.display()),
            source,
        })?;
    eprintln!(
        "kernel-mcp: waiting for the environment lock {}",
        lock_path.display()
    );
    let lock = tokio::task::spawn_blocking(move || lock_file.lock().map(|()| lock_file))
        .await
        .map_err(|e| EnvError::Io {
            what: "waiting for the environment lock".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| EnvError::Io {
            what: format!("locking {}", lock_path.display()),
            source,
        })?;
    // Another process may have finished the job while we waited.
    if let Some(info) = read_marker(&env) {
        drop(lock);
        return Ok(info);
    }
    let result = create(&env).await;
    drop(lock);
    result
}

async fn create(env: &Path) -> Result<EnvInfo, EnvError> {
    let fail = |reason: String| EnvError::Create {
        path: env.to_path_buf(),
        reason,
    };
    let python = venv_python(env);
    let req_file = env.with_extension("requirements.txt");
    std::fs::write(&req_file, REQUIREMENTS).map_err(|e| fail(e.to_string()))?;
    let req = req_file.to_string_lossy().into_owned();
    let env_s = env.to_string_lossy().into_owned();
    let py_s = python.to_string_lossy().into_owned();
    let default_base = if cfg!(windows) { "python" } else { "python3" };
    let base = std::env::var("KERNEL_MCP_BASE_PYTHON").unwrap_or_else(|_| default_base.into());
    let steps: Vec<Vec<String>> = if let Some(uv) = which("uv") {
        let uv = uv.to_string_lossy().into_owned();
        eprintln!("kernel-mcp: creating the managed Python environment in {env_s} with uv");
        vec![
            vec![
                uv.clone(),
                "venv".into(),
                "--allow-existing".into(),
                "--python".into(),
                base,
                env_s,
            ],
            vec![
                uv,
                "pip".into(),
                "install".into(),
                "--python".into(),
                py_s.clone(),
                "-r".into(),
                req,
            ],
        ]
    } else {
        eprintln!("kernel-mcp: creating the managed Python environment in {env_s} with venv + pip (this takes a minute or two the first time)");
        vec![
            vec![base, "-I".into(), "-m".into(), "venv".into(), env_s],
            crate::runner::pip_install(&py_s, &["-r", &req]),
        ]
    };
    for step in &steps {
        let out: RunOutput = crate::runner::run_command(
            step,
            INSTALL_TIMEOUT,
            true,
            None,
            &[],
            crate::runner::Inherit::Installer,
            false,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        if !out.success {
            return Err(fail(format!("`{}` failed: {}", step.join(" "), out.tail())));
        }
    }
    let mut info = probe(&python).await.map_err(|e| fail(e.to_string()))?;
    if info.version_of("ipykernel").is_none() {
        return Err(fail("ipykernel is missing after installation".into()));
    }
    info.python = python;
    info.requirements_hash = requirements_hash();
    info.kind = "managed".into();
    let json = serde_json::to_vec_pretty(&info).map_err(|e| fail(e.to_string()))?;
    std::fs::write(env.join(READY_MARKER), json).map_err(|e| fail(e.to_string()))?;
    eprintln!(
        "kernel-mcp: environment ready: Python {} ({})",
        info.python_version,
        info.package_summary()
    );
    Ok(info)
}

/// Where the kernel's interpreter comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// The managed venv in the data dir.
    Managed,
    /// A virtualenv or uv venv directory (its bin/python).
    Venv(PathBuf),
    /// A conda environment by name, run through the env's own python.
    Conda(String),
    /// Any interpreter.
    Interpreter(PathBuf),
}

impl EnvSource {
    /// Parses the PATH of `--env NAME=PATH`: a venv directory or an interpreter file.
    pub fn from_path(p: &Path) -> EnvSource {
        if p.is_dir() {
            EnvSource::Venv(p.to_path_buf())
        } else {
            EnvSource::Interpreter(p.to_path_buf())
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            EnvSource::Managed => "managed environment".into(),
            EnvSource::Venv(p) => format!("virtualenv {}", p.display()),
            EnvSource::Conda(n) => format!("conda environment {n}"),
            EnvSource::Interpreter(p) => format!("interpreter {}", p.display()),
        }
    }
}

/// Finds a conda environment's python by name with `conda env list --json`.
pub async fn conda_python(name: &str) -> Result<PathBuf, EnvError> {
    let conda = std::env::var_os("CONDA_EXE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| which("conda"))
        .or_else(|| which("mamba"))
        .ok_or_else(|| EnvError::BadInterpreter {
            path: PathBuf::from(format!("conda env {name}")),
            reason: "conda is not on PATH (and CONDA_EXE is not set)".into(),
        })?;
    let argv = vec![
        conda.to_string_lossy().into_owned(),
        "env".into(),
        "list".into(),
        "--json".into(),
    ];
    let out = run_logged(&argv, Duration::from_secs(60), false)
        .await
        .map_err(|e| EnvError::BadInterpreter {
            path: conda.clone(),
            reason: e.to_string(),
        })?;
    #[derive(Deserialize)]
    struct Envs {
        envs: Vec<PathBuf>,
    }
    let envs: Envs = serde_json::from_str(&out.stdout).map_err(|e| EnvError::BadInterpreter {
        path: conda.clone(),
        reason: format!("unexpected `conda env list --json` output: {e}"),
    })?;
    let found = envs
        .envs
        .iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(name))
        .or_else(|| {
            // "base" is the root prefix, which is not named after itself.
            (name == "base").then(|| envs.envs.first()).flatten()
        });
    let prefix = found.ok_or_else(|| EnvError::BadInterpreter {
        path: PathBuf::from(format!("conda env {name}")),
        reason: format!(
            "no conda environment named {name}; known: {}",
            envs.envs
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    // A conda env keeps python.exe at its root on Windows.
    Ok(if cfg!(windows) {
        prefix.join("python.exe")
    } else {
        prefix.join("bin").join("python")
    })
}

/// Resolves a source to a checked interpreter and what is in it.
pub async fn resolve(source: &EnvSource) -> Result<EnvInfo, EnvError> {
    match source {
        EnvSource::Managed => ensure_managed().await,
        EnvSource::Venv(dir) => use_interpreter(&venv_python(dir), "venv").await,
        EnvSource::Conda(name) => use_interpreter(&conda_python(name).await?, "conda").await,
        EnvSource::Interpreter(p) => use_interpreter(p, "interpreter").await,
    }
}

/// Parses `NAME=PATH` (`--env`): a name of letters, digits, '-', '_' and '.', and a venv dir or interpreter.
pub fn parse_named(spec: &str) -> Result<(String, EnvSource), String> {
    let (name, path) = spec
        .split_once('=')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .ok_or("expected NAME=PATH")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("the name may use letters, digits, '-', '_' and '.'".into());
    }
    Ok((name.to_owned(), EnvSource::from_path(Path::new(path))))
}

/// matplotlib's font list, built once per Python version and copied into each kernel's scratch
/// config dir, so the first plot in a new kernel does not rebuild it (about a second).
pub async fn font_cache(env: &EnvInfo) -> Option<PathBuf> {
    env.version_of("matplotlib")?;
    let dir = data_dir().ok()?.join("mpl-cache").join(&env.python_version);
    let has = |d: &Path| {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("fontlist"))
            })
            .unwrap_or(false)
    };
    if !has(&dir) {
        std::fs::create_dir_all(&dir).ok()?;
        let argv = crate::runner::probe_argv(&env.python, "import matplotlib.font_manager", &[]);
        let d = dir.to_string_lossy().into_owned();
        let _ = crate::runner::run_with_lines(
            &argv,
            Duration::from_secs(120),
            false,
            None,
            &[("MPLCONFIGDIR", d.as_str())],
        )
        .await;
    }
    has(&dir).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_environments_parse() {
        assert!(
            matches!(parse_named("gpu=/opt/py/bin/python"), Ok((n, EnvSource::Interpreter(_))) if n == "gpu")
        );
        assert!(parse_named("=x").is_err());
        assert!(parse_named("name").is_err());
        assert!(parse_named("bad name=/x").is_err());
    }
}
