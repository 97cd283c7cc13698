//! File tools for a kernel on a Jupyter gateway: there the workspace is the kernel's working
//! directory, on the gateway's machine. The path policy is checked here before anything is
//! sent; a fixed helper run silently in the kernel (a private dict inside a user expression:
//! no history, no execution count, nothing left in the user namespace) does the file work and
//! checks containment again after resolving symlinks. Knows nothing about MCP.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::error::{KernelAnswer, WorkspaceError};
use crate::workspace::{
    Entry, EntryKind, Listing, ReadOutcome, MAX_COMPONENTS, MAX_IMAGE_BYTES, MAX_LIST_ENTRIES,
    MAX_READ_CHARS,
};

/// The helper exec'd in a private dict by [`expression`].
const HELPER: &str = include_str!("../../kernel-spec/remote_files.py");

/// Most bytes of a text file read per call (the character cap applies on top).
const MAX_READ_BYTES: usize = 4 * MAX_READ_CHARS;

/// The local jail's path policy (its textual rules are the same function,
/// [`super::path::check_text`]; a gateway kernel runs on a POSIX system, so a backslash is
/// never a separator), before resolution: relative, no `..`, bounded depth. Returns the path
/// with `/` separators.
pub fn check_path(p: &str) -> Result<String, WorkspaceError> {
    super::path::check_text(p, false)?;
    let bad = |why: &str| WorkspaceError::BadPath(format!("{p:?}: {why}"));
    if p.starts_with('/') {
        return Err(bad(
            "absolute paths are refused; give a path relative to the workspace",
        ));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.len() > MAX_COMPONENTS {
        return Err(bad("too many path components"));
    }
    if parts.contains(&"..") {
        return Err(bad("'..' is refused: paths stay inside the workspace"));
    }
    Ok(if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    })
}

/// The user expression that runs `op` with `args` in the kernel; its repr is hex of JSON.
pub fn expression(op: &str, args: &Value) -> String {
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "''".into());
    format!(
        "(lambda g: (__import__('builtins').exec({}, g), g['run']({}, {}))[1])({{}})",
        lit(HELPER),
        lit(op),
        lit(&args.to_string())
    )
}

/// Reads the helper's answer (the repr of a hex string); an `error` field becomes the error.
pub fn decode(repr: &str) -> Result<Value, WorkspaceError> {
    let unreadable = || WorkspaceError::BadAnswer {
        what: KernelAnswer::Unreadable,
    };
    let hex_text = repr.trim().trim_matches(|c| c == '\'' || c == '"');
    let bytes = hex::decode(hex_text).map_err(|_| unreadable())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| unreadable())?;
    match v.get("error").and_then(Value::as_str) {
        Some(e) => Err(WorkspaceError::Remote(
            crate::text::sanitize(e).into_owned(),
        )),
        None => Ok(v),
    }
}

/// Arguments of a whole-file read (at most `max` bytes, else an error).
pub fn bytes_args(path: &str, max: u64) -> Value {
    json!({ "path": path, "max": max })
}

/// Arguments of a write that replaces only the session's own file: absent, or exactly as the
/// session left it (`expect`: size and modification time), or `overwrite`.
pub fn write_own_args(
    path: &str,
    data_b64: &str,
    overwrite: bool,
    expect: Option<(u64, SystemTime)>,
) -> Value {
    let expect = expect.and_then(|(size, t)| {
        let ns = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos();
        Some(json!([size, u64::try_from(ns).ok()?]))
    });
    json!({ "path": path, "data": data_b64, "overwrite": overwrite, "expect": expect })
}

/// The helper's whole-file answer as bytes.
pub fn decode_bytes(v: &Value) -> Result<Vec<u8>, WorkspaceError> {
    use base64::Engine;
    let data = v.get("data").and_then(Value::as_str).unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| WorkspaceError::BadAnswer {
            what: KernelAnswer::FileData,
        })
}

/// The size and modification time in a helper's answer (a write_own), None when it names no
/// file; something that is not a regular file is an error.
pub fn decode_stat(v: &Value, path: &str) -> Result<Option<(u64, SystemTime)>, WorkspaceError> {
    if v.get("exists").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    if v.get("regular").and_then(Value::as_bool) != Some(true) {
        return Err(WorkspaceError::NotRegular {
            path: path.to_owned(),
        });
    }
    let size = v.get("size").and_then(Value::as_u64).unwrap_or(0);
    let ns = v.get("mtime_ns").and_then(Value::as_u64).unwrap_or(0);
    Ok(Some((
        size,
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
    )))
}

/// Arguments of a read.
pub fn read_args(path: &str, offset: Option<usize>, limit: Option<usize>, numbers: bool) -> Value {
    json!({
        "path": path,
        "offset": offset.unwrap_or(1),
        "limit": limit.unwrap_or(2000).clamp(1, 100_000),
        "numbers": numbers,
        "max_chars": MAX_READ_CHARS,
        "max_bytes": MAX_READ_BYTES,
        "max_image": MAX_IMAGE_BYTES,
    })
}

/// Arguments of a write (`data` is already base64).
pub fn write_args(path: &str, data_b64: &str, append: bool) -> Value {
    json!({ "path": path, "data": data_b64, "append": append })
}

/// Arguments of a listing.
pub fn list_args(path: &str, recursive: bool, pattern: Option<&str>) -> Value {
    json!({
        "path": path,
        "recursive": recursive,
        "pattern": pattern.unwrap_or(""),
        "max": MAX_LIST_ENTRIES,
    })
}

/// The helper's read answer as the local jail's outcome.
pub fn read_outcome(v: &Value) -> Result<ReadOutcome, WorkspaceError> {
    if let Some(d) = v.get("binary").and_then(Value::as_str) {
        return Ok(ReadOutcome::Binary {
            description: d.to_owned(),
        });
    }
    if let Some(mime) = v.get("image").and_then(Value::as_str) {
        let mime = match mime {
            "image/png" => "image/png",
            "image/jpeg" => "image/jpeg",
            "image/gif" => "image/gif",
            _ => "image/webp",
        };
        let data = v.get("data").and_then(Value::as_str).unwrap_or("");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| WorkspaceError::BadAnswer {
                what: KernelAnswer::Image,
            })?;
        return Ok(ReadOutcome::Image { mime, bytes });
    }
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let note = v
        .get("more")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .then(|| {
            format!(
                "lines {}-{} shown; continue with offset={}",
                num("first"),
                num("last"),
                num("last") + 1
            )
        });
    Ok(ReadOutcome::Text {
        text: crate::text::sanitize(&text).into_owned(),
        note,
    })
}

/// The helper's listing as the local jail's listing.
pub fn listing(v: &Value) -> Listing {
    let entries =
        v.get("entries")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .take(MAX_LIST_ENTRIES)
                    .map(|e| Entry {
                        path: crate::text::sanitize(
                            e.get("path").and_then(Value::as_str).unwrap_or(""),
                        )
                        .into_owned(),
                        kind: match e.get("kind").and_then(Value::as_str) {
                            Some("dir") => EntryKind::Dir,
                            Some("file") => EntryKind::File,
                            Some("symlink") => EntryKind::Symlink,
                            _ => EntryKind::Other,
                        },
                        size: e.get("size").and_then(Value::as_u64).unwrap_or(0),
                        modified: e.get("mtime").and_then(Value::as_u64).and_then(|s| {
                            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default();
    Listing {
        entries,
        truncated: v.get("truncated").and_then(Value::as_bool).unwrap_or(false),
        skipped: v.get("skipped").and_then(Value::as_u64).unwrap_or(0) as usize,
        not_utf8: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_path_policy_refuses_escapes_before_anything_is_sent() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "~/x",
            "C:\\x",
            "a\0b",
            "..\\x",
            // The local jail's textual rules hold here too (they once did not).
            "a\\b",
            "",
            "  ",
            "%2e%2e/secret",
            "a%2Fb",
            "line\nbreak",
            "tab\there",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a/".repeat(70)).is_err());
        assert!(check_path(&"x".repeat(2000)).is_err());
        assert_eq!(check_path("./data//sales.csv").unwrap(), "data/sales.csv");
        assert_eq!(check_path(".").unwrap(), ".");
    }

    #[test]
    fn answers_decode_and_errors_surface() {
        let hex = |v: Value| format!("'{}'", hex::encode(v.to_string()));
        assert!(decode(&hex(json!({"error": "x: not found"}))).is_err());
        assert!(decode("'zz'").is_err());
        let v = decode(&hex(
            json!({"text": "a\u{1b}[2Jb\n", "first": 1, "last": 1, "more": true}),
        ))
        .unwrap();
        match read_outcome(&v).unwrap() {
            ReadOutcome::Text { text, note } => {
                assert_eq!(text, "ab\n");
                assert_eq!(
                    note.as_deref(),
                    Some("lines 1-1 shown; continue with offset=2")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
