//! Listing: sorted, typed entries, symlinks never followed, bounded scans, linear-time globs.

use std::time::SystemTime;

use super::*;

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
    /// Entries whose names hold bytes that are not UTF-8 (shown with `\xNN` escapes).
    pub not_utf8: usize,
}

/// A name that is not UTF-8, its other bytes shown as `\xNN` (not as U+FFFD, which would make
/// different names look alike and name no file).
fn escaped_name(name: &std::ffi::OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// One element of a parsed glob.
enum GlobToken {
    Star,
    /// `**/` at the start of a path segment: any number of folders, none included.
    Folders,
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
            '*' if p.get(i) == Some(&'*')
                && p.get(i + 1) == Some(&'/')
                && (i == 1 || p.get(i.wrapping_sub(2)) == Some(&'/')) =>
            {
                out.push(GlobToken::Folders);
                i += 2;
            }
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

/// Matches `name` against a glob with `*`, `?` and `[...]` classes (no path separators special:
/// `*` crosses folders), where `**/` starting a segment also matches no folder at all, as in
/// globstar shells and pathlib (`**/*.txt` matches `a.txt` as well as `d/a.txt`).
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
            GlobToken::Folders => {
                // Zero folders (where we are), or anything that ends in a `/`.
                let mut any = false;
                for (j, r) in reach.iter().enumerate() {
                    let after_slash = j > 0 && n.get(j - 1) == Some(&'/');
                    if let Some(x) = next.get_mut(j) {
                        *x = *r || (any && after_slash);
                    }
                    any |= *r;
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
                        GlobToken::Star | GlobToken::Folders => false,
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

impl Workspace {
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
            not_utf8: 0,
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
                let (shown, not_utf8) = match rel.to_str() {
                    Some(s) => (s.to_owned(), false),
                    None => (escaped_name(rel.as_os_str()), true),
                };
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
                listing.not_utf8 += usize::from(not_utf8);
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
}
