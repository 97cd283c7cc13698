//! The workspace jail: `WorkspacePath` validation plus read, write and list through a cap-std
//! capability root, so `..`, absolute paths and symlinks can never reach outside the workspace.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use cap_std::fs::{Dir, OpenOptions};

use crate::error::WorkspaceError;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most components in an accepted path.
pub const MAX_COMPONENTS: usize = 64;
/// Largest write, in bytes (after base64 decoding).
pub const MAX_WRITE_BYTES: usize = 16 * 1024 * 1024;
/// Largest image returned by read_file, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
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

/// A validated path relative to the workspace root. The only way to name a file for the file tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath {
    rel: PathBuf,
}

impl WorkspacePath {
    /// Validates `user` against the policy: relative (or absolute inside `root`), no `..`, no NUL,
    /// no `~`, no backslashes or URL-encoded separators, bounded length and depth.
    pub fn resolve(root: &Path, user: &str) -> Result<WorkspacePath, WorkspaceError> {
        let bad = |m: String| Err(WorkspaceError::BadPath(m));
        if user.contains('\0') {
            return bad("path contains a NUL byte".into());
        }
        let trimmed = user.trim();
        if trimmed.is_empty() {
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
        // On Windows a backslash is the native separator (and `C:\\…` an absolute path);
        // elsewhere it is a legal file-name byte that models mean as a separator.
        if !cfg!(windows) && user.contains('\\') {
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

    fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }

    fn for_cap(&self) -> &Path {
        if self.is_root() {
            Path::new(".")
        } else {
            &self.rel
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    Text { text: String, note: Option<String> },
    Image { mime: &'static str, bytes: Vec<u8> },
    Binary { description: String },
}

/// What a listed entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Listed, never followed.
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    /// The word used in listings and structured results.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// A listing, possibly cut short.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub truncated: bool,
    pub skipped: usize,
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

fn sniff(head: &[u8]) -> Option<(&'static str, bool)> {
    // (type, is_image_we_return)
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some(("image/png", true))
    } else if starts(b"\xff\xd8\xff") {
        Some(("image/jpeg", true))
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(("image/gif", true))
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        Some(("image/webp", true))
    } else if starts(b"%PDF") {
        Some(("PDF document", false))
    } else if starts(b"PK\x03\x04") {
        Some(("ZIP archive (also xlsx/docx/jar)", false))
    } else if starts(b"\x1f\x8b") {
        Some(("gzip data", false))
    } else if starts(b"PAR1") {
        Some(("Parquet file", false))
    } else if starts(b"SQLite format 3\0") {
        Some(("SQLite database", false))
    } else if starts(b"\x93NUMPY") {
        Some(("NumPy .npy array", false))
    } else if starts(b"\x7fELF") {
        Some(("ELF executable", false))
    } else if starts(b"\x89HDF") {
        Some(("HDF5 file", false))
    } else if starts(b"ARROW1") {
        Some(("Arrow IPC / Feather file", false))
    } else {
        None
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U.get(i).unwrap_or(&"B"))
    }
}

/// One element of a parsed glob.
enum GlobToken {
    Star,
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Char(char),
}

fn parse_glob(pattern: &str) -> Vec<GlobToken> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        i += 1;
        match c {
            '*' => {
                // Runs of stars mean the same as one.
                if !matches!(out.last(), Some(GlobToken::Star)) {
                    out.push(GlobToken::Star);
                }
            }
            '?' => out.push(GlobToken::Any),
            '[' => {
                let rest = p.get(i..).unwrap_or_default();
                let Some(end) = rest.iter().position(|&c| c == ']') else {
                    out.push(GlobToken::Char('['));
                    continue;
                };
                let class = rest.get(..end).unwrap_or_default();
                let (negated, class) = match class.split_first() {
                    Some(('!' | '^', c)) => (true, c),
                    _ => (false, class),
                };
                let mut ranges = Vec::new();
                let mut j = 0;
                while let Some(&a) = class.get(j) {
                    match (class.get(j + 1), class.get(j + 2)) {
                        (Some('-'), Some(&b)) => {
                            ranges.push((a, b));
                            j += 3;
                        }
                        _ => {
                            ranges.push((a, a));
                            j += 1;
                        }
                    }
                }
                out.push(GlobToken::Class { negated, ranges });
                i += end + 1;
            }
            c => out.push(GlobToken::Char(c)),
        }
    }
    out
}

/// Matches `name` against a glob with `*`, `?` and `[...]` classes (no path separators special).
/// Dynamic programming over (pattern token, name position): linear in their product, so no
/// pattern can make it backtrack exponentially.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let tokens = parse_glob(pattern);
    let n: Vec<char> = name.chars().collect();
    // reach[j]: the tokens seen so far can match the first j characters of the name.
    let mut reach = vec![false; n.len() + 1];
    if let Some(r) = reach.first_mut() {
        *r = true;
    }
    for t in &tokens {
        let mut next = vec![false; n.len() + 1];
        match t {
            GlobToken::Star => {
                let mut any = false;
                for (j, r) in reach.iter().enumerate() {
                    any |= *r;
                    if let Some(x) = next.get_mut(j) {
                        *x = any;
                    }
                }
            }
            _ => {
                for (j, &c) in n.iter().enumerate() {
                    let ok = match t {
                        GlobToken::Any => true,
                        GlobToken::Char(p) => *p == c,
                        GlobToken::Class { negated, ranges } => {
                            ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated
                        }
                        GlobToken::Star => false,
                    };
                    if ok && reach.get(j).copied().unwrap_or(false) {
                        if let Some(x) = next.get_mut(j + 1) {
                            *x = true;
                        }
                    }
                }
            }
        }
        reach = next;
    }
    reach.last().copied().unwrap_or(false)
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
        let f = self
            .dir
            .open_with(path.for_cap(), &o)
            .map_err(io_err(path))?;
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

    /// Reads a file: text by lines (`offset` is the 1-based first line), images as bytes, other binaries described.
    pub fn read(
        &self,
        path: &WorkspacePath,
        offset: Option<usize>,
        limit: Option<usize>,
        line_numbers: bool,
    ) -> Result<ReadOutcome, WorkspaceError> {
        let (mut f, meta) = self.open_regular(path)?;
        let size = meta.len();
        let mut head = vec![0u8; 8192];
        let n = read_full(&mut f, &mut head).map_err(io_err(path))?;
        head.truncate(n);
        if let Some((kind, is_image)) = sniff(&head) {
            if is_image {
                if size > MAX_IMAGE_BYTES {
                    return Ok(ReadOutcome::Binary {
                        description: format!(
                            "{}: {kind} image of {} — larger than the {} limit for returning images; downscale it in Python first",
                            path.display(),
                            human(size),
                            human(MAX_IMAGE_BYTES)
                        ),
                    });
                }
                let mut bytes = head;
                f.read_to_end(&mut bytes).map_err(io_err(path))?;
                let mime = match kind {
                    "image/png" => "image/png",
                    "image/jpeg" => "image/jpeg",
                    "image/gif" => "image/gif",
                    _ => "image/webp",
                };
                return Ok(ReadOutcome::Image { mime, bytes });
            }
            return Ok(ReadOutcome::Binary {
                description: format!(
                    "{}: binary file, {kind}, {}. Load it from Python with execute_python.",
                    path.display(),
                    human(size)
                ),
            });
        }
        if head.contains(&0) {
            return Ok(ReadOutcome::Binary {
                description: format!(
                    "{}: binary file of unknown type, {}. Inspect it from Python with execute_python.",
                    path.display(),
                    human(size)
                ),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        let first = offset.unwrap_or(1).max(1);
        let limit = limit.unwrap_or(DEFAULT_READ_LINES).clamp(1, 100_000);
        let mut reader = std::io::BufReader::new(f);
        let mut out = String::new();
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        let mut lossy = false;
        let mut shown = 0usize;
        let mut more = false;
        let mut cut_chars = false;
        let mut scanned = 0u64;
        let mut too_far = false;
        loop {
            buf.clear();
            let n = read_line_capped(&mut reader, &mut buf, MAX_READ_CHARS + 1)
                .map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            scanned += n as u64;
            if line_no < first {
                if scanned > MAX_SKIP_BYTES {
                    too_far = true;
                    break;
                }
                continue;
            }
            if shown >= limit {
                more = true;
                break;
            }
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => {
                    lossy = true;
                    String::from_utf8_lossy(&buf)
                }
            };
            if out.len() + text.len() > MAX_READ_CHARS {
                let room = MAX_READ_CHARS.saturating_sub(out.len());
                if shown == 0 {
                    let mut cut = room.min(text.len());
                    while cut > 0 && !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    out.push_str(text.get(..cut).unwrap_or(""));
                    shown = 1;
                    cut_chars = true;
                }
                more = true;
                break;
            }
            if line_numbers {
                out.push_str(&format!("{line_no:>6}\t"));
            }
            out.push_str(&text);
            shown += 1;
        }
        let mut notes = Vec::new();
        if too_far {
            notes.push(format!(
                "offset {first} lies beyond the first {} of the file; read that part from Python",
                human(MAX_SKIP_BYTES)
            ));
        } else if first > 1 && shown == 0 {
            notes.push(format!(
                "the file has only {line_no} lines; offset {first} is past the end"
            ));
        }
        if more {
            let last = first + shown.saturating_sub(1);
            if cut_chars {
                notes.push(format!(
                    "line {first} is longer than {MAX_READ_CHARS} characters and was cut; read the rest from Python"
                ));
            } else {
                notes.push(format!(
                    "showing lines {first}-{last} of a {} file; call read_file with offset={} to read on",
                    human(size),
                    last + 1
                ));
            }
        }
        if lossy {
            notes.push("the file is not valid UTF-8; undecodable bytes are shown as U+FFFD".into());
        }
        Ok(ReadOutcome::Text {
            text: out,
            note: if notes.is_empty() {
                None
            } else {
                Some(notes.join("; "))
            },
        })
    }

    /// Reads a whole small file's bytes (for resources), refusing non-regular files and big files.
    pub fn read_bytes(&self, path: &WorkspacePath, max: u64) -> Result<Vec<u8>, WorkspaceError> {
        let (f, meta) = self.open_regular(path)?;
        if meta.len() > max {
            return Err(WorkspaceError::TooLarge {
                what: format!(
                    "{} is {}; the limit here is {}",
                    path.display(),
                    human(meta.len()),
                    human(max)
                ),
            });
        }
        let mut bytes = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        Ok(bytes)
    }

    /// Writes `data`: atomically (temp file + rename) by default, or appended in place.
    /// Missing parent folders are created inside the workspace.
    pub fn write(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        append: bool,
    ) -> Result<u64, WorkspaceError> {
        self.write_limited(path, data, append, MAX_WRITE_BYTES)
    }

    /// The size and modification time of a regular file, or `None` when there is no file.
    pub fn stamp(
        &self,
        path: &WorkspacePath,
    ) -> Result<Option<(u64, std::time::SystemTime)>, WorkspaceError> {
        match self.dir.metadata(&path.rel) {
            Ok(m) if m.is_file() => Ok(Some((
                m.len(),
                m.modified().map_err(io_err(path))?.into_std(),
            ))),
            Ok(m) if m.is_dir() => Err(WorkspaceError::IsDirectory {
                path: path.display(),
            }),
            Ok(_) => Err(WorkspaceError::NotRegular {
                path: path.display(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_io(path, e)),
        }
    }

    /// [`Workspace::write`] with another size limit (notebooks written by the server).
    pub fn write_limited(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        append: bool,
        limit: usize,
    ) -> Result<u64, WorkspaceError> {
        if path.is_root() {
            return Err(WorkspaceError::IsDirectory {
                path: path.display(),
            });
        }
        if data.len() > limit {
            return Err(WorkspaceError::TooLarge {
                what: format!(
                    "content is {} bytes; the limit per write is {limit} bytes (write large data from Python, or append in parts)",
                    data.len()
                ),
            });
        }
        let parent = path.rel.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            match self.dir.metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(WorkspaceError::BadPath(format!(
                        "{}: {} is a file, not a folder",
                        path.display(),
                        parent.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.dir.create_dir_all(parent).map_err(io_err(path))?;
                }
                Err(e) => return Err(map_io(path, e)),
            }
        }
        let name = path
            .rel
            .file_name()
            .ok_or_else(|| WorkspaceError::BadPath(format!("{}: no file name", path.display())))?;
        let existing = match self.dir.metadata(&path.rel) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(map_io(path, e)),
        };
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(WorkspaceError::IsDirectory {
                    path: path.display(),
                });
            }
            if !m.is_file() {
                return Err(WorkspaceError::NotRegular {
                    path: path.display(),
                });
            }
        }
        if append {
            if let Some(m) = &existing {
                if hard_links(m) > 1 {
                    return Err(WorkspaceError::Denied {
                        path: path.display(),
                        reason: "the file has other hard links; appending in place would change them too. Write the whole file instead (append=false)".into(),
                    });
                }
            }
            let mut o = OpenOptions::new();
            o.append(true).create(true);
            no_block(&mut o);
            let f = self.dir.open_with(&path.rel, &o).map_err(io_err(path))?;
            let meta = f.metadata().map_err(io_err(path))?;
            if !meta.is_file() {
                return Err(WorkspaceError::NotRegular {
                    path: path.display(),
                });
            }
            let mut f = f.into_std();
            f.write_all(data).map_err(io_err(path))?;
            return Ok(meta.len() + data.len() as u64);
        }
        // Atomic replace: write a sibling temp file, then rename over the target. A failed
        // write leaves the old file as it was; a hard link elsewhere keeps the old content.
        let dir = match parent {
            Some(p) => self.dir.open_dir(p).map_err(io_err(path))?,
            None => self.dir.try_clone().map_err(io_err(path))?,
        };
        let tmp_name = format!(
            ".{}.kernel-mcp-{}.tmp",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        );
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::mode(&mut o, 0o644);
        let result = (|| -> std::io::Result<()> {
            let mut f = dir.open_with(&tmp_name, &o)?;
            f.write_all(data)?;
            f.sync_data()?;
            dir.rename(&tmp_name, &dir, name)
        })();
        if let Err(e) = result {
            let _ = dir.remove_file(&tmp_name);
            return Err(map_io(path, e));
        }
        Ok(data.len() as u64)
    }

    /// Lists a directory (optionally recursively), never following symlinks.
    pub fn list(
        &self,
        path: &WorkspacePath,
        recursive: bool,
        pattern: Option<&str>,
    ) -> Result<Listing, WorkspaceError> {
        let meta = self.dir.metadata(path.for_cap()).map_err(io_err(path))?;
        if !meta.is_dir() {
            return Err(WorkspaceError::BadPath(format!(
                "{} is not a directory; use read_file to read a file",
                path.display()
            )));
        }
        let mut listing = Listing {
            entries: Vec::new(),
            truncated: false,
            skipped: 0,
        };
        let start = self.dir.open_dir(path.for_cap()).map_err(io_err(path))?;
        let mut stack: Vec<(Dir, PathBuf, usize)> = vec![(start, path.rel.clone(), 0)];
        let mut scanned = 0usize;
        'walk: while let Some((dir, prefix, depth)) = stack.pop() {
            let Ok(rd) = dir.entries() else {
                listing.skipped += 1;
                continue;
            };
            let mut items = Vec::new();
            for e in rd {
                scanned += 1;
                // Huge folders (or trees) are cut short rather than read to the end.
                if items.len() >= MAX_SCAN_PER_DIR || scanned > MAX_SCAN_TOTAL {
                    listing.truncated = true;
                    break;
                }
                // An entry that vanished while we listed is simply skipped.
                let Ok(e) = e else { continue };
                let Ok(m) = e.metadata() else { continue };
                let name = e.file_name();
                let rel = prefix.join(&name);
                let ft = m.file_type();
                let kind = if ft.is_symlink() {
                    EntryKind::Symlink
                } else if ft.is_dir() {
                    EntryKind::Dir
                } else if ft.is_file() {
                    EntryKind::File
                } else {
                    EntryKind::Other
                };
                items.push((
                    rel,
                    name,
                    kind,
                    m.len(),
                    m.modified().ok().map(|t| t.into_std()),
                ));
            }
            items.sort_by(|a, b| a.0.cmp(&b.0));
            let mut subdirs = Vec::new();
            for (rel, name, kind, size, modified) in items {
                if recursive && kind == EntryKind::Dir && depth < 32 {
                    subdirs.push((name.clone(), rel.clone()));
                }
                let shown = rel.to_string_lossy().into_owned();
                let matches = match pattern {
                    None => true,
                    Some(p) if p.contains('/') => glob_match(p, &shown),
                    Some(p) => glob_match(p, &name.to_string_lossy()),
                };
                if !matches {
                    continue;
                }
                if listing.entries.len() >= MAX_LIST_ENTRIES {
                    listing.truncated = true;
                    break 'walk;
                }
                listing.entries.push(Entry {
                    path: shown,
                    kind,
                    size,
                    modified,
                });
            }
            if scanned > MAX_SCAN_TOTAL {
                break;
            }
            // Depth first, in name order: push in reverse so the smallest name is visited next.
            for (name, rel) in subdirs.into_iter().rev() {
                if let Ok(sub) = dir.open_dir(&name) {
                    stack.push((sub, rel, depth + 1));
                }
            }
        }
        listing.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    /// Checks that a path names an existing regular file, returning its absolute path.
    pub fn regular_file(&self, path: &WorkspacePath) -> Result<PathBuf, WorkspaceError> {
        let _ = self.open_regular(path)?;
        Ok(self.root.join(&path.rel))
    }

    /// Creates a new file under `.kernel-mcp/outputs/` for saved output; returns (relative path, file).
    pub fn create_output_file(&self, suffix: &str) -> std::io::Result<(String, std::fs::File)> {
        let dir_rel = Path::new(".kernel-mcp").join("outputs");
        self.dir.create_dir_all(&dir_rel)?;
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

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one line (with its newline) but never more than `cap` bytes of it.
fn read_line_capped<R: std::io::BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..take.min(room)).unwrap_or_default());
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
        if buf.len() >= cap {
            // Skip the rest of an over-long line.
            continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("[a-c]?", "bz"));
        assert!(glob_match("x[", "x["));
        // Would take forever with naive backtracking.
        let evil = "*a".repeat(40) + "b";
        assert!(!glob_match(&evil, &"a".repeat(250)));
    }
}
