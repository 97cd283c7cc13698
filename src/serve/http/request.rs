//! One request to the HTTP endpoint before rmcp sees it: its body read within bounds, what
//! the body is (read once, by the reader the stdio transport uses), the answers to requests
//! that never reach rmcp, and the run requests it carries (numbered in arrival order).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};

use super::Body;

pub(super) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON-RPC error body for `id` with an HTTP status.
pub(super) fn jsonrpc_error(
    status: StatusCode,
    id: serde_json::Value,
    code: i32,
    message: &str,
) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    json_response(status, body.to_string())
}

/// The arrival key (see `arrival`) of a run request: a `tools/call` of a run tool, scoped by
/// its session (the `Mcp-Session-Id` header, else the 2026-07-28 `session` argument). A call
/// without a session opens a new one, which has nothing earlier to wait for.
pub(super) fn run_request_key(
    msg: &ClientJsonRpcMessage,
    session_header: Option<&str>,
) -> Option<String> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    let ClientRequest::CallToolRequest(call) = &r.request else {
        return None;
    };
    if !crate::arrival::RUN_TOOLS.contains(&call.params.name.as_ref()) {
        return None;
    }
    let scope = match session_header {
        Some(s) => s,
        None => call
            .params
            .arguments
            .as_ref()?
            .get(crate::serve::sessions::SESSION_ARG)?
            .as_str()?,
    };
    // Keyed as rmcp echoes the id (`2.0` is `2`), as the handler looks it up.
    Some(crate::arrival::scoped_key(
        Some(scope),
        &r.id.clone().into_json_value(),
    ))
}

/// Marks its requests answered (see `arrival::done`) when dropped: with the response body,
/// which ends after the request's final response was sent, or when the client went away.
pub(super) struct Answered(pub(super) Vec<String>);

impl Drop for Answered {
    fn drop(&mut self) {
        for k in &self.0 {
            crate::arrival::done(k);
        }
    }
}

/// The id of a JSON-RPC `initialize` request, if `msg` is one.
pub(super) fn initialize_id(msg: &ClientJsonRpcMessage) -> Option<serde_json::Value> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    matches!(r.request, ClientRequest::InitializeRequest(_)).then(|| r.id.clone().into_json_value())
}

/// What becomes of a POST body, read once (by the reader the stdio transport uses, so a
/// malformed request is answered alike on both transports).
pub(super) enum Posted {
    /// rmcp handles it (the body as it came).
    Pass(Box<ClientJsonRpcMessage>),
    /// Answered here with this JSON-RPC error.
    Answer(String),
    /// Not a message that can be answered (a notification or a response that cannot be read,
    /// an empty body): why.
    Refuse(String),
}

pub(super) fn posted(body: &[u8]) -> Posted {
    use crate::stdin_guard::{read, read_stand_in, stand_in_answer, Reading};
    match read(body) {
        Reading::Message(m) => Posted::Pass(m),
        Reading::Answer(a) => Posted::Answer(a),
        Reading::Silent(why) => Posted::Refuse(why),
        // Over stdio the stand-in goes to the tool, which refuses it; here a call reaches a
        // tool only through its session, which a refused call must not open: the tool's
        // answer is given here.
        Reading::StandIn(text) => match read_stand_in(&text) {
            Reading::Message(m) => match stand_in_answer(&m) {
                Some(a) => Posted::Answer(a),
                None => Posted::Refuse("the request could not be read".into()),
            },
            Reading::Answer(a) => Posted::Answer(a),
            Reading::Silent(why) => Posted::Refuse(why),
            Reading::StandIn(_) => Posted::Refuse("the request could not be read".into()),
        },
    }
}

/// The HTTP answer to a request refused with the JSON-RPC error `reply`: 200 when the error
/// carries the request's id (the client matches it to its call, as it does rmcp's in-band
/// errors), 400 when it cannot (`null` id: the body was not a request that can be answered).
pub(super) fn answered(reply: String) -> Response<Body> {
    let has_id = serde_json::from_str::<serde_json::Value>(&reply)
        // A raw echoed id (a lone surrogate escape) is an id too.
        .map_or(true, |v| v.get("id").is_some_and(|id| !id.is_null()));
    let status = if has_id {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    json_response(status, reply)
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The answer to a body over `--max-body`.
pub(super) fn too_large(max: usize) -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: requests are limited to {max} bytes (--max-body)\n"),
    )
}

/// rmcp's answer to a request for a session it does not have.
pub(super) fn session_not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found: Session not found\n")
}

/// True when the request says its body is JSON (rmcp answers any other 415 before reading it).
pub(super) fn json_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// How long a request body may take to arrive once its headers have: 60 s, and 1 s more per
/// 64 KiB `--max-body` allows (the default 32 MiB: ~9 minutes, room for a slow link), so a
/// body that never comes cannot hold a connection forever.
fn body_timeout(max_body: usize) -> std::time::Duration {
    let extra = u64::try_from(max_body / (64 << 10)).unwrap_or(u64::MAX);
    std::time::Duration::from_secs(60u64.saturating_add(extra))
}

/// Longest pause in a request body: a client that stops sending mid-body is answered 408 at
/// once rather than when the whole body's time is up (minutes at the default `--max-body`),
/// so stalled bodies cannot fill the connection slots (the header phase has the same 10 s).
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a request body was not read.
enum BodyFault {
    /// Nothing arrived for [`BODY_STALL`].
    Stalled,
    /// The whole body took longer than its time.
    Late,
    TooLarge,
    Unreadable(String),
}

/// Reads a request body of at most `max` bytes within `total`, no pause longer than
/// [`BODY_STALL`].
async fn read_body(
    body: Incoming,
    max: usize,
    total: std::time::Duration,
) -> Result<Bytes, BodyFault> {
    let deadline = tokio::time::Instant::now() + total;
    let mut body = Limited::new(body, max);
    let mut out = bytes::BytesMut::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = left.min(BODY_STALL);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) if wait < BODY_STALL => return Err(BodyFault::Late),
            Err(_) => return Err(BodyFault::Stalled),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BodyFault::TooLarge)
            }
            Ok(Some(Err(e))) => return Err(BodyFault::Unreadable(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
}

/// Reads a request's body within its bounds (the size it declares, `max` bytes, no pause over
/// [`BODY_STALL`], the whole body's time) and refuses a body of too many JSON values before
/// anything parses it: the bytes, or the answer that refuses them.
pub(super) async fn read_request(
    headers: &http::HeaderMap,
    body: Incoming,
    max: usize,
    session: Option<&str>,
) -> Result<Bytes, Response<Body>> {
    // A body announced over the cap is refused before any of it is read (and before hyper
    // answers `Expect: 100-continue`, which it does when the body is first read): the client
    // is not asked to send megabytes only to have them thrown away.
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        tracing::warn!(session = ?session, bytes = declared, "request body over --max-body (declared)");
        return Err(too_large(max));
    }
    // The body gets its own bounds: hyper's header timeout ends with the headers, and a client
    // announcing a body it never sends would hold the connection (and its slot) for good.
    let body_limit = body_timeout(max);
    let bytes = match read_body(body, max, body_limit).await {
        Ok(b) => b,
        Err(BodyFault::Stalled) => {
            tracing::warn!(session = ?session, "request body stalled");
            return Err(text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "Request Timeout: nothing of the request body arrived for {} s\n",
                    BODY_STALL.as_secs()
                ),
            ));
        }
        Err(BodyFault::Late) => {
            tracing::warn!(session = ?session, secs = body_limit.as_secs(), "request body not received in time");
            return Err(text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "Request Timeout: the request body did not arrive within {} s\n",
                    body_limit.as_secs()
                ),
            ));
        }
        Err(BodyFault::TooLarge) => {
            tracing::warn!(session = ?session, "request body over --max-body");
            return Err(too_large(max));
        }
        Err(BodyFault::Unreadable(e)) => {
            tracing::warn!(session = ?session, error = %e, "request body rejected");
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Bad Request: the body could not be read\n",
            ));
        }
    };
    // Before anything parses it (here and in rmcp): a body of millions of tiny values.
    if let Some(n) = crate::stdin_guard::too_many_values(&bytes) {
        tracing::warn!(session = ?session, values = n, "request body rejected: too many JSON values");
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Payload Too Large: the request holds more than {} JSON values; send large data as one string (text, or base64) or in several calls\n",
                crate::wire::message::MAX_JSON_VALUES
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ClientJsonRpcMessage {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn run_requests_are_keyed_by_their_session() {
        let call = |id: &str, tool: &str, args: &str| {
            message(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
            ))
        };
        let one = call("1", "execute_python", r#"{"code":"1"}"#);
        assert_eq!(
            run_request_key(&one, Some("s1")),
            Some(crate::arrival::scoped_key(
                Some("s1"),
                &serde_json::json!(1)
            ))
        );
        // No session at all: a new one is opened, nothing to order.
        assert_eq!(run_request_key(&one, None), None);
        let handle = call("\"a\"", "run_file", r#"{"path":"x.py","session":"h9"}"#);
        assert_eq!(
            run_request_key(&handle, None),
            Some(crate::arrival::scoped_key(
                Some("h9"),
                &serde_json::json!("a")
            ))
        );
        assert_eq!(
            run_request_key(&call("3", "read_file", "{}"), Some("s")),
            None
        );
        // Keyed as rmcp echoes the id (`2.0` is `2`), as the handler looks it up.
        assert_eq!(
            run_request_key(&call("2.0", "execute_python", "{}"), Some("s")),
            Some(crate::arrival::scoped_key(Some("s"), &serde_json::json!(2)))
        );
        let list = message(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
        assert_eq!(run_request_key(&list, Some("s")), None);
    }

    #[test]
    fn initialize_requests_are_recognised() {
        let init = message(
            r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        );
        assert_eq!(initialize_id(&init), Some(serde_json::json!(3)));
        let list = message(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
        assert_eq!(initialize_id(&list), None);
    }

    /// What each kind of body gets: passed on, answered in-band with its id (200), or refused
    /// with a `null` id (400), never rmcp's plain-text 415.
    #[test]
    fn bodies_rmcp_cannot_read_are_answered_with_their_id() {
        let status_and_id = |body: &str| -> (StatusCode, serde_json::Value, i64) {
            let reply = match posted(body.as_bytes()) {
                Posted::Pass(m) => panic!("{body}: passed on as {m:?}"),
                Posted::Answer(a) => a,
                Posted::Refuse(why) => panic!("{body}: refused unanswered ({why})"),
            };
            let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
            (
                answered(reply).status(),
                v.get("id").cloned().unwrap_or_default(),
                v.pointer("/error/code")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or_default(),
            )
        };
        let ok = StatusCode::OK;
        let bad = StatusCode::BAD_REQUEST;
        for (body, want) in [
            // Not JSON, with a readable id.
            (r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"x":1e400}}"#, (ok, serde_json::json!(7), -32700)),
            (r#"{"jsonrpc":"2.0","id":"q","method":"tools/list"} trailing"#, (ok, serde_json::json!("q"), -32700)),
            // Known method, params that do not fit it.
            (r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_python","arguments":[1]}}"#, (ok, serde_json::json!(8), -32602)),
            // A tool call whose arguments are not valid Unicode: the tool's own refusal.
            ("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_python\",\"arguments\":{\"code\":\"a\\ud800\"}}}", (ok, serde_json::json!(9), -32602)),
            // No id to answer.
            ("[1,2]", (bad, serde_json::Value::Null, -32600)),
            ("garbage", (bad, serde_json::Value::Null, -32700)),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, (bad, serde_json::Value::Null, -32600)),
        ] {
            assert_eq!(status_and_id(body), want, "{body}");
        }
        // Nothing to answer at all: refused with a reason.
        for body in [
            "",
            "  ",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":7}"#,
        ] {
            assert!(
                matches!(posted(body.as_bytes()), Posted::Refuse(_)),
                "{body}"
            );
        }
        let fine = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"1"}}}"#;
        assert!(matches!(posted(fine.as_bytes()), Posted::Pass(_)));
    }
}
