//! The order in which run requests arrived on stdio, so that runs execute in that order.
//!
//! rmcp starts a task per request; two `tools/call`s sent back to back can reach their handlers
//! in either order (measured: the second of a pair ran first in 2 of 5 tries). The stdin filter
//! sees every line in order: it numbers each `execute_python` / `run_file` request as it passes
//! it on, and a handler waits, before queueing its run, until every earlier-numbered request has
//! queued its own or been answered (bounded, so a request rmcp rejects before its handler
//! runs cannot hold the others up for long).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The tools whose calls become runs.
pub const RUN_TOOLS: &[&str] = &["execute_python", "run_file"];

/// Longest a handler waits for earlier requests to reach their handlers.
const MAX_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Book {
    next: u64,
    /// Arrived, not yet queued or answered: number → request key.
    pending: BTreeMap<u64, String>,
    by_key: HashMap<String, u64>,
}

static BOOK: Mutex<Option<Book>> = Mutex::new(None);
static CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn with<R>(f: impl FnOnce(&mut Book) -> R) -> R {
    let mut g = BOOK.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Book::default))
}

/// The canonical key of a request id (its compact JSON text), as the stdin filter keys it.
pub fn key(id: &serde_json::Value) -> String {
    id.to_string()
}

/// A run request with this key arrived (called by the stdin filter, in arrival order).
pub fn arrived(key: String) {
    with(|b| {
        b.next += 1;
        let n = b.next;
        if let Some(old) = b.by_key.insert(key.clone(), n) {
            b.pending.remove(&old);
        }
        b.pending.insert(n, key);
    });
}

/// The request with this key no longer holds later ones up (its run is queued, or it was
/// answered or cancelled).
pub fn done(key: &str) {
    let removed = with(|b| match b.by_key.remove(key) {
        Some(n) => b.pending.remove(&n).is_some(),
        None => false,
    });
    if removed {
        CHANGED.notify_waiters();
    }
}

/// Waits until every run request that arrived before the one with `key` has been queued or
/// answered (at most [`MAX_WAIT`]). Requests that did not come through the filter (HTTP) pass
/// at once.
pub async fn wait_turn(key: &str) {
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    loop {
        let notified = CHANGED.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let earlier = with(|b| match b.by_key.get(key) {
            Some(n) => b.pending.range(..*n).next().is_some(),
            None => false,
        });
        if !earlier {
            return;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}
