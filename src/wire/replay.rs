//! Replay protection for messages from the kernel: a bounded history of the signatures seen,
//! as jupyter_client's `Session.digest_history` keeps. Pure bookkeeping; no sockets.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

/// How many signatures are remembered per connection (jupyter_client keeps 2^16 too). At 64 hex
/// bytes each this is about 8 MiB at most, with the set's overhead.
pub const DIGEST_HISTORY: usize = 1 << 16;

/// Signatures of the messages accepted so far, oldest forgotten first.
#[derive(Debug)]
pub struct DigestHistory {
    seen: HashSet<Bytes>,
    order: VecDeque<Bytes>,
    capacity: usize,
}

impl Default for DigestHistory {
    fn default() -> Self {
        Self::with_capacity(DIGEST_HISTORY)
    }
}

impl DigestHistory {
    /// A history remembering at most `capacity` signatures (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        DigestHistory {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `signature`; false when it was seen before, which makes the message a replay.
    /// Unsigned messages (empty signature) cannot be told apart and are always accepted.
    pub fn accept(&mut self, signature: &Bytes) -> bool {
        if signature.is_empty() {
            return true;
        }
        if self.seen.contains(signature) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        // A copy of its own: the signature is a slice of the buffer the whole message was
        // read into, and a kept slice keeps that buffer (megabytes per message) alive.
        let own = Bytes::copy_from_slice(signature);
        self.seen.insert(own.clone());
        self.order.push_back(own);
        true
    }

    /// How many signatures are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once() {
        let mut h = DigestHistory::default();
        let a = Bytes::from_static(b"aa");
        assert!(h.accept(&a));
        assert!(!h.accept(&a), "a replay was accepted");
        assert!(h.accept(&Bytes::from_static(b"bb")));
        assert!(!h.accept(&Bytes::from_static(b"aa")));
        // Unsigned messages carry no signature to compare.
        assert!(h.accept(&Bytes::new()));
        assert!(h.accept(&Bytes::new()));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn the_history_is_bounded_and_forgets_the_oldest() {
        let mut h = DigestHistory::with_capacity(3);
        let sig = |i: u32| Bytes::from(format!("sig-{i}"));
        for i in 0..1000 {
            assert!(h.accept(&sig(i)));
            assert!(h.len() <= 3);
        }
        assert_eq!(h.len(), 3);
        for i in 997..1000 {
            assert!(!h.accept(&sig(i)), "recent signature {i} forgotten");
        }
        // The oldest ones were forgotten to keep memory bounded.
        assert!(h.accept(&sig(0)));
        assert_eq!(h.len(), 3);
    }
}
