//! What a client message means for the requests in flight: a request (keyed as rmcp echoes its
//! id), a cancellation, or, for a line rmcp's message type refuses, the error that answers it
//! here, so its id is released (rmcp's own answer would carry no id).

use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ClientRequest, JsonRpcMessage};
use serde_json::Value;

/// Most requests awaiting an answer at once; more get an error at once (bounded memory).
pub const MAX_IN_FLIGHT: usize = 4096;

/// What one message rmcp reads means for the ids in flight.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// A request: its key (see `arrival::key`), its id as rmcp echoes it, and whether it
    /// calls a tool that runs code (its arrival orders the runs).
    Request {
        key: String,
        id: Value,
        run: bool,
    },
    /// `notifications/cancelled` for this id: the client stopped waiting for it.
    Cancelled(String),
    Other,
}

/// What `msg` means for the ids in flight.
pub(super) fn seen(msg: &ClientJsonRpcMessage) -> Seen {
    match msg {
        JsonRpcMessage::Request(r) => {
            let id = r.id.clone().into_json_value();
            let run = matches!(&r.request, ClientRequest::CallToolRequest(c)
                if crate::arrival::RUN_TOOLS.contains(&c.params.name.as_ref()));
            Seen::Request {
                key: crate::arrival::key(&id),
                id,
                run,
            }
        }
        JsonRpcMessage::Notification(n) => match &n.notification {
            ClientNotification::CancelledNotification(c) => match &c.params.request_id {
                Some(id) => Seen::Cancelled(crate::arrival::key(&id.clone().into_json_value())),
                None => Seen::Other,
            },
            _ => Seen::Other,
        },
        _ => Seen::Other,
    }
}

/// The shape every request must have, for the errors that say what was wrong.
const REQUEST_SHAPE: &str = r#"a request is {"jsonrpc":"2.0","id":<string or integer>,"method":<string>,"params":<object, optional>}"#;

/// What is wrong with the envelope of `msg`, a request rmcp refused, when it can be named.
fn envelope_fault(msg: &serde_json::Map<String, Value>) -> Option<String> {
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
    match msg.get("params") {
        None | Some(Value::Null | Value::Object(_)) => None,
        Some(_) => Some(format!(
            "the request's params are not an object; {REQUEST_SHAPE}"
        )),
    }
}

/// Why rmcp refused a request whose envelope is sound. Any method with object parameters is a
/// request to rmcp (its catch-all `CustomRequest`), so only the parameters' `_meta`, read
/// whatever the method, is left to refuse (rmcp's own error only says that no kind of
/// message matched).
const META_FAULT: &str = "the request could not be read (check params._meta: an object, its progressToken a string or integer)";

/// Why rmcp would refuse `line` for a member its top-level object repeats (`jsonrpc`, `id`,
/// `method` or `params`): serde_json's `Value` keeps the last silently, but rmcp's message
/// types refuse the whole line. Read without building values.
fn repeated_key(line: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstRepeat;
    impl<'de> Visitor<'de> for FirstRepeat {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut repeated = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                map.next_value::<IgnoredAny>()?;
                // Unknown keys are ignored by rmcp, repeated or not.
                let known = matches!(&*key, "jsonrpc" | "id" | "method" | "params");
                if known && repeated.is_none() && !seen.insert(key.clone()) {
                    repeated = Some(key.into_owned());
                }
            }
            Ok(repeated)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let key = de.deserialize_map(FirstRepeat).ok()??;
    Some(format!(
        "the request repeats the key {}; each key may appear once. {REQUEST_SHAPE}",
        Value::String(key.chars().take(100).collect())
    ))
}

/// What kind of JSON value `v` is, for an error message (never the value itself: an id can
/// be a large object).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The answer to `msg`, the JSON of `line`, which rmcp's message type refused with `err`;
/// `None` for a notification (never answered: there is no id to answer, and rmcp ignores
/// notifications it cannot read too). A request is answered with its id when rmcp could
/// read the id; any other message with a `null` id, as rmcp itself would.
pub(super) fn unreadable(msg: &Value, line: &[u8], err: &serde_json::Error) -> Option<String> {
    let Some(obj) = msg.as_object() else {
        return Some(refusal(
            &Value::Null,
            &format!(
                "the message is not a JSON object (batches are not supported); {REQUEST_SHAPE}"
            ),
        ));
    };
    match (obj.get("method"), obj.get("id")) {
        (Some(_), Some(id)) => Some(match crate::arrival::request_id(id) {
            None => refusal(
                &Value::Null,
                &format!(
                    "the request id is {}; a request id must be a string or an integer from -2^63 to 2^63-1 (a float only if its value is a whole number, as in 1.0). Nothing was done; send the request again with such an id",
                    describe(id)
                ),
            ),
            Some(canonical) => {
                let why = envelope_fault(obj)
                    .or_else(|| repeated_key(line))
                    .unwrap_or_else(|| format!("{META_FAULT}; {REQUEST_SHAPE}"));
                refusal(&canonical, &format!("{why}. Nothing was done."))
            }
        }),
        (Some(_), None) => None,
        _ => {
            let why: String = err.to_string().chars().take(300).collect();
            Some(refusal(
                &Value::Null,
                &format!("the message could not be read ({why}); {REQUEST_SHAPE}"),
            ))
        }
    }
}

/// The JSON-RPC error sent for a request that cannot be passed on.
pub(super) fn refusal(id: &Value, message: &str) -> String {
    refusal_coded(id, -32600, message)
}

/// [`refusal`] with a JSON-RPC error code (-32700 parse error, -32600 invalid request, -32602
/// invalid params).
pub(super) fn refusal_coded(id: &Value, code: i32, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message}
    })
    .to_string()
}

/// The methods rmcp's request type knows. rmcp reads a request with one of these whose
/// params do not fit that method as a custom request and answers "method not found" naming
/// the method, which sends the client looking for the wrong mistake.
const KNOWN_METHODS: [&str; 21] = [
    "ping",
    "initialize",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "subscriptions/listen",
    "resources/subscribe",
    "resources/unsubscribe",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
    "resources/directory/read",
];

/// The answer to a request rmcp read only as a custom request although its method is one it
/// knows (its params do not fit: `"arguments":[1]`, no `name`, a key given twice): an
/// invalid-params error naming the method and, for the common methods, what did not fit.
pub(super) fn misfit(msg: &ClientJsonRpcMessage, line: &[u8]) -> Option<String> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    let ClientRequest::CustomRequest(c) = &r.request else {
        return None;
    };
    let method = c.method.as_str();
    if !KNOWN_METHODS.contains(&method) {
        return None;
    }
    fn error_of<T: serde::de::DeserializeOwned>(line: &[u8]) -> Option<String> {
        serde_json::from_slice::<rmcp::model::JsonRpcRequest<T>>(line)
            .err()
            .map(|e| e.to_string().chars().take(300).collect())
    }
    use rmcp::model::{CallToolRequest, GetPromptRequest, InitializeRequest, ReadResourceRequest};
    let detail = match method {
        "tools/call" => error_of::<CallToolRequest>(line),
        "initialize" => error_of::<InitializeRequest>(line),
        "resources/read" => error_of::<ReadResourceRequest>(line),
        "prompts/get" => error_of::<GetPromptRequest>(line),
        _ => None,
    }
    .unwrap_or_else(|| "they do not have the members and types this method takes".into());
    Some(refusal_coded(
        &r.id.clone().into_json_value(),
        -32602,
        &format!(
            "invalid params for {method}: {detail}. Nothing was done; see the method's schema (tools/list gives each tool's)"
        ),
    ))
}

/// The answer to a line that is not a JSON message (`why`), as far as its top level can be
/// read: a request (a `method`) with its id (echoed as sent when it is a valid id), anything
/// unreadable with a `null` id (JSON-RPC 2.0, "Response object"); none for a notification (a
/// method and no id) or a response of the client's (`result` or `error`: its id is one the
/// server chose, and an error carrying it could be taken for the answer to the client's own
/// request of that id).
pub(super) fn not_a_message(text: &str, code: i32, why: &str) -> Option<String> {
    let top = super::repair::envelope(text);
    let message = format!("{why}. Nothing was done; {REQUEST_SHAPE}");
    if top.response {
        tracing::warn!("dropped a response from the client that could not be read: {why}");
        return None;
    }
    match (top.id, top.method) {
        // No sign of what the message is (an id alone may be a cut-off response): answered
        // without an id.
        (_, false) => Some(refusal_coded(&Value::Null, code, &message)),
        (None, true) => None,
        (Some(raw), true) => Some(match echoed_id(raw) {
            Some(Echo::Value(id)) => refusal_coded(&id, code, &message),
            Some(Echo::Raw(token)) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{token},\"error\":{{\"code\":{code},\"message\":{}}}}}",
                Value::String(message)
            ),
            None => refusal_coded(
                &Value::Null,
                code,
                &format!("{why}, and its id {} is not a string or an integer. Nothing was done; {REQUEST_SHAPE}", Value::String(raw.chars().take(60).collect())),
            ),
        }),
    }
}

enum Echo<'a> {
    /// An id serde reads, echoed as rmcp would (`1.0` as `1`).
    Value(Value),
    /// A string id with a lone surrogate escape (valid JSON text, which no Rust string holds),
    /// echoed byte for byte so the client can match it.
    Raw(&'a str),
}

/// How to echo the raw id token `raw`, or `None` when it is not a valid request id.
fn echoed_id(raw: &str) -> Option<Echo<'_>> {
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        return crate::arrival::request_id(&v).map(Echo::Value);
    }
    let fixed = super::repair::fix_surrogates(raw)?;
    serde_json::from_str::<String>(&fixed).ok()?;
    Some(Echo::Raw(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> ClientJsonRpcMessage {
        match serde_json::from_str(s) {
            Ok(m) => m,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn requests_cancellations_and_responses_are_told_apart() {
        let request = |key: &str, id: Value, run: bool| Seen::Request {
            key: key.into(),
            id,
            run,
        };
        // 7 and "7" are different ids; `1.0` is echoed (and keyed) as 1; only the tools that
        // run code are runs.
        for (line, expected) in [
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_python"}}"#,
                request("7", serde_json::json!(7), true),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"7","method":"ping"}"#,
                request("\"7\"", serde_json::json!("7"), false),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"read_file"}}"#,
                request("1", serde_json::json!(1), false),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#,
                Seen::Cancelled("7".into()),
            ),
            (r#"{"jsonrpc":"2.0","id":7,"result":{}}"#, Seen::Other),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Seen::Other,
            ),
        ] {
            assert_eq!(seen(&msg(line)), expected, "{line}");
        }
    }

    /// The answers name what was wrong, carry the id when rmcp could read it, and a
    /// notification is never answered.
    #[test]
    fn unreadable_messages_are_answered_with_what_was_wrong() {
        let answer = |line: &str| -> Option<Value> {
            let err = match serde_json::from_str::<ClientJsonRpcMessage>(line) {
                Ok(_) => panic!("rmcp reads {line}"),
                Err(e) => e,
            };
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            unreadable(&v, line.as_bytes(), &err)
                .map(|r| serde_json::from_str(&r).unwrap_or_default())
        };
        let r = answer(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":7}}"#)
            .unwrap_or_default();
        assert_eq!(r["id"], 5, "{r}");
        let text = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("the request could not be read (")
                && text.ends_with("Nothing was done."),
            "{text}"
        );
        let r = answer(r#"{"id":5,"method":"ping"}"#).unwrap_or_default();
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("the request lacks \"jsonrpc\""),
            "{r}"
        );
        let r = answer(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#).unwrap_or_default();
        assert!(r["id"].is_null(), "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("the request id is an object"),
            "{r}"
        );
        let r = answer(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_or_default();
        assert!(r["id"].is_null() && r["error"]["code"] == -32600, "{r}");
        let r = answer(r#"{"jsonrpc":"2.0","id":3,"error":7}"#).unwrap_or_default();
        assert!(r["id"].is_null() && r["error"]["code"] == -32600, "{r}");
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":7}"#),
            None
        );
    }
}
