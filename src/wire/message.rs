//! Typed Jupyter messages: `Header`, `Message` and a `Content` enum keyed by `header.msg_type`.
//! Unknown message types are kept as `Content::Unknown`, never rejected. No sockets here.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::frames::Frames;
use crate::error::WireError;

/// Protocol version we speak (Jupyter messaging spec 5.3).
pub const PROTOCOL_VERSION: &str = "5.3";

/// A message id (`header.msg_id`), used to route replies and IOPub output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MsgId(pub String);

impl MsgId {
    /// A fresh random id.
    pub fn new() -> Self {
        MsgId(uuid::Uuid::new_v4().to_string())
    }
}

impl Default for MsgId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The five sockets of a kernel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Shell,
    IoPub,
    Control,
    Stdin,
    Heartbeat,
}

impl Channel {
    /// The channel's name as the spec spells it.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::IoPub => "iopub",
            Channel::Control => "control",
            Channel::Stdin => "stdin",
            Channel::Heartbeat => "hb",
        }
    }

    /// The message channel a WebSocket envelope names (both of jupyter_server's kernel
    /// WebSocket protocols use these four names); `None` for anything else, which is refused.
    pub fn from_ws_name(name: &[u8]) -> Option<Channel> {
        [
            Channel::Shell,
            Channel::IoPub,
            Channel::Control,
            Channel::Stdin,
        ]
        .into_iter()
        .find(|c| c.name().as_bytes() == name)
    }
}

/// A message header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub msg_id: MsgId,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub date: String,
    pub msg_type: String,
    #[serde(default)]
    pub version: String,
}

/// Kernel execution state carried by IOPub `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    Busy,
    Idle,
    Starting,
    Restarting,
    Dead,
    #[serde(other)]
    Other,
}

/// Which output stream a `stream` message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

/// `status` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Ok,
    Error,
    Aborted,
    #[serde(other)]
    Other,
}

/// A MIME bundle (`data` of display_data / execute_result).
pub type MimeBundle = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    pub silent: bool,
    pub store_history: bool,
    pub user_expressions: BTreeMap<String, String>,
    pub allow_stdin: bool,
    pub stop_on_error: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteReply {
    pub status: ReplyStatus,
    #[serde(default)]
    pub execution_count: Option<i64>,
    #[serde(default)]
    pub ename: Option<String>,
    #[serde(default)]
    pub evalue: Option<String>,
    #[serde(default)]
    pub traceback: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_expressions: Option<Value>,
    /// Deprecated-but-used reply payloads (messaging spec, "Payloads"): `page` for `obj?`
    /// help, `ask_exit` for `exit()`, `set_next_input`, `edit_magic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub name: StreamName,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisplayData {
    #[serde(default)]
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub transient: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResult {
    #[serde(default)]
    pub execution_count: Option<i64>,
    #[serde(default)]
    pub data: MimeBundle,
    #[serde(default)]
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorContent {
    #[serde(default)]
    pub ename: String,
    #[serde(default)]
    pub evalue: String,
    #[serde(default)]
    pub traceback: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub execution_state: ExecutionState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearOutput {
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteInput {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub execution_count: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfoReply {
    #[serde(default)]
    pub status: Option<ReplyStatus>,
    #[serde(default)]
    pub protocol_version: String,
    #[serde(default)]
    pub implementation: String,
    #[serde(default)]
    pub implementation_version: String,
    #[serde(default)]
    pub language_info: Value,
    #[serde(default)]
    pub banner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRequest {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub password: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputReply {
    pub value: String,
}

/// The one table of message types: each `msg_type` with its `Content` variant, from which
/// the enum, parsing (type → content), naming (content → type) and encoding are all generated,
/// so the three can never disagree. Unit variants carry no content (`{}` on the wire).
macro_rules! content_table {
    (
        units: [$($uname:literal => $uvar:ident),* $(,)?],
        typed: [$($tname:literal => $tvar:ident($tty:ty)),* $(,)?] $(,)?
    ) => {
        /// Message content, chosen by `header.msg_type`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Content {
            $($uvar,)*
            $($tvar($tty),)*
            /// A type the server does not use: kept by name, its body not parsed.
            Unknown { msg_type: String, body: Value },
        }

        impl Content {
            /// Every message type the table knows.
            pub const KNOWN: &'static [&'static str] = &[$($uname,)* $($tname,)*];

            /// Parses `bytes` as the content of a message of type `msg_type`.
            pub fn parse(msg_type: &str, bytes: &[u8]) -> Result<Content, WireError> {
                Ok(match msg_type {
                    $($uname => Content::$uvar,)*
                    $($tname => Content::$tvar(typed(msg_type, bytes)?),)*
                    // Nothing reads the body of a type the server does not know (comm traffic
                    // from widgets, debug events): it is not parsed, which a flood of 1 MB comm
                    // messages would otherwise pay for in full.
                    other => Content::Unknown {
                        msg_type: other.to_owned(),
                        body: Value::Null,
                    },
                })
            }

            /// The `msg_type` this content is sent as.
            pub fn msg_type(&self) -> &str {
                match self {
                    $(Content::$uvar => $uname,)*
                    $(Content::$tvar(_) => $tname,)*
                    Content::Unknown { msg_type, .. } => msg_type,
                }
            }

            /// The content as JSON bytes (as it goes into the content frame).
            pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self {
                    $(Content::$uvar => Ok(b"{}".to_vec()),)*
                    $(Content::$tvar(c) => serde_json::to_vec(c),)*
                    Content::Unknown { body, .. } => serde_json::to_vec(body),
                }
            }
        }
    };
}

fn typed<T: serde::de::DeserializeOwned>(msg_type: &str, bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|source| WireError::Content {
        msg_type: msg_type.to_owned(),
        source,
    })
}

content_table! {
    units: [
        "kernel_info_request" => KernelInfoRequest,
        "interrupt_request" => InterruptRequest,
    ],
    typed: [
        "kernel_info_reply" => KernelInfoReply(KernelInfoReply),
        "execute_request" => ExecuteRequest(ExecuteRequest),
        "execute_reply" => ExecuteReply(ExecuteReply),
        "execute_input" => ExecuteInput(ExecuteInput),
        "stream" => Stream(Stream),
        "display_data" => DisplayData(DisplayData),
        "update_display_data" => UpdateDisplayData(DisplayData),
        "execute_result" => ExecuteResult(ExecuteResult),
        "error" => Error(ErrorContent),
        "status" => Status(Status),
        "clear_output" => ClearOutput(ClearOutput),
        "shutdown_request" => ShutdownRequest(ShutdownRequest),
        "shutdown_reply" => ShutdownReply(Value),
        "interrupt_reply" => InterruptReply(Value),
        "input_request" => InputRequest(InputRequest),
        "input_reply" => InputReply(InputReply),
    ],
}

impl Header {
    /// A `parent_header` value: `{}` or `null` mean no parent (messaging spec, "General Message
    /// Format"); anything else must be a header.
    pub fn parent_from_slice(part: &[u8]) -> Result<Option<Header>, WireError> {
        // Most messages have a parent: read it as a header at once (one parse, not two), and
        // fall back to the general path for `{}`, `null` and anything unusual.
        let t = part.trim_ascii();
        if t != b"{}" && t != b"null" {
            if let Ok(h) = serde_json::from_slice::<Header>(t) {
                return Ok(Some(h));
            }
        }
        let v: Value = serde_json::from_slice(part).map_err(|source| WireError::Json {
            part: "parent_header",
            source,
        })?;
        Header::parent_from(v)
    }

    /// The same, from a parsed value.
    fn parent_from(v: Value) -> Result<Option<Header>, WireError> {
        match v {
            Value::Object(ref m) if m.is_empty() => Ok(None),
            Value::Null => Ok(None),
            other => serde_json::from_value(other)
                .map(Some)
                .map_err(|source| WireError::Json {
                    part: "parent_header",
                    source,
                }),
        }
    }
}

/// Most JSON values (and keys) one part of a received message may hold.
///
/// A parsed `serde_json::Value` takes 32 bytes or more however short its text is (`0,` is two
/// bytes), so the 32 MiB an IOPub message may carry, all small values, would take 0.5–1 GiB
/// once parsed; at this limit a part's parsed form stays within some tens of MiB. Real output
/// is far below it: a 32 MiB image is one string, and a table of a million cells is already
/// over any result's budget.
pub const MAX_JSON_VALUES: usize = 1 << 20;

/// Refuses `part` when it holds more than [`MAX_JSON_VALUES`] JSON values, counted without
/// parsing (see [`crate::text::json_values_over`]). Parts under 2 MiB cannot hold that many (a value and its
/// separator take at least two bytes) and are not scanned.
fn check_values(what: &'static str, part: &[u8]) -> Result<(), WireError> {
    if part.len() <= 2 * MAX_JSON_VALUES {
        return Ok(());
    }
    match crate::text::json_values_over(part, MAX_JSON_VALUES) {
        Some(count) => Err(WireError::TooMany {
            what,
            count,
            limit: MAX_JSON_VALUES,
        }),
        None => Ok(()),
    }
}

/// A typed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub identities: Vec<Bytes>,
    pub header: Header,
    pub parent_header: Option<Header>,
    pub metadata: Value,
    pub content: Content,
    pub buffers: Vec<Bytes>,
}

impl Message {
    /// A new request of `content`'s type in `session`.
    pub fn request(session: &str, content: Content) -> Message {
        Message {
            identities: Vec::new(),
            header: Header {
                msg_id: MsgId::new(),
                session: session.to_owned(),
                username: "kernel-mcp".to_owned(),
                date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                msg_type: content.msg_type().to_owned(),
                version: PROTOCOL_VERSION.to_owned(),
            },
            parent_header: None,
            metadata: Value::Object(Default::default()),
            content,
            buffers: Vec::new(),
        }
    }

    /// The `msg_id` of the request this message answers, if any.
    pub fn parent_id(&self) -> Option<&MsgId> {
        self.parent_header.as_ref().map(|h| &h.msg_id)
    }

    /// Decodes verified frames into a typed message.
    pub fn from_frames(frames: Frames) -> Result<Message, WireError> {
        Message::from_parts(
            frames.identities,
            [
                &frames.header,
                &frames.parent_header,
                &frames.metadata,
                &frames.content,
            ],
            frames.buffers,
        )
    }

    /// Decodes a message from the four JSON parts every transport carries (header,
    /// parent_header, metadata, content): the one decoder of the envelope, for ZeroMQ frames
    /// and both WebSocket protocols.
    pub fn from_parts(
        identities: Vec<Bytes>,
        [header, parent, metadata, content]: [&[u8]; 4],
        buffers: Vec<Bytes>,
    ) -> Result<Message, WireError> {
        let header: Header = serde_json::from_slice(header).map_err(|source| WireError::Json {
            part: "header",
            source,
        })?;
        let parent_header = Header::parent_from_slice(parent)?;
        check_values("JSON values in metadata", metadata)?;
        let metadata = serde_json::from_slice(metadata).map_err(|source| WireError::Json {
            part: "metadata",
            source,
        })?;
        // (The content of a type the server does not know is not parsed: nothing to bound.)
        if Content::KNOWN.contains(&header.msg_type.as_str()) {
            check_values("JSON values in content", content)?;
        }
        let content = Content::parse(&header.msg_type, content)?;
        Ok(Message {
            identities,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        })
    }

    /// The four JSON parts of the envelope (parent_header `{}` when there is none): the one
    /// encoder, for ZeroMQ frames and both WebSocket protocols.
    pub fn parts(&self) -> Result<[Vec<u8>; 4], WireError> {
        let json = |part: &'static str, r: Result<Vec<u8>, serde_json::Error>| {
            r.map_err(|source| WireError::Json { part, source })
        };
        Ok([
            json("header", serde_json::to_vec(&self.header))?,
            match &self.parent_header {
                Some(h) => json("parent_header", serde_json::to_vec(h))?,
                None => b"{}".to_vec(),
            },
            json("metadata", serde_json::to_vec(&self.metadata))?,
            json("content", self.content.to_json())?,
        ])
    }

    /// Encodes the message into frames (unsigned; signing happens in `Frames::encode`).
    pub fn to_frames(&self) -> Result<Frames, WireError> {
        let [header, parent_header, metadata, content] = self.parts()?;
        Ok(Frames {
            identities: self.identities.clone(),
            header: Bytes::from(header),
            parent_header: Bytes::from(parent_header),
            metadata: Bytes::from(metadata),
            content: Bytes::from(content),
            buffers: self.buffers.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::signer::Signer;

    #[test]
    fn json_values_are_counted_outside_strings_only() {
        assert_eq!(crate::text::json_values_over(b"[0,0,0]", 3), Some(4));
        assert_eq!(crate::text::json_values_over(b"[0,0,0]", 4), None);
        assert_eq!(
            crate::text::json_values_over(br#"{"a":1,"b":[2]}"#, 5),
            Some(6)
        );
        // Brackets, commas and colons inside strings, escaped quotes included, are not values.
        let s = br#"["a,b:[{", "\"[,,,]\\", "x"]"#;
        assert_eq!(crate::text::json_values_over(s, 4), None);
        assert_eq!(crate::text::json_values_over(s, 3), Some(4));
        // An unterminated string ends the count (the parser refuses the text anyway).
        assert_eq!(crate::text::json_values_over(br#"["abc,,,,"#, 2), None);
    }

    /// A part of many small values is refused before it is parsed; one as large made of a
    /// long string (an image) is parsed.
    #[test]
    fn a_part_of_too_many_values_is_refused_unparsed() {
        let header = serde_json::to_vec(&Message::request("s", Content::KernelInfoRequest).header)
            .unwrap_or_default();
        let mut header: serde_json::Value = serde_json::from_slice(&header).unwrap_or_default();
        header["msg_type"] = "display_data".into();
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let many = format!(
            "{{\"data\": {{\"application/json\": [{}0]}}, \"metadata\": {{}}}}",
            "0,".repeat(MAX_JSON_VALUES)
        );
        let r = Message::from_parts(
            Vec::new(),
            [&header, b"{}", b"{}", many.as_bytes()],
            Vec::new(),
        );
        assert!(
            matches!(
                r,
                Err(WireError::TooMany {
                    what: "JSON values in content",
                    limit: MAX_JSON_VALUES,
                    ..
                })
            ),
            "{r:?}"
        );
        let meta = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES));
        let r = Message::from_parts(
            Vec::new(),
            [&header, b"{}", meta.as_bytes(), b"{\"data\": {}}"],
            Vec::new(),
        );
        assert!(
            matches!(
                r,
                Err(WireError::TooMany {
                    what: "JSON values in metadata",
                    ..
                })
            ),
            "{r:?}"
        );
        let image = format!(
            "{{\"data\": {{\"image/png\": \"{}\"}}, \"metadata\": {{}}}}",
            "A,:[".repeat(MAX_JSON_VALUES)
        );
        let r = Message::from_parts(
            Vec::new(),
            [&header, b"{}", b"{}", image.as_bytes()],
            Vec::new(),
        );
        assert!(
            matches!(
                r,
                Ok(Message {
                    content: Content::DisplayData(_),
                    ..
                })
            ),
            "{r:?}"
        );
    }

    /// `{}` and `null` (with any spacing) mean no parent; a header is read in one parse; what
    /// is neither is an error naming the part.
    #[test]
    fn parent_headers_are_read_in_every_form() {
        let h = Message::request("s", Content::KernelInfoRequest).header;
        let json = serde_json::to_vec(&h).unwrap_or_default();
        assert_eq!(Header::parent_from_slice(&json).ok(), Some(Some(h)));
        for none in [&b"{}"[..], b" { } ", b"null", b"\n{\n}\n"] {
            assert_eq!(Header::parent_from_slice(none).ok(), Some(None), "{none:?}");
        }
        for bad in [&b"[]"[..], b"{\"msg_id\": 1}", b"", b"{"] {
            assert!(
                matches!(
                    Header::parent_from_slice(bad),
                    Err(WireError::Json {
                        part: "parent_header",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn round_trip_through_frames() {
        let msg = Message::request(
            "s",
            Content::ExecuteRequest(ExecuteRequest {
                code: "1+1".into(),
                silent: false,
                store_history: true,
                user_expressions: BTreeMap::new(),
                allow_stdin: false,
                stop_on_error: false,
            }),
        );
        let signer = Signer::new(b"k");
        let frames = msg.to_frames().map(|f| f.encode(&signer));
        let back = frames
            .and_then(|f| Frames::parse(f, &signer))
            .and_then(Message::from_frames);
        assert_eq!(back.ok(), Some(msg));
    }

    #[test]
    fn unknown_types_are_kept() {
        let c = Content::parse("comm_open", br#"{"comm_id":"x"}"#);
        assert!(matches!(c, Ok(Content::Unknown { ref msg_type, .. }) if msg_type == "comm_open"));
    }

    /// Every type of the table parses, names itself and encodes back to what it parsed.
    #[test]
    fn every_type_in_the_table_round_trips() {
        let sample = |t: &str| -> &'static str {
            match t {
                "execute_request" => {
                    r#"{"code":"1","silent":false,"store_history":true,"user_expressions":{},"allow_stdin":false,"stop_on_error":true}"#
                }
                "execute_reply" => r#"{"status":"ok","execution_count":3}"#,
                "stream" => r#"{"name":"stdout","text":"hi"}"#,
                "status" => r#"{"execution_state":"idle"}"#,
                "error" => r#"{"ename":"E","evalue":"v","traceback":[]}"#,
                "shutdown_request" => r#"{"restart":false}"#,
                "input_reply" => r#"{"value":"x"}"#,
                _ => "{}",
            }
        };
        assert_eq!(Content::KNOWN.len(), 18);
        for t in Content::KNOWN {
            let c = Content::parse(t, sample(t).as_bytes()).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(c.msg_type(), *t);
            assert!(!matches!(c, Content::Unknown { .. }), "{t}");
            let json = c.to_json().unwrap_or_default();
            assert_eq!(Content::parse(t, &json).ok(), Some(c), "{t}");
        }
    }

    #[test]
    fn bad_content_is_an_error() {
        assert!(Content::parse("stream", br#"{"name":"stdout"}"#).is_err());
        assert!(Content::parse("status", b"not json").is_err());
    }
}
