//! Package specs (validated before anything runs), the installers (pip / uv) and the probes
//! of what is installed, run through `runner` (never from the workspace, never with the
//! server's secrets) and, for installs, inside the sandbox.

use std::time::Duration;

use crate::error::PackageError;
pub use crate::runner::{run_logged, run_with_lines, RunOutput};

mod failure;
mod install;
mod requirement;

pub use failure::explain_failure;
pub use install::install;

/// Longest accepted package spec.
pub const MAX_SPEC_LEN: usize = 200;
/// Most specs in one install call.
pub const MAX_SPECS: usize = 20;

/// Distributions the kernel itself runs on; installing or upgrading them could break the
/// running kernel, so they are refused and pinned (as constraints) during every install.
pub const PROTECTED: &[&str] = &[
    "ipykernel",
    "ipython",
    "ipython-pygments-lexers",
    "pyzmq",
    "jupyter-client",
    "jupyter-core",
    "traitlets",
    "tornado",
    "comm",
    "debugpy",
    "matplotlib-inline",
    "nest-asyncio",
    "nest-asyncio2",
    "psutil",
    "pip",
    "setuptools",
    "wheel",
    "uv",
];

/// The file extensions pip (`is_archive_file`) and uv take as a local archive rather than a
/// package name.
const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".whl",
    ".zip",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tar.lz",
    ".tlz",
    ".tar.lzma",
    ".tar",
];

/// A package spec that passed validation: a name, optional extras and version specifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// The spec as given (validated, safe to pass as one argv element).
    pub raw: String,
    /// The normalized distribution name (PEP 503: lowercase, runs of -_. as '-').
    pub name: String,
}

fn bad(spec: &str, reason: impl Into<String>) -> PackageError {
    PackageError::BadSpec {
        spec: spec.chars().take(80).collect(),
        reason: reason.into(),
    }
}

/// Validates one spec, accepting only PEP 508's `name [extras] version-specifiers` (with PEP 440
/// versions, see `requirement`): no options, URLs, paths, markers or comments.
pub fn validate_spec(spec: &str) -> Result<PackageSpec, PackageError> {
    if spec.is_empty() {
        return Err(bad(spec, "empty package name"));
    }
    if spec.len() > MAX_SPEC_LEN {
        return Err(bad(spec, format!("longer than {MAX_SPEC_LEN} characters")));
    }
    if let Some(c) = spec.chars().find(|c| !c.is_ascii()) {
        return Err(bad(
            spec,
            format!(
                "contains the non-ASCII character {c:?} (U+{:04X}); package names are plain ASCII",
                c as u32
            ),
        ));
    }
    if spec.chars().any(|c| c.is_ascii_control()) {
        return Err(bad(spec, "contains control characters"));
    }
    if spec.trim() != spec {
        return Err(bad(spec, "has leading or trailing whitespace"));
    }
    if spec.starts_with('-') {
        return Err(bad(spec, "looks like an installer option; only package names (with optional extras and versions) are accepted"));
    }
    if spec.contains("://") || spec.contains('@') {
        return Err(bad(
            spec,
            "URLs and `name @ url` references are not accepted; give a package name from the index",
        ));
    }
    if spec.contains('/') || spec.contains('\\') || spec.starts_with('.') || spec.starts_with('~') {
        return Err(bad(
            spec,
            "local paths are not accepted; give a package name from the index",
        ));
    }
    if spec.contains(';') {
        return Err(bad(spec, "environment markers (`; ...`) are not accepted"));
    }
    if spec.contains('#') {
        return Err(bad(spec, "comments are not accepted"));
    }
    let written = requirement::parse(spec)
        .map_err(|m| bad(spec, format!("not a valid PEP 508 requirement: {m}")))?;
    // A valid PEP 508 name can still look like a file: pip installs `x.whl` or `x.tar.gz` from
    // its working directory when such a file exists, and uv always reads it as a path.
    let lower = written.to_ascii_lowercase();
    if let Some(ext) = ARCHIVE_EXTENSIONS.iter().find(|e| lower.ends_with(*e)) {
        return Err(bad(
            spec,
            format!("the name ends in {ext}, which installers read as a local archive file; local paths are not accepted"),
        ));
    }
    let name = normalize(written);
    if PROTECTED.contains(&name.as_str()) {
        return Err(PackageError::Protected { name });
    }
    Ok(PackageSpec {
        raw: spec.to_owned(),
        name,
    })
}

/// Import names whose distribution is named differently: the usual surprises.
pub const IMPORT_NAMES: &[(&str, &str)] = &[
    ("sklearn", "scikit-learn"),
    ("cv2", "opencv-python"),
    ("PIL", "pillow"),
    ("yaml", "pyyaml"),
    ("bs4", "beautifulsoup4"),
    ("skimage", "scikit-image"),
    ("dateutil", "python-dateutil"),
    ("dotenv", "python-dotenv"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("fitz", "pymupdf"),
    ("Crypto", "pycryptodome"),
    ("serial", "pyserial"),
    ("jwt", "pyjwt"),
    ("OpenSSL", "pyopenssl"),
    ("Levenshtein", "python-levenshtein"),
];

/// The distribution to install for a known import name, e.g. "sklearn" → "scikit-learn".
pub fn distribution_for_import(name: &str) -> Option<&'static str> {
    let n = normalize(name);
    IMPORT_NAMES
        .iter()
        .find(|(import, _)| normalize(import) == n)
        .map(|(_, dist)| *dist)
}

/// A spec naming a known import name, rewritten to its distribution (extras and versions kept).
pub fn translate_import_name(spec: &PackageSpec) -> Option<PackageSpec> {
    let dist = distribution_for_import(&spec.name)?;
    // The parser returns the name as written: a prefix of the validated spec.
    let written = requirement::parse(&spec.raw).ok()?;
    let rest = spec.raw.get(written.len()..).unwrap_or("");
    validate_spec(&format!("{dist}{rest}")).ok()
}

const OWNERS_PROBE: &str = r#"
import json, sys
from importlib import metadata
m = metadata.packages_distributions()
print(json.dumps({n: m.get(n, []) for n in sys.argv[1:]}))
"#;

/// The installed distributions that provide each import name (`packages_distributions()`).
pub async fn import_owners(
    python: &std::path::Path,
    names: &[String],
) -> Result<std::collections::BTreeMap<String, Vec<String>>, PackageError> {
    let argv = crate::runner::probe_argv(python, OWNERS_PROBE, names);
    let out = run_logged(&argv, Duration::from_secs(60), false).await?;
    if !out.success {
        return Err(PackageError::Failed(out.tail()));
    }
    serde_json::from_str(out.stdout.trim())
        .map_err(|e| PackageError::Failed(format!("unexpected output finding import names: {e}")))
}

/// The user expression that answers [`import_owners`]'s question inside a kernel (one that
/// runs elsewhere): hex of the same JSON, read back with [`parse_import_owners`].
pub fn import_owners_expr(names: &[String]) -> String {
    let list = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
    format!(
        "(lambda m: __import__('json').dumps({{n: m.get(n, []) for n in __import__('json').loads({})}}))(__import__('importlib.metadata', fromlist=['x']).packages_distributions()).encode().hex()",
        serde_json::to_string(&list).unwrap_or_else(|_| "'[]'".into())
    )
}

/// Reads the kernel's answer to [`import_owners_expr`].
pub fn parse_import_owners(repr: &str) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    crate::pyenv::decode_probe(repr)
}

/// Normalizes a distribution name (PEP 503).
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

const VERSIONS_PROBE: &str = r#"
import json, sys
from importlib import metadata
out = {}
for d in metadata.distributions():
    try:
        n = d.metadata["Name"]
    except Exception:
        continue
    if n:
        out[n] = d.version
print(json.dumps(out))
"#;

/// Every installed distribution of `python`, by normalized name, with its display name and version.
pub async fn installed(
    python: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, (String, String)>, PackageError> {
    let argv = crate::runner::probe_argv(python, VERSIONS_PROBE, &[]);
    let out = run_logged(&argv, Duration::from_secs(60), false).await?;
    if !out.success {
        return Err(PackageError::Failed(out.tail()));
    }
    let raw: std::collections::BTreeMap<String, String> = serde_json::from_str(out.stdout.trim())
        .map_err(|e| {
        PackageError::Failed(format!("unexpected output listing packages: {e}"))
    })?;
    Ok(raw
        .into_iter()
        .map(|(n, v)| (normalize(&n), (n, v)))
        .collect())
}

/// Python that installs `specs` with pip into the kernel's own interpreter, run as a cell in a
/// kernel that lives elsewhere (an existing or gateway kernel). The specs are validated, so each
/// is a plain ASCII string; they are embedded as JSON string literals, which Python reads as-is.
/// Leaves no names behind.
pub fn kernel_install_code(specs: &[PackageSpec]) -> String {
    let list = serde_json::to_string(&specs.iter().map(|s| s.raw.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    format!(
        r#"def __kernel_mcp_pip(specs):
    import importlib, subprocess, sys
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', *specs], capture_output=True, text=True)
    lines = [l for l in (r.stdout or '').splitlines() if l.startswith(('Successfully', 'Requirement already'))]
    print('\n'.join(lines[-40:]) or (r.stdout or '')[-2000:])
    if r.returncode != 0:
        err = [l for l in (r.stderr or '').splitlines() if l.strip()]
        raise RuntimeError('pip install failed (exit %d) in %s: %s' % (r.returncode, sys.executable, ' | '.join(err[-5:])))
    importlib.invalidate_caches()
try:
    __kernel_mcp_pip({list})
finally:
    del __kernel_mcp_pip
"#
    )
}

/// Which installer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    Uv(std::path::PathBuf),
    Pip,
}

impl Installer {
    /// uv when it is on PATH, otherwise pip.
    pub fn detect() -> Installer {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("uv"))
                    .find(|p| p.is_file())
            })
            .map(Installer::Uv)
            .unwrap_or(Installer::Pip)
    }

    /// The argv (no shell) that installs `specs` into `python` under `constraints`.
    pub fn argv(
        &self,
        python: &std::path::Path,
        constraints: &std::path::Path,
        specs: &[PackageSpec],
    ) -> Vec<String> {
        let py = python.to_string_lossy().into_owned();
        let cons = constraints.to_string_lossy().into_owned();
        let mut argv: Vec<String> = match self {
            Installer::Uv(uv) => Self::uv_pip(uv, "install", py, &["--constraint", &cons]),
            Installer::Pip => crate::runner::pip_install(&py, &["--constraint", &cons]),
        };
        argv.extend(specs.iter().map(|s| s.raw.clone()));
        argv
    }
}

impl Installer {
    /// `uv pip <command> --python <python>`, then `rest`.
    fn uv_pip(uv: &std::path::Path, command: &str, python: String, rest: &[&str]) -> Vec<String> {
        let mut argv = vec![
            uv.to_string_lossy().into_owned(),
            "pip".into(),
            command.into(),
            "--python".into(),
            python,
        ];
        argv.extend(rest.iter().map(|s| (*s).to_owned()));
        argv
    }

    /// The argv that removes the distributions `names` from `python`.
    pub fn uninstall_argv(&self, python: &std::path::Path, names: &[String]) -> Vec<String> {
        let py = python.to_string_lossy().into_owned();
        let mut argv: Vec<String> = match self {
            Installer::Uv(uv) => Self::uv_pip(uv, "uninstall", py, &[]),
            Installer::Pip => vec![
                py,
                "-I".into(),
                "-m".into(),
                "pip".into(),
                "uninstall".into(),
                "--yes".into(),
                "--disable-pip-version-check".into(),
            ],
        };
        argv.extend(names.iter().cloned());
        argv
    }

    /// The argv that puts back exact versions (`name==version`) without touching dependencies.
    pub fn reinstall_argv(&self, python: &std::path::Path, pins: &[String]) -> Vec<String> {
        let py = python.to_string_lossy().into_owned();
        let mut argv: Vec<String> = match self {
            Installer::Uv(uv) => Self::uv_pip(uv, "install", py, &["--no-deps", "--reinstall"]),
            Installer::Pip => crate::runner::pip_install(&py, &["--no-deps", "--force-reinstall"]),
        };
        argv.extend(pins.iter().cloned());
        argv
    }
}

/// What an install changed.
#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    /// "name version" for each requested package (or why it is missing).
    pub requested: Vec<String>,
    /// Distributions that were not there before, "name version".
    pub added: Vec<String>,
    /// Distributions whose version changed: (name, old, new).
    pub changed: Vec<(String, String, String)>,
}

impl InstallReport {
    /// What changed between two listings of [`installed`], for the requested `specs`.
    pub fn between(
        specs: &[PackageSpec],
        before: &std::collections::BTreeMap<String, (String, String)>,
        after: &std::collections::BTreeMap<String, (String, String)>,
    ) -> InstallReport {
        let requested = specs
            .iter()
            .map(|s| match after.get(&s.name) {
                Some((name, v)) => format!("{name} {v}"),
                None => format!(
                    "{}: the installer succeeded but it is not listed as installed",
                    s.raw
                ),
            })
            .collect();
        let added = after
            .iter()
            .filter(|(k, _)| !before.contains_key(*k))
            .map(|(_, (n, v))| format!("{n} {v}"))
            .collect();
        let changed = after
            .iter()
            .filter_map(|(k, (n, v))| {
                before
                    .get(k)
                    .filter(|(_, old)| old != v)
                    .map(|(_, old)| (n.clone(), old.clone(), v.clone()))
            })
            .collect();
        InstallReport {
            requested,
            added,
            changed,
        }
    }

    /// The result text: what was installed into `python` (with the import-name note), what
    /// came along, and which versions changed.
    pub fn describe(&self, python: &std::path::Path, renamed: &str) -> String {
        let mut text = format!(
            "installed into {}{renamed}:\n{}",
            python.display(),
            self.requested.join("\n")
        );
        if !self.added.is_empty() {
            text.push_str(&format!(
                "\nnewly installed (with dependencies): {}",
                self.added.join(", ")
            ));
        }
        if !self.changed.is_empty() {
            let desc: Vec<String> = self
                .changed
                .iter()
                .map(|(n, a, b)| format!("{n} {a} -> {b}"))
                .collect();
            text.push_str(&format!("\nchanged versions: {}", desc.join(", ")));
        }
        text
    }

    /// A Python expression listing the modules the kernel has already imported from the
    /// distributions whose version changed (they still run the old code), if any changed.
    pub fn stale_imports_expr(&self) -> Option<String> {
        if self.changed.is_empty() {
            return None;
        }
        let names: Vec<String> = self.changed.iter().map(|(n, _, _)| normalize(n)).collect();
        Some(format!(
            "sorted({{m for m, ds in __import__('importlib.metadata').metadata.packages_distributions().items() for d in ds if __import__('re').sub(r'[-_.]+', '-', d).lower() in {names:?} and m in __import__('sys').modules}})"
        ))
    }
}

/// Checks and translates what install_package was given: the specs to install, and a note
/// naming the import names that were translated (" (sklearn is the import name of ...)").
/// `Err` says why nothing may be installed.
pub fn prepare(raw: &[String]) -> Result<(Vec<PackageSpec>, String), crate::error::Refusal> {
    use crate::error::Refusal;
    if raw.is_empty() {
        return Err(Refusal::NothingToInstall);
    }
    if raw.len() > MAX_SPECS {
        return Err(Refusal::TooManyPackages {
            given: raw.len(),
            max: MAX_SPECS,
        });
    }
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    let mut renamed = Vec::new();
    for r in raw {
        match validate_spec(r) {
            Ok(s) => match translate_import_name(&s) {
                Some(dist) => {
                    renamed.push(format!(
                        "{} is the import name of {}; installing {}",
                        s.raw, dist.name, dist.raw
                    ));
                    specs.push(dist);
                }
                None => specs.push(s),
            },
            Err(e) => problems.push(e.to_string()),
        }
    }
    let renamed = if renamed.is_empty() {
        String::new()
    } else {
        format!(" ({})", renamed.join("; "))
    };
    if !problems.is_empty() {
        return Err(Refusal::BadSpecs(problems));
    }
    Ok((specs, renamed))
}

/// Environment for installers: never prompt, never ask a keyring.
pub const INSTALLER_ENV: &[(&str, &str)] = &[
    ("PIP_NO_INPUT", "1"),
    ("PIP_KEYRING_PROVIDER", "disabled"),
    ("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring"),
    ("UV_KEYRING_PROVIDER", "disabled"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_names_become_distributions() {
        let t = |s: &str| {
            validate_spec(s)
                .ok()
                .and_then(|s| translate_import_name(&s))
                .map(|s| s.raw)
        };
        assert_eq!(t("sklearn").as_deref(), Some("scikit-learn"));
        assert_eq!(t("sklearn>=1.4").as_deref(), Some("scikit-learn>=1.4"));
        assert_eq!(t("PIL").as_deref(), Some("pillow"));
        assert_eq!(t("cv2").as_deref(), Some("opencv-python"));
        assert_eq!(t("yaml").as_deref(), Some("pyyaml"));
        assert_eq!(t("bs4[lxml]").as_deref(), Some("beautifulsoup4[lxml]"));
        assert_eq!(t("pandas"), None);
    }

    #[test]
    fn accepts_plain_specs() {
        for s in [
            "tabulate",
            "pandas>=2.0",
            "requests[socks]==2.31.0",
            "numpy >=1.26,<3",
            "scikit-learn~=1.4",
            "Foo_Bar.baz",
        ] {
            assert!(validate_spec(s).is_ok(), "{s}");
        }
        assert_eq!(
            validate_spec("Foo_Bar.baz").map(|s| s.name).ok().as_deref(),
            Some("foo-bar-baz")
        );
    }

    #[test]
    fn rejects_the_dangerous_classes() {
        let table = [
            ("", "empty"),
            ("--index-url=http://evil", "installer option"),
            ("-r requirements.txt", "installer option"),
            ("pkg @ https://evil/x.whl", "URL"),
            ("https://evil/x.whl", "URL"),
            ("git+https://github.com/x/y", "URL"),
            ("./local_pkg", "local paths"),
            ("/tmp/x.whl", "local paths"),
            ("..\\x", "local paths"),
            ("pkg; python_version<'4'", "markers"),
            ("pkg\nother", "control"),
            ("pkg\tx", "control"),
            (" pkg", "whitespace"),
            ("pаndas", "non-ASCII"),
            ("pkg==1.0 # c", "comments"),
            ("pkg==", "PEP 508"),
            ("pkg extra", "PEP 508"),
            ("evil.whl", "local archive"),
            ("requests-2.31.0.tar.gz", "local archive"),
            ("X.ZIP[e]>=1", "local archive"),
            ("x.tgz", "local archive"),
            ("ipykernel", "kernel's own machinery"),
            ("PyZMQ>=20", "kernel's own machinery"),
            ("pip", "kernel's own machinery"),
        ];
        for (spec, want) in table {
            let e = validate_spec(spec)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{spec:?}: {e:?}");
        }
        assert!(validate_spec(&"a".repeat(300)).is_err());
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("Jupyter_Client"), "jupyter-client");
        assert_eq!(normalize("a..b__c"), "a-b-c");
    }
}
