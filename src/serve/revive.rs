//! Handle sessions that outlive the server (issue: "sessions that outlive the server", HTTP).
//!
//! A 2026-07-28 client names its session by a handle it keeps. When the server stops in order,
//! each handle session's variables are snapshotted into its folder (as a stdio session's are,
//! `session/persist.rs`), and this book remembers which folder belongs to which handle: one
//! small file per session in the server's per-user data folder (the kernel sees neither),
//! named by a SHA-256 of the handle, so the handle itself (a credential) is never stored. A
//! client that presents the handle to the next server within the idle timeout gets its session
//! back, restored before its first call runs. Sessions that ended (idle timeout, end_session,
//! DELETE) are forgotten, and so are entries older than the idle timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The folder names sessions get (`session-` and 12 hex digits); nothing else is accepted.
pub fn valid_folder(name: &str) -> bool {
    name.strip_prefix("session-")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Serialize, Deserialize)]
struct Entry {
    /// The session's folder under the workspace root.
    folder: String,
    /// When the session was last known alive (seconds since the epoch).
    unix: u64,
}

/// Which folder belongs to which handle.
pub struct Book {
    dir: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Book {
    /// The book in `data_dir/http-sessions` (created 0700 when missing).
    pub fn open(data_dir: &Path) -> std::io::Result<Book> {
        let dir = data_dir.join("http-sessions");
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Book { dir })
    }

    fn path(&self, handle: &str) -> PathBuf {
        let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(handle.as_bytes()));
        self.dir.join(format!("{}.json", h.get(..32).unwrap_or(&h)))
    }

    /// Records (or refreshes) that `handle`'s session works in `folder`.
    pub fn remember(&self, handle: &str, folder: &str) {
        if !valid_folder(folder) {
            return;
        }
        let entry = Entry {
            folder: folder.to_owned(),
            unix: now(),
        };
        let path = self.path(handle);
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&entry)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not record a session for the next server");
        }
    }

    /// Forgets `handle`'s session (it ended).
    pub fn forget(&self, handle: &str) {
        let _ = std::fs::remove_file(self.path(handle));
    }

    /// The folder of `handle`'s session, if it was known alive within `max_age`; an older
    /// entry is forgotten.
    pub fn find(&self, handle: &str, max_age: Duration) -> Option<String> {
        let path = self.path(handle);
        let raw = std::fs::read(&path).ok()?;
        let entry: Option<Entry> = serde_json::from_slice(&raw).ok();
        match entry {
            Some(e)
                if valid_folder(&e.folder) && now().saturating_sub(e.unix) <= max_age.as_secs() =>
            {
                Some(e.folder)
            }
            _ => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Forgets every entry older than `max_age` (at start): the folders they name, with their
    /// snapshot files; the session's own files stay. Returns how many were forgotten.
    pub fn sweep(&self, max_age: Duration, root: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut gone = 0;
        for e in entries.flatten() {
            let path = e.path();
            let entry: Option<Entry> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let stale = match &entry {
                Some(en) => now().saturating_sub(en.unix) > max_age.as_secs(),
                None => true,
            };
            if stale {
                if let Some(en) = entry.filter(|en| valid_folder(&en.folder)) {
                    let _ = std::fs::remove_dir_all(
                        root.join(&en.folder).join(crate::session::persist::FOLDER),
                    );
                }
                let _ = std::fs::remove_file(&path);
                gone += 1;
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_finds_its_folder_and_nothing_else_does() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let book = Book::open(data.path()).unwrap_or_else(|e| panic!("{e}"));
        book.remember("h1", "session-0123456789ab");
        assert_eq!(
            book.find("h1", Duration::from_secs(60)).as_deref(),
            Some("session-0123456789ab")
        );
        assert_eq!(book.find("h2", Duration::from_secs(60)), None);
        // The handle is not in the book, not even in a file name.
        for e in std::fs::read_dir(data.path().join("http-sessions"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let body = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !name.contains("h1") && !body.contains("\"h1\""),
                "{name}: {body}"
            );
        }
        book.forget("h1");
        assert_eq!(book.find("h1", Duration::from_secs(60)), None);
    }

    #[test]
    fn only_session_folder_names_are_kept_and_old_entries_go() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let book = Book::open(data.path()).unwrap_or_else(|e| panic!("{e}"));
        for bad in [
            "../etc",
            "session-../../x",
            "session-0123456789abc",
            "other",
            "",
        ] {
            book.remember("h", bad);
            assert_eq!(book.find("h", Duration::from_secs(60)), None, "{bad}");
        }
        // A forged entry naming another place is refused and removed.
        let forged = serde_json::json!({"folder": "/etc", "unix": now()}).to_string();
        std::fs::write(book.path("h"), forged).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(book.find("h", Duration::from_secs(60)), None);
        assert!(!book.path("h").exists());
        let old = serde_json::json!({"folder": "session-0123456789ab", "unix": 5}).to_string();
        std::fs::write(book.path("old"), &old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(book.find("old", Duration::from_secs(60)), None);
        std::fs::write(book.path("old"), &old).unwrap_or_else(|e| panic!("{e}"));
        book.remember("fresh", "session-aaaaaaaaaaaa");
        assert_eq!(book.sweep(Duration::from_secs(60), data.path()), 1);
        assert!(book.find("fresh", Duration::from_secs(60)).is_some());
    }
}
