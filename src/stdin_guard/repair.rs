//! Lines a strict JSON-RPC parser would drop silently (so the client waits for ever) turned
//! into requests the tools reject with a clear error: invalid UTF-8, lone surrogate escapes,
//! numbers no float can hold, oversized lines and lines of too many JSON values.

use super::{MAX_LINE, REJECT_KEY};

/// How much of an oversized line is kept to find its id and tool name.
pub(super) const PREFIX: usize = 4096;

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

/// What the top level of a message says, read as far as the text is well-formed: the raw
/// text of its first `id` member's value and whether it has a `method` (with the method's
/// name when it is a plain string). For lines that do not parse as a whole (cut short,
/// trailing text, a number no float holds, nesting past the parser's limit), so that a
/// request is still answered with its id. Members nested in `params` are never taken for it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Envelope<'a> {
    pub id: Option<&'a str>,
    pub method: bool,
    pub method_name: Option<String>,
    /// A `result` or `error` member: the client's answer to a request of the server's, which
    /// is never answered (its id is the server's, not one the client waits on).
    pub response: bool,
}

pub(super) fn envelope(text: &str) -> Envelope<'_> {
    let mut top = Envelope::default();
    let b = text.as_bytes();
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'{') {
        return top;
    }
    i += 1;
    loop {
        i = skip_space(b, i);
        if b.get(i) != Some(&b'"') {
            return top;
        }
        let Some(key_end) = string_end(b, i) else {
            return top;
        };
        let raw_key = text.get(i..key_end).unwrap_or_default();
        // A key written with escapes (`"\u0069d"`) is the key it decodes to.
        let key: std::borrow::Cow<str> = if raw_key.contains('\\') {
            serde_json::from_str::<String>(raw_key).map_or("".into(), Into::into)
        } else {
            raw_key
                .get(1..raw_key.len().saturating_sub(1))
                .unwrap_or_default()
                .into()
        };
        match &*key {
            "method" => top.method = true,
            "result" | "error" => top.response = true,
            _ => {}
        }
        i = skip_space(b, key_end);
        if b.get(i) != Some(&b':') {
            return top;
        }
        i = skip_space(b, i + 1);
        let Some(value_end) = value_end(b, i) else {
            return top;
        };
        let value = text.get(i..value_end).unwrap_or_default();
        match &*key {
            "id" if top.id.is_none() => top.id = Some(value),
            "method" if top.method_name.is_none() => {
                top.method_name = serde_json::from_str::<String>(value).ok();
            }
            _ => {}
        }
        i = skip_space(b, value_end);
        if b.get(i) != Some(&b',') {
            return top;
        }
        i += 1;
    }
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index just past the JSON value that starts at `i` (objects and arrays by counting
/// brackets outside strings, without recursion), `None` when the text ends first.
fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let start = i;
            while b
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
            {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// A small stand-in for a tools/call request that cannot be passed on, keeping its id and tool
/// name when they can be found, and carrying `reason` to the tool.
pub(super) fn stand_in(text: &str, reason: &str) -> Option<String> {
    // The top level's id only: an "id" inside the arguments is not the request's.
    let id: serde_json::Value = serde_json::from_str(envelope(text).id?).ok()?;
    let name = find_value(text, "name").unwrap_or(serde_json::Value::String("unknown".into()));
    let msg = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}}
    });
    reject(msg, reason)
}

/// Why an oversized request is refused.
pub(super) fn oversized(len: usize) -> String {
    format!("the request is {len} bytes, over the {MAX_LINE} byte limit; send less data per call (write big files in parts with append=true)")
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

/// Why a request of too many JSON values is refused (see [`too_many_values`]).
pub(super) fn too_many() -> String {
    format!("the request holds more than {} JSON values; send large data as one string (text, or base64 with encoding=\"base64\") or in several calls", crate::wire::message::MAX_JSON_VALUES)
}

/// A stand-in for a tools/call line that is not valid JSON as a whole, so a strict parser
/// would drop it silently (for example a number such as `1e999` that no f64 can hold).
fn unparsable(line: &str, error: &serde_json::Error) -> Option<String> {
    if envelope(line).method_name.as_deref() != Some("tools/call") {
        return None;
    }
    stand_in(
        line,
        &format!("the request is not valid JSON ({error}); numbers must fit a 64-bit float, strings must be closed. Nothing was done."),
    )
}

/// Repairs one line, or returns it unchanged (`None`).
pub fn repair(raw: &[u8]) -> Option<String> {
    inspect(raw).replacement
}

/// What [`inspect`] found in a line.
pub(super) struct Inspected {
    /// A stand-in request carrying the line's rejection to the tool.
    pub replacement: Option<String>,
    /// The line's JSON, when the line itself was valid JSON (so it is parsed once).
    pub parsed: Option<serde_json::Value>,
    /// The line holds a lone UTF-16 surrogate escape.
    pub lone_surrogate: bool,
}

/// Repairs one line and says what it found.
pub(super) fn inspect(raw: &[u8]) -> Inspected {
    let inspected = |replacement, parsed, lone_surrogate| Inspected {
        replacement,
        parsed,
        lone_surrogate,
    };
    let (text, bad_utf8) = match std::str::from_utf8(raw) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), false),
        Err(_) => (String::from_utf8_lossy(raw), true),
    };
    let fixed = fix_surrogates(&text);
    let lone_surrogate = fixed.is_some();
    if !bad_utf8 && !lone_surrogate {
        // Blank lines and garbage without an id are left to the transport, as before.
        return match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => inspected(None, Some(v), false),
            Err(e) if e.is_syntax() || e.is_data() => inspected(unparsable(&text, &e), None, false),
            Err(_) => inspected(None, None, false),
        };
    }
    let line = fixed.unwrap_or_else(|| text.into_owned());
    let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
        return inspected(None, None, lone_surrogate);
    };
    inspected(
        reject(
            msg,
            "the arguments contain text that is not valid Unicode (invalid UTF-8 or a lone surrogate escape); send valid UTF-8 text, or binary data with encoding=\"base64\". Nothing was done.",
        ),
        None,
        lone_surrogate,
    )
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
    fn oversized_keeps_id_and_name() {
        let prefix = r#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"write_file","arguments":{"content":"xxxx"#;
        let s = stand_in(prefix, &oversized(MAX_LINE + 1)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["params"]["name"], "write_file");
    }
}
