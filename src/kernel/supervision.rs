//! Supervision of the handle's kernel slot: what it holds, the deaths it remembers, and the
//! crash-loop back-off (pure logic; `KernelHandle` acts on it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Kernel;
use crate::error::{CrashLoop, Unavailable};

/// A kernel that dies this soon after starting counts towards the crash-loop back-off.
pub(super) const EARLY_DEATH: Duration = Duration::from_secs(10);
/// Longest wait between start attempts of a crash-looping kernel.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Deaths further back than this do not count towards a crash loop.
pub(super) const CRASH_WINDOW: Duration = Duration::from_secs(300);
/// Deaths within [`CRASH_WINDOW`] that make a crash loop.
pub(super) const CRASH_LOOP: usize = 3;
/// Deaths remembered.
pub(super) const MAX_DEATHS: usize = 16;

#[derive(Default)]
pub(super) struct Slot {
    pub(super) kernel: Option<Arc<Kernel>>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) last_error: String,
    /// Reconnects of the slot's kernel already reported to a call.
    pub(super) reconnects_seen: u32,
    /// Dropped messages of the slot's kernel already reported to a call.
    pub(super) dropped_seen: u64,
    /// Set when a kernel we do not own went away: calls report it until restart_kernel
    /// reattaches (it is never restarted behind its owner's back).
    pub(super) detached: Option<Unavailable>,
    /// Recent failed starts and early deaths, oldest first: when, and why.
    pub(super) deaths: VecDeque<(Instant, String)>,
}

impl Slot {
    /// Records a failed start or an early death.
    pub(super) fn died(&mut self, cause: &str) {
        if self.deaths.len() >= MAX_DEATHS {
            self.deaths.pop_front();
        }
        self.deaths.push_back((Instant::now(), cause.to_owned()));
    }

    /// How many deaths fell in the crash window, and how long ago the first of them was.
    pub(super) fn recent_deaths(&self) -> (usize, Duration) {
        let now = Instant::now();
        let recent: Vec<&Instant> = self
            .deaths
            .iter()
            .map(|(t, _)| t)
            .filter(|t| now.saturating_duration_since(**t) <= CRASH_WINDOW)
            .collect();
        let span = recent
            .first()
            .map(|t| now.saturating_duration_since(**t))
            .unwrap_or_default();
        (recent.len(), span)
    }

    /// Schedules the next start attempt after a back-off that grows with the failures.
    pub(super) fn back_off(&mut self) -> Duration {
        let backoff = Duration::from_secs(1u64 << self.failures.min(5)).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + backoff);
        backoff
    }

    /// A sentence about a crash loop, or `None` when the kernel is not in one.
    pub(super) fn crash_loop(&self) -> Option<CrashLoop> {
        let (n, span) = self.recent_deaths();
        if n < CRASH_LOOP {
            return None;
        }
        let last = self
            .deaths
            .back()
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let next = self.retry_at.map(|at| {
            let wait = at.saturating_duration_since(Instant::now());
            let when = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            (
                wait.as_secs_f64().ceil() as u64,
                when.format("%H:%M:%S").to_string(),
            )
        });
        Some(CrashLoop {
            deaths: n,
            span_secs: span.as_secs_f64().ceil().max(1.0) as u64,
            last,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_recent_deaths_make_a_crash_loop_report() {
        let mut slot = Slot::default();
        slot.died("exit code 1");
        slot.died("exit code 2");
        assert_eq!(slot.crash_loop(), None);
        slot.died("killed by signal 9 (SIGKILL)");
        slot.failures = 3;
        let wait = slot.back_off();
        assert_eq!(wait, Duration::from_secs(8));
        let report = slot.crash_loop().map(|l| l.to_string()).unwrap_or_default();
        assert!(
            report.starts_with("the kernel is crash-looping: it failed or died 3 times in the last 1 s (last cause: killed by signal 9 (SIGKILL)); the next start attempt is in 8 s (at "),
            "{report}"
        );
        assert!(report.ends_with(" UTC)"), "{report}");
    }

    #[test]
    fn old_deaths_do_not_count_and_history_is_bounded() {
        let mut slot = Slot::default();
        let long_ago = Instant::now()
            .checked_sub(CRASH_WINDOW + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        for _ in 0..3 {
            slot.deaths.push_back((long_ago, "old".into()));
        }
        assert_eq!(slot.recent_deaths().0, 0);
        assert_eq!(slot.crash_loop(), None);
        for i in 0..100 {
            slot.died(&format!("death {i}"));
        }
        assert_eq!(slot.deaths.len(), MAX_DEATHS);
        let report = slot.crash_loop().map(|l| l.to_string()).unwrap_or_default();
        assert!(
            report.contains("16 times") && report.contains("(last cause: death 99)"),
            "{report}"
        );
        assert!(
            report.ends_with("the next call starts it again"),
            "{report}"
        );
    }
}
