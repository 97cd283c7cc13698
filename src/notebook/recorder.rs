//! The recording output sink: one execution's IOPub output as notebook outputs (bundles made
//! valid for nbformat, stream text merged, display updates applied), bounded in memory, while
//! everything is passed on to the sink behind it.

use super::*;
use crate::kernel::OutputSink;

/// Makes a MIME bundle valid for nbformat: JSON types (`application/json`, `*+json`) stay as
/// they are, every other value must be a string.
fn clean_bundle(data: &MimeBundle) -> MimeBundle {
    data.iter()
        .map(|(k, v)| {
            let json = k == "application/json" || k.ends_with("+json");
            let v = match v {
                _ if json => v.clone(),
                Value::String(_) => v.clone(),
                Value::Array(parts) if parts.iter().all(Value::is_string) => v.clone(),
                other => Value::String(other.to_string()),
            };
            (k.clone(), v)
        })
        .collect()
}

fn bundle_bytes(data: &MimeBundle) -> usize {
    data.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Value::String(s) => s.len(),
                    other => json_len(other),
                }
        })
        .sum()
}

/// The length of `v` as JSON text, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// What every output is counted as at least (its record and bookkeeping): a flood of empty
/// displays must fill the cap too.
const OUTPUT_FLOOR: usize = 64;

/// Approximate bytes an output holds in memory: its text, bundle and metadata.
pub fn output_bytes(o: &Output) -> usize {
    OUTPUT_FLOOR
        + match o {
            Output::Stream { text, .. } => text.0.len(),
            Output::DisplayData { data, metadata }
            | Output::ExecuteResult { data, metadata, .. } => {
                bundle_bytes(data) + json_len(metadata)
            }
            Output::Error {
                ename,
                evalue,
                traceback,
            } => ename.len() + evalue.len() + traceback.iter().map(String::len).sum::<usize>(),
        }
}

/// Records one execution's IOPub output as notebook outputs while passing everything on to
/// another sink (the MCP result). Memory is bounded by [`MAX_CELL_OUTPUT_BYTES`].
pub struct Recorder<'a> {
    inner: &'a mut dyn OutputSink,
    outputs: Vec<Output>,
    /// The display id of each output, for update_display_data.
    ids: Vec<Option<String>>,
    bytes: usize,
    cap: usize,
    full: bool,
    clear_pending: bool,
}

impl<'a> Recorder<'a> {
    /// A recorder passing output on to `inner`, keeping at most `cap` bytes.
    pub fn new(inner: &'a mut dyn OutputSink, cap: usize) -> Self {
        Recorder {
            inner,
            outputs: Vec::new(),
            ids: Vec::new(),
            bytes: 0,
            cap,
            full: false,
            clear_pending: false,
        }
    }

    /// The outputs recorded, in kernel order.
    pub fn into_outputs(self) -> Vec<Output> {
        self.outputs
    }

    fn clear(&mut self) {
        self.outputs.clear();
        self.ids.clear();
        self.bytes = 0;
        self.full = false;
        self.clear_pending = false;
    }

    fn push(&mut self, o: Output, id: Option<String>) {
        let n = output_bytes(&o);
        if self.full {
            return;
        }
        if self.bytes + n > self.cap {
            self.full = true;
            self.outputs.push(note_output(
                "further output of this cell is not kept in the notebook",
            ));
            self.ids.push(None);
            return;
        }
        self.bytes += n;
        // Consecutive stream chunks of one stream become one output, as Jupyter shows them.
        if let (
            Output::Stream { name, text },
            Some(Output::Stream {
                name: last,
                text: buf,
            }),
        ) = (&o, self.outputs.last_mut())
        {
            if name == last {
                buf.0.push_str(&text.0);
                return;
            }
        }
        self.outputs.push(o);
        self.ids.push(id);
    }

    fn record(&mut self, content: &Content) {
        if self.clear_pending && !matches!(content, Content::ClearOutput(_)) {
            self.clear();
        }
        // An output that can never fit is refused before it is copied (a display can be tens
        // of MB; the copy alone would cost that much).
        // Metadata counts too: a display of a few bytes can carry 30 MB of it.
        let size = match content {
            Content::Stream(s) => s.text.len(),
            Content::ExecuteResult(r) => bundle_bytes(&r.data) + json_len(&r.metadata),
            Content::DisplayData(d) | Content::UpdateDisplayData(d) => {
                bundle_bytes(&d.data) + json_len(&d.metadata)
            }
            _ => 0,
        };
        if size > self.cap || (self.full && size > 0) {
            if !self.full && !matches!(content, Content::UpdateDisplayData(_)) {
                self.full = true;
                self.outputs.push(note_output(
                    "further output of this cell is not kept in the notebook",
                ));
                self.ids.push(None);
            }
            return;
        }
        match content {
            Content::Stream(s) => self.push(
                Output::Stream {
                    name: s.name,
                    text: MultiLine(s.text.clone()),
                },
                None,
            ),
            Content::ExecuteResult(r) => self.push(
                Output::ExecuteResult {
                    execution_count: r.execution_count,
                    data: clean_bundle(&r.data),
                    metadata: object_or_empty(&r.metadata),
                },
                None,
            ),
            Content::DisplayData(d) => {
                let id = display_id(&d.transient);
                self.push(
                    Output::DisplayData {
                        data: clean_bundle(&d.data),
                        metadata: object_or_empty(&d.metadata),
                    },
                    id,
                )
            }
            Content::UpdateDisplayData(d) => {
                let Some(id) = display_id(&d.transient) else {
                    return;
                };
                let new = clean_bundle(&d.data);
                let add = bundle_bytes(&new);
                for (o, oid) in self.outputs.iter_mut().zip(&self.ids) {
                    if oid.as_deref() == Some(id.as_str()) {
                        if let Output::DisplayData { data, .. } = o {
                            let old = bundle_bytes(data);
                            if self.bytes - old.min(self.bytes) + add <= self.cap {
                                self.bytes = self.bytes - old.min(self.bytes) + add;
                                *data = new.clone();
                            }
                        }
                    }
                }
            }
            Content::Error(e) => self.push(
                Output::Error {
                    ename: e.ename.clone(),
                    evalue: e.evalue.clone(),
                    traceback: e.traceback.clone(),
                },
                None,
            ),
            Content::ClearOutput(c) => {
                if c.wait {
                    self.clear_pending = true;
                } else {
                    self.clear();
                }
            }
            _ => {}
        }
    }
}

/// A stderr note standing in for outputs that were not kept.
pub fn note_output(text: &str) -> Output {
    Output::Stream {
        name: StreamName::Stderr,
        text: MultiLine(format!("[kernel-mcp: {text}]\n")),
    }
}

fn object_or_empty(v: &Value) -> Value {
    if v.is_object() {
        v.clone()
    } else {
        empty_object()
    }
}

fn display_id(transient: &Option<Value>) -> Option<String> {
    transient
        .as_ref()
        .and_then(|t| t.get("display_id"))
        .and_then(|d| d.as_str())
        .map(str::to_owned)
}

impl OutputSink for Recorder<'_> {
    fn output(&mut self, content: &Content) {
        self.inner.output(content);
        self.record(content);
    }

    fn tick(&mut self, elapsed: Duration) {
        self.inner.tick(elapsed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::message::{ClearOutput, DisplayData, Stream};

    struct Null;
    impl OutputSink for Null {
        fn output(&mut self, _: &Content) {}
    }

    fn stream(name: StreamName, text: &str) -> Content {
        Content::Stream(Stream {
            name,
            text: text.into(),
        })
    }

    #[test]
    fn recorder_merges_streams_and_honours_clear_output() {
        let mut null = Null;
        let mut r = Recorder::new(&mut null, 1000);
        r.output(&stream(StreamName::Stdout, "a\n"));
        r.output(&stream(StreamName::Stdout, "b\n"));
        r.output(&stream(StreamName::Stderr, "e\n"));
        assert_eq!(r.outputs.len(), 2);
        r.output(&Content::ClearOutput(ClearOutput { wait: true }));
        assert_eq!(r.outputs.len(), 2);
        r.output(&stream(StreamName::Stdout, "c\n"));
        assert_eq!(
            r.into_outputs(),
            vec![Output::Stream {
                name: StreamName::Stdout,
                text: MultiLine("c\n".into())
            }]
        );
    }

    #[test]
    fn recorder_is_bounded() {
        let mut null = Null;
        let mut r = Recorder::new(&mut null, 100);
        for _ in 0..1000 {
            r.output(&stream(StreamName::Stdout, "0123456789"));
        }
        let out = r.into_outputs();
        assert_eq!(out.len(), 2);
        assert!(output_bytes(&out[0]) <= 100);
    }

    /// Metadata and the outputs' number count against the cap too: displays of one byte
    /// carrying 1 MB of metadata each, or a flood of empty ones, stop being kept at the cap.
    #[test]
    fn metadata_and_empty_outputs_count_against_the_cap() {
        let heavy = DisplayData {
            data: [("text/plain".to_owned(), Value::String("x".into()))]
                .into_iter()
                .collect(),
            metadata: serde_json::json!({"m": "a".repeat(1 << 20)}),
            transient: None,
        };
        let mut null = Null;
        let mut r = Recorder::new(&mut null, 4 << 20);
        for _ in 0..100 {
            r.output(&Content::DisplayData(heavy.clone()));
        }
        let kept: usize = r.into_outputs().iter().map(output_bytes).sum();
        assert!(kept < 5 << 20, "{kept}");
        let mut r = Recorder::new(&mut null, 4 << 20);
        for _ in 0..1_000_000 {
            r.output(&Content::DisplayData(DisplayData {
                data: MimeBundle::new(),
                metadata: Value::Null,
                transient: None,
            }));
        }
        assert!(r.into_outputs().len() < 70_000);
    }

    #[test]
    fn update_display_replaces_in_place() {
        let mut null = Null;
        let mut r = Recorder::new(&mut null, 1000);
        let d = |t: &str| DisplayData {
            data: [("text/plain".to_owned(), Value::String(t.into()))]
                .into_iter()
                .collect(),
            metadata: Value::Null,
            transient: Some(serde_json::json!({"display_id": "p"})),
        };
        r.output(&Content::DisplayData(d("0%")));
        r.output(&Content::UpdateDisplayData(d("100%")));
        let out = r.into_outputs();
        assert_eq!(out.len(), 1);
        let Output::DisplayData { data, metadata } = &out[0] else {
            panic!()
        };
        assert_eq!(data.get("text/plain"), Some(&Value::String("100%".into())));
        assert_eq!(metadata, &empty_object());
    }

    #[test]
    fn bundles_become_valid() {
        let b: MimeBundle = [
            ("text/plain".to_owned(), serde_json::json!(5)),
            ("application/json".to_owned(), serde_json::json!({"a": 1})),
        ]
        .into_iter()
        .collect();
        let c = clean_bundle(&b);
        assert_eq!(c.get("text/plain"), Some(&serde_json::json!("5")));
        assert_eq!(
            c.get("application/json"),
            Some(&serde_json::json!({"a": 1}))
        );
    }
}
