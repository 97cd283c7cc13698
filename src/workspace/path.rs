//! The jail's path policy: `WorkspacePath` is the only way to name a file for the file tools.

use std::path::{Component, Path, PathBuf};

use super::*;

/// A validated path relative to the workspace root. The only way to name a file for the file tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath {
    pub(super) rel: PathBuf,
}

impl WorkspacePath {
    /// Validates `user` against the policy: relative (or absolute inside `root`), no `..`, no NUL,
    /// no `~`, no backslashes or URL-encoded separators, bounded length and depth.
    pub fn resolve(root: &Path, user: &str) -> Result<WorkspacePath, WorkspaceError> {
        let bad = |m: String| Err(WorkspaceError::BadPath(m));
        // On Windows a backslash is the native separator (and `C:\\…` an absolute path);
        // elsewhere it is a legal file-name byte that models mean as a separator.
        check_text(user, cfg!(windows))?;
        let p = Path::new(user);
        let rel: PathBuf = if p.is_absolute() {
            match p.strip_prefix(root) {
                Ok(r) => r.to_path_buf(),
                Err(_) => {
                    return bad(format!(
                        "{user:?} is outside the workspace; use a path relative to the workspace root ({})",
                        root.display()
                    ))
                }
            }
        } else {
            p.to_path_buf()
        };
        let mut clean = PathBuf::new();
        let mut count = 0usize;
        for c in rel.components() {
            match c {
                // Windows: "a:b" names an alternate data stream, "C:x" is drive-relative.
                Component::Normal(n) if cfg!(windows) && n.to_string_lossy().contains(':') => {
                    return bad(format!("{user:?}: ':' is not allowed in a file name"));
                }
                Component::Normal(n) => {
                    count += 1;
                    clean.push(n);
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    return bad(format!(
                        "{user:?}: '..' is not allowed; paths must stay inside the workspace"
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return bad(format!("{user:?} is outside the workspace"));
                }
            }
        }
        if count > MAX_COMPONENTS {
            return bad(format!(
                "path has {count} components; the limit is {MAX_COMPONENTS}"
            ));
        }
        Ok(WorkspacePath { rel: clean })
    }

    /// The path relative to the root ("" for the root itself).
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The relative path for messages ("." for the root).
    pub fn display(&self) -> String {
        if self.rel.as_os_str().is_empty() {
            ".".into()
        } else {
            self.rel.to_string_lossy().into_owned()
        }
    }

    pub(super) fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }

    pub(super) fn for_cap(&self) -> &Path {
        if self.is_root() {
            Path::new(".")
        } else {
            &self.rel
        }
    }
}

/// The textual part of the path policy, the same for the local jail and a gateway kernel's
/// folder: no NUL, not empty, bounded length, no backslash (unless `backslash_separates`, on
/// Windows), no leading `~`, no percent escapes of separators or dots, no control characters.
///
/// # Errors
/// The first rule `user` breaks, worded for the model.
pub fn check_text(user: &str, backslash_separates: bool) -> Result<(), WorkspaceError> {
    let bad = |m: String| Err(WorkspaceError::BadPath(m));
    if user.contains('\0') {
        return bad("path contains a NUL byte".into());
    }
    if user.trim().is_empty() {
        return bad(
            "path is empty; give a path relative to the workspace, e.g. \"data.csv\"".into(),
        );
    }
    if user.len() > MAX_PATH_BYTES {
        return bad(format!(
            "path is {} bytes long; the limit is {MAX_PATH_BYTES}",
            user.len()
        ));
    }
    if !backslash_separates && user.contains('\\') {
        return bad(format!(
            "{user:?}: backslashes are not path separators here; use '/'"
        ));
    }
    if user.starts_with('~') {
        return bad(format!(
            "{user:?}: '~' is not expanded; paths are relative to the workspace"
        ));
    }
    let lower = user.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return bad(format!(
            "{user:?} looks URL-encoded; pass the plain path (percent escapes are not decoded)"
        ));
    }
    if user.chars().any(|c| c.is_control()) {
        return bad(format!("{user:?}: path contains control characters"));
    }
    Ok(())
}
