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
        let append = p.append.unwrap_or(false);
        let data = match decode_content(p.content, p.encoding.unwrap_or_default()) {
            Ok(d) => d,
            Err(why) => return Ok(tool_error(why)),
        };
        Ok(
            match self.session.files().write(p.path, data, append).await {
                Ok(Written { path, bytes, total }) if append => {
                    CallToolResult::success(vec![Content::text(format!(
                        "appended {bytes} bytes to {path} (now {total} bytes)"
                    ))])
                }
                Ok(Written { path, bytes, .. }) => CallToolResult::success(vec![Content::text(
                    format!("wrote {bytes} bytes to {path}"),
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
