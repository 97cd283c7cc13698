//! What one client message is, read once into rmcp's message type: a line over stdio, a
//! request body over HTTP. A message rmcp's type refuses is read again, loosely, to say why
//! and to find its id. Both transports use this, so a malformed request gets the same answer
//! whichever way it came; what each does with the answer (a line on stdout, an HTTP response)
//! is its own.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;

use super::ids::{misfit, not_a_message, refusal_coded, unreadable};
use super::repair::inspect;
use super::REJECT_KEY;

/// What one client message is.
#[derive(Debug)]
pub enum Reading {
    /// rmcp reads it as it is.
    Message(Box<ClientJsonRpcMessage>),
    /// A `tools/call` whose arguments cannot be passed on (invalid UTF-8, a lone surrogate
    /// escape, a number no float holds): the stand-in request that carries the reason to the
    /// tool's argument check (see [`REJECT_KEY`]), so the call is refused as any call with
    /// bad arguments is.
    StandIn(String),
    /// Answered here with this JSON-RPC error, never passed on (the request's id, or `null`
    /// when none can be read).
    Answer(String),
    /// Not answered (nothing to answer: a blank line, a notification or a response of the
    /// client's that cannot be read; rmcp ignores those too), with why.
    Silent(String),
}

/// Reads one message (`body` without its line end).
pub fn read(body: &[u8]) -> Reading {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Reading::Silent("the message is empty".into());
    }
    // The common case: rmcp's own type reads it, once.
    if let Some(msg) = tool_call(body) {
        return Reading::Message(Box::new(msg));
    }
    let err = match serde_json::from_slice::<ClientJsonRpcMessage>(body) {
        Ok(msg) => {
            if let Some(reply) = misfit(&msg, body) {
                tracing::warn!("refused a request whose params do not fit its method");
                return Reading::Answer(reply);
            }
            return Reading::Message(Box::new(msg));
        }
        Err(e) => e,
    };
    let inspected = inspect(body);
    match (inspected.replacement, inspected.parsed) {
        // Repaired: a request that carries its rejection to the tool.
        (Some(replacement), _) => Reading::StandIn(replacement),
        (None, Some(msg)) => match unreadable(&msg, body, &err) {
            Some(reply) => {
                tracing::warn!("refused a request rmcp could not read: {err}");
                Reading::Answer(reply)
            }
            None => Reading::Silent(format!("a notification that could not be read: {err}")),
        },
        // Not JSON (cut short, trailing text, a number no float holds, nested too deep):
        // answered with its id where its top level shows one, so no client waits for ever.
        (None, None) => {
            let text = String::from_utf8_lossy(body);
            let why: String = if inspected.lone_surrogate {
                "a lone UTF-16 surrogate escape such as \\ud800, which no Unicode text holds".into()
            } else {
                err.to_string().chars().take(300).collect()
            };
            let why = format!("the message is not valid JSON ({why})");
            match not_a_message(&text, -32700, &why) {
                Some(reply) => {
                    tracing::warn!("refused a message that is not valid JSON: {why}");
                    Reading::Answer(reply)
                }
                None => Reading::Silent(why),
            }
        }
    }
}

/// A `tools/call` request read as rmcp reads it, without trying the thirteen kinds of request
/// its message type tries first (`ClientRequest` is an untagged enum: each kind that does not
/// fit costs a failed parse and an error message, most of the parse of a short call). `None`
/// when the message is anything else, or a call rmcp's own request type does not read (then
/// the whole message type decides, as for every other message).
pub(super) fn tool_call(body: &[u8]) -> Option<ClientJsonRpcMessage> {
    use rmcp::model::{CallToolRequest, JsonRpcRequest};
    /// The members that decide what kind of message a line is (rmcp's shape check): read
    /// without building the others. A repeated one fails here, and the line goes the long way.
    #[derive(serde::Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        id: Option<serde::de::IgnoredAny>,
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    let request = shape.method.as_deref() == Some("tools/call")
        && shape.id.is_some()
        && shape.result.is_none()
        && shape.error.is_none();
    if !request {
        return None;
    }
    let call: JsonRpcRequest<CallToolRequest> = serde_json::from_slice(body).ok()?;
    Some(JsonRpcMessage::Request(JsonRpcRequest {
        jsonrpc: call.jsonrpc,
        id: call.id,
        request: ClientRequest::CallToolRequest(call.request),
    }))
}

/// Reads a stand-in request (see [`Reading::StandIn`]): it keeps the envelope it was made
/// from, which rmcp may still refuse (an id rmcp does not take).
pub fn read_stand_in(text: &str) -> Reading {
    match serde_json::from_str::<ClientJsonRpcMessage>(text) {
        Ok(msg) => Reading::Message(Box::new(msg)),
        Err(err) => match serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| unreadable(&v, text.as_bytes(), &err))
        {
            Some(reply) => Reading::Answer(reply),
            None => Reading::Silent(format!("a stand-in notification: {err}")),
        },
    }
}

/// How a tool words a call refused for `reason` (the argument check's error).
pub fn rejection_words(reason: &str) -> String {
    format!("failed to deserialize parameters: {reason}")
}

/// The JSON-RPC error a tool gives a stand-in `msg` (see [`Reading::StandIn`]), for a
/// transport that answers it without reaching a tool (over HTTP a call reaches a tool only
/// through its session, and a refused call must not open one). `None` when `msg` carries no
/// rejection.
pub fn stand_in_answer(msg: &ClientJsonRpcMessage) -> Option<String> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    let ClientRequest::CallToolRequest(call) = &r.request else {
        return None;
    };
    let reason = call.params.arguments.as_ref()?.get(REJECT_KEY)?;
    let reason = reason.as_str().unwrap_or("the request was malformed");
    Some(refusal_coded(
        &r.id.clone().into_json_value(),
        -32602,
        &rejection_words(reason),
    ))
}
