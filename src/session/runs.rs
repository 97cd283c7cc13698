//! Runs: cells that outlive the tool call that started them.
//!
//! Clients cut a tool call after about a minute (Claude Desktop ~60 s, Codex 60 s), while an
//! analysis cell may need many. Every `execute_python` / `run_file` call becomes a *run*,
//! queued in the order the calls arrived and executed one at a time by the session's worker
//! task. The call waits for its run up to `return_after`; a run still going then is left to
//! finish in the background and the call returns what it has produced so far, with a note
//! naming the run. `check_run` collects the rest: output not yet shown, then the ending, once.
//!
//! Output goes into a `Collector` as it arrives (the same budget and spill rules as any result,
//! so memory stays bounded however much the kernel prints); a look takes that collector to
//! render and leaves a fresh one for what follows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::error::SessionError;
use crate::kernel::client::{ExecLimits, Execution, OutputSink};
use crate::kernel::Report;
use crate::output::{append_note, Collector, ProgressFn, Rendered};
use crate::wire::Content;

/// Most runs remembered (finished and reported ones are forgotten first).
const KEEP_RUNS: usize = 64;

/// Most final answers kept to be shown again (the newest runs'), and the most bytes they may
/// hold together (per session: a server over HTTP holds many sessions). A result is bounded
/// by the output budget, images included; one larger than the whole budget is not kept.
const KEEP_ANSWERS: usize = 4;
const KEPT_ANSWER_BYTES: usize = 4 << 20;

/// About how many bytes `r` holds (its texts and images; other blocks are small).
fn answer_bytes(r: &Rendered) -> usize {
    r.content
        .iter()
        .map(|c| match c {
            rmcp::model::ContentBlock::Text(t) => t.text.len(),
            rmcp::model::ContentBlock::Image(i) => i.data.len(),
            _ => 1024,
        })
        .sum::<usize>()
        .saturating_add(r.structured_content.as_ref().map_or(0, |_| 4096))
}

/// How a run ended (handed to the renderer once).
pub enum RunEnd {
    Done {
        exec: Box<Execution>,
        report: Report,
        timeout: Duration,
        note: Option<String>,
    },
    Failed(SessionError),
    /// Never started: interrupt_kernel or restart_kernel came first.
    Cancelled(String),
    /// A run that is not a cell (an install that outlived its call): its finished result.
    Result {
        result: crate::output::Rendered,
        elapsed: Duration,
    },
}

struct Run {
    /// When it was queued (for the note).
    queued_at: Instant,
    started: Option<(Instant, SystemTime)>,
    /// Outputs not shown yet, already within the budget.
    pending: Collector,
    /// Something arrived since the last look.
    has_output: bool,
    end: Option<RunEnd>,
    /// The end was shown.
    reported: bool,
    /// The answer that showed the end, kept to be shown again (a client whose connection
    /// dropped as it came never saw it); see [`Runs::keep_answer`].
    answer: Option<(Rendered, usize)>,
    /// Interrupts this run's execution (the call's own cancellation, before it returned).
    cancel: CancellationToken,
    /// Progress goes to the call while it waits, not after it returned.
    progress_open: Arc<std::sync::atomic::AtomicBool>,
    job: Option<Job>,
    /// What is running when it is not a cell ("installing"), for the note.
    doing: Option<&'static str>,
    /// The latest line the run printed (a task's status message).
    last_line: String,
}

/// What a queued run will execute.
pub(super) struct Job {
    pub(super) code: String,
    pub(super) journal_source: String,
    pub(super) limits: ExecLimits,
    pub(super) note: Option<String>,
    pub(super) progress: Option<ProgressFn>,
    /// Work that is not one cell (a notebook), run in the queue's turn instead of `code`.
    pub(super) custom: Option<Custom>,
}

/// Queued work that is not one cell (a notebook's cells, one after another): given the run's
/// cancellation and its progress (which stops when the waiting call returns), it resolves to
/// the run's result.
pub type Custom = Box<
    dyn FnOnce(
            CancellationToken,
            Option<ProgressFn>,
        ) -> futures::future::BoxFuture<'static, crate::output::Rendered>
        + Send,
>;

#[derive(Default)]
struct State {
    runs: BTreeMap<u64, Run>,
    queue: VecDeque<u64>,
    running: Option<u64>,
    next: u64,
    worker: bool,
}

impl State {
    /// Forgets the oldest reported runs past [`KEEP_RUNS`].
    fn forget_reported(&mut self) {
        while self.runs.len() > KEEP_RUNS {
            let Some(old) = self.runs.iter().find(|(_, r)| r.reported).map(|(k, _)| *k) else {
                break;
            };
            self.runs.remove(&old);
        }
    }
}

/// The session's runs.
#[derive(Default)]
pub struct Runs {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

/// What a look at a run found.
pub enum Look {
    /// Still going (or queued): what is new, and the note to end the result with.
    Going {
        outputs: Box<Collector>,
        /// Whether anything arrived since the last look.
        fresh: bool,
        note: String,
    },
    /// Ended just now: the outputs since the last look and the ending.
    Ended {
        id: u64,
        outputs: Box<Collector>,
        end: RunEnd,
    },
    /// Its end was shown before; `again` is the answer that showed it, when the look named
    /// the run and the answer is still kept.
    Reported {
        id: u64,
        again: Option<Box<Rendered>>,
        /// The answer is kept (for a look that did not name the run, which gets none).
        kept: bool,
    },
    Unknown {
        id: Option<u64>,
    },
}

/// The clock time of `t` as HH:MM:SS UTC.
fn clock(t: SystemTime) -> String {
    let s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60)
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a run; returns its id and whether a worker must be started.
    pub(super) fn submit(
        &self,
        job: Job,
        max_queue: usize,
        collector: Collector,
    ) -> Result<(u64, bool), SessionError> {
        let Job {
            code,
            journal_source,
            limits,
            note,
            progress,
            custom,
        } = job;
        let mut st = self.lock();
        // At most --max-queue wait behind the running one.
        let waiting = st.queue.len();
        if waiting + usize::from(st.running.is_some()) > max_queue {
            return Err(crate::error::KernelError::Busy { waiting }.into());
        }
        st.next += 1;
        let id = st.next;
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let progress = crate::output::gated_progress(progress, &open);
        st.runs.insert(
            id,
            Run {
                queued_at: Instant::now(),
                started: None,
                pending: collector,
                has_output: false,
                end: None,
                reported: false,
                answer: None,
                cancel: CancellationToken::new(),
                progress_open: open,
                job: Some(Job {
                    code,
                    journal_source,
                    limits,
                    note,
                    progress,
                    custom,
                }),
                doing: None,
                last_line: String::new(),
            },
        );
        st.queue.push_back(id);
        st.forget_reported();
        let start_worker = !st.worker;
        st.worker = true;
        drop(st);
        self.changed.notify_waiters();
        Ok((id, start_worker))
    }

    /// Registers work that already runs outside the kernel's queue (an install that outlived
    /// its call) as a run, so check_run can follow it; its end comes through [`Runs::finish`].
    pub(super) fn adopt(&self, doing: &'static str, started: Instant, collector: Collector) -> u64 {
        let mut st = self.lock();
        st.next += 1;
        let id = st.next;
        let wall = SystemTime::now()
            .checked_sub(started.elapsed())
            .unwrap_or_else(SystemTime::now);
        st.runs.insert(
            id,
            Run {
                queued_at: started,
                started: Some((started, wall)),
                pending: collector,
                has_output: false,
                end: None,
                reported: false,
                answer: None,
                cancel: CancellationToken::new(),
                progress_open: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                job: None,
                doing: Some(doing),
                last_line: String::new(),
            },
        );
        st.forget_reported();
        drop(st);
        self.changed.notify_waiters();
        id
    }

    /// The next queued run to execute, marked running; `None` ends the worker.
    pub(super) fn next_job(&self) -> Option<(u64, Job, CancellationToken)> {
        let mut st = self.lock();
        while let Some(id) = st.queue.pop_front() {
            let Some(run) = st.runs.get_mut(&id) else {
                continue;
            };
            let Some(job) = run.job.take() else { continue };
            run.started = Some((Instant::now(), SystemTime::now()));
            let cancel = run.cancel.clone();
            st.running = Some(id);
            drop(st);
            self.changed.notify_waiters();
            return Some((id, job, cancel));
        }
        st.worker = false;
        None
    }

    fn output(&self, id: u64, c: &Content) {
        if let Some(r) = self.lock().runs.get_mut(&id) {
            r.pending.output(c);
            r.has_output = true;
            if let Content::Stream(s) = c {
                if let Some(line) = s.text.lines().rev().find(|l| !l.trim().is_empty()) {
                    r.last_line = crate::text::sanitize(line).chars().take(200).collect();
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Whether run `id` has ended (its end may not have been looked at yet); `None` for a run
    /// this session does not know.
    pub fn ended(&self, id: u64) -> Option<bool> {
        self.lock()
            .runs
            .get(&id)
            .map(|r| r.end.is_some() || r.reported)
    }

    /// A run still going: how long since it started (or was queued) and its latest line.
    pub fn status(&self, id: u64) -> Option<(Duration, bool, String)> {
        self.lock().runs.get(&id).map(|r| {
            let (since, started) = match r.started {
                Some((at, _)) => (at.elapsed(), true),
                None => (r.queued_at.elapsed(), false),
            };
            (since, started, r.last_line.clone())
        })
    }

    /// Waits up to `wait` (`None`: no limit) for run `id` to end, without taking its output;
    /// true when it has. `cancel` (the waiting call's) interrupts the run.
    pub async fn wait_end(
        &self,
        id: u64,
        wait: Option<Duration>,
        cancel: &CancellationToken,
    ) -> bool {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ended(id).unwrap_or(true) {
                return true;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep => return self.ended(id).unwrap_or(true),
                _ = cancel.cancelled() => {
                    self.cancel_run(Some(id));
                    return self.ended(id).unwrap_or(true);
                }
            }
        }
    }

    pub(super) fn finish(&self, id: u64, end: RunEnd) {
        let mut st = self.lock();
        if let Some(r) = st.runs.get_mut(&id) {
            r.end = Some(end);
        }
        if st.running == Some(id) {
            st.running = None;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Cancels every queued run (interrupt_kernel, restart_kernel); says how many.
    pub fn cancel_queued(&self, why: &str) -> usize {
        let mut st = self.lock();
        let queued: Vec<u64> = st.queue.drain(..).collect();
        for id in &queued {
            if let Some(r) = st.runs.get_mut(id) {
                r.job = None;
                r.end = Some(RunEnd::Cancelled(why.to_owned()));
            }
        }
        drop(st);
        self.changed.notify_waiters();
        queued.len()
    }

    /// Keeps `answer`, the one that showed run `id`'s end, to be shown again when the run is
    /// looked at by its number (the answer may never have reached the client: its connection
    /// dropped, or the call was cut off as the answer went out). Only the newest
    /// [`KEEP_ANSWERS`] runs' answers are kept, within [`KEPT_ANSWER_BYTES`] together.
    pub fn keep_answer(&self, id: u64, answer: &Rendered) {
        let bytes = answer_bytes(answer);
        if bytes > KEPT_ANSWER_BYTES {
            return;
        }
        let mut st = self.lock();
        let Some(run) = st.runs.get_mut(&id) else {
            return;
        };
        run.answer = Some((answer.clone(), bytes));
        // Newest first: keep while within count and bytes, drop the rest.
        let (mut count, mut total) = (0usize, 0usize);
        for r in st.runs.values_mut().rev() {
            let Some((_, b)) = &r.answer else { continue };
            if count < KEEP_ANSWERS && total.saturating_add(*b) <= KEPT_ANSWER_BYTES {
                count += 1;
                total = total.saturating_add(*b);
            } else {
                r.answer = None;
            }
        }
    }

    /// The id of the latest run.
    pub fn latest(&self) -> Option<u64> {
        self.lock().runs.keys().next_back().copied()
    }

    /// `look` at run `id` now (a task's end, once).
    pub(super) fn look_now(&self, id: u64, new_collector: &dyn Fn() -> Collector) -> Look {
        self.look(Some(id), new_collector)
    }

    /// Takes what is new in run `id` (and its end, once).
    fn look(&self, id: Option<u64>, new_collector: &dyn Fn() -> Collector) -> Look {
        let mut st = self.lock();
        let named = id.is_some();
        let Some(id) = id.or_else(|| st.runs.keys().next_back().copied()) else {
            return Look::Unknown { id: None };
        };
        let running = st.running;
        let Some(run) = st.runs.get_mut(&id) else {
            return Look::Unknown { id: Some(id) };
        };
        let fresh = run.has_output;
        run.has_output = false;
        let mut next = new_collector();
        next.carry_displays(&run.pending);
        let outputs = Box::new(std::mem::replace(&mut run.pending, next));
        if let Some(end) = run.end.take() {
            run.reported = true;
            return Look::Ended { id, outputs, end };
        }
        if run.reported {
            return Look::Reported {
                id,
                again: named
                    .then(|| run.answer.as_ref().map(|(a, _)| Box::new(a.clone())))
                    .flatten(),
                kept: run.answer.is_some(),
            };
        }
        let note = match (run.started, run.doing) {
            (Some((at, wall)), Some(doing)) => format!(
                "[still {doing} as run {id} (started {}, {:.0} s ago); it goes on without this call. Call check_run {{\"run\": {id}}} for its result.]",
                clock(wall),
                at.elapsed().as_secs_f64()
            ),
            (Some((at, wall)), None) => format!(
                "[still running as run {id} (started {}, {:.0} s ago); the kernel keeps working and keeps its state. Call check_run {{\"run\": {id}}} for the rest of its output and its result; interrupt_kernel stops it.]",
                clock(wall),
                at.elapsed().as_secs_f64()
            ),
            (None, _) => {
                let ahead = running
                    .map(|r| format!("behind run {r}"))
                    .unwrap_or_else(|| "behind earlier calls".to_owned());
                format!(
                    "[queued {ahead} for {:.0} s: this call is run {id} and starts when the kernel is free, with its state. Call check_run {{\"run\": {id}}} to follow it; interrupt_kernel stops the running code and cancels queued runs.]",
                    run.queued_at.elapsed().as_secs_f64()
                )
            }
        };
        Look::Going {
            outputs,
            fresh,
            note,
        }
    }

    /// Waits for run `id` to end, up to `wait` (`None`: until it ends). With `on_output`,
    /// also returns soon after new output appears (`check_run`). `cancel` (the call's own
    /// cancellation) interrupts the run.
    pub async fn wait(
        &self,
        id: Option<u64>,
        wait: Option<Duration>,
        on_output: bool,
        cancel: &CancellationToken,
        detach: bool,
        new_collector: &(dyn Fn() -> Collector + Sync),
    ) -> Look {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut output_seen: Option<Instant> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (ended, has_output) = {
                let st = self.lock();
                let key = id.or_else(|| st.runs.keys().next_back().copied());
                match key.and_then(|k| st.runs.get(&k)) {
                    Some(r) => (r.end.is_some() || r.reported, r.has_output),
                    None => (true, false),
                }
            };
            if ended {
                break;
            }
            if on_output && has_output {
                // Gather what follows closely, then return it.
                let seen = *output_seen.get_or_insert_with(Instant::now);
                if seen.elapsed() >= Duration::from_secs(2) {
                    break;
                }
            }
            let mut until = deadline;
            if let Some(seen) = output_seen {
                let batch = seen + Duration::from_secs(2);
                until = Some(until.map_or(batch, |d| d.min(batch)));
            }
            let sleep = async {
                match until {
                    Some(u) => tokio::time::sleep_until(u.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep => {
                    if deadline.is_some_and(|d| Instant::now() >= d) || output_seen.is_some() {
                        break;
                    }
                }
                _ = cancel.cancelled() => {
                    self.cancel_run(id);
                    // Wait for the interrupted run to end (bounded by its own grace).
                    return Box::pin(self.wait(
                        id,
                        None,
                        false,
                        &CancellationToken::new(),
                        detach,
                        new_collector,
                    ))
                    .await;
                }
            }
        }
        let look = self.look(id, new_collector);
        if detach && matches!(look, Look::Going { .. }) {
            if let Some(r) =
                id.and_then(|i| self.lock().runs.get(&i).map(|r| r.progress_open.clone()))
            {
                r.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
        look
    }

    /// Interrupts run `id` if it runs, or drops it from the queue.
    /// Cancels run `id` (the latest when `None`): a queued one never starts, a running one is
    /// interrupted.
    pub fn cancel_run(&self, id: Option<u64>) {
        let mut st = self.lock();
        let Some(id) = id.or_else(|| st.runs.keys().next_back().copied()) else {
            return;
        };
        st.queue.retain(|q| *q != id);
        if let Some(r) = st.runs.get_mut(&id) {
            if r.job.take().is_some() {
                r.end = Some(RunEnd::Cancelled(
                    "the call was cancelled before it started".into(),
                ));
            } else {
                r.cancel.cancel();
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// The sink a run's execution writes to: every output is kept until someone looks.
pub(super) struct RunSink {
    pub runs: Arc<Runs>,
    pub id: u64,
}

impl OutputSink for RunSink {
    fn output(&mut self, content: &Content) {
        self.runs.output(self.id, content);
    }
}

/// Ends a result that is still going with its note.
pub fn with_note(mut r: Rendered, note: &str) -> Rendered {
    append_note(&mut r, note);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector() -> Collector {
        Collector::new(crate::output::OutputLimits::default(), None)
    }

    /// A run adopted, ended with `text` and looked at once (as the call that waited for it
    /// does): its id.
    fn shown(runs: &Runs, text: &str) -> u64 {
        let id = runs.adopt("testing", Instant::now(), collector());
        let result = crate::output::text_result(text, false);
        runs.finish(
            id,
            RunEnd::Result {
                result: result.clone(),
                elapsed: Duration::ZERO,
            },
        );
        assert!(matches!(
            runs.look(Some(id), &collector),
            Look::Ended { .. }
        ));
        runs.keep_answer(id, &result);
        id
    }

    fn again(runs: &Runs, id: Option<u64>) -> Option<String> {
        match runs.look(id, &collector) {
            Look::Reported { again, .. } => again.map(|r| {
                r.content
                    .iter()
                    .filter_map(|c| match c {
                        rmcp::model::ContentBlock::Text(t) => Some(t.text.clone()),
                        _ => None,
                    })
                    .collect()
            }),
            _ => panic!("not reported"),
        }
    }

    #[test]
    fn the_newest_answers_are_shown_again_by_number_only() {
        let runs = Runs::default();
        let ids: Vec<u64> = (0..6)
            .map(|i| shown(&runs, &format!("answer {i}")))
            .collect();
        // Asked by number: the newest KEEP_ANSWERS runs' answers, as they were.
        for (i, id) in ids.iter().enumerate() {
            let got = again(&runs, Some(*id));
            if i >= ids.len() - KEEP_ANSWERS {
                assert_eq!(got.as_deref(), Some(format!("answer {i}").as_str()));
            } else {
                assert_eq!(got, None, "run {id} kept past the bound");
            }
        }
        // The latest, not named: nothing new (said once is enough), but the answer is kept.
        assert!(matches!(
            runs.look(None, &collector),
            Look::Reported {
                again: None,
                kept: true,
                ..
            }
        ));
        // An answer past the size bound is not kept; answers that together pass it push the
        // older ones out.
        let big = shown(&runs, &"x".repeat(KEPT_ANSWER_BYTES + 1));
        assert_eq!(again(&runs, Some(big)), None);
        let a = shown(&runs, &"a".repeat(KEPT_ANSWER_BYTES / 2));
        let b = shown(&runs, &"b".repeat(KEPT_ANSWER_BYTES / 2));
        assert!(again(&runs, Some(a)).is_some() && again(&runs, Some(b)).is_some());
        let c = shown(&runs, "c");
        assert!(again(&runs, Some(c)).is_some() && again(&runs, Some(b)).is_some());
        assert_eq!(again(&runs, Some(a)), None, "over the bytes kept together");
    }
}
