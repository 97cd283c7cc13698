//! Handle sessions that outlive the server (issue: "sessions that outlive the server", HTTP).
//!
//! A 2026-07-28 client names its session by a handle it keeps. When the server stops in order,
//! each handle session's variables are snapshotted into its folder (as a stdio session's are,
//! `session/persist.rs`), and this book remembers which folder belongs to which handle: one
//! small file per session in the server's per-user data folder (the kernel sees neither),
//! named by a SHA-256 of the handle, so the handle itself (a credential) is never stored. A
//! client that presents the handle to the next server within the idle timeout gets its session
//! back, restored before its first call runs. Sessions that ended (idle timeout, end_session,
//! DELETE) are forgotten, and so are entries older than the idle timeout. The book is shared by
//! every server of the user; each entry names its workspace, and a server finds and sweeps only
//! its own workspace's entries (another server's may live longer: its idle timeout may differ).

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
    /// The workspace root of the server that wrote the entry (absent in entries written
    /// before it was recorded: those count as anyone's).
    #[serde(default)]
    root: Option<String>,
}

/// Entries older than this are swept by any server, whatever their workspace: no idle
/// timeout is longer (duration flags stop at 30 days).
const ANYONES_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which folder belongs to which handle, for one workspace.
pub struct Book {
    dir: PathBuf,
    root: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Book {
    /// The book in `data_dir/http-sessions` (created 0700 when missing), as the server of
    /// the workspace at `root` reads and writes it.
    pub fn open(data_dir: &Path, root: &Path) -> std::io::Result<Book> {
        let dir = data_dir.join("http-sessions");
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Book {
            dir,
            root: root.to_string_lossy().into_owned(),
        })
    }

    /// Whether `entry` belongs to another workspace's server.
    fn foreign(&self, entry: &Entry) -> bool {
        entry.root.as_ref().is_some_and(|r| *r != self.root)
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
            root: Some(self.root.clone()),
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
    /// entry is forgotten. Another workspace's entry is neither found nor touched.
    pub fn find(&self, handle: &str, max_age: Duration) -> Option<String> {
        let path = self.path(handle);
        let raw = std::fs::read(&path).ok()?;
        let entry: Option<Entry> = serde_json::from_slice(&raw).ok();
        if entry.as_ref().is_some_and(|e| self.foreign(e)) {
            return None;
        }
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
    pub fn sweep(&self, max_age: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut gone = 0;
        for e in entries.flatten() {
            let path = e.path();
            let entry: Option<Entry> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let age = |en: &Entry| now().saturating_sub(en.unix);
            let stale = match &entry {
                Some(en) if self.foreign(en) => age(en) > ANYONES_AFTER.as_secs(),
                Some(en) => age(en) > max_age.as_secs(),
                None => true,
            };
            if stale {
                // Snapshot files are removed only in this server's own workspace.
                if let Some(en) = entry.filter(|en| valid_folder(&en.folder) && !self.foreign(en)) {
                    // The session's folder is the kernel's: a link in it is never followed.
                    let _ = crate::workspace::remove_below(
                        &Path::new(&self.root).join(&en.folder),
                        crate::session::persist::FOLDER,
                        true,
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
        let book = Book::open(data.path(), Path::new("/ws/a")).unwrap_or_else(|e| panic!("{e}"));
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
        let book = Book::open(data.path(), Path::new("/ws/a")).unwrap_or_else(|e| panic!("{e}"));
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
        assert_eq!(book.sweep(Duration::from_secs(60)), 1);
        assert!(book.find("fresh", Duration::from_secs(60)).is_some());
    }

    /// Two servers on two workspaces share the book: one with a short idle timeout neither
    /// finds nor sweeps the other's sessions, which live by the other's timeout.
    #[test]
    fn each_workspace_finds_and_sweeps_only_its_own_entries() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let long = Book::open(data.path(), Path::new("/ws/long")).unwrap_or_else(|e| panic!("{e}"));
        let short =
            Book::open(data.path(), Path::new("/ws/short")).unwrap_or_else(|e| panic!("{e}"));
        let old = now().saturating_sub(600);
        let entry = |root: Option<&str>| {
            serde_json::json!({"folder": "session-0123456789ab", "unix": old, "root": root})
                .to_string()
        };
        std::fs::write(long.path("mine"), entry(Some("/ws/long")))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(short.path("legacy"), entry(None)).unwrap_or_else(|e| panic!("{e}"));
        // The short server's 60 s sweep takes the legacy entry, not the long server's.
        assert_eq!(short.sweep(Duration::from_secs(60)), 1);
        assert_eq!(short.find("mine", Duration::from_secs(3600)), None);
        assert!(long.path("mine").exists());
        assert_eq!(
            long.find("mine", Duration::from_secs(3600)).as_deref(),
            Some("session-0123456789ab")
        );
        // Past any idle timeout, anyone sweeps it.
        let ancient =
            serde_json::json!({"folder": "session-0123456789ab", "unix": 5, "root": "/ws/long"});
        std::fs::write(long.path("mine"), ancient.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(short.sweep(Duration::from_secs(60)), 1);
        assert!(!long.path("mine").exists());
    }
}
