//! A line filter between the process's stdin and the MCP transport. JSON-RPC requests that a
//! strict parser would silently drop (so the client waits forever) are turned into requests the
//! tools reject with a clear error: invalid UTF-8, lone UTF-16 surrogate escapes, numbers no
//! float can hold, and oversized lines. It also writes stdout, so a request reusing the id of
//! one still in flight gets an error at once instead of being passed on. Ids are tracked as
//! rmcp echoes them (`1.0` is answered as `1`); a request rmcp cannot read (an id such as
//! `1.5` or `{}`, no `"jsonrpc":"2.0"`) is answered here, because rmcp's answer to it carries
//! `"id":null` and would never release the id.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};

/// The argument key that carries a rejection reason to the tools' argument extractor.
pub const REJECT_KEY: &str = "__kernel_mcp_rejected";

/// Largest request line passed on; longer lines are replaced by a rejection.
pub const MAX_LINE: usize = crate::limits::MAX_STDIO_LINE;

/// How much of an oversized line is kept to find its id and tool name.
const PREFIX: usize = 4096;

/// Replaces `\uD800`-`\uDFFF` escapes that do not form a valid pair with `\uFFFD`.
/// Returns `None` when nothing needed replacing.
pub fn fix_surrogates(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let hex4 = |i: usize| -> Option<u32> {
        let s = line.get(i..i + 4)?;
        u32::from_str_radix(s, 16).ok()
    };
    let mut out: Option<String> = None;
    let mut last = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        if b.get(i) != Some(&b'\\') {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            // Any other escape (including an escaped backslash) is two bytes.
            i += 2;
            continue;
        }
        let Some(cp) = hex4(i + 2) else {
            i += 2;
            continue;
        };
        let paired = (0xD800..0xDC00).contains(&cp)
            && b.get(i + 6) == Some(&b'\\')
            && b.get(i + 7) == Some(&b'u')
            && hex4(i + 8).is_some_and(|lo| (0xDC00..0xE000).contains(&lo));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&cp) {
            let o = out.get_or_insert_with(String::new);
            o.push_str(line.get(last..i).unwrap_or(""));
            o.push_str("\\ufffd");
            i += 6;
            last = i;
        } else {
            i += 6;
        }
    }
    let mut o = out?;
    o.push_str(line.get(last..).unwrap_or(""));
    Some(o)
}

/// Marks a parsed request as rejected with `reason`, so the tool answers with that error.
fn reject(mut msg: serde_json::Value, reason: &str) -> Option<String> {
    let params = msg.get_mut("params")?.as_object_mut()?;
    let args = params
        .entry("arguments")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let args = args.as_object_mut()?;
    args.insert(REJECT_KEY.into(), serde_json::Value::String(reason.into()));
    serde_json::to_string(&msg).ok()
}

/// The first JSON value after `"key":` in `text` (a best-effort look into a request that does
/// not parse as a whole).
fn find_value(text: &str, key: &str) -> Option<serde_json::Value> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text
        .get(at + key.len() + 2..)?
        .trim_start()
        .strip_prefix(':')?;
    let mut de = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    de.next()?.ok()
}

/// A small stand-in for a tools/call request that cannot be passed on, keeping its id and tool
/// name when they can be found, and carrying `reason` to the tool.
fn stand_in(text: &str, reason: &str) -> Option<String> {
    let id = find_value(text, "id")?;
    let name = find_value(text, "name").unwrap_or(serde_json::Value::String("unknown".into()));
    let msg = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}}
    });
    reject(msg, reason)
}

/// A small stand-in for an oversized request, keeping its id and tool name when they can be found.
fn oversized(prefix: &str, len: usize) -> Option<String> {
    stand_in(
        prefix,
        &format!("the request is {len} bytes, over the {MAX_LINE} byte limit; send less data per call (write big files in parts with append=true)"),
    )
}

/// `Some(count)` when `body`, a request over 2 MiB, holds more JSON values than
/// [`crate::wire::message::MAX_JSON_VALUES`]: parsed, each takes 32 bytes or more (here and
/// again in rmcp), so 48 MiB of `0,` would take over a gigabyte. Counted without parsing.
pub fn too_many_values(body: &[u8]) -> Option<usize> {
    let max = crate::wire::message::MAX_JSON_VALUES;
    if body.len() <= 2 * max {
        return None;
    }
    crate::text::json_values_over(body, max)
}

/// A stand-in for a request of too many JSON values (see [`too_many_values`]).
fn too_many(prefix: &str) -> Option<String> {
    stand_in(
        prefix,
        &format!("the request holds more than {} JSON values; send large data as one string (text, or base64 with encoding=\"base64\") or in several calls. Nothing was done.", crate::wire::message::MAX_JSON_VALUES),
    )
}

/// A stand-in for a tools/call line that is not valid JSON as a whole, so a strict parser
/// would drop it silently (for example a number such as `1e999` that no f64 can hold).
fn unparsable(line: &str, error: &serde_json::Error) -> Option<String> {
    if find_value(line, "method")?.as_str() != Some("tools/call") {
        return None;
    }
    stand_in(
        line,
        &format!("the request is not valid JSON ({error}); numbers must fit a 64-bit float, strings must be closed. Nothing was done."),
    )
}

/// Repairs one line, or returns it unchanged (`None`).
pub fn repair(raw: &[u8]) -> Option<String> {
    inspect(raw).0
}

/// Repairs one line (`Some` replacement) and returns the parsed message when the line itself
/// was valid JSON (so it is parsed once).
fn inspect(raw: &[u8]) -> (Option<String>, Option<serde_json::Value>) {
    let (text, bad_utf8) = match std::str::from_utf8(raw) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), false),
        Err(_) => (String::from_utf8_lossy(raw), true),
    };
    let fixed = fix_surrogates(&text);
    if !bad_utf8 && fixed.is_none() {
        // Blank lines and garbage without an id are left to the transport, as before.
        return match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => (None, Some(v)),
            Err(e) if e.is_syntax() || e.is_data() => (unparsable(&text, &e), None),
            Err(_) => (None, None),
        };
    }
    let line = fixed.unwrap_or_else(|| text.into_owned());
    let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
        return (None, None);
    };
    (
        reject(
            msg,
            "the arguments contain text that is not valid Unicode (invalid UTF-8 or a lone surrogate escape); send valid UTF-8 text, or binary data with encoding=\"base64\". Nothing was done.",
        ),
        None,
    )
}

/// Most requests awaiting an answer at once; more get an error at once (bounded memory).
pub const MAX_IN_FLIGHT: usize = 4096;

/// What one client line means for the ids in flight.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A request with this id (its key, see `arrival::key`, and the id as rmcp echoes it).
    Request(String, serde_json::Value),
    /// A request rmcp would refuse: the error to answer it with here.
    Invalid(String),
    /// `notifications/cancelled` for this id: the client stopped waiting for it.
    Cancelled(String),
    Other,
}

/// Keys ids as rmcp echoes them (`1.0` is answered as `1`), so an answer finds its request.
fn id_key(id: &serde_json::Value) -> String {
    crate::arrival::key(id)
}

/// The shape every request must have, for the errors that say what was wrong.
const REQUEST_SHAPE: &str = r#"a request is {"jsonrpc":"2.0","id":<string or integer>,"method":<string>,"params":<object, optional>}"#;

/// Why rmcp would refuse `msg`, a request (it has `method` and `id`) whose id it accepts, or
/// `None` when it takes it. rmcp answers a request it cannot read with `"id":null`, which
/// never releases the id here; so such requests are answered here and never passed on.
///
/// rmcp's own message type decides, on a copy of the request without its parameters: any
/// method with object parameters is a request to rmcp (its catch-all `CustomRequest`), so
/// only the envelope and the parameters' `_meta` (read whatever the method) can make it
/// refuse one. Checking the whole request would parse every large call a second time.
fn rmcp_refuses(msg: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    use serde_json::Value;
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(format!(
            "the request lacks \"jsonrpc\":\"2.0\"; {REQUEST_SHAPE}"
        ));
    }
    if !msg.get("method").is_some_and(Value::is_string) {
        return Some(format!(
            "the request's method is not a string; {REQUEST_SHAPE}"
        ));
    }
    if msg.contains_key("result") || msg.contains_key("error") {
        return Some(format!(
            "the message has both a method and a result or error; {REQUEST_SHAPE}"
        ));
    }
    let mut skeleton = serde_json::Map::new();
    for k in ["jsonrpc", "id", "method"] {
        if let Some(v) = msg.get(k) {
            skeleton.insert(k.into(), v.clone());
        }
    }
    match msg.get("params") {
        None => {}
        Some(Value::Null) => {
            skeleton.insert("params".into(), Value::Null);
        }
        Some(Value::Object(p)) => {
            let mut params = serde_json::Map::new();
            if let Some(meta) = p.get("_meta") {
                params.insert("_meta".into(), meta.clone());
            }
            skeleton.insert("params".into(), Value::Object(params));
        }
        Some(_) => {
            return Some(format!(
                "the request's params are not an object; {REQUEST_SHAPE}"
            ));
        }
    }
    let skeleton = Value::Object(skeleton);
    match <rmcp::model::ClientJsonRpcMessage as serde::Deserialize>::deserialize(&skeleton) {
        Ok(_) => None,
        Err(_) => Some(format!(
            "the request could not be read (check params._meta: an object, its progressToken a string or integer); {REQUEST_SHAPE}"
        )),
    }
}

/// What kind of JSON value `v` is, for an error message (never the value itself: an id can
/// be a large object).
fn describe(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(_) => "a boolean".into(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

fn classify(msg: &serde_json::Value) -> Seen {
    let Some(obj) = msg.as_object() else {
        return Seen::Other;
    };
    let method = obj.get("method");
    match (method, obj.get("id")) {
        // A request: rmcp reads a message with both as one, whatever their values.
        (Some(_), Some(id)) => match crate::arrival::request_id(id) {
            None => Seen::Invalid(refusal(
                &serde_json::Value::Null,
                &format!(
                    "the request id is {}; a request id must be a string or an integer from -2^63 to 2^63-1 (a float only if its value is a whole number, as in 1.0). Nothing was done; send the request again with such an id",
                    describe(id)
                ),
            )),
            Some(canonical) => match rmcp_refuses(obj) {
                Some(why) => Seen::Invalid(refusal(&canonical, &format!("{why}. Nothing was done."))),
                None => Seen::Request(id_key(id), canonical),
            },
        },
        (Some(m), None) if m.as_str() == Some("notifications/cancelled") => {
            match obj.get("params").and_then(|p| p.get("requestId")) {
                Some(id) => Seen::Cancelled(id_key(id)),
                None => Seen::Other,
            }
        }
        _ => Seen::Other,
    }
}

/// The id of a response the server writes (`None` for requests and notifications). rmcp
/// writes `{"jsonrpc":"2.0","id":...,"result"|"error":...}`, read from the front without
/// walking a large result; anything else is parsed whole.
fn response_id(line: &[u8]) -> Option<String> {
    const HEAD: &[u8] = br#"{"jsonrpc":"2.0","id":"#;
    if let Some(rest) = line.strip_prefix(HEAD) {
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        if let Some(Ok(id)) = values.next() {
            let after = rest.get(values.byte_offset()..).unwrap_or_default();
            if after.starts_with(br#","result""#) || after.starts_with(br#","error""#) {
                return Some(id_key(&id));
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Peek {
        id: Option<serde_json::Value>,
        method: Option<serde::de::IgnoredAny>,
    }
    let p: Peek = serde_json::from_slice(line).ok()?;
    match (p.id, p.method) {
        (Some(id), None) if !id.is_null() => Some(id_key(&id)),
        _ => None,
    }
}

/// The JSON-RPC error sent for a request that cannot be passed on.
fn refusal(id: &serde_json::Value, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32600, "message": message}
    })
    .to_string()
}

/// Ids of the requests passed on and not answered yet.
type InFlight = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// The two ends the MCP transport uses, and the task that writes stdout.
pub struct Guarded {
    /// Requests for the transport to read.
    pub input: DuplexStream,
    /// Where the transport writes its messages.
    pub output: DuplexStream,
    /// Ends once the transport's output is closed and all of it has reached stdout.
    pub writer: tokio::task::JoinHandle<()>,
}

/// Puts the filter between stdin/stdout and the transport. Requests a strict parser would drop
/// are repaired or rejected (see the module doc); a request reusing the id of one still in
/// flight is answered at once with an error instead of being passed on, so both get an answer.
pub fn spawn(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
) -> Guarded {
    let in_flight: InFlight = Default::default();
    let (refusals_tx, refusals_rx) = tokio::sync::mpsc::channel::<String>(64);
    let (to_transport, input_end) = tokio::io::duplex(1 << 20);
    let (output_end, from_transport) = tokio::io::duplex(1 << 20);
    tokio::spawn(read_client(
        input,
        to_transport,
        in_flight.clone(),
        refusals_tx,
    ));
    let writer = tokio::spawn(write_client(from_transport, output, in_flight, refusals_rx));
    Guarded {
        input: input_end,
        output: output_end,
        writer,
    }
}

/// Copies the transport's messages and the refusals to `out`, a whole line at a time, and
/// marks answered requests as no longer in flight.
async fn write_client(
    from_transport: DuplexStream,
    mut out: impl AsyncWrite + Unpin,
    in_flight: InFlight,
    mut refusals: tokio::sync::mpsc::Receiver<String>,
) {
    let mut lines = BufReader::with_capacity(1 << 16, from_transport);
    // `read_until` keeps what it read when `select!` drops it, so a line is only written
    // (and cleared) once it is complete, and refusals never land inside one.
    let mut pending = Vec::new();
    let mut transport_open = true;
    loop {
        let write = tokio::select! {
            n = lines.read_until(b'\n', &mut pending), if transport_open => {
                if matches!(n, Ok(0) | Err(_)) {
                    transport_open = false;
                    // Refusals already queued are still written; then the writer ends.
                    refusals.close();
                }
                if pending.is_empty() || (transport_open && !pending.ends_with(b"\n")) {
                    continue;
                }
                let body = pending.strip_suffix(b"\n").unwrap_or(&pending);
                if let Some(id) = response_id(body) {
                    if let Ok(mut f) = in_flight.lock() {
                        f.remove(&id);
                    }
                    crate::arrival::done(&id);
                }
                std::mem::take(&mut pending)
            }
            r = refusals.recv() => match r {
                Some(text) => {
                    let mut l = text.into_bytes();
                    l.push(b'\n');
                    l
                }
                None if transport_open => {
                    // The client's input has ended: copy the rest of the transport's output.
                    let _ = out.write_all(&pending).await;
                    let _ = tokio::io::copy(&mut lines, &mut out).await;
                    let _ = out.flush().await;
                    return;
                }
                None => break,
            },
        };
        if out.write_all(&write).await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
}

/// Reads client lines, repairs or rejects bad ones, refuses duplicate ids in flight, and
/// passes the rest to the transport.
async fn read_client(
    input: impl AsyncRead + Unpin,
    mut tx: DuplexStream,
    in_flight: InFlight,
    refusals: tokio::sync::mpsc::Sender<String>,
) {
    let mut r = BufReader::with_capacity(1 << 16, input);
    let mut line: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = match r.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(c) => c,
        };
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        total += take;
        // Past the limit, keep only a prefix to find the id in.
        let keep = if total > MAX_LINE {
            PREFIX.saturating_sub(line.len())
        } else {
            take
        };
        line.extend_from_slice(chunk.get(..take.min(keep)).unwrap_or_default());
        if total > MAX_LINE && line.len() > PREFIX {
            line.truncate(PREFIX);
        }
        r.consume(take);
        if !done {
            continue;
        }
        // A line refused whole (too long, too many values) is never passed on, even when no
        // stand-in could be made for it (no id in its first bytes: a notification).
        let mut refused_whole = total > MAX_LINE;
        let (out, parsed) = if total > MAX_LINE {
            let prefix = String::from_utf8_lossy(&line);
            tracing::warn!(bytes = total, "rejected an oversized request");
            (oversized(&prefix, total), None)
        } else {
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            match too_many_values(body) {
                Some(n) => {
                    tracing::warn!(
                        bytes = total,
                        values = n,
                        "rejected a request of too many JSON values"
                    );
                    let prefix = String::from_utf8_lossy(body.get(..PREFIX).unwrap_or(body));
                    refused_whole = true;
                    (too_many(&prefix), None)
                }
                None => inspect(body),
            }
        };
        let parsed = match (&out, parsed) {
            (Some(replacement), _) => serde_json::from_str(replacement).ok(),
            (None, p) => p,
        };
        let seen = parsed.as_ref().map(classify).unwrap_or(Seen::Other);
        let refused = match seen {
            Seen::Invalid(reply) => Some(reply),
            Seen::Request(key, id) => match in_flight.lock() {
                Ok(f) if f.contains(&key) => Some(refusal(
                    &id,
                    &format!("request id {key} is already in use by a request that has not been answered yet; use a new id for each request (the earlier request is still running and will be answered)"),
                )),
                Ok(f) if f.len() >= MAX_IN_FLIGHT => Some(refusal(
                    &id,
                    &format!("{MAX_IN_FLIGHT} requests are already waiting for an answer; wait for some to finish"),
                )),
                Ok(mut f) => {
                    f.insert(key.clone());
                    let params = parsed.as_ref().and_then(|m| m.get("params"));
                    let tool = params.and_then(|p| p.get("name")).and_then(|n| n.as_str());
                    if parsed.as_ref().and_then(|m| m.get("method")).and_then(|m| m.as_str())
                        == Some("tools/call")
                        && tool.is_some_and(|t| crate::arrival::RUN_TOOLS.contains(&t))
                    {
                        let _ = crate::arrival::arrived(key);
                    }
                    None
                }
                Err(_) => None,
            },
            Seen::Cancelled(key) => {
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&key);
                }
                crate::arrival::done(&key);
                None
            }
            Seen::Other => None,
        };
        let res = match (refused, out) {
            (Some(refusal), _) => {
                tracing::warn!("refused a request: its id is in flight, or rmcp could not read it");
                if refusals.send(refusal).await.is_err() {
                    break;
                }
                Ok(())
            }
            (None, Some(s)) => {
                let mut s = s.into_bytes();
                s.push(b'\n');
                tx.write_all(&s).await
            }
            (None, None) if refused_whole => Ok(()),
            (None, None) => tx.write_all(&line).await,
        };
        if res.is_err() {
            break;
        }
        line.clear();
        total = 0;
    }
    let _ = tx.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_replaced_pairs_kept() {
        assert_eq!(
            fix_surrogates(r#"{"a":"x\ud800y"}"#).as_deref(),
            Some(r#"{"a":"x\ufffdy"}"#)
        );
        assert_eq!(
            fix_surrogates(r#"{"a":"\udc00"}"#).as_deref(),
            Some(r#"{"a":"\ufffd"}"#)
        );
        assert_eq!(fix_surrogates(r#"{"a":"\ud83d\udc0d"}"#), None);
        assert_eq!(
            fix_surrogates(r#"{"a":"\\ud800"}"#),
            None,
            "an escaped backslash is not an escape"
        );
        assert_eq!(fix_surrogates(r#"{"a":"plain"}"#), None);
    }

    #[test]
    fn repaired_requests_carry_the_rejection() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"a","content":"\ud800"}}}"#;
        let fixed = repair(line).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap_or_default();
        assert_eq!(v["id"], 7);
        assert!(v["params"]["arguments"][REJECT_KEY].is_string());
        let bad_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"arguments\":{\"c\":\"\xff\"}}}";
        assert!(repair(bad_utf8).is_some());
        assert_eq!(repair(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), None);
    }

    #[test]
    fn unrepresentable_numbers_get_a_rejection() {
        let line = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"1","timeout_seconds":1e999}}}"#;
        let fixed = repair(line).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap_or_default();
        assert_eq!(v["id"], 5);
        assert_eq!(v["params"]["name"], "execute_python");
        let reason = v["params"]["arguments"][REJECT_KEY].as_str().unwrap_or("");
        assert!(reason.contains("number out of range"), "{reason}");
        // Not a tool call, or no id to answer: left alone.
        assert_eq!(
            repair(br#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1e999}"#),
            None
        );
        assert_eq!(repair(b"this is not json"), None);
    }

    #[test]
    fn requests_cancellations_and_responses_are_told_apart() {
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
        assert_eq!(
            classify(&v(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#)),
            Seen::Request("7".into(), serde_json::json!(7))
        );
        // 7 and "7" are different ids.
        assert_eq!(
            classify(&v(r#"{"jsonrpc":"2.0","id":"7","method":"ping"}"#)),
            Seen::Request("\"7\"".into(), serde_json::json!("7"))
        );
        assert_eq!(
            classify(&v(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#
            )),
            Seen::Cancelled("7".into())
        );
        assert_eq!(
            classify(&v(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#)),
            Seen::Other
        );
        assert_eq!(
            classify(&v(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
            )),
            Seen::Other
        );

        assert_eq!(
            response_id(br#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#).as_deref(),
            Some("7")
        );
        assert_eq!(
            response_id(br#"{"jsonrpc":"2.0","id":"a b","error":{"code":1}}"#).as_deref(),
            Some("\"a b\"")
        );
        assert_eq!(
            response_id(br#"{"id":3,"jsonrpc":"2.0","result":1}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            response_id(br#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#),
            None
        );
        assert_eq!(
            response_id(
                br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"id":1}}"#
            ),
            None
        );
        assert_eq!(response_id(b"garbage"), None);
    }

    type Lines = tokio::io::Lines<BufReader<DuplexStream>>;

    /// The filter between a client and a transport: what the client writes, what the
    /// transport writes, and the lines each of them reads.
    fn pipes() -> (DuplexStream, DuplexStream, Lines, Lines) {
        let (client_in, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, client_out) = tokio::io::duplex(1 << 16);
        let g = spawn(server_in, server_out);
        (
            client_in,
            g.output,
            BufReader::new(g.input).lines(),
            BufReader::new(client_out).lines(),
        )
    }

    #[tokio::test]
    async fn a_duplicate_id_in_flight_is_refused_and_both_are_answered() {
        let (mut client_in, mut transport_out, mut transport_in, mut client_out) = pipes();
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        client_in
            .write_all(format!("{ping}{ping}").as_bytes())
            .await
            .unwrap_or_default();
        // The first reaches the transport; the second is answered by the guard.
        let first = transport_in.next_line().await.ok().flatten();
        assert_eq!(first.as_deref(), ping.strip_suffix('\n'));
        let refusal = client_out
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(
            refusal.contains("\"id\":1") && refusal.contains("already in use"),
            "{refusal}"
        );
        // Once the first is answered, the id is free again.
        let answer = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
        transport_out
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap_or_default();
        let got = client_out.next_line().await.ok().flatten();
        assert_eq!(got.as_deref(), Some(answer));
        client_in
            .write_all(ping.as_bytes())
            .await
            .unwrap_or_default();
        let again = transport_in.next_line().await.ok().flatten();
        assert_eq!(again.as_deref(), ping.strip_suffix('\n'));
    }

    /// The filter passes on exactly the requests rmcp reads (judged on a copy without the
    /// parameters), so every request it tracks gets an answer carrying its id.
    #[test]
    fn requests_are_passed_on_exactly_when_rmcp_reads_them() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"execute_python","arguments":{"code":"1"}}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":null}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"initialize","params":{"protocolVersion":5}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":1.5}}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":7}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"bogus","params":{"a":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"bogus","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"ping","params":5}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"ping","result":1}"#,
            r#"{"id":5,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1e30,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        ];
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let rmcp_reads =
                serde_json::from_str::<rmcp::model::ClientJsonRpcMessage>(line).is_ok();
            match classify(&v) {
                Seen::Request(..) => assert!(rmcp_reads, "passed on, rmcp refuses: {line}"),
                Seen::Invalid(reply) => {
                    assert!(!rmcp_reads, "refused, rmcp reads: {line}");
                    let r: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
                    assert_eq!(r["error"]["code"], -32600, "{reply}");
                    match crate::arrival::request_id(&v["id"]) {
                        Some(id) => assert_eq!(r["id"], id, "{reply}"),
                        None => assert!(r["id"].is_null(), "{reply}"),
                    }
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    /// `1.0` is answered as `1`: the answer frees the id; an id rmcp refuses is answered here.
    #[tokio::test]
    async fn ids_are_released_by_answers_that_normalise_them() {
        let (mut client_in, mut transport_out, mut transport_in, mut client_out) = pipes();
        let float = "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"ping\"}\n";
        let bad = "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}\n";
        client_in
            .write_all(format!("{float}{bad}").as_bytes())
            .await
            .unwrap_or_default();
        let first = transport_in.next_line().await.ok().flatten();
        assert_eq!(first.as_deref(), float.strip_suffix('\n'));
        let refusal = client_out
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(
            refusal.contains("\"id\":null") && refusal.contains("request id is 1.5"),
            "{refusal}"
        );
        // rmcp answers `1.0` as `1`.
        let answer = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
        transport_out
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap_or_default();
        let got = client_out.next_line().await.ok().flatten();
        assert_eq!(got.as_deref(), Some(answer));
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        client_in
            .write_all(ping.as_bytes())
            .await
            .unwrap_or_default();
        let again = transport_in.next_line().await.ok().flatten();
        assert_eq!(again.as_deref(), ping.strip_suffix('\n'));
    }

    #[test]
    fn oversized_keeps_id_and_name() {
        let prefix = r#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"write_file","arguments":{"content":"xxxx"#;
        let s = oversized(prefix, MAX_LINE + 1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["params"]["name"], "write_file");
    }
}
