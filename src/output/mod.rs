//! IOPub output of one execution -> ordered MCP content (text, images, error), within a budget.
//! Memory stays bounded whatever the kernel emits: beyond the budget only a head and a tail are
//! kept, and the full text streams to a file in the workspace.

mod budget;
mod image_blocks;
pub mod images;
mod progress;
mod render;
mod text;

pub use progress::{gated as gated_progress, Progress, ProgressFn};

pub use render::notice;
pub use text::strip_ansi;
use text::{append_terminal, char_floor};

use std::io::Write;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock as McpContent};

use crate::kernel::{Ending, Execution, OutputSink, StopReason};
use crate::wire::message::{ErrorContent, MimeBundle, StreamName};
use crate::wire::Content;

/// Per-call output limits.
#[derive(Debug, Clone)]
pub struct OutputLimits {
    /// Characters of text returned before head/tail truncation.
    pub text_budget: usize,
    /// Images returned per call.
    pub max_images: usize,
    /// Total base64 bytes of images returned per call.
    pub max_image_bytes: usize,
    /// What each image is fitted to (`--max-image-px`, `--max-image-bytes`).
    pub image_fit: images::ImageFit,
    /// The kernel's sandbox policy, to explain errors that are sandbox denials (local kernels).
    pub sandbox: Option<std::sync::Arc<crate::denials::SandboxPolicy>>,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            text_budget: 20_000,
            max_images: 10,
            max_image_bytes: 8 * 1024 * 1024,
            image_fit: images::ImageFit::default(),
            sandbox: None,
        }
    }
}

/// Most content blocks in one result; later text joins the last text block.
const MAX_BLOCKS: usize = 100;

/// Most display ids a run's next look takes over from the one before.
const MAX_CARRIED_DISPLAYS: usize = 1000;

/// Most characters of an exception's message shown (`raise ValueError('x' * 5_000_000)`
/// otherwise made a 5 MB result, past every budget).
const MAX_EVALUE_CHARS: usize = 4000;

/// `s` cut to `max` characters, with a note saying how many were left out.
fn cut_chars(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => {
            let left = s.get(at..).map(|r| r.chars().count()).unwrap_or(0);
            format!("{} [... {left} more characters]", s.get(..at).unwrap_or(s)).into()
        }
    }
}

/// Where text that does not fit the budget is saved (a file in the workspace).
pub trait SpillTarget: Send {
    /// Creates a new file; returns its workspace-relative path and the open file.
    fn create(&mut self, suffix: &str) -> std::io::Result<(String, std::fs::File)>;
    /// The `file://` URI of a file `create` made, when the client can read it as a resource.
    fn uri(&self, _path: &str) -> Option<String> {
        None
    }
}

/// What a session's run renders to: MCP tool-call content (this module is the renderer).
pub type Rendered = CallToolResult;

/// A result of one text block (an error result with `error`).
pub fn text_result(text: &str, error: bool) -> Rendered {
    let c = vec![McpContent::text(text.to_owned())];
    if error {
        CallToolResult::error(c)
    } else {
        CallToolResult::success(c)
    }
}

/// Adds a note (`[...]`) after a rendered result's content, as its own text block.
pub fn append_note(r: &mut Rendered, text: &str) {
    r.content.push(McpContent::text(text.to_owned()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdout,
    Stderr,
    Result,
    /// A section label or an earlier section's error: never merged with other text.
    Note,
}

#[derive(Debug)]
enum Block {
    Text {
        kind: Kind,
        text: String,
        display_id: Option<String>,
    },
    Image {
        mime: String,
        data: String,
        display_id: Option<String>,
    },
    /// A saved original, as an MCP `resource_link` (the tools layer leaves it out for clients
    /// older than 2025-06-18, which do not know the content type).
    Link {
        uri: String,
        name: String,
        mime: String,
        size: u64,
    },
}

struct Spill {
    file: Option<(String, std::io::BufWriter<std::fs::File>)>,
    tail: String,
    after_switch: usize,
}

/// Collects one execution's output in kernel order.
pub struct Collector {
    limits: OutputLimits,
    blocks: Vec<Block>,
    head_chars: usize,
    spill: Option<Spill>,
    spill_target: Option<Box<dyn SpillTarget>>,
    error: Option<ErrorContent>,
    images: usize,
    image_bytes: usize,
    /// Notes on images not shown: the first [`image_blocks::MAX_DROPPED_NOTES`] (each may have saved its
    /// image as a file), then only counted in `dropped_more`.
    dropped_images: Vec<String>,
    /// Some image was left out for the call's image limits (else only for its own faults).
    dropped_for_limits: bool,
    dropped_more: usize,
    /// Display ids shown by earlier collectors of the same run (see
    /// [`Collector::carry_displays`]): their updates show here as new blocks.
    shown_before: std::collections::HashSet<String>,
    clear_pending: bool,
    pending_cr: bool,
    /// Blocks before this index belong to earlier sections; clear_output keeps them.
    floor: usize,
    /// An earlier section ended in an error (rendered in place).
    section_error: bool,
    /// The link to an original just saved, placed after its note.
    pending_link: Option<Block>,
}

fn display_id(transient: &Option<serde_json::Value>) -> Option<String> {
    transient
        .as_ref()
        .and_then(|t| t.get("display_id"))
        .and_then(|d| d.as_str())
        .map(str::to_owned)
}

impl Collector {
    /// A collector with `limits`, spilling over-budget text to `spill_target` when given.
    pub fn new(limits: OutputLimits, spill_target: Option<Box<dyn SpillTarget>>) -> Self {
        Collector {
            limits,
            blocks: Vec::new(),
            head_chars: 0,
            spill: None,
            spill_target,
            error: None,
            images: 0,
            image_bytes: 0,
            dropped_images: Vec::new(),
            dropped_for_limits: false,
            dropped_more: 0,
            shown_before: Default::default(),
            clear_pending: false,
            pending_cr: false,
            floor: 0,
            section_error: false,
            pending_link: None,
        }
    }

    /// Starts a new labelled section (run_notebook's `[cell N]`). The previous section's error
    /// is rendered in place first; clear_output from now on keeps earlier sections.
    pub fn section(&mut self, label: &str) {
        self.clear_pending = false;
        if let Some(e) = self.error.take() {
            self.section_error = true;
            let text = format!("{}\n", self.error_text(&e));
            self.push_text(Kind::Note, &text, None);
        }
        self.push_text(Kind::Note, label, None);
        self.floor = self.blocks.len();
    }

    /// `ename: evalue` and the traceback shortened for a model (see [`crate::traceback`]);
    /// when frames were left out, the full traceback is saved to a file the text names.
    fn error_text(&mut self, e: &ErrorContent) -> String {
        let chunks: Vec<String> = e
            .traceback
            .iter()
            .map(|c| strip_ansi(c).into_owned())
            .collect();
        let short = crate::traceback::for_model(&chunks, crate::traceback::MAX_TRACEBACK_CHARS);
        let mut text = format!(
            "{}: {}",
            cut_chars(&strip_ansi(&e.ename), 200),
            cut_chars(&strip_ansi(&e.evalue), MAX_EVALUE_CHARS)
        );
        if short.text.trim().is_empty() {
            return text;
        }
        text = format!("{text}\n{}", short.text);
        if short.shortened {
            let saved = self.spill_target.as_mut().and_then(|t| {
                let (path, mut f) = t.create(".txt").ok()?;
                f.write_all(chunks.join("\n").as_bytes()).ok()?;
                Some(path)
            });
            text.push_str(&match saved {
                Some(path) => format!("\n[traceback shortened: library frames collapsed to their location; the full traceback is saved in {path} (read it with read_file)]"),
                None => "\n[traceback shortened: library frames collapsed to their location]".to_owned(),
            });
        }
        text
    }
    fn clear(&mut self) {
        self.blocks.truncate(self.floor);
        self.head_chars = 0;
        self.images = 0;
        self.image_bytes = 0;
        for b in &self.blocks {
            match b {
                Block::Text { text, .. } => self.head_chars += text.len(),
                Block::Image { data, .. } => {
                    self.images += 1;
                    self.image_bytes += data.len();
                }
                Block::Link { .. } => {}
            }
        }
        if let Some(s) = self.spill.as_mut() {
            s.tail.clear();
        }
        self.clear_pending = false;
    }

    fn push_text(&mut self, kind: Kind, text: &str, display_id: Option<String>) {
        if text.is_empty() {
            return;
        }
        if self.spill.is_none() {
            let room = self.head_budget().saturating_sub(self.head_chars);
            let (now, rest) = if text.len() <= room {
                (text, "")
            } else {
                let cut = char_floor(text, room);
                // Prefer to cut at a line break.
                let cut = text
                    .get(..cut)
                    .and_then(|h| h.rfind('\n'))
                    .map(|i| i + 1)
                    .filter(|&i| i > cut / 2)
                    .unwrap_or(cut);
                (text.get(..cut).unwrap_or(""), text.get(cut..).unwrap_or(""))
            };
            let merge = matches!(self.blocks.last(), Some(Block::Text { kind: k, display_id: None, .. }) if *k == kind && kind != Kind::Result && kind != Kind::Note)
                && display_id.is_none();
            if merge {
                if let Some(Block::Text { text: buf, .. }) = self.blocks.last_mut() {
                    let before = buf.len();
                    append_terminal(buf, now, &mut self.pending_cr);
                    self.head_chars = (self.head_chars + buf.len()).saturating_sub(before);
                }
            } else if !now.is_empty() {
                self.pending_cr = false;
                let mut buf = String::new();
                append_terminal(&mut buf, now, &mut self.pending_cr);
                self.head_chars += buf.len();
                let crowded = self.blocks.len() >= MAX_BLOCKS && display_id.is_none();
                match self.blocks.last_mut() {
                    // Thousands of tiny displays would become thousands of content blocks;
                    // past the cap they join the last text block, one per line.
                    // Never into a display's block: an update would replace it, text and all.
                    Some(Block::Text {
                        text,
                        display_id: None,
                        ..
                    }) if crowded => {
                        if !text.ends_with('\n') {
                            text.push('\n');
                            self.head_chars += 1;
                        }
                        text.push_str(&buf);
                    }
                    _ => self.blocks.push(Block::Text {
                        kind,
                        text: buf,
                        display_id,
                    }),
                }
            }
            if rest.is_empty() {
                return;
            }
            self.start_spill();
            self.spill_text(rest);
        } else {
            self.spill_text(text);
        }
    }
    fn push_bundle(&mut self, data: &MimeBundle, display_id: Option<String>) {
        match crate::rich::choose(data) {
            Some(crate::rich::Form::Image { mime, data }) => {
                self.push_image(&mime, &data, display_id)
            }
            Some(crate::rich::Form::Text(t)) => {
                self.push_text(Kind::Result, &strip_ansi(&t), display_id)
            }
            None => {}
        }
    }

    /// Takes over the display ids `earlier` showed (and those it took over), so that this
    /// collector, which goes on with the same run after `earlier`'s output was handed out (a
    /// run's next look), shows their updates: a progress display's latest state, not nothing.
    pub fn carry_displays(&mut self, earlier: &Collector) {
        let ids = earlier
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Text { display_id, .. } | Block::Image { display_id, .. } => {
                    display_id.as_ref()
                }
                Block::Link { .. } => None,
            })
            .chain(&earlier.shown_before);
        for id in ids {
            if self.shown_before.len() >= MAX_CARRIED_DISPLAYS {
                break;
            }
            self.shown_before.insert(id.clone());
        }
    }

    fn update_display(&mut self, data: &MimeBundle, id: &str) {
        let Some(pos) = self.blocks.iter().position(|b| match b {
            Block::Text { display_id, .. } | Block::Image { display_id, .. } => {
                display_id.as_deref() == Some(id)
            }
            Block::Link { .. } => false,
        }) else {
            // Shown in an earlier look at this run: its new state is news here.
            if self.shown_before.contains(id) {
                self.push_bundle(data, Some(id.to_owned()));
            }
            return;
        };
        // Re-render in place: remove, push, then move the new block back to where the old one was.
        let old = self.blocks.remove(pos);
        match &old {
            Block::Text { text, .. } => {
                self.head_chars = self.head_chars.saturating_sub(text.len());
            }
            Block::Image { data, .. } => {
                self.images = self.images.saturating_sub(1);
                self.image_bytes = self.image_bytes.saturating_sub(data.len());
            }
            Block::Link { .. } => {}
        }
        let before = self.blocks.len();
        self.push_bundle(data, Some(id.to_owned()));
        if self.blocks.len() > before {
            let b = self.blocks.remove(before);
            self.blocks.insert(pos.min(self.blocks.len()), b);
        }
    }
}

impl OutputSink for Collector {
    fn output(&mut self, content: &Content) {
        if self.clear_pending && !matches!(content, Content::ClearOutput(_)) {
            self.clear();
        }
        match content {
            Content::Stream(s) => {
                let kind = match s.name {
                    StreamName::Stdout => Kind::Stdout,
                    StreamName::Stderr => Kind::Stderr,
                };
                let text = strip_ansi(&s.text);
                self.push_text(kind, &text, None);
            }
            Content::ExecuteResult(r) => self.push_bundle(&r.data, None),
            Content::DisplayData(d) => self.push_bundle(&d.data, display_id(&d.transient)),
            Content::UpdateDisplayData(d) => {
                if let Some(id) = display_id(&d.transient) {
                    self.update_display(&d.data, &id);
                }
            }
            Content::Error(e) => self.error = Some(e.clone()),
            Content::ClearOutput(c) => {
                if c.wait {
                    self.clear_pending = true;
                } else {
                    self.clear();
                }
            }
            other => {
                tracing::trace!(msg_type = %crate::text::sanitize(other.msg_type()), "output ignored")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Report;
    use crate::wire::message::Stream;

    pub(super) fn texts(r: &CallToolResult) -> Vec<String> {
        r.content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect()
    }

    fn stream(name: StreamName, text: &str) -> Content {
        Content::Stream(Stream {
            name,
            text: text.into(),
        })
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(strip_ansi("\u{1b}[0;31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}x"), "x");
    }

    #[test]
    fn carriage_returns_collapse() {
        let mut buf = String::new();
        let mut cr = false;
        append_terminal(&mut buf, "start\n 10%\r 50%", &mut cr);
        append_terminal(&mut buf, "\r", &mut cr);
        append_terminal(&mut buf, "100%\r\ndone\n", &mut cr);
        assert_eq!(buf, "start\n100%\ndone\n");
    }

    #[test]
    fn merges_streams_and_keeps_order() {
        let mut c = Collector::new(OutputLimits::default(), None);
        c.output(&stream(StreamName::Stdout, "a\n"));
        c.output(&stream(StreamName::Stdout, "b\n"));
        c.output(&stream(StreamName::Stderr, "err\n"));
        c.output(&stream(StreamName::Stdout, "c\n"));
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        assert_eq!(texts(&r), vec!["a\nb\n", "err\n", "c\n"]);
        assert_eq!(r.is_error, Some(false));
    }

    #[test]
    fn budget_keeps_head_and_tail() {
        let limits = OutputLimits {
            text_budget: 1000,
            ..Default::default()
        };
        let mut c = Collector::new(limits, None);
        for i in 0..10_000 {
            c.output(&stream(StreamName::Stdout, &format!("line {i}\n")));
        }
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let t = texts(&r);
        let total: usize = t.iter().map(|s| s.len()).sum();
        assert!(total < 1400, "total {total}");
        assert!(t.first().is_some_and(|s| s.starts_with("line 0\n")));
        assert!(t.iter().any(|s| s.contains("output truncated")));
        assert!(t.last().is_some_and(|s| s.ends_with("line 9999\n")));
    }

    #[test]
    fn many_small_displays_stay_few_blocks() {
        let mut c = Collector::new(OutputLimits::default(), None);
        for i in 0..1000 {
            c.output(&Content::ExecuteResult(
                crate::wire::message::ExecuteResult {
                    execution_count: None,
                    data: [(
                        "text/plain".to_owned(),
                        serde_json::Value::String(i.to_string()),
                    )]
                    .into_iter()
                    .collect(),
                    metadata: serde_json::Value::Null,
                },
            ));
        }
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let t = texts(&r);
        assert_eq!(t.len(), MAX_BLOCKS);
        assert!(
            t.last().is_some_and(|l| l.ends_with("998\n999")),
            "{:?}",
            t.last()
        );
    }

    /// A PNG with a valid 1×1 header and image data (what a client could show).
    pub(super) fn png_1x1() -> String {
        let mut png = Vec::new();
        let img = image::RgbaImage::new(1, 1);
        let _ = img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png)
    }

    pub(super) fn display(data: &[(&str, &str)], id: Option<&str>, update: bool) -> Content {
        let d = crate::wire::message::DisplayData {
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
                .collect(),
            metadata: serde_json::Value::Null,
            transient: id.map(|i| serde_json::json!({ "display_id": i })),
        };
        if update {
            Content::UpdateDisplayData(d)
        } else {
            Content::DisplayData(d)
        }
    }

    #[test]
    fn an_exception_message_is_cut_to_its_share() {
        let mut c = Collector::new(OutputLimits::default(), None);
        c.output(&Content::Error(ErrorContent {
            ename: "ValueError".into(),
            evalue: "x".repeat(100_000),
            traceback: Vec::new(),
        }));
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let all = texts(&r).join("");
        assert!(all.len() < MAX_EVALUE_CHARS + 200, "{}", all.len());
        assert!(all.contains("[... 96000 more characters]"), "{all:.200}");
    }

    /// A run's next look shows the update of a display an earlier look showed.
    #[test]
    fn updates_of_displays_shown_in_an_earlier_look_are_shown() {
        let mut first = Collector::new(OutputLimits::default(), None);
        first.output(&display(&[("text/plain", "0%")], Some("bar"), false));
        let mut next = Collector::new(OutputLimits::default(), None);
        next.carry_displays(&first);
        next.output(&display(&[("text/plain", "50%")], Some("bar"), true));
        next.output(&display(&[("text/plain", "ignored")], Some("other"), true));
        next.output(&display(&[("text/plain", "100%")], Some("bar"), true));
        let mut last = Collector::new(OutputLimits::default(), None);
        last.carry_displays(&next);
        last.output(&display(&[("text/plain", "done")], Some("bar"), true));
        let r = next.finish(None, &Report::default(), Duration::from_secs(1));
        assert_eq!(texts(&r), vec!["100%"]);
        let r = last.finish(None, &Report::default(), Duration::from_secs(1));
        assert_eq!(texts(&r), vec!["done"]);
    }

    /// Past the block cap, printed text never joins a display's block, which an update would
    /// replace with the text in it.
    #[test]
    fn text_past_the_block_cap_survives_a_display_update() {
        let mut c = Collector::new(OutputLimits::default(), None);
        for i in 0..MAX_BLOCKS {
            c.output(&display(&[("text/plain", &i.to_string())], None, false));
        }
        c.output(&display(&[("text/plain", "0%")], Some("bar"), false));
        c.output(&stream(StreamName::Stdout, "printed after\n"));
        c.output(&display(&[("text/plain", "50%")], Some("bar"), true));
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let t = texts(&r);
        assert!(t.iter().any(|b| b.contains("printed after")), "{t:?}");
        assert!(
            t.iter().any(|b| b == "50%") && !t.iter().any(|b| b == "0%"),
            "{t:?}"
        );
    }

    #[test]
    fn clear_output_drops_earlier_output() {
        let mut c = Collector::new(OutputLimits::default(), None);
        c.output(&stream(StreamName::Stdout, "old\n"));
        c.output(&Content::ClearOutput(crate::wire::message::ClearOutput {
            wait: true,
        }));
        c.output(&stream(StreamName::Stdout, "new\n"));
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        assert_eq!(texts(&r), vec!["new\n"]);
    }
}
