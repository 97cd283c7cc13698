//! The workspace jail: `WorkspacePath` validation (path.rs) plus read, write and list through a
//! cap-std capability root, so `..`, absolute paths and symlinks can never reach outside the
//! workspace. This file holds the root, the shared I/O helpers and the limits.

mod list;
mod path;
mod read;
pub mod remote;
mod write;

pub use list::{glob_match, Entry, EntryKind, Listing};
pub use path::WorkspacePath;
pub use read::ReadOutcome;

use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions};

use crate::error::WorkspaceError;
use crate::limits::human_bytes as human;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most components in an accepted path.
pub const MAX_COMPONENTS: usize = 64;
/// Largest write, in bytes (after base64 decoding).
pub const MAX_WRITE_BYTES: usize = 16 * 1024 * 1024;
/// Largest image returned by read_file, in bytes.
/// Largest image file read_file takes (it is then fitted to the client's image limits).
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Most characters of text returned by one read_file call.
pub const MAX_READ_CHARS: usize = 100_000;
/// How far read_file scans to reach an `offset` before giving up.
const MAX_SKIP_BYTES: u64 = 1 << 30;
/// Default number of lines returned by read_file.
pub const DEFAULT_READ_LINES: usize = 2000;
/// Most entries returned by list_files.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Most entries read from one folder by a listing.
const MAX_SCAN_PER_DIR: usize = 50_000;
/// Most entries read by one listing in all.
const MAX_SCAN_TOTAL: usize = 200_000;

/// Where over-budget output is saved, relative to the workspace root. The server writes these
/// files itself, so they are always in the local workspace, also when the file tools act in a
/// gateway kernel's folder.
pub const OUTPUTS_DIR: &str = ".kernel-mcp/outputs";

/// The `file://` URI of a workspace file, percent-encoded (spaces, `#`, `%` and non-ASCII
/// names included), as the MCP resources and resource links name it.
pub fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .map(String::from)
        .unwrap_or_else(|()| format!("file://{}", path.display()))
}

/// Removes the folder `rel` below `root` (with everything in it when `whole`, else only when
/// it is empty) without ever following a symlink out of `root`, at any step of `rel`: the
/// server removes its own folders inside workspaces (snapshots, outputs, a session's folder),
/// and kernel code can replace any of them with a link to a folder elsewhere, which a plain
/// `remove_dir_all` would follow and empty, with the server's rights. `root` itself is the
/// server's (the kernel cannot replace it).
pub fn remove_below(root: &Path, rel: &str, whole: bool) -> std::io::Result<()> {
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
    if whole {
        dir.remove_dir_all(rel)
    } else {
        dir.remove_dir(rel)
    }
}

/// The path a `file://` URI names (decoded), or `None` for anything else.
pub fn path_of_file_uri(uri: &str) -> Option<PathBuf> {
    let u = url::Url::parse(uri).ok()?;
    if u.scheme() != "file" {
        return None;
    }
    u.to_file_path().ok()
}

/// True when `user_path` names a saved-output file (under [`OUTPUTS_DIR`]).
pub fn is_saved_output(user_path: &str) -> bool {
    let p = user_path.trim_start_matches("./").replace('\\', "/");
    p.strip_prefix(OUTPUTS_DIR).is_some_and(|rest| {
        rest.starts_with('/') && rest.len() > 1 && !rest.split('/').any(|c| c == "..")
    })
}

/// The workspace: a root directory opened once as a capability.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: Dir,
}

#[derive(Clone, Copy)]
enum OsError {
    Loop,
    NotDir,
}

#[cfg(unix)]
fn is_os_error(e: &std::io::Error, which: OsError) -> bool {
    let code = match which {
        OsError::Loop => nix::libc::ELOOP,
        OsError::NotDir => nix::libc::ENOTDIR,
    };
    e.raw_os_error() == Some(code)
}

#[cfg(windows)]
fn is_os_error(e: &std::io::Error, which: OsError) -> bool {
    match which {
        // ERROR_CANT_RESOLVE_FILENAME: too many reparse points.
        OsError::Loop => e.raw_os_error() == Some(1921),
        OsError::NotDir => e.kind() == std::io::ErrorKind::NotADirectory,
    }
}

/// Open flags for files the tools open: O_NONBLOCK so a FIFO with no writer cannot block the
/// open forever, O_NOCTTY so a terminal never becomes ours. Windows has neither concern.
fn no_block(o: &mut OpenOptions) {
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(o, nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
    #[cfg(windows)]
    let _ = o;
}

/// How many names the file has. (Windows: not known from this metadata, so 1; there the kernel
/// is not sandboxed and could make such links anyway.)
fn hard_links(m: &cap_std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    return cap_std::fs::MetadataExt::nlink(m);
    #[cfg(windows)]
    {
        let _ = m;
        1
    }
}

fn io_err(path: &WorkspacePath) -> impl Fn(std::io::Error) -> WorkspaceError + '_ {
    move |e| map_io(path, e)
}

fn map_io(path: &WorkspacePath, e: std::io::Error) -> WorkspaceError {
    use std::io::ErrorKind as K;
    let p = path.display();
    match e.kind() {
        K::NotFound => WorkspaceError::NotFound { path: p },
        K::AlreadyExists => WorkspaceError::Denied {
            path: p,
            reason: "a folder in the path is a file or a symlink leading outside the workspace".into(),
        },
        K::PermissionDenied => WorkspaceError::Denied {
            path: p,
            reason: "permission denied, or the path leads outside the workspace (a symlink pointing out)".into(),
        },
        _ if is_os_error(&e, OsError::Loop) => WorkspaceError::Denied {
            path: p,
            reason: "too many levels of symbolic links (a symlink loop)".into(),
        },
        _ if is_os_error(&e, OsError::NotDir) => WorkspaceError::NotFound { path: p },
        _ => {
            // cap-std reports escapes as "a path led outside of the filesystem".
            let msg = e.to_string();
            if msg.contains("outside") {
                WorkspaceError::Denied {
                    path: p,
                    reason: "the path leads outside the workspace (through a symlink or '..')".into(),
                }
            } else {
                WorkspaceError::Io { path: p, source: e }
            }
        }
    }
}

/// `\\?\C:\x` as `C:\x` and `\\?\UNC\server\share` as `\\server\share`, when the plain form
/// means the same path (short enough, no component that only verbatim paths allow); else `None`.
#[cfg_attr(not(windows), allow(dead_code))]
fn plain_windows_path(verbatim: &str) -> Option<String> {
    let plain = if let Some(rest) = verbatim.strip_prefix(r"\\?\UNC\") {
        format!(r"\\{rest}")
    } else {
        let rest = verbatim.strip_prefix(r"\\?\")?;
        let mut c = rest.chars();
        let drive = matches!((c.next(), c.next(), c.next()), (Some(d), Some(':'), Some('\\')) if d.is_ascii_alphabetic());
        if !drive {
            return None;
        }
        rest.to_owned()
    };
    // Plain paths stop at 260 characters and drop trailing dots and spaces of a component.
    let odd = plain
        .split('\\')
        .skip(1)
        .any(|c| c.ends_with('.') || c.ends_with(' '));
    (plain.chars().count() < 260 && !odd).then_some(plain)
}

impl Workspace {
    /// Opens (creating if missing) the workspace root.
    pub fn open(root: &Path) -> Result<Workspace, WorkspaceError> {
        std::fs::create_dir_all(root).map_err(|source| WorkspaceError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let root = std::fs::canonicalize(root).map_err(|source| WorkspaceError::Io {
            path: root.display().to_string(),
            source,
        })?;
        // Windows canonical paths are verbatim (`\\?\C:\data`); the model, the user and Python
        // write `C:\data`, and absolute paths are matched against this root.
        #[cfg(windows)]
        let root = root
            .to_str()
            .and_then(plain_windows_path)
            .map(PathBuf::from)
            .unwrap_or(root);
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).map_err(|source| {
            WorkspaceError::Io {
                path: root.display().to_string(),
                source,
            }
        })?;
        Ok(Workspace { root, dir })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Validates a user path (see [`WorkspacePath::resolve`]).
    pub fn path(&self, user: &str) -> Result<WorkspacePath, WorkspaceError> {
        WorkspacePath::resolve(&self.root, user)
    }

    /// Opens a regular file for reading without ever blocking on a FIFO or device.
    fn open_regular(
        &self,
        path: &WorkspacePath,
    ) -> Result<(std::fs::File, cap_std::fs::Metadata), WorkspaceError> {
        if path.is_root() {
            return Err(WorkspaceError::IsDirectory {
                path: path.display(),
            });
        }
        let mut o = OpenOptions::new();
        o.read(true);
        // O_NONBLOCK: opening a FIFO with no writer would otherwise block forever.
        no_block(&mut o);
        let f = match self.dir.open_with(path.for_cap(), &o) {
            Ok(f) => f,
            // A Unix socket cannot be opened (ENXIO): it is there, and not a regular file.
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
                return Err(WorkspaceError::NotRegular {
                    path: path.display(),
                })
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        let meta = f.metadata().map_err(io_err(path))?;
        if meta.is_dir() {
            return Err(WorkspaceError::IsDirectory {
                path: path.display(),
            });
        }
        if !meta.is_file() {
            return Err(WorkspaceError::NotRegular {
                path: path.display(),
            });
        }
        let f = f.into_std();
        // Back to blocking mode for normal reads.
        #[cfg(unix)]
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
        Ok((f, meta))
    }
    /// Checks that a path names an existing regular file, returning its absolute path.
    pub fn regular_file(&self, path: &WorkspacePath) -> Result<PathBuf, WorkspaceError> {
        let _ = self.open_regular(path)?;
        Ok(self.root.join(&path.rel))
    }

    /// Creates a new file under `.kernel-mcp/outputs/` for saved output; returns (relative path, file).
    pub fn create_output_file(&self, suffix: &str) -> std::io::Result<(String, std::fs::File)> {
        let dir_rel = Path::new(OUTPUTS_DIR);
        self.dir.create_dir_all(dir_rel)?;
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let name = format!(
            "{stamp}-{}{suffix}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let rel = dir_rel.join(name);
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        let f = self.dir.open_with(&rel, &o)?;
        Ok((rel.to_string_lossy().into_owned(), f.into_std()))
    }
}

#[cfg(test)]
mod tests {
    /// A link the kernel put in place of a folder the server removes is never followed out:
    /// the folder it points to keeps everything in it.
    #[cfg(unix)]
    #[test]
    fn removals_never_follow_a_link_out() {
        use super::remove_below;
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let keep = outside.path().join("snapshot").join("keep.txt");
        std::fs::create_dir_all(outside.path().join("snapshot").join("empty"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&keep, "1").unwrap_or_else(|e| panic!("{e}"));
        // A link in the middle of the path, and one at its end.
        std::os::unix::fs::symlink(outside.path(), root.path().join(".kernel-mcp"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(remove_below(root.path(), ".kernel-mcp/snapshot", true).is_err());
        assert!(remove_below(root.path(), ".kernel-mcp/snapshot/empty", false).is_err());
        std::fs::remove_file(root.path().join(".kernel-mcp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(root.path().join(".kernel-mcp")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(
            outside.path().join("snapshot"),
            root.path().join(".kernel-mcp").join("snapshot"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = remove_below(root.path(), ".kernel-mcp/snapshot", true);
        assert!(
            keep.exists(),
            "a link's target outside the root was emptied"
        );
        assert!(outside.path().join("snapshot").join("empty").exists());
        // A real folder inside is removed, whole.
        std::fs::create_dir_all(root.path().join("own").join("deep"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.path().join("own").join("deep").join("f"), "1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(remove_below(root.path(), "own", true).is_ok());
        assert!(!root.path().join("own").exists());
    }

    #[cfg(unix)]
    #[test]
    fn file_uris_are_encoded_and_decoded() {
        use super::{file_uri, path_of_file_uri};
        let p = std::path::Path::new("/data/Jane Doe/q#1 100%/é.png");
        let uri = file_uri(p);
        assert_eq!(uri, "file:///data/Jane%20Doe/q%231%20100%25/%C3%A9.png");
        assert_eq!(path_of_file_uri(&uri).as_deref(), Some(p));
        // What earlier servers sent (unencoded) still reads.
        assert_eq!(
            path_of_file_uri("file:///data/a b.csv").as_deref(),
            Some(std::path::Path::new("/data/a b.csv"))
        );
        assert_eq!(path_of_file_uri("http://x/y"), None);
        assert_eq!(path_of_file_uri("not a uri"), None);
    }

    use super::*;

    #[test]
    fn saved_output_paths_are_recognised() {
        assert!(is_saved_output(".kernel-mcp/outputs/20261129-x.txt"));
        assert!(is_saved_output("./.kernel-mcp/outputs/a.txt"));
        assert!(is_saved_output(r".kernel-mcp\outputs\a.txt"));
        assert!(!is_saved_output(".kernel-mcp/outputs"));
        assert!(!is_saved_output(".kernel-mcp/outputs/"));
        assert!(!is_saved_output(".kernel-mcp/outputsX/a.txt"));
        assert!(!is_saved_output("data/.kernel-mcp/outputs/a.txt"));
        assert!(!is_saved_output(".kernel-mcp/outputs/../../data.csv"));
    }

    #[test]
    fn verbatim_windows_roots_become_plain() {
        assert_eq!(
            plain_windows_path(r"\\?\C:\Users\ann\data").as_deref(),
            Some(r"C:\Users\ann\data")
        );
        assert_eq!(
            plain_windows_path(r"\\?\UNC\srv\share\ws").as_deref(),
            Some(r"\\srv\share\ws")
        );
        assert_eq!(plain_windows_path(r"C:\plain"), None);
        assert_eq!(plain_windows_path(r"\\?\Volume{abc}\x"), None);
        assert_eq!(plain_windows_path(r"\\?\C:\dir.\x"), None);
        assert_eq!(plain_windows_path(r"\\?\C:\dir \x"), None);
        assert_eq!(plain_windows_path(r"\\?\C:"), None);
        let long = format!(r"\\?\C:\{}", "a".repeat(300));
        assert_eq!(plain_windows_path(&long), None);
    }

    #[test]
    fn resolve_table() {
        let root = Path::new("/ws/root");
        let ok = |p: &str, want: &str| {
            let r = WorkspacePath::resolve(root, p);
            assert_eq!(r.map(|w| w.display()).ok().as_deref(), Some(want), "{p}");
        };
        ok("a.txt", "a.txt");
        ok("./dir/b.csv", "dir/b.csv");
        ok("/ws/root/x/y", "x/y");
        ok(".", ".");
        let bad = |p: &str| {
            assert!(
                WorkspacePath::resolve(root, p).is_err(),
                "{p} should be rejected"
            )
        };
        for p in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/ws/root-evil/x",
            "~/x",
            "~",
            "a\\..\\b",
            "%2e%2e/x",
            "..%2fx",
            "a\0b",
            "",
            "   ",
            "x/../y",
        ] {
            bad(p);
        }
        bad(&"a/".repeat(3000));
        bad(&"x".repeat(5000));
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*.csv", "data.csv"));
        assert!(!glob_match("*.csv", "data.csv.bak"));
        assert!(glob_match("d?ta.[ct]sv", "data.tsv"));
        assert!(glob_match("[!a]*", "b"));
        assert!(!glob_match("[!a]*", "a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        // `**/` starting a segment matches no folder too; `*` alone crosses folders.
        assert!(glob_match("**/*.txt", "z.txt"));
        assert!(glob_match("**/*.txt", "d/e/z.txt"));
        assert!(glob_match("**/*", "z"));
        assert!(glob_match("data/**/*.csv", "data/a.csv"));
        assert!(glob_match("data/**/*.csv", "data/raw/x/b.csv"));
        assert!(!glob_match("data/**/*.csv", "database/a.csv"));
        assert!(!glob_match("data/**/*.csv", "other/data/a.csv"));
        assert!(glob_match("*.txt", "d/z.txt"));
        assert!(!glob_match("x**/a", "a"), "only at a segment's start");
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("[a-c]?", "bz"));
        assert!(glob_match("x[", "x["));
        // Would take forever with naive backtracking.
        let evil = "*a".repeat(40) + "b";
        assert!(!glob_match(&evil, &"a".repeat(250)));
    }
}
