//! run_notebook: the code cells of a workspace notebook run in the live session, in order, each
//! with the usual timeout, their outputs in one result behind `[cell N]` markers and, when
//! asked, the executed notebook saved back.

use tokio_util::sync::CancellationToken;

use super::Session;
use crate::error::SessionError;
use crate::kernel::{Ending, ExecLimits, Report};
use crate::notebook::{self, Cell, Notebook, Recorder, MAX_CELL_OUTPUT_BYTES};
use crate::output::Rendered;
use crate::wire::message::ReplyStatus;

/// What a notebook run asks for.
#[derive(Debug, Clone)]
pub struct NotebookRun {
    /// The notebook, relative to the workspace.
    pub path: String,
    /// Where to save the executed notebook, if anywhere.
    pub save_to: Option<String>,
    /// Replace a `save_to` file this session did not write.
    pub overwrite: bool,
    /// Stop at the first cell that raises.
    pub stop_on_error: bool,
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
                return Err(SessionError::Refused(format!(
                    "save_to {to}: a notebook path must end in .ipynb; nothing was run"
                )));
            }
        }
        let bytes = self
            .files
            .read_bytes(run.path.clone(), notebook::MAX_NOTEBOOK_BYTES)
            .await?;
        let mut nb = Notebook::parse(&bytes)
            .map_err(|e| SessionError::Refused(format!("{}: {e}; nothing was run", run.path)))?;
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
            collector.section(&format!("[cell {}]\n", i + 1));
            if source.0.trim().is_empty() {
                *execution_count = None;
                outputs.clear();
                continue;
            }
            let mut recorder = Recorder::new(&mut collector, MAX_CELL_OUTPUT_BYTES);
            let result = self
                .kernel
                .execute(&source.0, &limits, cancel, &mut recorder)
                .await;
            let recorded = recorder.into_outputs();
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
            .map_err(|e| SessionError::Refused(e.to_string()))?;
        self.write_notebook(to, bytes, overwrite).await
    }
}
