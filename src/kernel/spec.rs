//! The kernel spec (`kernel.json`): argv with `{connection_file}`, env and interrupt mode.
//! Parsing and argv expansion only; no processes here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::KernelError;

/// The kernel spec shipped in `kernel-spec/kernel.json`, compiled in so an installed binary needs no files.
pub const DEFAULT_SPEC: &str = include_str!("../../kernel-spec/kernel.json");

/// How the kernel wants to be interrupted (kernel spec `interrupt_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InterruptMode {
    #[default]
    Signal,
    Message,
}

/// A parsed kernel spec.
#[derive(Debug, Clone, Deserialize)]
pub struct KernelSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub interrupt_mode: InterruptMode,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl KernelSpec {
    /// Parses a spec from JSON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<KernelSpec, KernelError> {
        let spec: KernelSpec = serde_json::from_str(text).map_err(|e| KernelError::Spec {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        if spec.argv.is_empty() {
            return Err(KernelError::Spec {
                path: origin.to_path_buf(),
                reason: "argv is empty".into(),
            });
        }
        if !spec.argv.iter().any(|a| a.contains("{connection_file}")) {
            return Err(KernelError::Spec {
                path: origin.to_path_buf(),
                reason: "argv has no {connection_file} placeholder".into(),
            });
        }
        Ok(spec)
    }

    /// Loads a spec from a `kernel.json` file, or from a directory holding one.
    pub fn load(path: &Path) -> Result<KernelSpec, KernelError> {
        let file = if path.is_dir() {
            path.join("kernel.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| KernelError::Spec {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    /// The built-in spec.
    pub fn builtin() -> Result<KernelSpec, KernelError> {
        Self::parse(
            DEFAULT_SPEC,
            Path::new("<built-in kernel-spec/kernel.json>"),
        )
    }

    /// argv with `{connection_file}` filled in and a leading `python` replaced by `python`.
    pub fn expand_argv(&self, python: &Path, connection_file: &Path) -> Vec<String> {
        let conn = connection_file.to_string_lossy();
        self.argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && (a == "python" || a == "python3" || a == "{python}") {
                    python.to_string_lossy().into_owned()
                } else {
                    a.replace("{connection_file}", &conn)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_expands() {
        let spec = KernelSpec::builtin();
        assert!(spec.is_ok());
        let Ok(spec) = spec else { return };
        let argv = spec.expand_argv(Path::new("/env/bin/python"), Path::new("/run/k.json"));
        assert_eq!(argv.first().map(String::as_str), Some("/env/bin/python"));
        assert!(argv.iter().any(|a| a == "/run/k.json"));
        assert_eq!(spec.interrupt_mode, InterruptMode::Signal);
    }

    #[test]
    fn rejects_spec_without_placeholder() {
        let r = KernelSpec::parse(r#"{"argv":["python","-m","x"]}"#, Path::new("k.json"));
        assert!(r.is_err());
        let r = KernelSpec::parse(r#"{"argv":[]}"#, Path::new("k.json"));
        assert!(r.is_err());
    }
}
