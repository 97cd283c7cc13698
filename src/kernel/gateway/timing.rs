//! When a gateway kernel's WebSocket counts as dead and how it is reconnected: the time a send
//! may take, the keep-alive's Ping and Pong waits, and the backoff schedule of reconnects.
//! Pure policy, no sockets: `channels.rs` follows it.

use std::time::Duration;

/// How long a send may take before the gateway counts as no longer reading, and how dropped
/// sockets are reconnected; [`WsTiming::DEFAULT`] outside tests.
#[derive(Debug, Clone, Copy)]
pub(super) struct WsTiming {
    /// Time every send gets, however small: a gateway that stops reading the socket would
    /// otherwise leave the send (and the sink's lock every other send and the reconnect
    /// need) pending for good, hanging the kernel handle.
    pub(super) send_grace: Duration,
    /// Bytes per second a big message is allowed on top of the grace: a 48 MiB cell over a
    /// slow tunnel is a slow reader, not a gone one.
    pub(super) min_send_rate: u64,
    /// When to reconnect a dropped socket, and when to give up.
    pub(super) backoff: Backoff,
    /// After this long without a message from the gateway the reader sends a Ping (RFC 6455
    /// section 5.5.2: the gateway must answer with a Pong)...
    pub(super) ping_after: Duration,
    /// ...and after this much longer still without anything, the connection counts as dead
    /// (a gateway host that vanished, a NAT that forgot the flow: TCP alone would wait for
    /// hours) and is reconnected on the [`Backoff`] schedule.
    pub(super) pong_wait: Duration,
}

impl WsTiming {
    pub(super) const DEFAULT: WsTiming = WsTiming {
        send_grace: Duration::from_secs(30),
        min_send_rate: 256 << 10,
        backoff: Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
            stable: Duration::from_secs(30),
            quick: Duration::from_secs(5),
            max_quick: 5,
        },
        ping_after: Duration::from_secs(30),
        pong_wait: Duration::from_secs(30),
    };

    /// How long sending a message of `bytes` may take.
    pub(super) fn send_limit(&self, bytes: usize) -> Duration {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let extra = Duration::from_secs(bytes / self.min_send_rate.max(1));
        self.send_grace.saturating_add(extra)
    }
}

/// The reconnect schedule of a kernel WebSocket: a gateway that accepts the handshake and
/// closes at once must not get a tight connect loop (and a warning a pass), and one that keeps
/// doing it has lost the kernel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    /// Wait before the second reconnect in a row (the first goes at once), doubled on each
    /// further one...
    pub(super) first: Duration,
    /// ...up to this.
    pub(super) max: Duration,
    /// A connection that lived this long worked: the schedule starts over.
    pub(super) stable: Duration,
    /// A connection that died sooner than this counts as a quick failure...
    pub(super) quick: Duration,
    /// ...and this many of them with no stable connection between give up.
    pub(super) max_quick: u32,
}

/// Where a kernel WebSocket is in its [`Backoff`] schedule.
#[derive(Debug)]
pub(super) struct Reconnects {
    policy: Backoff,
    next: Duration,
    quick: u32,
    /// The next reconnect goes at once: the first drop after a stable connection (a send
    /// meanwhile finds the old socket gone and loses the kernel, so a wait costs state).
    at_once: bool,
}

impl Reconnects {
    pub(super) fn new(policy: Backoff) -> Reconnects {
        Reconnects {
            policy,
            next: policy.first,
            quick: 0,
            at_once: true,
        }
    }

    /// The wait before reconnecting after a connection that lived `lived` dropped, or `None`
    /// to give up.
    pub(super) fn after_drop(&mut self, lived: Duration) -> Option<Duration> {
        if lived >= self.policy.stable {
            self.next = self.policy.first;
            self.quick = 0;
            self.at_once = true;
        }
        if lived < self.policy.quick {
            self.quick = self.quick.saturating_add(1);
            if self.quick >= self.policy.max_quick {
                return None;
            }
        }
        if std::mem::take(&mut self.at_once) {
            return Some(Duration::ZERO);
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.policy.max);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_start_over_after_a_stable_connection_and_give_up_on_quick_deaths() {
        let policy = WsTiming::DEFAULT.backoff;
        let ms = Duration::from_millis;
        let quick = ms(100);
        let medium = Duration::from_secs(10);
        let stable = Duration::from_secs(60);
        let mut r = Reconnects::new(policy);
        // At once, then doubling from 0.5 s, capped at 10 s; medium-lived connections do not
        // count as quick.
        let waits: Vec<_> = (0..8).map(|_| r.after_drop(medium)).collect();
        let want = [0, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
        assert_eq!(waits, want.map(|w| Some(ms(w))).to_vec());
        // A stable connection starts the schedule over.
        assert_eq!(r.after_drop(stable), Some(ms(0)));
        assert_eq!(r.after_drop(medium), Some(ms(500)));
        // Five quick deaths in a row give up...
        let mut r = Reconnects::new(policy);
        let waits: Vec<_> = (0..5).map(|_| r.after_drop(quick)).collect();
        assert_eq!(
            waits,
            vec![
                Some(ms(0)),
                Some(ms(500)),
                Some(ms(1000)),
                Some(ms(2000)),
                None
            ]
        );
        // ...unless a stable connection came between them.
        let mut r = Reconnects::new(policy);
        for _ in 0..4 {
            assert!(r.after_drop(quick).is_some());
        }
        assert_eq!(r.after_drop(stable), Some(ms(0)));
        for _ in 0..4 {
            assert!(r.after_drop(quick).is_some());
        }
        assert_eq!(r.after_drop(quick), None);
    }

    #[test]
    fn a_big_message_gets_time_for_a_slow_link() {
        let t = WsTiming::DEFAULT;
        assert_eq!(t.send_limit(0), Duration::from_secs(30));
        assert_eq!(t.send_limit(1 << 20), Duration::from_secs(34));
        assert_eq!(t.send_limit(48 << 20), Duration::from_secs(30 + 192));
        assert!(t.send_limit(usize::MAX) > Duration::from_secs(30));
    }
}
