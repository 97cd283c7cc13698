//! The session's journal (every executed cell, restart markers) and the record of notebooks
//! this session wrote, so a notebook write only ever replaces the session's own files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::kernel::{Execution, Report};
use crate::notebook::{Journal, Output};

/// A file's size and modification time right after this session wrote it.
pub(super) type Stamp = (u64, SystemTime);

/// Notebooks this session wrote: workspace path → stamp after the write.
#[derive(Clone, Default)]
pub(super) struct WrittenFiles(Arc<Mutex<HashMap<String, Stamp>>>);

impl WrittenFiles {
    /// True when `path` still is exactly as this session left it.
    pub(super) fn is(&self, path: &str, stamp: &Stamp) -> bool {
        self.0
            .lock()
            .map(|w| w.get(path) == Some(stamp))
            .unwrap_or(false)
    }

    /// The stamp this session left `path` with, if it wrote it.
    pub(super) fn get(&self, path: &str) -> Option<Stamp> {
        self.0.lock().ok().and_then(|w| w.get(path).copied())
    }

    pub(super) fn insert(&self, path: String, stamp: Stamp) {
        if let Ok(mut w) = self.0.lock() {
            w.insert(path, stamp);
        }
    }
}

pub(super) struct SessionJournal {
    cells: Mutex<Journal>,
    written: WrittenFiles,
    /// Serializes writes of the live journal so an older state never lands last; holds the
    /// journal version last written.
    write: tokio::sync::Mutex<u64>,
}

impl SessionJournal {
    pub(super) fn new() -> Self {
        SessionJournal {
            cells: Mutex::new(Journal::default()),
            written: WrittenFiles::default(),
            write: tokio::sync::Mutex::new(0),
        }
    }

    /// Records one executed cell, and a marker when the kernel's state was lost.
    pub(super) fn cell(
        &self,
        source: &str,
        exec: &Execution,
        outputs: Vec<Output>,
        report: &Report,
    ) {
        let count = exec.reply.as_ref().and_then(|r| r.execution_count);
        if let Ok(mut j) = self.cells.lock() {
            j.record(source, count, outputs);
            if report.state_lost {
                let words: Vec<String> = report.notes.iter().map(crate::output::notice).collect();
                j.marker(&format!("*{}*", words.join(" ")));
            }
        }
    }

    /// Adds a code cell that was not executed (no count, no output), such as a record of an
    /// install.
    pub(super) fn record_note_cell(&self, source: &str) {
        if let Ok(mut j) = self.cells.lock() {
            j.record(source, None, Vec::new());
        }
    }

    /// The journal as .ipynb bytes, cut to the cells since the last kernel start and/or without
    /// the cells that raised; its cell count.
    pub(super) fn bytes_filtered(
        &self,
        python_version: &str,
        since_restart: bool,
        include_errors: bool,
    ) -> Result<(Vec<u8>, usize), String> {
        let meta = crate::notebook::python_metadata(python_version);
        let j = self
            .cells
            .lock()
            .map_err(|_| "the session journal is unavailable".to_owned())?;
        let view = j.filtered(since_restart, include_errors);
        let bytes = view.to_bytes(meta).map_err(|e| e.to_string())?;
        Ok((bytes, view.len()))
    }

    /// Adds a Markdown marker.
    pub(super) fn marker(&self, text: &str) {
        if let Ok(mut j) = self.cells.lock() {
            j.marker(text);
        }
    }

    /// The journal as .ipynb bytes (with kernelspec and language metadata), its cell count and
    /// version.
    pub(super) fn bytes(&self, python_version: &str) -> Result<(Vec<u8>, usize, u64), String> {
        let meta = crate::notebook::python_metadata(python_version);
        let j = self
            .cells
            .lock()
            .map_err(|_| "the session journal is unavailable".to_owned())?;
        let bytes = j.to_bytes(meta).map_err(|e| e.to_string())?;
        Ok((bytes, j.len(), j.version()))
    }

    pub(super) fn written(&self) -> WrittenFiles {
        self.written.clone()
    }

    pub(super) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, u64> {
        self.write.lock().await
    }
}
