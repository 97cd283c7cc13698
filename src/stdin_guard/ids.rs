//! What a client line means for the requests in flight: a request (keyed as rmcp echoes its
//! id), a cancellation, or a request rmcp would refuse with an answer carrying `"id":null`,
//! which is answered here instead so its id is released.

/// Most requests awaiting an answer at once; more get an error at once (bounded memory).
pub const MAX_IN_FLIGHT: usize = 4096;

/// What one client line means for the ids in flight.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
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

/// Why rmcp would refuse `line` for a member its top-level object repeats (`jsonrpc`, `id`,
/// `method` or `params`): serde_json's `Value`
/// keeps the last silently, but rmcp's message types refuse the whole line and answer with
/// `"id":null`, so the request's id would never be released. Read without building values.
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
        serde_json::Value::String(key.chars().take(100).collect())
    ))
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

/// `line` is the text the transport will read, `msg` what it parses to.
pub(super) fn classify(msg: &serde_json::Value, line: &[u8]) -> Seen {
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
            Some(canonical) => match rmcp_refuses(obj).or_else(|| repeated_key(line)) {
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
pub(super) fn response_id(line: &[u8]) -> Option<String> {
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
pub(super) fn refusal(id: &serde_json::Value, message: &str) -> String {
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

    #[test]
    fn requests_cancellations_and_responses_are_told_apart() {
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
        let classify = |m: serde_json::Value| classify(&m, m.to_string().as_bytes());
        assert_eq!(
            classify(v(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#)),
            Seen::Request("7".into(), serde_json::json!(7))
        );
        // 7 and "7" are different ids.
        assert_eq!(
            classify(v(r#"{"jsonrpc":"2.0","id":"7","method":"ping"}"#)),
            Seen::Request("\"7\"".into(), serde_json::json!("7"))
        );
        assert_eq!(
            classify(v(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#
            )),
            Seen::Cancelled("7".into())
        );
        assert_eq!(
            classify(v(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#)),
            Seen::Other
        );
        assert_eq!(
            classify(v(
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
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{},"params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","x":1,"x":2}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1,"x":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"a":1,"a":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"ping"}"#,
        ];
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let rmcp_reads =
                serde_json::from_str::<rmcp::model::ClientJsonRpcMessage>(line).is_ok();
            match classify(&v, line.as_bytes()) {
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
}
