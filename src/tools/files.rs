//! The file tools: read_file, write_file, list_files (the workspace, or a gateway kernel's
//! folder). Each is a thin adapter: typed params, one session call, the rendering.

use super::*;

#[tool_router(router = file_router, vis = "pub(super)")]
impl Server {
    /// Read a file from the workspace.
    ///
    /// UTF-8 text comes back as text, 2000 lines per call by default (at most 100,000
    /// characters); a note says how to read on with `offset` (1-based first line). PNG, JPEG,
    /// GIF and WebP files come back as images (up to 5 MiB), so a saved plot can be looked at.
    /// Other binary files get a short description (type, size) instead of their bytes; load
    /// those from Python. Paths are relative to the workspace root; '..', '~', and symlinks
    /// leading outside the workspace are refused.
    #[tool(
        name = "read_file",
        annotations(
            title = "Read workspace file",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn read_file(
        &self,
        Parameters(p): Parameters<ReadParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(why) = names_a_folder(&p.path, "read_file reads files") {
            return Ok(tool_error(why));
        }
        if p.max_chars == Some(0) {
            return Ok(tool_error(
                "max_chars is 0: give 1 or more (the most characters to return, up to 100,000), or leave it out",
            ));
        }
        let cap = read_cap(p.limit, p.max_chars);
        let first = p.offset.unwrap_or(1).max(1);
        let read =
            self.session
                .files()
                .read(p.path, p.offset, p.limit, p.line_numbers.unwrap_or(false));
        Ok(match read.await {
            Ok(ReadOutcome::Text { text, note }) => {
                let (text, note) = cap_text(text, note, cap, first);
                let mut c = vec![Content::text(text)];
                if let Some(n) = note {
                    c.push(Content::text(format!("[{n}]")));
                }
                CallToolResult::success(c)
            }
            Ok(ReadOutcome::Image { mime, bytes }) => {
                let limits = self.session.settings().output.image_fit;
                match crate::output::images::fit(mime, &bytes, &limits) {
                    crate::output::images::Fit::Fitted(f) => CallToolResult::success(vec![
                        Content::image(
                            base64::engine::general_purpose::STANDARD.encode(&f.bytes),
                            f.mime,
                        ),
                        Content::text(format!(
                            "[image: {}×{} of {} KiB shown at {}×{} ({} KiB) to fit the client's image limits (--max-image-px {}, --max-image-bytes {}); the file itself is unchanged]",
                            f.from.0, f.from.1, bytes.len() / 1024, f.to.0, f.to.1, f.bytes.len() / 1024, limits.max_px, limits.max_bytes
                        )),
                    ]),
                    crate::output::images::Fit::Refused(why) => {
                        tool_error(format!("the image could not be shown: {why}"))
                    }
                    crate::output::images::Fit::Unchanged => {
                        CallToolResult::success(vec![Content::image(
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                            mime,
                        )])
                    }
                }
            }
            Ok(ReadOutcome::Binary { description }) => {
                CallToolResult::success(vec![Content::text(description)])
            }
            Err(e) => failure(e),
        })
    }

    /// Write a file in the workspace.
    ///
    /// Creates missing parent folders. Replaces the file atomically (a failed write leaves the
    /// old file intact), or with append=true adds to the end: call it several times to build a
    /// script too long for one message, then run it with run_file. encoding "base64" writes
    /// binary data. At most 16 MiB per call. Paths are relative to the workspace root.
    #[tool(
        name = "write_file",
        annotations(
            title = "Write workspace file",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn write_file(
        &self,
        Parameters(p): Parameters<WriteParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(why) = names_a_folder(&p.path, "write_file writes files") {
            return Ok(tool_error(why));
        }
        let append = p.append.unwrap_or(false);
        let data = match decode_content(p.content, p.encoding.unwrap_or_default()) {
            Ok(d) => d,
            Err(why) => return Ok(tool_error(why)),
        };
        Ok(
            match self.session.files().write(p.path, data, append).await {
                Ok(Written { path, bytes, total }) if append => {
                    CallToolResult::success(vec![Content::text(format!(
                        "appended {bytes} bytes to {} (now {total} bytes)",
                        crate::text::one_line(&path)
                    ))])
                }
                Ok(Written { path, bytes, .. }) => CallToolResult::success(vec![Content::text(
                    format!("wrote {bytes} bytes to {}", crate::text::one_line(&path)),
                )]),
                Err(e) => failure(e),
            },
        )
    }

    /// List files in the workspace.
    ///
    /// One line per entry: type, size in bytes, modification time (UTC) and the path relative to
    /// the workspace root; directories end in '/'. Sorted by path. recursive=true descends into
    /// sub-folders (symlinks are listed but never followed); pattern filters by a glob such as
    /// "*.csv". At most 1000 entries, with a note when more were left out.
    #[tool(
        name = "list_files",
        annotations(
            title = "List workspace files",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = rmcp::handler::server::common::schema_for_output::<FileListing>()
    )]
    async fn list_files(
        &self,
        Parameters(p): Parameters<ListParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(e) = p.pattern.as_deref().and_then(pattern_problem) {
            return Ok(tool_error(e));
        }
        let list = self
            .session
            .files()
            .list(p.path, p.recursive.unwrap_or(false), p.pattern);
        Ok(match list.await {
            Ok(listing) => render_listing(&listing),
            Err(e) => failure(e),
        })
    }
}

/// Most characters read_file returns: `max_chars`, else 2000 per line asked for with `limit`,
/// never more than the workspace reader's 100,000.
fn read_cap(limit: Option<usize>, max_chars: Option<usize>) -> usize {
    const MAX: usize = 100_000;
    match (max_chars, limit) {
        (Some(m), _) => m.clamp(1, MAX),
        (None, Some(l)) => l.saturating_mul(2000).clamp(2000, MAX),
        (None, None) => MAX,
    }
}

/// `text` cut to `cap` characters, the note saying where it stopped and how to read on.
fn cap_text(
    text: String,
    note: Option<String>,
    cap: usize,
    first: usize,
) -> (String, Option<String>) {
    let Some((cut, _)) = text.char_indices().nth(cap) else {
        return (text, note);
    };
    let shown = text.get(..cut).unwrap_or("");
    let whole_lines = shown.matches('\n').count();
    let cut_line = first + whole_lines;
    let how = if whole_lines == 0 {
        format!("line {cut_line} is longer than that and was cut; read the rest of it from Python, or raise max_chars (up to 100,000)")
    } else {
        format!("line {cut_line} was cut; call read_file with offset={cut_line} to read on, or raise max_chars (up to 100,000)")
    };
    let mut notes = vec![format!(
        "showing the first {cap} characters (max_chars); {how}"
    )];
    notes.extend(note);
    (shown.to_owned(), Some(notes.join("; ")))
}

/// write_file's content as bytes: UTF-8 text as given, or base64 decoded (whitespace ignored),
/// within the per-call limit.
fn decode_content(content: String, encoding: Encoding) -> Result<Vec<u8>, String> {
    let too_big = |n: usize| {
        format!("content is {n} bytes; the limit per write_file call is {MAX_WRITE_BYTES} bytes. Nothing was written.")
    };
    let data = match encoding {
        Encoding::Utf8 => content.into_bytes(),
        Encoding::Base64 => {
            let clean: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|e| format!("content is not valid base64 ({e}); nothing was written"))?
        }
    };
    if data.len() > MAX_WRITE_BYTES {
        return Err(too_big(data.len()));
    }
    Ok(data)
}

/// A path ending in `/` or `/.` names a folder (as the OS reads it: `open("a.txt/")` and
/// `open("a.txt/.")` fail), so a file tool refuses it rather than reading or writing the file
/// without the slash.
fn names_a_folder(path: &str, what: &str) -> Option<String> {
    let mut trimmed = path;
    while let Some(t) = trimmed
        .strip_suffix('/')
        .or_else(|| trimmed.strip_suffix("/."))
    {
        trimmed = t;
    }
    (trimmed.len() < path.len() && !trimmed.is_empty()).then(|| {
        format!(
            "{}: a path ending in / names a folder, and {what}; use {trimmed:?}",
            crate::text::one_line(path)
        )
    })
}

/// list_files' text (one aligned line per entry) and structured data.
fn render_listing(listing: &Listing) -> CallToolResult {
    let mut lines = Vec::with_capacity(listing.entries.len() + 1);
    let mut data = FileListing {
        entries: Vec::with_capacity(listing.entries.len()),
        truncated: listing.truncated,
        skipped_folders: listing.skipped,
    };
    for e in &listing.entries {
        let modified = e.modified.map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        });
        data.entries.push(FileEntry {
            path: e.path.clone(),
            kind: e.kind.as_str().to_owned(),
            size: e.size,
            modified: modified.clone(),
        });
        let when = modified.unwrap_or_else(|| "-".into());
        // The kernel names files: a name must not look like another entry (structured
        // data keeps it exact).
        let shown = crate::text::one_line(&e.path);
        let name = if e.kind == crate::workspace::EntryKind::Dir {
            format!("{shown}/")
        } else {
            shown.into_owned()
        };
        lines.push(format!("{:<7} {:>12}  {}  {}", e.kind, e.size, when, name));
    }
    if lines.is_empty() {
        lines.push("(no entries)".into());
    }
    if listing.skipped > 0 {
        lines.push(format!(
            "[{} folder(s) could not be read (permissions) and were skipped]",
            listing.skipped
        ));
    }
    if listing.not_utf8 > 0 {
        lines.push(format!(
            "[{} name(s) hold bytes that are not UTF-8, shown as \\xNN: the file tools cannot name them; rename them in Python, e.g. os.rename(b'bad\\xff.txt', 'bad.txt')]",
            listing.not_utf8
        ));
    }
    if listing.truncated {
        lines.push(format!(
            "[only the first {} entries are shown; narrow with path or pattern]",
            crate::workspace::MAX_LIST_ENTRIES
        ));
    }
    structured(lines.join("\n"), &data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trailing_slash_names_a_folder() {
        use super::names_a_folder;
        assert_eq!(names_a_folder("d/a.txt", "x"), None);
        let why = names_a_folder("d/a.txt/", "read_file reads files").unwrap_or_default();
        assert!(
            why.starts_with("d/a.txt/: a path ending in / names a folder"),
            "{why}"
        );
        assert!(why.ends_with("use \"d/a.txt\""), "{why}");
        // "/" alone is left to the path policy.
        assert_eq!(names_a_folder("/", "x"), None);
        let why = names_a_folder("d/a.txt/.", "x").unwrap_or_default();
        assert!(why.ends_with("use \"d/a.txt\""), "{why}");
        assert!(names_a_folder("a.txt/./", "x").is_some());
        assert_eq!(names_a_folder("./a.txt", "x"), None);
    }

    #[test]
    fn read_file_caps_characters_as_well_as_lines() {
        use super::{cap_text, read_cap};
        assert_eq!(read_cap(Some(5), None), 10_000);
        assert_eq!(read_cap(None, None), 100_000);
        assert_eq!(read_cap(Some(5), Some(50)), 50);
        assert_eq!(read_cap(None, Some(10_000_000)), 100_000);
        let (t, n) = cap_text("x".repeat(30), None, 10, 1);
        assert_eq!(t.len(), 10);
        assert!(n.unwrap_or_default().contains("line 1 is longer"));
        let (t, n) = cap_text("ab\ncd\nefgh".into(), Some("more".into()), 7, 4);
        assert_eq!(t, "ab\ncd\ne");
        let n = n.unwrap_or_default();
        assert!(n.contains("offset=6") && n.ends_with("; more"), "{n}");
        let (t, n) = cap_text("short".into(), None, 10, 1);
        assert_eq!((t.as_str(), n), ("short", None));
    }
}
