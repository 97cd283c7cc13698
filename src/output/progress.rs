//! Progress of a long cell: an output sink in front of the others that remembers the latest
//! line the cell printed and reports it, with the time so far, on each tick (about once a
//! second, when the caller asked the kernel handle for ticks).

use std::time::Duration;

use super::text::strip_ansi;
use crate::kernel::OutputSink;
use crate::wire::Content;

/// Called with (elapsed, latest output line) about once a second during a long cell.
pub type ProgressFn = Box<dyn FnMut(Duration, &str) + Send>;

/// `report`, passing reports on only while `open` is true: progress belongs to a call that
/// waits, never to one that has returned (the work may go on without it).
pub fn gated(
    report: Option<ProgressFn>,
    open: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Option<ProgressFn> {
    report.map(|mut f| {
        let open = open.clone();
        Box::new(move |d: Duration, l: &str| {
            if open.load(std::sync::atomic::Ordering::SeqCst) {
                f(d, l)
            }
        }) as ProgressFn
    })
}

/// Longest line reported, in characters.
const MAX_LINE_CHARS: usize = 200;

/// Passes every output on to `inner` and reports progress to `report` on each tick.
pub struct Progress<'a> {
    inner: &'a mut dyn OutputSink,
    report: Option<ProgressFn>,
    last_line: String,
}

impl<'a> Progress<'a> {
    /// A sink in front of `inner`; without `report` it only passes outputs on.
    pub fn new(inner: &'a mut dyn OutputSink, report: Option<ProgressFn>) -> Self {
        Progress {
            inner,
            report,
            last_line: String::new(),
        }
    }

    /// Remembers the last non-blank line of `text`, as a terminal would show it: after the last
    /// carriage return (a progress bar redraws its line with `\r`), without escape sequences.
    fn remember(&mut self, text: &str) {
        let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
            return;
        };
        let shown = line
            .rsplit('\r')
            .find(|part| !part.trim().is_empty())
            .unwrap_or("");
        let clean = strip_ansi(shown);
        let clean = clean.trim_end();
        if !clean.is_empty() {
            self.last_line = clean.chars().take(MAX_LINE_CHARS).collect();
        }
    }

    /// A rich output's plain text, unless it is a bare object repr such as `<Figure ...>`.
    fn remember_bundle(&mut self, data: &crate::wire::message::MimeBundle) {
        if let Some(t) = data.get("text/plain").and_then(|v| v.as_str()) {
            if !(t.starts_with('<') && t.trim_end().ends_with('>')) {
                self.remember(t);
            }
        }
    }

    /// The line the next tick would report.
    pub fn last_line(&self) -> &str {
        &self.last_line
    }
}

impl OutputSink for Progress<'_> {
    fn output(&mut self, content: &Content) {
        if self.report.is_some() {
            match content {
                Content::Stream(s) => self.remember(&s.text),
                // A display updated in place (display_id) is the other way cells show progress.
                Content::ExecuteResult(r) => self.remember_bundle(&r.data),
                Content::DisplayData(d) => self.remember_bundle(&d.data),
                Content::UpdateDisplayData(d) => self.remember_bundle(&d.data),
                _ => {}
            }
        }
        self.inner.output(content);
    }

    fn tick(&mut self, elapsed: Duration) {
        self.inner.tick(elapsed);
        let line = self.last_line.clone();
        if let Some(report) = self.report.as_mut() {
            report(elapsed, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::{Stream, StreamName};

    struct Count(usize);
    impl OutputSink for Count {
        fn output(&mut self, _content: &Content) {
            self.0 += 1;
        }
    }

    fn stream(text: &str) -> Content {
        Content::Stream(Stream {
            name: StreamName::Stdout,
            text: text.into(),
        })
    }

    #[test]
    fn reports_the_line_a_terminal_would_show() {
        let mut inner = Count(0);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let report: ProgressFn = Box::new(move |t: Duration, line: &str| {
            if let Ok(mut l) = log.lock() {
                l.push((t.as_secs(), line.to_owned()));
            }
        });
        let mut p = Progress::new(&mut inner, Some(report));
        p.output(&stream("epoch 1\nepoch 2\n\n"));
        assert_eq!(p.last_line(), "epoch 2");
        p.output(&stream("\r 10%|#  |\r 50%|## |"));
        assert_eq!(p.last_line(), " 50%|## |");
        p.output(&stream("\u{1b}[31mred\u{1b}[0m\n"));
        assert_eq!(p.last_line(), "red");
        p.output(&stream("   \n"));
        assert_eq!(p.last_line(), "red");
        let display = |text: &str| {
            Content::UpdateDisplayData(crate::wire::message::DisplayData {
                data: [("text/plain".to_owned(), serde_json::json!(text))].into(),
                metadata: serde_json::Value::Null,
                transient: None,
            })
        };
        p.output(&display("step 3 of 10"));
        assert_eq!(p.last_line(), "step 3 of 10");
        p.output(&display("<Figure size 640x480 with 1 Axes>"));
        assert_eq!(p.last_line(), "step 3 of 10", "a bare repr is not progress");
        p.output(&stream(&"x".repeat(500)));
        assert_eq!(p.last_line().chars().count(), MAX_LINE_CHARS);
        p.tick(Duration::from_secs(3));
        drop(p);
        assert_eq!(inner.0, 7, "every output reaches the inner sink");
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, vec![(3, "x".repeat(MAX_LINE_CHARS))]);
    }

    #[test]
    fn without_a_report_it_only_passes_outputs_on() {
        let mut inner = Count(0);
        let mut p = Progress::new(&mut inner, None);
        p.output(&stream("a\n"));
        p.tick(Duration::from_secs(1));
        assert_eq!(p.last_line(), "");
        drop(p);
        assert_eq!(inner.0, 1);
    }
}
