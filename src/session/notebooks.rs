//! run_notebook: the code cells of a workspace notebook run in the live session, in order, each
//! with the usual timeout, their outputs in one result behind `[cell N]` markers and, when
//! asked, the executed notebook saved back.

use tokio_util::sync::CancellationToken;

use super::Session;
use crate::error::{Refusal, SessionError};
use crate::kernel::OutputSink;
use crate::kernel::{Ending, ExecLimits, Report};
use crate::notebook::{self, Cell, Notebook, Recorder, MAX_CELL_OUTPUT_BYTES};
use crate::output::{Collector, Rendered};
use crate::wire::message::ReplyStatus;
use crate::wire::Content;

/// What a notebook run asks for.
pub struct NotebookRun {
    /// The notebook, relative to the workspace.
    pub path: String,
    /// Where to save the executed notebook, if anywhere.
    pub save_to: Option<String>,
    /// Replace a `save_to` file this session did not write.
    pub overwrite: bool,
    /// Stop at the first cell that raises.
    pub stop_on_error: bool,
    /// Show only errors and the last code cell's output, without images (a replay).
    pub quiet: bool,
    /// Told after each cell ("cell 3 of 12 done").
    pub progress: Option<crate::output::ProgressFn>,
}

/// What a quiet run shows of a cell that is not its last: errors only.
struct ErrorsOnly<'a> {
    inner: &'a mut Collector,
    /// The `[cell N]` marker, written before the first error.
    marker: Option<String>,
}

impl OutputSink for ErrorsOnly<'_> {
    fn output(&mut self, content: &Content) {
        if let Content::Error(_) = content {
            if let Some(m) = self.marker.take() {
                self.inner.section(&m);
            }
            self.inner.output(content);
        }
    }
}

/// What a quiet run shows of its last cell: everything but images.
struct NoImages<'a> {
    inner: &'a mut Collector,
}

impl OutputSink for NoImages<'_> {
    fn output(&mut self, content: &Content) {
        let strip = |data: &crate::wire::message::MimeBundle| {
            data.iter()
                .filter(|(k, _)| !k.starts_with("image/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<crate::wire::message::MimeBundle>()
        };
        match content {
            Content::DisplayData(d) | Content::UpdateDisplayData(d)
                if d.data.keys().any(|k| k.starts_with("image/")) =>
            {
                let mut d = d.clone();
                d.data = strip(&d.data);
                if d.data.is_empty() {
                    return;
                }
                self.inner.output(&match content {
                    Content::UpdateDisplayData(_) => Content::UpdateDisplayData(d),
                    _ => Content::DisplayData(d),
                });
            }
            Content::ExecuteResult(r) if r.data.keys().any(|k| k.starts_with("image/")) => {
                let mut r = r.clone();
                r.data = strip(&r.data);
                if !r.data.is_empty() {
                    self.inner.output(&Content::ExecuteResult(r));
                }
            }
            other => self.inner.output(other),
        }
    }
}

impl Session {
    /// Runs the notebook's code cells; the result is all their output plus a summary line.
    pub async fn run_notebook(
        &self,
        run: NotebookRun,
        cancel: &CancellationToken,
    ) -> Result<Rendered, SessionError> {
        if let Some(to) = &run.save_to {
            if !to.to_ascii_lowercase().ends_with(".ipynb") {
                return Err(Refusal::SaveToNotIpynb { path: to.clone() }.into());
            }
            // A target the save would refuse stops the run before any cell has run.
            self.files
                .check_target(to.clone(), run.overwrite, self.journal.written())
                .await?;
        }
        let bytes = self
            .files
            .read_bytes(run.path.clone(), notebook::MAX_NOTEBOOK_BYTES)
            .await?;
        let mut nb = Notebook::parse(&bytes).map_err(|e| Refusal::BadNotebook {
            path: run.path.clone(),
            detail: e.to_string(),
        })?;
        drop(bytes);
        let s = &self.settings;
        let limits = ExecLimits {
            timeout: s.default_timeout,
            grace: s.interrupt_grace,
            progress: false,
        };
        let mut collector = self.collector();
        let mut report = Report::default();
        let mut last_exec = None;
        let mut ran = 0usize;
        let mut kept = 0usize;
        let mut stopped: Option<String> = None;
        let code_cells = nb
            .cells
            .iter()
            .filter(|c| matches!(c, Cell::Code { .. }))
            .count();
        let last_code = nb
            .cells
            .iter()
            .rposition(|c| matches!(c, Cell::Code { source, .. } if !source.0.trim().is_empty()));
        let began = std::time::Instant::now();
        let mut progress = run.progress;
        let nb_len = nb.cells.len();
        for (i, cell) in nb.cells.iter_mut().enumerate() {
            let Cell::Code {
                source,
                execution_count,
                outputs,
                ..
            } = cell
            else {
                continue;
            };
            if cancel.is_cancelled() {
                stopped = Some("the call was cancelled".into());
                break;
            }
            let marker = format!("[cell {}]\n", i + 1);
            let shown = !run.quiet || Some(i) == last_code;
            if shown {
                collector.section(&marker);
            }
            if source.0.trim().is_empty() {
                *execution_count = None;
                outputs.clear();
                continue;
            }
            // What of the cell reaches the result: all of it, or in a quiet run its errors
            // (the last cell: all but images). The notebook record keeps everything.
            let mut last_shown;
            let mut errors_only;
            let sink: &mut dyn OutputSink = if !run.quiet {
                &mut collector
            } else if shown {
                last_shown = NoImages {
                    inner: &mut collector,
                };
                &mut last_shown
            } else {
                errors_only = ErrorsOnly {
                    inner: &mut collector,
                    marker: Some(marker),
                };
                &mut errors_only
            };
            let mut recorder = Recorder::new(sink, MAX_CELL_OUTPUT_BYTES);
            let result = self
                .kernel
                .execute(&source.0, &limits, cancel, &mut recorder)
                .await;
            let recorded = recorder.into_outputs();
            if let Some(p) = progress.as_mut() {
                p(
                    began.elapsed(),
                    &format!(
                        "cell {} of {} done ({code_cells} code cells)",
                        i + 1,
                        nb_len
                    ),
                );
            }
            let (exec, cell_report) = match result {
                Ok(x) => x,
                Err(e) => {
                    stopped = Some(format!("the kernel could not run cell {}: {e}", i + 1));
                    break;
                }
            };
            ran += 1;
            self.record(&source.0, &exec, recorded.clone(), &cell_report);
            *execution_count = exec.reply.as_ref().and_then(|r| r.execution_count);
            // The executed notebook is held until it is saved: bounded like the journal.
            let n: usize = recorded.iter().map(notebook::output_bytes).sum();
            *outputs = if kept + n > notebook::MAX_JOURNAL_BYTES {
                vec![notebook::note_output(
                    "this cell's output was not kept; the notebook's outputs passed the size limit",
                )]
            } else {
                kept += n;
                recorded
            };
            report.notes.extend(cell_report.notes);
            report.state_lost |= cell_report.state_lost;
            let failed = exec
                .reply
                .as_ref()
                .is_some_and(|r| r.status == ReplyStatus::Error);
            let completed = exec.ending == Ending::Completed;
            last_exec = Some(exec);
            if !completed || cell_report.state_lost {
                stopped = Some(format!("cell {} did not complete", i + 1));
                break;
            }
            if failed && run.stop_on_error {
                stopped = Some(format!(
                    "cell {} raised an error (pass stop_on_error: false to run past errors)",
                    i + 1
                ));
                break;
            }
        }
        self.update_live_journal().await;
        let mut res = collector.finish(last_exec.as_ref(), &report, limits.timeout);
        let mut summary = format!("[ran {ran} of {code_cells} code cells of {}", run.path);
        if let Some(why) = &stopped {
            summary.push_str(&format!("; stopped: {why}"));
            res.is_error = Some(true);
        }
        summary.push(']');
        crate::output::append_note(&mut res, &summary);
        if let Some(to) = run.save_to {
            let note = match self.save_executed(&mut nb, to, run.overwrite).await {
                Ok(path) => format!("[executed notebook saved as {path}]"),
                Err(e) => {
                    res.is_error = Some(true);
                    format!("[the executed notebook was not saved: {e}]")
                }
            };
            crate::output::append_note(&mut res, &note);
        }
        Ok(res)
    }

    /// Saves an executed notebook; one without kernel metadata gets ours, so Jupyter opens it
    /// with Python.
    async fn save_executed(
        &self,
        nb: &mut Notebook,
        to: String,
        overwrite: bool,
    ) -> Result<String, SessionError> {
        let ours = notebook::python_metadata(&self.env_info().python_version);
        if let (Some(meta), serde_json::Value::Object(ours)) = (nb.metadata.as_object_mut(), ours) {
            for (k, v) in ours {
                meta.entry(k).or_insert(v);
            }
        }
        let bytes = nb
            .to_bytes()
            .map_err(|e| Refusal::NotebookBuild(e.to_string()))?;
        self.write_notebook(to, bytes, overwrite).await
    }
}
