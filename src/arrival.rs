//! The order in which run requests arrived, so that runs execute in that order.
//!
//! rmcp starts a task per request; two `tools/call`s sent back to back can reach their handlers
//! in either order (measured: the second of a pair ran first in 2 of 5 tries, on stdio and over
//! HTTP). What sees every request in order numbers each `execute_python` / `run_file` request
//! as it passes it on: the stdin filter on stdio, the HTTP front once it has read a POST's body
//! (keys scoped by session, see [`scoped_key`]). A handler waits, before queueing its run, until
//! every earlier-numbered request of its scope has queued its own or been answered (bounded,
//! so a request rmcp rejects before its handler runs cannot hold the others up for long).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The tools whose calls become runs.
pub const RUN_TOOLS: &[&str] = &["execute_python", "run_file", "run_notebook"];

/// Longest a handler waits for earlier requests to reach their handlers. Every request is
/// released when it is queued, answered (the stdout filter, or the end of its HTTP response)
/// or cancelled, so this bound only matters if one is lost; it is generous because a busy
/// machine can take seconds to start a handler (measured: the second of a pair overtook the
/// first under a 2 s bound while the whole test suite ran on 2 cores).
const MAX_WAIT: Duration = Duration::from_secs(10);

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

/// The id as rmcp reads it and so echoes it in its answer: a string, or an integer that fits
/// an i64 (a float with an exact integer value, `1.0` or `1e2`, becomes that integer). `None`
/// for an id rmcp refuses (`1.5`, `1e30`, a number past i64, `null`, `true`, an object or an
/// array): rmcp answers such a request with `"id":null`, so nothing keyed by the id as sent
/// would ever be released. rmcp's own `RequestId` decides, so the two cannot disagree.
pub fn request_id(id: &serde_json::Value) -> Option<serde_json::Value> {
    // Only a number or a string can pass; others are refused before anything is copied.
    if !(id.is_number() || id.is_string()) {
        return None;
    }
    <rmcp::model::RequestId as serde::Deserialize>::deserialize(id)
        .ok()
        .map(rmcp::model::RequestId::into_json_value)
}

/// The key of a request id (the compact JSON text of the id as rmcp echoes it, see
/// [`request_id`]), as the stdin filter, the HTTP front and the handlers all key it: `1.0`
/// and `1` are one request to rmcp, so they must be one key here, or the entry made on
/// arrival is never found again when the request is queued or answered. An id rmcp refuses
/// keeps its own text (no such request reaches a handler).
pub fn key(id: &serde_json::Value) -> String {
    match request_id(id) {
        Some(v) => v.to_string(),
        None => id.to_string(),
    }
}

/// The key of request `id` in the session `scope` (an HTTP session's id; `None` on stdio,
/// where it is [`key`]). Earlier requests of other scopes never hold a request up.
pub fn scoped_key(scope: Option<&str>, id: &serde_json::Value) -> String {
    match scope {
        None => key(id),
        // The unit separator cannot occur in a session id (ASCII letters, digits, `-`).
        Some(s) => format!("{s}\u{1f}{}", key(id)),
    }
}

/// The scope part of a key made by [`scoped_key`].
fn scope_of(key: &str) -> &str {
    key.split_once('\u{1f}').map_or("", |(s, _)| s)
}

/// A run request with this key arrived (called by the stdin filter, in arrival order).
/// Returns its number (for the log).
pub fn arrived(key: String) -> u64 {
    with(|b| {
        b.next += 1;
        let n = b.next;
        if let Some(old) = b.by_key.insert(key.clone(), n) {
            b.pending.remove(&old);
        }
        b.pending.insert(n, key);
        n
    })
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
        let scope = scope_of(key);
        let earlier = with(|b| match b.by_key.get(key) {
            Some(n) => b.pending.range(..*n).any(|(_, k)| scope_of(k) == scope),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// True when `wait_turn` returns before its bound (nothing earlier held it up).
    async fn passes(key: &str) -> bool {
        tokio::time::timeout(Duration::from_millis(300), wait_turn(key))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_earlier_request_holds_up_only_its_own_session() {
        let a1 = scoped_key(Some("unit-a"), &json!(1));
        let a2 = scoped_key(Some("unit-a"), &json!(2));
        let b1 = scoped_key(Some("unit-b"), &json!(1));
        assert_ne!(a1, b1, "the same id in two sessions is two requests");
        arrived(a1.clone());
        arrived(b1.clone());
        arrived(a2.clone());
        assert!(passes(&b1).await, "b waits for nothing of a's");
        assert!(!passes(&a2).await, "a's second waits for a's first");
        let waiting = tokio::spawn({
            let a2 = a2.clone();
            async move { wait_turn(&a2).await }
        });
        done(&a1);
        let released = tokio::time::timeout(MAX_WAIT / 2, waiting).await;
        assert!(
            released.is_ok(),
            "a's second was not released when the first was done"
        );
        done(&a2);
        done(&b1);
    }

    #[test]
    fn ids_are_keyed_as_rmcp_echoes_them() {
        assert_eq!(key(&json!(1.0)), key(&json!(1)));
        assert_eq!(key(&json!(1e2)), "100");
        assert_eq!(key(&json!(-0.0)), "0");
        assert_eq!(key(&json!("1")), "\"1\"");
        assert_ne!(key(&json!("1")), key(&json!(1)));
        assert_eq!(request_id(&json!(i64::MAX)), Some(json!(i64::MAX)));
        for bad in [
            json!(1.5),
            json!(1e30),
            json!(u64::MAX),
            json!(null),
            json!(true),
            json!({"a": 1}),
            json!([1]),
        ] {
            assert_eq!(request_id(&bad), None, "{bad}");
        }
        assert_eq!(
            scoped_key(Some("s"), &json!(2.0)),
            scoped_key(Some("s"), &json!(2))
        );
    }

    #[test]
    fn stdio_keys_are_the_ids() {
        assert_eq!(
            scoped_key(None, &json!("x\u{1f}y")),
            key(&json!("x\u{1f}y"))
        );
        assert_eq!(scope_of(&scoped_key(None, &json!("x\u{1f}y"))), "");
        assert_eq!(scope_of(&scoped_key(Some("s1"), &json!(7))), "s1");
    }
}
