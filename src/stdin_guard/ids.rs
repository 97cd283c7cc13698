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
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32600, "message": message}
    })
    .to_string()
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
