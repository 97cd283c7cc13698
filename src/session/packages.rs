//! The package tools' operations: what is installed (asked of the kernel when its interpreter
//! is elsewhere), name checks that understand import names, filtered listings, and installs
//! into the kernel's own environment (sandboxed where the backend has a sandbox).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Session;
use crate::error::{PackageError, Refusal, SessionError};
use crate::output::{ProgressFn, Rendered};
use crate::packages;

/// Most names one check_packages call may ask about.
pub const MAX_CHECK_NAMES: usize = 100;
/// Most rows one list_packages call returns.
pub const MAX_LISTED: usize = 500;

/// check_packages as data.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageCheck {
    /// One entry per name asked about, in order.
    pub packages: Vec<PackageStatus>,
}

/// Whether one package is installed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageStatus {
    /// The name as given (a distribution name or an import name).
    pub name: String,
    /// True when installed.
    pub installed: bool,
    /// The distribution that provides it, when installed or known.
    pub distribution: Option<String>,
    /// Installed version.
    pub version: Option<String>,
}

impl PackageCheck {
    /// One line per name, as the tool's text.
    pub fn to_text(&self) -> String {
        let lines: Vec<String> = self
            .packages
            .iter()
            .map(|p| match (&p.distribution, &p.version) {
                (Some(d), Some(v)) if p.installed && normalize_eq(d, &p.name) => {
                    format!("{d}: {v}")
                }
                (Some(d), Some(v)) if p.installed => format!("{}: {v} (import name of {d})", p.name),
                (Some(d), _) => format!(
                    "{n}: not installed ({n} is the import name of {d}; install_package([\"{d}\"]))",
                    n = p.name
                ),
                _ => format!("{}: not installed", p.name),
            })
            .collect();
        lines.join("\n")
    }
}

fn normalize_eq(a: &str, b: &str) -> bool {
    packages::normalize(a) == packages::normalize(b)
}

/// list_packages as data.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageList {
    /// Matching distributions (at most 500).
    pub packages: Vec<PackageVersion>,
    /// How many matched.
    pub total: usize,
}

/// A distribution and its version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

impl PackageList {
    /// One `name==version` row per package, as the tool's text.
    pub fn to_text(&self) -> String {
        if self.total == 0 {
            return "(no matching packages)".into();
        }
        let mut text = self
            .packages
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect::<Vec<_>>()
            .join("\n");
        if self.total > self.packages.len() {
            text.push_str(&format!(
                "\n[{} more not shown; use filter]",
                self.total - self.packages.len()
            ));
        }
        text
    }
}

/// What an install did.
pub enum Installed {
    /// Installed by kernel-mcp into the local environment.
    Local(LocalInstall),
    /// Installed by pip inside a kernel that runs elsewhere: that cell's output.
    InKernel(Rendered),
}

/// An install into the local environment: its facts; `Display` is the text the model reads.
pub struct LocalInstall {
    /// The interpreter installed into.
    pub python: std::path::PathBuf,
    /// Asked for, added and changed.
    pub report: packages::InstallReport,
    /// The note on import names taken for distributions (empty when none).
    pub renamed: String,
    /// Modules the kernel had already imported at a version that changed.
    pub stale: StaleImports,
}

/// Whether the kernel still runs old code of a package whose version changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleImports {
    /// No version changed, or none of the changed ones was imported.
    None,
    /// These modules (a Python list, as the kernel printed it) were imported before.
    Imported(String),
    /// The kernel could not be asked.
    Unknown,
}

impl std::fmt::Display for LocalInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.report.describe(&self.python, &self.renamed))?;
        match &self.stale {
            StaleImports::None => Ok(()),
            StaleImports::Imported(v) => write!(
                f,
                "\nThe kernel had already imported {v} at the old version: call restart_kernel to use the new version (this clears all variables)."
            ),
            StaleImports::Unknown => f.write_str("\nIf any of these were already imported in the kernel, call restart_kernel to use the new version."),
        }
    }
}

impl Session {
    /// The kernel environment's distributions: normalized name → (name, version).
    pub async fn installed_packages(
        &self,
    ) -> Result<BTreeMap<String, (String, String)>, SessionError> {
        if self.kernel_elsewhere() {
            // The interpreter lives with the kernel: ask the kernel.
            let repr = self
                .kernel
                .evaluate(crate::pyenv::KERNEL_PROBE_EXPR, Duration::from_secs(30))
                .await
                .map_err(|e| Refusal::KernelPackages {
                    detail: Some(e.to_string()),
                })?;
            let raw = crate::pyenv::parse_kernel_packages(&repr)
                .ok_or(Refusal::KernelPackages { detail: None })?;
            return Ok(raw
                .into_iter()
                .map(|(n, v)| (packages::normalize(&n), (n, v)))
                .collect());
        }
        packages::installed(&self.env_info().python)
            .await
            .map_err(|e| Refusal::InstalledPackages(e.to_string()).into())
    }

    /// The distributions that provide each import name, asked of the kernel's interpreter.
    async fn import_owners(&self, names: &[String]) -> BTreeMap<String, Vec<String>> {
        let owners = if self.kernel_elsewhere() {
            self.kernel
                .evaluate(
                    &packages::import_owners_expr(names),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| e.to_string())
                .and_then(|repr| {
                    packages::parse_import_owners(&repr)
                        .ok_or_else(|| "unexpected answer from the kernel".to_owned())
                })
        } else {
            packages::import_owners(&self.env_info().python, names)
                .await
                .map_err(|e| e.to_string())
        };
        owners.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not map import names to distributions");
            BTreeMap::new()
        })
    }

    /// Whether each name is installed; a name that is no distribution is looked up as an
    /// import name (`importlib.metadata.packages_distributions()`, then a table of well-known
    /// ones such as `cv2`).
    pub async fn check_packages(&self, names: &[String]) -> Result<PackageCheck, SessionError> {
        if names.is_empty() {
            return Err(Refusal::NoPackageNames.into());
        }
        if let Some(bad) = names.iter().find(|n| {
            n.is_empty()
                || n.len() > 100
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }) {
            return Err(Refusal::BadPackageName(bad.clone()).into());
        }
        if names.len() > MAX_CHECK_NAMES {
            return Err(Refusal::TooManyNames {
                given: names.len(),
                max: MAX_CHECK_NAMES,
            }
            .into());
        }
        let installed = self.installed_packages().await?;
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !installed.contains_key(&packages::normalize(n)))
            .cloned()
            .collect();
        let owners = if unknown.is_empty() {
            BTreeMap::new()
        } else {
            self.import_owners(&unknown).await
        };
        let packages = names
            .iter()
            .map(|n| {
                if let Some((dist, v)) = installed.get(&packages::normalize(n)) {
                    return PackageStatus {
                        name: n.clone(),
                        installed: true,
                        distribution: Some(dist.clone()),
                        version: Some(v.clone()),
                    };
                }
                let owner = owners
                    .get(n)
                    .and_then(|o| o.first().cloned())
                    .or_else(|| packages::distribution_for_import(n).map(str::to_owned));
                match owner
                    .as_deref()
                    .and_then(|o| installed.get(&packages::normalize(o)))
                {
                    Some((dist, v)) => PackageStatus {
                        name: n.clone(),
                        installed: true,
                        distribution: Some(dist.clone()),
                        version: Some(v.clone()),
                    },
                    None => PackageStatus {
                        name: n.clone(),
                        installed: false,
                        distribution: owner,
                        version: None,
                    },
                }
            })
            .collect();
        Ok(PackageCheck { packages })
    }

    /// The installed distributions whose name contains `filter` (case-insensitive) or matches
    /// it as a glob.
    pub async fn list_packages(&self, filter: Option<&str>) -> Result<PackageList, SessionError> {
        let installed = self.installed_packages().await?;
        let filter = filter.map(str::to_ascii_lowercase);
        let matching: Vec<&(String, String)> = installed
            .values()
            .filter(|(n, _)| match &filter {
                None => true,
                Some(f) if f.contains(['*', '?', '[']) => {
                    crate::workspace::glob_match(f, &n.to_ascii_lowercase())
                }
                Some(f) => n.to_ascii_lowercase().contains(f.as_str()),
            })
            .collect();
        Ok(PackageList {
            packages: matching
                .iter()
                .take(MAX_LISTED)
                .map(|(n, v)| PackageVersion {
                    name: n.clone(),
                    version: v.clone(),
                })
                .collect(),
            total: matching.len(),
        })
    }

    /// Installs packages into the kernel's environment, one install at a time. Installer output
    /// lines go to `lines` as they come; when pip runs inside a kernel elsewhere, the cell's
    /// progress goes to `progress` instead.
    pub async fn install_packages(
        &self,
        raw: &[String],
        lines: Option<crate::runner::LineSender>,
        progress: Option<ProgressFn>,
        cancel: &CancellationToken,
    ) -> Result<Installed, SessionError> {
        let (specs, renamed) = packages::prepare(raw)?;
        let _one_at_a_time = self.install_lock.lock().await;
        if self.kernel_elsewhere() {
            // pip runs inside the kernel, so it installs into the kernel's own interpreter
            // wherever that is; the result is that cell's output.
            let code = packages::kernel_install_code(&specs);
            let secs = self.settings.install_timeout.as_secs_f64();
            let shown = format!(
                "%pip install {}",
                specs
                    .iter()
                    .map(|s| s.raw.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let out = self
                .run_now(&code, &shown, Some(secs), progress, cancel)
                .await;
            self.kernel.invalidate_imports();
            return out.map(Installed::InKernel);
        }
        let python = self.env_info().python;
        let mode = self.kernel.backend().install_mode();
        let report =
            packages::install(&python, &specs, self.settings.install_timeout, lines, &mode)
                .await
                .map_err(|e| match e {
                    PackageError::Failed(_) => Refusal::InstallFailed {
                        error: e.to_string(),
                        renamed: renamed.clone(),
                    },
                    e => Refusal::InstallIncomplete {
                        error: e.to_string(),
                        renamed: renamed.clone(),
                    },
                })?;
        self.kernel.invalidate_imports();
        // The notebook record says what was installed, commented out: rerunning a notebook in a
        // sandboxed kernel cannot install (its environment is read-only), and elsewhere the
        // reader decides.
        self.journal.record_note_cell(&format!(
            "# install_package installed these packages (kernel-mcp); to replay this notebook elsewhere, install them first:\n# %pip install {}",
            specs.iter().map(|s| s.raw.as_str()).collect::<Vec<_>>().join(" ")
        ));
        let stale = match report.stale_imports_expr() {
            None => StaleImports::None,
            Some(expr) => match self.kernel.evaluate(&expr, Duration::from_secs(3)).await {
                Ok(v) if v != "[]" => StaleImports::Imported(v),
                Ok(_) => StaleImports::None,
                Err(_) => StaleImports::Unknown,
            },
        };
        Ok(Installed::Local(LocalInstall {
            python,
            report,
            renamed,
            stale,
        }))
    }
}
