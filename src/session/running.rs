//! How a call's code runs: as a run in the session's queue (runs.rs), waited for up to the
//! call's `return_after`, then left going for `check_run`; as an MCP task; and how a run's
//! look becomes the call's result (the restore note, the "still running" note).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{runs, RunCall, RunOrTask, Session, TaskView, SNAPSHOT_IDLE};
use crate::error::{Refusal, SessionError};
use crate::notebook::{Recorder, MAX_CELL_OUTPUT_BYTES};
use crate::output::{Progress, ProgressFn, Rendered};

/// Lets later requests queue once this one has (or has failed to).
struct Released(Option<String>);

impl Drop for Released {
    fn drop(&mut self) {
        if let Some(k) = &self.0 {
            crate::arrival::done(k);
        }
    }
}

impl Session {
    /// The session's runs.
    pub fn runs(&self) -> &runs::Runs {
        &self.runs
    }

    /// Follows `work` (already started at `started`, not a cell: an install) as a run once
    /// its call stops waiting; `finish` turns what it returns into the run's result. Returns
    /// the note for the call that leaves.
    pub fn adopt_as_run<T: Send + 'static>(
        &self,
        doing: &'static str,
        started: std::time::Instant,
        work: tokio::task::JoinHandle<T>,
        finish: impl FnOnce(Result<T, tokio::task::JoinError>) -> Rendered + Send + 'static,
    ) -> String {
        let id = self.runs.adopt(doing, started, self.collector());
        let runs = self.runs.clone();
        tokio::spawn(async move {
            let result = finish(work.await);
            runs.finish(
                id,
                runs::RunEnd::Result {
                    result,
                    elapsed: started.elapsed(),
                },
            );
        });
        format!(
            "[still {doing} as run {id} (started {:.0} s ago); it goes on without this call. Call check_run {{\"run\": {id}}} for its result.]",
            started.elapsed().as_secs_f64()
        )
    }

    /// How long a call may wait for its run: the caller's `return_after` (seconds), at most the
    /// server's; zero or less means the server's.
    pub fn return_after(&self, asked: Option<f64>) -> Option<Duration> {
        let max = self.settings.return_after;
        if max.is_zero() {
            return None;
        }
        let asked = asked
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(max.as_secs_f64())));
        Some(asked.unwrap_or(max))
    }

    /// Runs `code` as one cell: the result in kernel order within the output budget, the cell
    /// recorded in the journal as `journal_source`. `timeout` is the caller's, checked against
    /// the server's bounds. The cell is a run: queued behind earlier ones, and when it is not
    /// done within `return_after`, the result is what it produced so far and a note naming the
    /// run, which goes on (`check_run` follows it). `cancel` interrupts it until then.
    pub async fn run(
        self: &Arc<Self>,
        call: RunCall<'_>,
        progress: Option<ProgressFn>,
        cancel: &CancellationToken,
    ) -> Result<Rendered, SessionError> {
        self.run_queued(call, progress, None, cancel).await
    }

    /// Queues a cell or other `work` as a run and waits for it up to the call's return_after.
    async fn run_queued(
        self: &Arc<Self>,
        call: RunCall<'_>,
        progress: Option<ProgressFn>,
        work: Option<runs::Custom>,
        cancel: &CancellationToken,
    ) -> Result<Rendered, SessionError> {
        let return_after = call.return_after;
        let id = self.submit(call, progress, work).await?;
        let look = self
            .runs
            .wait(Some(id), return_after, false, cancel, true, &|| {
                self.collector()
            })
            .await;
        self.rendered_with_restore_note(look)
    }

    /// `run` for a client that takes MCP tasks: a cell done within `return_after` is its
    /// result, as always; one still going is left to run as a task (its run id), with nothing
    /// of its output taken, so the task's result is the whole cell.
    pub async fn run_as_task(
        self: &Arc<Self>,
        call: RunCall<'_>,
        progress: Option<ProgressFn>,
        cancel: &CancellationToken,
    ) -> Result<RunOrTask, SessionError> {
        let return_after = call.return_after;
        let id = self.submit(call, progress, None).await?;
        if !self.runs.wait_end(id, return_after, cancel).await {
            return Ok(RunOrTask::Task(id));
        }
        let look = self
            .runs
            .wait(Some(id), Some(Duration::ZERO), false, cancel, true, &|| {
                self.collector()
            })
            .await;
        self.rendered_with_restore_note(look).map(RunOrTask::Done)
    }

    /// What a task (a run) is now: still going, or its result, kept for repeated looks.
    pub fn task(&self, id: u64) -> TaskView {
        if let Some(done) = self.tasks.lock().ok().and_then(|t| t.get(&id).cloned()) {
            return done;
        }
        match self.runs.ended(id) {
            None => TaskView::Unknown,
            Some(false) => match self.runs.status(id) {
                Some((since, started, line)) => TaskView::Working {
                    since,
                    started,
                    line,
                },
                None => TaskView::Unknown,
            },
            Some(true) => {
                let cancelled = self.cancelled_tasks.lock().is_ok_and(|c| c.contains(&id));
                let look = self.runs.look_now(id, &|| self.collector());
                let view = match self.render(look, true) {
                    _ if cancelled => TaskView::Cancelled,
                    Ok(r) => TaskView::Completed(r),
                    Err(e) => TaskView::Failed(e.to_string()),
                };
                if let Ok(mut t) = self.tasks.lock() {
                    // The latest few results stay for repeated looks.
                    while t.len() >= 32 {
                        let Some(first) = t.keys().next().copied() else {
                            break;
                        };
                        t.remove(&first);
                    }
                    t.insert(id, view.clone());
                }
                view
            }
        }
    }

    /// Cancels a task's run (cooperatively: a running cell is interrupted); false for an
    /// unknown task.
    pub fn cancel_task(&self, id: u64) -> bool {
        if self.runs.ended(id).is_none() {
            return false;
        }
        if let Ok(mut c) = self.cancelled_tasks.lock() {
            if c.len() > 1024 {
                c.clear();
            }
            c.insert(id);
        }
        self.runs.cancel_run(Some(id));
        true
    }

    /// Queues `call` as a run in arrival order and starts the worker if needed; its id.
    async fn submit(
        self: &Arc<Self>,
        call: RunCall<'_>,
        progress: Option<ProgressFn>,
        custom: Option<runs::Custom>,
    ) -> Result<u64, SessionError> {
        let RunCall {
            code,
            journal_source,
            timeout,
            return_after: _,
            arrival,
        } = call;
        // Calls queue in the order they arrived, not the order their handlers started.
        if let Some(k) = &arrival {
            crate::arrival::wait_turn(k).await;
        }
        let _released = Released(arrival);
        let (limits, note) = self.exec_limits(timeout, progress.is_some())?;
        let (id, start) = self.runs.submit(
            runs::Job {
                code: code.to_owned(),
                journal_source: journal_source.to_owned(),
                limits,
                note,
                progress,
                custom,
            },
            self.kernel.max_queue(),
            self.collector(),
        )?;
        drop(_released);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.work().await });
        }
        Ok(id)
    }

    fn rendered_with_restore_note(&self, look: runs::Look) -> Result<Rendered, SessionError> {
        let mut r = self.render(look, false);
        if let Ok(res) = r.as_mut() {
            if let Some(note) = self.restore_note.lock().ok().and_then(|mut n| n.take()) {
                crate::output::append_note(res, &note);
            }
        }
        r
    }

    /// Runs `code` now, as the call's own cell (not a run): for the session's internal cells
    /// such as an install in a kernel that lives elsewhere, whose call waits for them.
    pub(crate) async fn run_now(
        &self,
        code: &str,
        journal_source: &str,
        timeout: Option<f64>,
        progress: Option<ProgressFn>,
        cancel: &CancellationToken,
    ) -> Result<Rendered, SessionError> {
        let (limits, note) = self.exec_limits(timeout, progress.is_some())?;
        let timeout = limits.timeout;
        let mut collector = self.collector();
        let mut recorder = Recorder::new(&mut collector, MAX_CELL_OUTPUT_BYTES);
        let mut sink = Progress::new(&mut recorder, progress);
        let result = self.kernel.execute(code, &limits, cancel, &mut sink).await;
        drop(sink);
        let outputs = recorder.into_outputs();
        let (exec, report) = result?;
        self.journal.cell(journal_source, &exec, outputs, &report);
        let mut res = collector.finish(Some(&exec), &report, timeout);
        if let Some(n) = note {
            crate::output::append_note(&mut res, &format!("[{n}]"));
        }
        self.update_live_journal().await;
        Ok(res)
    }

    /// What is new in run `run` (default: the latest), waiting up to `wait` for more output or
    /// its end. Its end is reported once.
    pub async fn check_run(
        &self,
        run: Option<u64>,
        wait: Duration,
    ) -> Result<Rendered, SessionError> {
        let look = self
            .runs
            .wait(
                run,
                Some(wait),
                true,
                &CancellationToken::new(),
                false,
                &|| self.collector(),
            )
            .await;
        self.render(look, true)
    }

    /// Queues `work` (not one cell: a notebook) as a run in arrival order, like [`Session::run`]:
    /// the result when it ends within `return_after`, else what is known so far and the note
    /// naming the run, which goes on (`check_run` follows it).
    pub async fn run_work(
        self: &Arc<Self>,
        call: RunCall<'_>,
        progress: Option<ProgressFn>,
        work: runs::Custom,
        cancel: &CancellationToken,
    ) -> Result<Rendered, SessionError> {
        self.run_queued(call, progress, Some(work), cancel).await
    }

    /// Executes queued runs one at a time until the queue is empty.
    async fn work(self: Arc<Self>) {
        while let Some((id, mut job, cancel)) = self.runs.next_job() {
            if self
                .restore_pending
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                if let Some(note) = self.restore_now().await {
                    if let Ok(mut n) = self.restore_note.lock() {
                        *n = Some(note);
                    }
                }
            }
            if let Some(custom) = job.custom.take() {
                let started = std::time::Instant::now();
                let result = custom(cancel, job.progress.take()).await;
                self.runs.finish(
                    id,
                    runs::RunEnd::Result {
                        result,
                        elapsed: started.elapsed(),
                    },
                );
                continue;
            }
            let mut keep = runs::RunSink {
                runs: self.runs.clone(),
                id,
            };
            let mut recorder = Recorder::new(&mut keep, MAX_CELL_OUTPUT_BYTES);
            let mut sink = Progress::new(&mut recorder, job.progress);
            let result = self
                .kernel
                .execute(&job.code, &job.limits, &cancel, &mut sink)
                .await;
            drop(sink);
            let outputs = recorder.into_outputs();
            match result {
                Ok((exec, report)) => {
                    self.journal
                        .cell(&job.journal_source, &exec, outputs, &report);
                    self.update_live_journal().await;
                    self.runs.finish(
                        id,
                        runs::RunEnd::Done {
                            exec: Box::new(exec),
                            report,
                            timeout: job.limits.timeout,
                            note: job.note,
                        },
                    );
                }
                Err(e) => self.runs.finish(id, runs::RunEnd::Failed(e.into())),
            }
        }
        // Idle now: a snapshot once the kernel has stayed idle for a moment.
        if self.persist.is_some() {
            let seen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SNAPSHOT_IDLE).await;
                if me.generation.load(std::sync::atomic::Ordering::SeqCst) == seen {
                    let _ = me.snapshot_now().await;
                }
            });
        }
    }

    /// A look at a run as a tool result.
    fn render(&self, look: runs::Look, checking: bool) -> Result<Rendered, SessionError> {
        match look {
            runs::Look::Going {
                outputs,
                fresh,
                note,
            } => {
                if !fresh {
                    return Ok(crate::output::text_result(&note, false));
                }
                let r = outputs.finish(None, &crate::kernel::Report::default(), Duration::ZERO);
                Ok(runs::with_note(r, &note))
            }
            runs::Look::Ended { id, outputs, end } => {
                let collector = *outputs;
                let result = match end {
                    runs::RunEnd::Done {
                        exec,
                        report,
                        timeout,
                        note,
                    } => {
                        let mut r = collector.finish(Some(&exec), &report, timeout);
                        if let Some(n) = note {
                            crate::output::append_note(&mut r, &format!("[{n}]"));
                        }
                        if checking {
                            let how = match &exec.ending {
                                crate::kernel::client::Ending::Completed
                                    if r.is_error == Some(true) =>
                                {
                                    "ended with an error"
                                }
                                crate::kernel::client::Ending::Completed => "finished",
                                crate::kernel::client::Ending::Interrupted { .. } => {
                                    "was interrupted"
                                }
                                crate::kernel::client::Ending::Unresponsive { .. } => {
                                    "did not stop and its kernel was restarted"
                                }
                                crate::kernel::client::Ending::Died { .. } => {
                                    "ended with its kernel's death"
                                }
                            };
                            crate::output::append_note(
                                &mut r,
                                &format!(
                                    "[the run {how} after {:.1} s]",
                                    exec.elapsed.as_secs_f64()
                                ),
                            );
                        }
                        Ok(r)
                    }
                    runs::RunEnd::Result {
                        mut result,
                        elapsed,
                    } => {
                        if checking {
                            let how = if result.is_error == Some(true) {
                                "ended with an error"
                            } else {
                                "finished"
                            };
                            crate::output::append_note(
                                &mut result,
                                &format!("[the run {how} after {:.1} s]", elapsed.as_secs_f64()),
                            );
                        }
                        Ok(result)
                    }
                    runs::RunEnd::Failed(e) => Err(e),
                    runs::RunEnd::Cancelled(why) => Ok(crate::output::text_result(
                        &format!("[the run never started: {why}]"),
                        true,
                    )),
                };
                if let Ok(r) = &result {
                    self.runs.keep_answer(id, r);
                }
                result
            }
            runs::Look::Reported {
                id,
                again: Some(answer),
                ..
            } => {
                let mut r = *answer;
                crate::output::append_note(
                    &mut r,
                    &format!("[run {id} had ended and this result was returned already (to the call that waited for it, or an earlier check_run); shown again]"),
                );
                Ok(r)
            }
            runs::Look::Reported { id, kept, .. } => Ok(crate::output::text_result(
                &if kept {
                    format!("[run {id} has ended and its result was returned already; nothing new. check_run {{\"run\": {id}}} shows that result again]")
                } else {
                    format!("[run {id} has ended and its result was returned already; nothing new]")
                },
                false,
            )),
            runs::Look::Unknown { id: Some(id) } => Err(Refusal::NoSuchRun {
                id,
                latest: self.runs.latest(),
            }
            .into()),
            runs::Look::Unknown { id: None } => Err(Refusal::NoRunYet.into()),
        }
    }
}
