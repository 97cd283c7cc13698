//! MCP tasks (protocol 2025-11-25) over the session's runs: a task id names a run, scoped to
//! its HTTP session; a run's view becomes the task's status.

use super::*;

/// The MCP task id of run `id`.
///
/// Over HTTP the task id also names the session (`run-4@<session>`): `tasks/get` carries no
/// session argument, so the front finds the session by it (see [`task_session`]).
fn task_id(id: u64, scope: Option<&str>) -> String {
    match scope {
        None => format!("run-{id}"),
        Some(s) => format!("run-{id}@{s}"),
    }
}

/// The run a task id names, if it belongs to the session `scope` (`None`: stdio).
pub(super) fn run_of_task(task: &str, scope: Option<&str>) -> Option<u64> {
    let (run, owner) = match task.split_once('@') {
        Some((run, owner)) => (run, Some(owner)),
        None => (task, None),
    };
    if owner != scope {
        return None;
    }
    run.strip_prefix("run-")?.parse().ok()
}

/// The HTTP session a task id names (see [`task_id`]).
pub fn task_session(task: &str) -> Option<&str> {
    task.split_once('@').map(|(_, s)| s)
}

/// A task's base fields as a run looks now.
pub(super) fn task_of(id: u64, scope: Option<&str>, view: &TaskView) -> rmcp::model::Task {
    use rmcp::model::{Task, TaskStatus};
    let now = chrono::Utc::now();
    let (status, message, since) = match view {
        TaskView::Working {
            since,
            started,
            line,
        } => {
            let what = if *started { "running" } else { "queued" };
            let msg = if line.is_empty() {
                format!("{what} for {:.0} s", since.as_secs_f64())
            } else {
                format!("{what} for {:.0} s: {line}", since.as_secs_f64())
            };
            (TaskStatus::Working, Some(msg), *since)
        }
        TaskView::Completed(_) => (TaskStatus::Completed, None, Duration::ZERO),
        TaskView::Failed(why) => (TaskStatus::Failed, Some(why.clone()), Duration::ZERO),
        TaskView::Cancelled => (TaskStatus::Cancelled, None, Duration::ZERO),
        TaskView::Unknown => (
            TaskStatus::Failed,
            Some("unknown run".into()),
            Duration::ZERO,
        ),
    };
    let created = chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(now);
    let mut task = Task::new(
        task_id(id, scope),
        status,
        created.to_rfc3339(),
        now.to_rfc3339(),
    )
    .with_poll_interval_ms(1000);
    if let Some(m) = message {
        task = task.with_status_message(m);
    }
    task
}
