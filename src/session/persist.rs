//! Snapshots: the analyst's variables outlive the server.
//!
//! The kernel saves its user namespace variable by variable (`kernel-spec/snapshot.py`,
//! cloudpickle protocol 5) into `.kernel-mcp/snapshot/` in the workspace; the server keeps the
//! manifest (which variable is in which file, each file's SHA-256, what was skipped and why)
//! in its per-user data folder, signed with HMAC-SHA256 under a key only it can read
//! (`<data dir>/snapshot.key`, mode 0600; the sandbox shows the kernel neither). The next
//! server on the same workspace and interpreter verifies the manifest's signature and hands the
//! hashes to the kernel, which checks every file before unpickling any: a snapshot this server
//! did not write (a file changed, a manifest forged or from elsewhere) is refused and the
//! kernel starts fresh. Unpickling happens inside the kernel's sandbox.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The helper exec'd in a private dict in the kernel.
const HELPER: &str = include_str!("../../kernel-spec/snapshot.py");

/// Where the kernel writes the snapshot, relative to the workspace.
pub const FOLDER: &str = ".kernel-mcp/snapshot";

/// What one snapshot holds: written by the server after the kernel saved the files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// When it was written (seconds since the epoch).
    pub unix: u64,
    /// The workspace and interpreter it belongs to.
    pub workspace: String,
    pub python: String,
    /// (name, file, sha256, bytes) of each saved variable.
    pub saved: Vec<(String, String, String, u64)>,
    /// (name, reason) of each variable not saved.
    pub skipped: Vec<(String, String)>,
    /// (alias, module) of each imported module, re-imported on restore.
    pub modules: Vec<(String, String)>,
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    manifest: Manifest,
    mac: String,
}

/// The kernel's answer to a save.
#[derive(Deserialize)]
struct Saved {
    saved: Vec<(String, String, String, u64)>,
    skipped: Vec<(String, String)>,
    modules: Vec<(String, String)>,
    bytes: u64,
}

/// The kernel's answer to a load.
#[derive(Deserialize)]
struct Loaded {
    #[serde(default)]
    refused: Option<String>,
    #[serde(default)]
    restored: Vec<String>,
    #[serde(default)]
    failed: Vec<(String, String)>,
}

/// Snapshots for one workspace.
#[derive(Debug, Clone)]
pub struct Persist {
    data_dir: PathBuf,
    workspace: PathBuf,
    /// Total bytes a snapshot may take (`--snapshot-max`).
    pub max_bytes: u64,
}

fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

/// The clock time of a unix timestamp as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn when(unix: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(0), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

impl Persist {
    pub fn new(data_dir: PathBuf, workspace: &Path, max_bytes: u64) -> Persist {
        Persist {
            data_dir,
            workspace: workspace.to_path_buf(),
            max_bytes,
        }
    }

    /// The folder the kernel writes the snapshot files to.
    pub fn folder(&self) -> PathBuf {
        self.workspace.join(FOLDER)
    }

    fn manifest_path(&self, python: &Path) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.workspace.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(python.to_string_lossy().as_bytes());
        let id = hex::encode(h.finalize());
        self.data_dir
            .join("snapshots")
            .join(format!("{}.json", id.get(..24).unwrap_or(&id)))
    }

    /// The signing key, created on first use (0600).
    fn key(&self) -> Result<Vec<u8>, String> {
        let path = self.data_dir.join("snapshot.key");
        if let Ok(k) = std::fs::read(&path) {
            if k.len() == 32 {
                return Ok(k);
            }
        }
        std::fs::create_dir_all(&self.data_dir).map_err(|e| e.to_string())?;
        let key: [u8; 32] = rand::random();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            let mut f = o.open(&tmp).map_err(|e| e.to_string())?;
            f.write_all(&key).map_err(|e| e.to_string())?;
        }
        // Another server may have made one meanwhile: keep whichever landed first.
        if std::fs::hard_link(&tmp, &path).is_err() && !path.exists() {
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_file(&tmp);
        let k = std::fs::read(&path).map_err(|e| e.to_string())?;
        (k.len() == 32)
            .then_some(k)
            .ok_or_else(|| "the snapshot key is damaged".to_owned())
    }

    fn mac(&self, m: &Manifest) -> Result<String, String> {
        let key = self.key()?;
        let body = serde_json::to_vec(m).map_err(|e| e.to_string())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(&body);
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// The user expression that saves the namespace (its repr is the kernel's JSON report).
    pub fn save_expr(&self) -> String {
        // One object may take at most half the budget (and 1 GiB): the rest stays for the others.
        let max_one = (self.max_bytes / 2).min(1 << 30);
        format!(
            "(lambda g: (__import__('builtins').exec({}, g), g['save']({}, {}, {max_one}))[1])({{}})",
            lit(HELPER),
            lit(&self.folder().to_string_lossy()),
            self.max_bytes
        )
    }

    /// Records what the kernel saved as the signed manifest; returns it.
    pub fn record(&self, python: &Path, report: &str) -> Result<Manifest, String> {
        let s: Saved = serde_json::from_str(report.trim())
            .map_err(|e| format!("unexpected answer from the snapshot helper: {e}"))?;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let m = Manifest {
            version: 1,
            unix,
            workspace: self.workspace.to_string_lossy().into_owned(),
            python: python.to_string_lossy().into_owned(),
            saved: s.saved,
            skipped: s.skipped,
            modules: s.modules,
            bytes: s.bytes,
        };
        let signed = Signed {
            mac: self.mac(&m)?,
            manifest: m.clone(),
        };
        let path = self.manifest_path(python);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&signed).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        Ok(m)
    }

    /// The snapshot to restore for `python`: `None` when there is none, `Err` when there is one
    /// that fails the signature check (or belongs elsewhere).
    pub fn pending(&self, python: &Path) -> Option<Result<Manifest, String>> {
        let raw = std::fs::read(self.manifest_path(python)).ok()?;
        let signed: Signed = match serde_json::from_slice(&raw) {
            Ok(s) => s,
            Err(e) => return Some(Err(format!("its manifest is unreadable ({e})"))),
        };
        let ok = self
            .mac(&signed.manifest)
            .map(|m| {
                use subtle::ConstantTimeEq;
                bool::from(m.as_bytes().ct_eq(signed.mac.as_bytes()))
            })
            .unwrap_or(false);
        if !ok {
            return Some(Err("its signature does not match this server's key".into()));
        }
        let m = signed.manifest;
        if m.workspace != self.workspace.to_string_lossy() || m.python != python.to_string_lossy() {
            return Some(Err("it belongs to another workspace or interpreter".into()));
        }
        Some(Ok(m))
    }

    /// Forgets the snapshot for `python` (after it was refused).
    pub fn discard(&self, python: &Path) {
        let _ = std::fs::remove_file(self.manifest_path(python));
    }

    /// The user expression that loads `m` (its repr is the kernel's JSON report).
    pub fn load_expr(&self, m: &Manifest) -> String {
        let entries = serde_json::json!({"saved": m.saved, "modules": m.modules}).to_string();
        format!(
            "(lambda g: (__import__('builtins').exec({}, g), g['load']({}, {}))[1])({{}})",
            lit(HELPER),
            lit(&self.folder().to_string_lossy()),
            lit(&entries)
        )
    }

    /// The restore, in words for the model, from the kernel's report on loading `m`.
    pub fn describe_restore(m: &Manifest, report: &str) -> Result<String, String> {
        let l: Loaded = serde_json::from_str(report.trim())
            .map_err(|e| format!("unexpected answer from the snapshot helper: {e}"))?;
        if let Some(why) = l.refused {
            return Err(why);
        }
        let vars: Vec<&str> = l
            .restored
            .iter()
            .filter(|n| !m.modules.iter().any(|(a, _)| a == *n))
            .map(String::as_str)
            .collect();
        let mut s = format!(
            "[restored from the snapshot of {}: {} variable(s) ({}){}",
            when(m.unix),
            vars.len(),
            vars.join(", "),
            if m.modules.is_empty() {
                String::new()
            } else {
                format!(
                    " and {} import(s) ({})",
                    m.modules.len(),
                    m.modules
                        .iter()
                        .map(|(a, _)| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let mut not: Vec<String> = m
            .skipped
            .iter()
            .map(|(n, why)| format!("{n} ({why})"))
            .collect();
        not.extend(
            l.failed
                .iter()
                .map(|(n, why)| format!("{n} (not loaded: {why})")),
        );
        if !not.is_empty() {
            s.push_str(&format!("; not restored: {}", not.join("; ")));
        }
        s.push_str(". restart_kernel starts fresh; restart_kernel {\"restore\": true} goes back to the last snapshot.]");
        Ok(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_trusted_only_with_this_servers_signature() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let p = Persist::new(dir.path().join("data"), &ws, 1 << 30);
        let py = Path::new("/env/bin/python");
        assert!(p.pending(py).is_none());
        let m = p
            .record(py, r#"{"saved": [["df", "a.pkl", "00", 3]], "skipped": [["f", "an open file"]], "modules": [["np", "numpy"]], "bytes": 3}"#)
            .unwrap();
        assert_eq!(p.pending(py), Some(Ok(m.clone())));
        // Another interpreter has no snapshot here.
        assert!(p.pending(Path::new("/other/python")).is_none());
        // A changed manifest fails the check.
        let path = p.manifest_path(py);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("a.pkl", "b.pkl");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(p.pending(py), Some(Err(_))));
        // So does one signed with another key.
        let q = Persist::new(dir.path().join("data2"), &ws, 1 << 30);
        q.record(
            py,
            r#"{"saved": [], "skipped": [], "modules": [], "bytes": 0}"#,
        )
        .unwrap();
        std::fs::copy(q.manifest_path(py), &path).unwrap();
        assert!(matches!(p.pending(py), Some(Err(_))));
        let d =
            Persist::describe_restore(&m, r#"{"restored": ["np", "df"], "failed": []}"#).unwrap();
        assert!(
            d.contains("1 variable(s) (df)") && d.contains("f (an open file)"),
            "{d}"
        );
        assert!(Persist::describe_restore(&m, r#"{"refused": "x changed"}"#).is_err());
    }
}
