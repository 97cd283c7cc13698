//! The session as a notebook: nbformat 4.5 types (read and write) and the journal of executed
//! cells; the recording output sink that turns IOPub output into notebook outputs is in
//! `notebook/recorder.rs`. Knows Jupyter's formats; knows nothing about MCP or files.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod recorder;
pub use recorder::{note_output, output_bytes, Recorder};

use crate::wire::message::{MimeBundle, StreamName};
use crate::wire::Content;

/// Largest notebook read by run_notebook.
pub const MAX_NOTEBOOK_BYTES: u64 = 64 * 1024 * 1024;
/// Most cells read from one notebook.
pub const MAX_CELLS: usize = 10_000;
/// Output bytes kept per recorded cell; later output is replaced by one note.
pub const MAX_CELL_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Output bytes kept by the whole journal; later cells keep their source only.
pub const MAX_JOURNAL_BYTES: usize = 64 * 1024 * 1024;
/// Largest notebook file written (JSON and line splitting add to the journal's bytes).
pub const MAX_WRITE_NOTEBOOK_BYTES: usize = 256 * 1024 * 1024;

/// Text that is a string or a list of lines in the file, one `String` in memory (nbformat's
/// "multiline_string"). Written as a list of lines, as Jupyter writes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MultiLine(pub String);

impl Serialize for MultiLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.split_inclusive('\n'))
    }
}

impl<'de> Deserialize<'de> for MultiLine {
    /// A visitor rather than an untagged enum: a wrong type is named ("invalid type: integer
    /// `5`, expected a string or a list of strings"), not "did not match any variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = MultiLine;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MultiLine, E> {
                Ok(MultiLine(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<MultiLine, E> {
                Ok(MultiLine(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MultiLine, A::Error> {
                let mut all = String::new();
                while let Some(line) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    all.push_str(&line);
                }
                Ok(MultiLine(all))
            }
        }
        d.deserialize_any(Text)
    }
}

/// One output of a code cell (nbformat v4 "output" union, keyed by `output_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "output_type", rename_all = "snake_case")]
pub enum Output {
    Stream {
        name: StreamName,
        text: MultiLine,
    },
    DisplayData {
        data: MimeBundle,
        #[serde(default = "empty_object")]
        metadata: Value,
    },
    ExecuteResult {
        execution_count: Option<i64>,
        data: MimeBundle,
        #[serde(default = "empty_object")]
        metadata: Value,
    },
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// One notebook cell (nbformat v4, keyed by `cell_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cell_type", rename_all = "snake_case")]
pub enum Cell {
    Code {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default = "empty_object")]
        metadata: Value,
        source: MultiLine,
        #[serde(default)]
        execution_count: Option<i64>,
        #[serde(default)]
        outputs: Vec<Output>,
    },
    Markdown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default = "empty_object")]
        metadata: Value,
        source: MultiLine,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachments: Option<Value>,
    },
    Raw {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default = "empty_object")]
        metadata: Value,
        source: MultiLine,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachments: Option<Value>,
    },
}

impl Cell {
    /// A code cell with a fresh id.
    pub fn code(source: &str, execution_count: Option<i64>, outputs: Vec<Output>) -> Cell {
        Cell::Code {
            id: Some(new_id()),
            metadata: empty_object(),
            source: MultiLine(source.to_owned()),
            execution_count,
            outputs,
        }
    }

    /// A Markdown cell with a fresh id.
    pub fn markdown(source: &str) -> Cell {
        Cell::Markdown {
            id: Some(new_id()),
            metadata: empty_object(),
            source: MultiLine(source.to_owned()),
            attachments: None,
        }
    }

    fn id_mut(&mut self) -> &mut Option<String> {
        match self {
            Cell::Code { id, .. } | Cell::Markdown { id, .. } | Cell::Raw { id, .. } => id,
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A whole notebook (nbformat 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notebook {
    #[serde(default = "empty_object")]
    pub metadata: Value,
    pub nbformat: u32,
    pub nbformat_minor: u32,
    pub cells: Vec<Cell>,
}

/// Why a notebook could not be read.
/// Why a notebook file cannot be read (worded in `output/render/errors.rs`).
#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    /// Not a notebook at all: what was wrong, in the parser's words.
    Invalid(String),
    /// A notebook of an nbformat major version other than 4.
    Version(u32),
    /// More cells than [`MAX_CELLS`].
    TooManyCells(usize),
}

/// The notebook metadata kernel-mcp writes: kernelspec and language_info for Python.
pub fn python_metadata(python_version: &str) -> Value {
    serde_json::json!({
        "kernelspec": {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        },
        "language_info": {
            "name": "python",
            "version": python_version,
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
    })
}

impl Notebook {
    /// Parses an `.ipynb` file's bytes (nbformat 4 only).
    pub fn parse(bytes: &[u8]) -> Result<Notebook, NotebookError> {
        #[derive(Deserialize)]
        struct Version {
            nbformat: Option<u32>,
        }
        // A byte-order mark (some editors write one) is not part of the JSON.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| NotebookError::Invalid(e.to_string()))?;
        match v.nbformat {
            Some(4) => {}
            Some(n) => return Err(NotebookError::Version(n)),
            None => return Err(NotebookError::Invalid("no \"nbformat\" field".into())),
        }
        let nb: Notebook = serde_json::from_slice(bytes).map_err(|e| {
            // Read again, tracking where it went wrong ("cells[2].source: invalid type: ..."),
            // so the cell can be found; the common case pays nothing for it.
            let tracked = serde_path_to_error::deserialize::<_, Notebook>(
                &mut serde_json::Deserializer::from_slice(bytes),
            );
            NotebookError::Invalid(match tracked {
                Err(t) => {
                    let path = t.path().to_string();
                    // Cells are counted from 1, as a notebook shows them.
                    let cell = path
                        .strip_prefix("cells[")
                        .and_then(|r| r.split(']').next())
                        .and_then(|n| n.parse::<usize>().ok())
                        .map(|n| format!("cell {} ", n.saturating_add(1)))
                        .unwrap_or_default();
                    format!("{cell}({path}): {}", t.inner())
                }
                Ok(_) => e.to_string(),
            })
        })?;
        if nb.cells.len() > MAX_CELLS {
            return Err(NotebookError::TooManyCells(nb.cells.len()));
        }
        Ok(nb)
    }

    /// Serializes as nbformat 4.5 (cell ids added where missing), indented like Jupyter.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        self.nbformat = 4;
        if self.nbformat_minor < 5 {
            self.nbformat_minor = 5;
        }
        let mut seen = std::collections::HashSet::new();
        for c in &mut self.cells {
            let id = c.id_mut();
            // nbformat 4.5: ids are 1-64 chars of [a-zA-Z0-9-_], unique in the notebook.
            let ok = id.as_ref().is_some_and(|i| {
                (1..=64).contains(&i.len())
                    && i.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
                    && !seen.contains(i)
            });
            if !ok {
                *id = Some(new_id());
            }
            if let Some(i) = id {
                seen.insert(i.clone());
            }
        }
        let mut out = Vec::new();
        // nbformat's layout (indent 1), compact below 16 levels: see ShallowPretty.
        let fmt = crate::text::ShallowPretty::new(b" ", 16);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)?;
        out.push(b'\n');
        Ok(out)
    }
}

/// The cells executed in this server session, in order, with restart markers. Bounded: past
/// [`MAX_JOURNAL_BYTES`] of output, new cells keep their source and a note instead of outputs.
#[derive(Debug)]
pub struct Journal {
    cells: Vec<Cell>,
    bytes: usize,
    cap: usize,
    /// Bumped on every change, so writers can tell whether the file is current.
    version: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::with_cap(MAX_JOURNAL_BYTES)
    }
}

impl Journal {
    /// An empty journal keeping at most `cap` bytes of output.
    pub fn with_cap(cap: usize) -> Journal {
        Journal {
            cells: Vec::new(),
            bytes: 0,
            cap,
            version: 0,
        }
    }

    /// Adds an executed code cell.
    pub fn record(&mut self, source: &str, execution_count: Option<i64>, outputs: Vec<Output>) {
        let n: usize = outputs.iter().map(output_bytes).sum::<usize>() + source.len();
        let outputs = if self.bytes + n > self.cap {
            vec![note_output(
                "the session journal is full; this cell's output was not kept",
            )]
        } else {
            self.bytes += n;
            outputs
        };
        self.cells
            .push(Cell::code(source, execution_count, outputs));
        self.version += 1;
    }

    /// Adds a Markdown note, e.g. that the kernel was restarted here.
    pub fn marker(&mut self, text: &str) {
        self.cells.push(Cell::markdown(text));
        self.version += 1;
    }

    /// Number of cells so far.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True when nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The change counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A copy holding only the cells after the last Markdown marker (the journal's markers note
    /// kernel starts and lost state) when `since_restart`, and without code cells that raised
    /// an error unless `include_errors`.
    pub fn filtered(&self, since_restart: bool, include_errors: bool) -> Journal {
        let start = if since_restart {
            self.cells
                .iter()
                .rposition(|c| matches!(c, Cell::Markdown { .. }))
                .map_or(0, |i| i + 1)
        } else {
            0
        };
        let cells = self
            .cells
            .iter()
            .skip(start)
            .filter(|c| {
                include_errors
                    || !matches!(c, Cell::Code { outputs, .. }
                        if outputs.iter().any(|o| matches!(o, Output::Error { .. })))
            })
            .cloned()
            .collect();
        Journal {
            cells,
            bytes: self.bytes,
            cap: self.cap,
            version: self.version,
        }
    }

    /// The journal as nbformat 4.5 bytes (its cells already carry ids; nothing is copied).
    pub fn to_bytes(&self, metadata: Value) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct NotebookRef<'a> {
            metadata: Value,
            nbformat: u32,
            nbformat_minor: u32,
            cells: &'a [Cell],
        }
        let nb = NotebookRef {
            metadata,
            nbformat: 4,
            nbformat_minor: 5,
            cells: &self.cells,
        };
        let mut out = Vec::new();
        // nbformat's layout (indent 1), compact below 16 levels: see ShallowPretty.
        let fmt = crate::text::ShallowPretty::new(b" ", 16);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        nb.serialize(&mut ser)?;
        out.push(b'\n');
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn multiline_reads_both_forms_and_writes_lines() {
        let a: MultiLine = serde_json::from_str(r#""x = 1\ny = 2""#).unwrap();
        let b: MultiLine = serde_json::from_str(r#"["x = 1\n", "y = 2"]"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"["x = 1\n","y = 2"]"#);
        assert_eq!(serde_json::to_string(&MultiLine::default()).unwrap(), "[]");
    }

    #[test]
    fn parse_adds_ids_and_upgrades_minor() {
        let src = br##"{"nbformat": 4, "nbformat_minor": 2, "metadata": {},
            "cells": [{"cell_type": "code", "metadata": {}, "source": ["1+1"], "outputs": [], "execution_count": null},
                      {"cell_type": "markdown", "metadata": {}, "source": "# hi"}]}"##;
        let mut nb = Notebook::parse(src).unwrap();
        assert_eq!(nb.cells.len(), 2);
        let out: Value = serde_json::from_slice(&nb.to_bytes().unwrap()).unwrap();
        assert_eq!(out["nbformat_minor"], 5);
        assert!(out["cells"][0]["id"].is_string());
        assert!(out["cells"][1]["id"].is_string());
        assert_ne!(out["cells"][0]["id"], out["cells"][1]["id"]);
    }

    /// A cell that is not what nbformat says is named by where it is and what is wrong with
    /// it (not "did not match any variant of untagged enum"); a leading byte-order mark is
    /// not an error.
    #[test]
    fn a_bad_cell_is_named() {
        let bad = br##"{"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "code", "metadata": {}, "source": "1", "outputs": [], "execution_count": null},
                      {"cell_type": "code", "metadata": {}, "source": ["x = 1", 5], "outputs": [], "execution_count": null}]}"##;
        let Err(NotebookError::Invalid(why)) = Notebook::parse(bad) else {
            panic!("a list with a number in it was read as source");
        };
        assert!(why.starts_with("cell 2 (cells[1]"), "{why}");
        assert!(
            why.contains("invalid type: integer `5`, expected a string"),
            "{why}"
        );
        let number = br##"{"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": 7}]}"##;
        let Err(NotebookError::Invalid(why)) = Notebook::parse(number) else {
            panic!("a number was read as source");
        };
        assert!(why.starts_with("cell 1 (cells[0]"), "{why}");
        assert!(why.contains("a string or a list of strings"), "{why}");
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(
            br#"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}"#,
        );
        assert!(Notebook::parse(&bom).is_ok());
    }

    #[test]
    fn parse_refuses_other_versions_and_garbage() {
        assert!(matches!(
            Notebook::parse(br#"{"nbformat": 3, "worksheets": []}"#),
            Err(NotebookError::Version(3))
        ));
        assert!(matches!(
            Notebook::parse(b"not json"),
            Err(NotebookError::Invalid(_))
        ));
        assert!(matches!(
            Notebook::parse(br#"{"cells": []}"#),
            Err(NotebookError::Invalid(_))
        ));
    }

    #[test]
    fn journal_is_bounded() {
        let mut j = Journal::with_cap(1000);
        let big = "x".repeat(300);
        for _ in 0..10 {
            j.record(
                "print(big)",
                Some(1),
                vec![Output::Stream {
                    name: StreamName::Stdout,
                    text: MultiLine(big.clone()),
                }],
            );
        }
        assert!(j.bytes <= 1000);
        assert_eq!(j.len(), 10);
    }
}
