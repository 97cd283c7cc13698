//! The stdio transport rmcp serves on: reads client lines, turns JSON-RPC requests that a
//! strict parser would silently drop (so the client waits forever) into requests the tools
//! reject with a clear error (invalid UTF-8, lone UTF-16 surrogate escapes, numbers no float
//! can hold, oversized lines), and writes rmcp's messages to stdout. A request reusing the id
//! of one still in flight gets an error at once instead of being passed on. Ids are tracked as
//! rmcp echoes them (`1.0` is answered as `1`); a request rmcp cannot read (an id such as
//! `1.5` or `{}`, no `"jsonrpc":"2.0"`, parameters that do not fit its method) is answered
//! here, because rmcp's answer to it carries no id and would never release the id.
//!
//! Each line is parsed once, into rmcp's own message type, and handed to rmcp as that value:
//! no second parse, no relay task or pipe between this filter and rmcp (round 3 measured the
//! filter as a line relay in front of rmcp's own reader at ~10% of the server's CPU per call).
//! Only a line rmcp's type refuses is parsed again, loosely, to say why and to find its id.
//!
//! The parts: `repair.rs` turns lines a strict parser would drop into requests carrying a
//! rejection; `ids.rs` reads what each message means for the ids in flight (and words the
//! answers to requests rmcp would refuse); this file reads and writes the lines.

mod ids;
mod reading;
mod repair;

pub use ids::MAX_IN_FLIGHT;
use ids::{not_a_message, refusal, seen, Seen};
pub use reading::{read, read_stand_in, rejection_words, stand_in_answer, Reading};
use repair::{oversized, too_many, PREFIX};
pub use repair::{repair, too_many_values};

use std::sync::Arc;

use rmcp::model::ClientJsonRpcMessage;
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The argument key that carries a rejection reason to the tools' argument extractor.
pub const REJECT_KEY: &str = "__kernel_mcp_rejected";

/// Largest request line passed on; longer lines are replaced by a rejection.
pub const MAX_LINE: usize = crate::limits::MAX_STDIO_LINE;

/// Refusals being written at once; past it, reading waits (a client that sends bad lines and
/// never reads its answers cannot make them pile up in memory).
const REFUSALS_AT_ONCE: u32 = 64;

/// Ids of the requests passed on and not answered yet.
type InFlight = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// Where every line to the client is written, one whole line at a time.
type Out<W> = Arc<tokio::sync::Mutex<W>>;

/// The guarded stdio transport (an rmcp [`rmcp::transport::Transport`]).
pub struct Guarded<R, W> {
    input: BufReader<R>,
    /// The line being read: kept here, so a `receive` that rmcp drops mid-line (it polls it
    /// inside a `select!`) loses nothing.
    line: Vec<u8>,
    /// Bytes of the current line, counted past what is kept of an oversized one.
    total: usize,
    out: Out<W>,
    in_flight: InFlight,
    /// A refusal judged but not yet handed to a writer (kept across a dropped `receive`).
    pending: Option<Vec<u8>>,
    refusals: Arc<tokio::sync::Semaphore>,
}

/// Waits for the last lines to reach the client (see [`Guarded::finisher`]).
pub struct Finisher<W> {
    out: Out<W>,
    refusals: Arc<tokio::sync::Semaphore>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> Finisher<W> {
    /// Returns once every refusal has been written and stdout flushed.
    pub async fn finish(self) {
        let _all = self.refusals.acquire_many(REFUSALS_AT_ONCE).await;
        let _ = self.out.lock().await.flush().await;
    }
}

/// The transport between the client's `input`/`output` and rmcp.
pub fn guard<R, W>(input: R, output: W) -> Guarded<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Guarded {
        input: BufReader::with_capacity(1 << 16, input),
        line: Vec::new(),
        total: 0,
        out: Arc::new(tokio::sync::Mutex::new(output)),
        in_flight: Default::default(),
        pending: None,
        refusals: Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE as usize)),
    }
}

/// Writes one line (`bytes` ends with `\n`) and flushes it.
async fn write_line<W: AsyncWrite + Unpin>(
    out: &tokio::sync::Mutex<W>,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut w = out.lock().await;
    w.write_all(bytes).await?;
    w.flush().await
}

/// What becomes of one client line.
#[derive(Debug)]
enum Verdict {
    /// rmcp handles it.
    Pass(Box<ClientJsonRpcMessage>),
    /// Answered here with this line (an error), never passed on.
    Refuse(String),
    /// Neither passed on nor answered (blank lines, text that is not JSON, notifications rmcp
    /// cannot read: rmcp ignores them too).
    Drop,
}

impl<R, W> Guarded<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// What waits for the last lines to reach the client once rmcp is done.
    pub fn finisher(&self) -> Finisher<W> {
        Finisher {
            out: self.out.clone(),
            refusals: self.refusals.clone(),
        }
    }

    /// Reads up to the end of the next line into `self.line`; false at the end of the input.
    /// Past [`MAX_LINE`] only a prefix is kept (to find the id in).
    async fn read_line(&mut self) -> bool {
        loop {
            let chunk = match self.input.fill_buf().await {
                Ok([]) | Err(_) => return false,
                Ok(c) => c,
            };
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            self.total = self.total.saturating_add(take);
            let keep = if self.total > MAX_LINE {
                PREFIX.saturating_sub(self.line.len())
            } else {
                take
            };
            self.line
                .extend_from_slice(chunk.get(..take.min(keep)).unwrap_or_default());
            if self.total > MAX_LINE && self.line.len() > PREFIX {
                self.line.truncate(PREFIX);
            }
            self.input.consume(take);
            if done {
                return true;
            }
        }
    }

    /// Judges the line read (and clears it for the next).
    fn judge(&mut self) -> Verdict {
        let total = std::mem::take(&mut self.total);
        let verdict = judge(&self.line, total, &self.in_flight);
        self.line.clear();
        verdict
    }
}

/// Judges one client line of `total` bytes (`line` holds a prefix of an oversized one).
fn judge(line: &[u8], total: usize, in_flight: &InFlight) -> Verdict {
    if total > MAX_LINE {
        tracing::warn!(bytes = total, "rejected an oversized request");
        // A line refused whole is never passed on, even when no stand-in could be made for it
        // (no id in its first bytes: a notification).
        let prefix = String::from_utf8_lossy(line);
        return refused_whole(&prefix, &oversized(total), in_flight);
    }
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Drop;
    }
    if let Some(n) = too_many_values(body) {
        tracing::warn!(
            bytes = total,
            values = n,
            "rejected a request of too many JSON values"
        );
        let prefix = String::from_utf8_lossy(body.get(..PREFIX).unwrap_or(body));
        return refused_whole(&prefix, &too_many(), in_flight);
    }
    match reading::read(body) {
        Reading::Message(msg) => admit(*msg, in_flight),
        Reading::StandIn(text) => stand_in(Some(text), in_flight),
        Reading::Answer(reply) => Verdict::Refuse(reply),
        Reading::Silent(why) => {
            tracing::debug!("dropped a line: {why}");
            Verdict::Drop
        }
    }
}

/// A line refused whole for `reason` (of which `prefix` is the start): a tool call is answered
/// by the tool (a stand-in call carries the reason), any other request with a JSON-RPC error
/// naming it, a notification not at all.
fn refused_whole(prefix: &str, reason: &str, in_flight: &InFlight) -> Verdict {
    if repair::envelope(prefix).method_name.as_deref() == Some("tools/call") {
        if let Some(text) = repair::stand_in(prefix, &format!("{reason}. Nothing was done.")) {
            return stand_in(Some(text), in_flight);
        }
    }
    match not_a_message(prefix, -32600, reason) {
        Some(reply) => Verdict::Refuse(reply),
        None => Verdict::Drop,
    }
}

/// A stand-in request made for a line refused whole or repaired, or nothing when none could
/// be made (no id found: a notification).
fn stand_in(replacement: Option<String>, in_flight: &InFlight) -> Verdict {
    let Some(text) = replacement else {
        return Verdict::Drop;
    };
    match reading::read_stand_in(&text) {
        Reading::Message(msg) => admit(*msg, in_flight),
        Reading::Answer(reply) => Verdict::Refuse(reply),
        Reading::StandIn(_) | Reading::Silent(_) => Verdict::Drop,
    }
}

/// Passes on a message rmcp reads, unless it is a request whose id is in flight already (or
/// too many are): those are answered here.
fn admit(msg: ClientJsonRpcMessage, in_flight: &InFlight) -> Verdict {
    match seen(&msg) {
        Seen::Request { key, id, run } => match in_flight.lock() {
            Ok(f) if f.contains(&key) => {
                tracing::warn!("refused a request: its id is in flight");
                Verdict::Refuse(refusal(
                    &id,
                    &format!("request id {key} is already in use by a request that has not been answered yet; use a new id for each request (the earlier request is still running and will be answered)"),
                ))
            }
            Ok(f) if f.len() >= MAX_IN_FLIGHT => Verdict::Refuse(refusal(
                &id,
                &format!("{MAX_IN_FLIGHT} requests are already waiting for an answer; wait for some to finish"),
            )),
            Ok(mut f) => {
                f.insert(key.clone());
                drop(f);
                if run {
                    let _ = crate::arrival::arrived(key);
                }
                Verdict::Pass(Box::new(msg))
            }
            Err(_) => Verdict::Pass(Box::new(msg)),
        },
        Seen::Cancelled(key) => {
            if let Ok(mut f) = in_flight.lock() {
                f.remove(&key);
            }
            crate::arrival::done(&key);
            Verdict::Pass(Box::new(msg))
        }
        Seen::Other => Verdict::Pass(Box::new(msg)),
    }
}

impl<R, W> rmcp::transport::Transport<RoleServer> for Guarded<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    /// Writes one message; an answer releases its request's id first, so a client that reads
    /// it and reuses the id is never refused.
    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            rmcp::model::JsonRpcMessage::Response(r) => Some(r.id.clone()),
            rmcp::model::JsonRpcMessage::Error(e) => e.id.clone(),
            _ => None,
        };
        let in_flight = self.in_flight.clone();
        let out = self.out.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            if let Some(id) = answered {
                let key = crate::arrival::key(&id.into_json_value());
                if let Ok(mut f) = in_flight.lock() {
                    f.remove(&key);
                }
                crate::arrival::done(&key);
            }
            write_line(&out, &bytes).await
        }
    }

    /// The next message for rmcp; `None` once the client's input has ended. Cancel-safe: the
    /// line being read and a refusal not yet handed on stay in `self`.
    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if self.pending.is_some() {
                let permit = self.refusals.clone().acquire_owned().await.ok()?;
                if let Some(bytes) = self.pending.take() {
                    let out = self.out.clone();
                    tokio::spawn(async move {
                        let _ = write_line(&out, &bytes).await;
                        drop(permit);
                    });
                }
            }
            if !self.read_line().await {
                return None;
            }
            match self.judge() {
                Verdict::Pass(msg) => return Some(*msg),
                Verdict::Refuse(text) => {
                    let mut bytes = text.into_bytes();
                    bytes.push(b'\n');
                    self.pending = Some(bytes);
                }
                Verdict::Drop => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.out.lock().await.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::reading::tool_call;
    use super::*;
    use futures::FutureExt;
    use rmcp::transport::Transport;
    use tokio::io::DuplexStream;

    type Lines = tokio::io::Lines<BufReader<DuplexStream>>;

    /// The guarded transport between a client's two pipes: what the client writes, and the
    /// lines it reads.
    fn pipes() -> (DuplexStream, Lines, Guarded<DuplexStream, DuplexStream>) {
        let (client_in, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, client_out) = tokio::io::duplex(1 << 16);
        (
            client_in,
            BufReader::new(client_out).lines(),
            guard(server_in, server_out),
        )
    }

    async fn send(to: &mut DuplexStream, bytes: &[u8]) {
        to.write_all(bytes).await.unwrap_or_default();
    }

    async fn next(lines: &mut Lines) -> String {
        lines.next_line().await.ok().flatten().unwrap_or_default()
    }

    /// The id of a message rmcp was handed (`None` for other messages and the end).
    fn request_id(m: Option<RxJsonRpcMessage<RoleServer>>) -> Option<serde_json::Value> {
        match m? {
            rmcp::model::JsonRpcMessage::Request(r) => Some(r.id.into_json_value()),
            _ => None,
        }
    }

    /// rmcp's answer to request `id`.
    fn answer(id: i64) -> TxJsonRpcMessage<RoleServer> {
        rmcp::model::JsonRpcMessage::response(
            rmcp::model::ServerResult::empty(()),
            rmcp::model::NumberOrString::Number(id),
        )
    }

    #[tokio::test]
    async fn a_duplicate_id_in_flight_is_refused_and_both_are_answered() {
        let (mut client_in, mut client_out, mut t) = pipes();
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        send(&mut client_in, format!("{ping}{ping}").as_bytes()).await;
        // The first reaches rmcp; the second is answered here (rmcp polls `receive` again
        // and drops it when it has other work: the refusal is written all the same).
        assert_eq!(request_id(t.receive().await), Some(serde_json::json!(1)));
        assert!(t.receive().now_or_never().is_none());
        let refusal = next(&mut client_out).await;
        assert!(
            refusal.contains("\"id\":1") && refusal.contains("already in use"),
            "{refusal}"
        );
        // Once the first is answered, the id is free again.
        t.send(answer(1)).await.unwrap_or_else(|e| panic!("{e}"));
        let got = next(&mut client_out).await;
        assert_eq!(got, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        send(&mut client_in, ping.as_bytes()).await;
        assert_eq!(request_id(t.receive().await), Some(serde_json::json!(1)));
    }

    /// `1.0` is answered as `1`: the answer frees the id; an id rmcp refuses is answered here.
    #[tokio::test]
    async fn ids_are_released_by_answers_that_normalise_them() {
        let (mut client_in, mut client_out, mut t) = pipes();
        let float = "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"ping\"}\n";
        let bad = "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}\n";
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        send(&mut client_in, format!("{float}{bad}").as_bytes()).await;
        assert_eq!(request_id(t.receive().await), Some(serde_json::json!(1)));
        assert!(t.receive().now_or_never().is_none());
        let refusal = next(&mut client_out).await;
        assert!(
            refusal.contains("\"id\":null") && refusal.contains("request id is 1.5"),
            "{refusal}"
        );
        t.send(answer(1)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            next(&mut client_out).await,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        );
        send(&mut client_in, ping.as_bytes()).await;
        assert_eq!(request_id(t.receive().await), Some(serde_json::json!(1)));
    }

    /// rmcp drops `receive` whenever it has something else to do: the half of a line read
    /// by then is kept, not lost.
    #[tokio::test]
    async fn a_receive_dropped_mid_line_loses_nothing() {
        let (mut client_in, _client_out, mut t) = pipes();
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":\"half\",\"method\":\"ping\"}\n";
        let (a, b) = ping.split_at(20);
        send(&mut client_in, a.as_bytes()).await;
        assert!(
            t.receive().now_or_never().is_none(),
            "a half line is not a message"
        );
        send(&mut client_in, b.as_bytes()).await;
        assert_eq!(
            request_id(t.receive().await),
            Some(serde_json::json!("half"))
        );
        // Blank lines, a BOM and CRLF endings are read as rmcp reads them.
        send(
            &mut client_in,
            b"\n\r\n\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\r\n",
        )
        .await;
        assert_eq!(request_id(t.receive().await), Some(serde_json::json!(2)));
        drop(client_in);
        assert!(
            t.receive().await.is_none(),
            "the end of the input ends the transport"
        );
    }

    /// The filter passes on exactly the requests rmcp reads, and answers every other one, so
    /// every request it tracks gets an answer carrying its id.
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
        let (mut passed, mut refused) = (0, 0);
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let read = serde_json::from_str::<ClientJsonRpcMessage>(line).ok();
            // rmcp reads a known method whose params do not fit it as a custom request (and
            // would answer "method not found"): those are answered here as invalid params.
            let misfit = read
                .as_ref()
                .is_some_and(|m| ids::misfit(m, line.as_bytes()).is_some());
            let rmcp_reads = read.is_some() && !misfit;
            // Each line alone, so no id is in flight.
            match judge(line.as_bytes(), line.len(), &InFlight::default()) {
                Verdict::Pass(_) => {
                    assert!(rmcp_reads, "passed on, rmcp refuses: {line}");
                    passed += 1;
                }
                Verdict::Refuse(reply) => {
                    assert!(!rmcp_reads, "refused, rmcp reads: {line}");
                    let r: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
                    let code = if misfit { -32602 } else { -32600 };
                    assert_eq!(r["error"]["code"], code, "{reply}");
                    match crate::arrival::request_id(&v["id"]) {
                        Some(id) => assert_eq!(r["id"], id, "{reply}"),
                        None => assert!(r["id"].is_null(), "{reply}"),
                    }
                    refused += 1;
                }
                Verdict::Drop => panic!("a request was neither passed on nor answered: {line}"),
            }
        }
        assert!(
            passed >= 5 && refused >= 10,
            "{passed} passed, {refused} refused"
        );
    }

    /// A tool call read the short way is the message rmcp's own type makes of it, `_meta`
    /// (the progress token) included; calls rmcp reads differently go the long way.
    #[test]
    fn tool_calls_read_the_short_way_are_what_rmcp_reads() {
        let calls = [
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"x + 1"}}}"#,
            r#"{"method":"tools/call","params":{"_meta":{"progressToken":"p1"},"name":"read_file","arguments":{"path":"a"}},"jsonrpc":"2.0","id":"s","extra":[1]}"#,
            r#"{"jsonrpc":"2.0","id":4.0,"method":"tools/call","params":{"name":"list_files"}}"#,
        ];
        for line in calls {
            let short = tool_call(line.as_bytes());
            let long = serde_json::from_str::<ClientJsonRpcMessage>(line).ok();
            assert!(short.is_some(), "{line}");
            assert_eq!(
                serde_json::to_value(&short).unwrap_or_default(),
                serde_json::to_value(&long).unwrap_or_default(),
                "{line}"
            );
            let meta = |m: Option<ClientJsonRpcMessage>| match m {
                Some(rmcp::model::JsonRpcMessage::Request(r)) => {
                    use rmcp::model::GetExtensions;
                    r.request
                        .extensions()
                        .get::<rmcp::model::RequestMetaObject>()
                        .cloned()
                }
                _ => None,
            };
            let long_meta = meta(serde_json::from_str(line).ok());
            assert_eq!(long_meta.is_some(), line.contains("_meta"), "{line}");
            assert_eq!(meta(tool_call(line.as_bytes())), long_meta, "{line}");
        }
        for other in [
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","result":{},"params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","method":"tools/call","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        ] {
            assert!(tool_call(other.as_bytes()).is_none(), "{other}");
        }
    }

    /// A line rmcp would drop without an answer still gets one (a stand-in carrying the
    /// rejection to the tool); text that is not JSON, and notifications, get none.
    #[test]
    fn lines_a_strict_parser_drops_are_answered_or_dropped_as_rmcp_would() {
        let pass = |line: &[u8]| match judge(line, line.len(), &InFlight::default()) {
            Verdict::Pass(m) => Some(*m),
            _ => None,
        };
        let bad_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"arguments\":{\"c\":\"\xff\"}}}";
        let Some(rmcp::model::JsonRpcMessage::Request(r)) = pass(bad_utf8) else {
            panic!("no stand-in for invalid UTF-8");
        };
        let rmcp::model::ClientRequest::CallToolRequest(call) = r.request else {
            panic!("the stand-in is not a tool call");
        };
        assert!(call
            .params
            .arguments
            .unwrap_or_default()
            .contains_key(REJECT_KEY));
        for dropped in [
            &b"   "[..],
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":7}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"a":1e400}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"id":3,"a":"#,
        ] {
            assert!(
                matches!(
                    judge(dropped, dropped.len(), &InFlight::default()),
                    Verdict::Drop
                ),
                "{}",
                String::from_utf8_lossy(dropped)
            );
        }
        // An oversized line: only its prefix was kept, and the stand-in keeps its id.
        let prefix = br#"{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"write_file","arguments":{"content":"xxxx"#;
        let Some(rmcp::model::JsonRpcMessage::Request(r)) =
            (match judge(prefix, MAX_LINE + 1, &InFlight::default()) {
                Verdict::Pass(m) => Some(*m),
                _ => None,
            })
        else {
            panic!("no stand-in for an oversized line");
        };
        assert_eq!(r.id.into_json_value(), serde_json::json!("big"));
    }

    /// Every line that holds a request gets an answer, whatever else is wrong with it: the
    /// id as sent where the top level shows one (nested members never taken for it), `null`
    /// where none is readable; requests of known methods whose params do not fit get
    /// "invalid params", not rmcp's "method not found"; an oversized request that is not a
    /// tool call gets an error, not the tool stand-in's "tool not found".
    #[test]
    fn every_request_line_is_answered_with_its_id() {
        let answer = |line: &[u8], total: usize| -> serde_json::Value {
            match judge(line, total, &InFlight::default()) {
                Verdict::Refuse(r) => {
                    serde_json::from_str(&r).unwrap_or_else(|e| panic!("{r} is not JSON: {e}"))
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
            }
        };
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1001,"method":"ping","params":{{"x":{}{}}}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        let unclosed = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"ping","params":{{"x":{}"#,
            "[".repeat(200_000)
        );
        let null = serde_json::Value::Null;
        for (line, id, code) in [
            (
                r#"{"jsonrpc":"2.0","id":35,"method":"ping","params":{"x":1e400}}"#,
                serde_json::json!(35),
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":1e400}}"#,
                serde_json::json!(7),
                -32700,
            ),
            (&deep, serde_json::json!(1001), -32700),
            (&unclosed, serde_json::json!(7), -32700),
            (
                r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"print(1)"}}"#,
                serde_json::json!(6),
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","id":31,"method":"ping"} trailing"#,
                serde_json::json!(31),
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","params":{"id":99},"id":"s","method":"ping","x":tru}"#,
                serde_json::json!("s"),
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
                null.clone(),
                -32700,
            ),
            ("not json", null.clone(), -32700),
            (
                r#"{"jsonrpc":"2.0","params":{"id":99,"#,
                null.clone(),
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","\u0069d":6,"method":"ping"} x"#,
                serde_json::json!(6),
                -32700,
            ),
            (r#"{"jsonrpc":"2.0","id":8} x"#, null.clone(), -32700),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
                serde_json::json!(1),
                -32602,
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call"}"#,
                serde_json::json!(2),
                -32602,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{}}"#,
                serde_json::json!(3),
                -32602,
            ),
        ] {
            let r = answer(line.as_bytes(), line.len());
            assert_eq!(r["id"], id, "{line:.200}: {r}");
            assert_eq!(r["error"]["code"], code, "{line:.200}: {r}");
            if code == -32602 {
                let m = r["error"]["message"].as_str().unwrap_or_default();
                assert!(m.starts_with("invalid params for "), "{m}");
            }
        }
        // A lone surrogate in a string id: echoed as sent, so the client can match it.
        let line = br#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#;
        let Verdict::Refuse(r) = judge(line, line.len(), &InFlight::default()) else {
            panic!("not answered");
        };
        assert!(r.contains(r#""id":"\ud800""#), "{r}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&r.replacen(
                r#""id":"\ud800""#,
                r#""id":"x""#,
                1
            ))
            .is_ok(),
            "{r}"
        );
        // Oversized (only a prefix kept): a ping is refused by name, a tool call still gets
        // the tool's stand-in.
        let prefix = br#"{"jsonrpc":"2.0","id":44,"method":"ping","params":{"x":"xxxx"#;
        let r = answer(prefix, MAX_LINE + 1);
        assert_eq!(r["id"], 44, "{r}");
        let m = r["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains("byte limit"), "{m}");
        // A response of the client's is never answered, however malformed: its id is the
        // server's, and an error carrying it could be taken for the answer to the client's own
        // request of that id.
        for response in [
            &br#"{"jsonrpc":"2.0","id":24,"result":{}} trailing"#[..],
            br#"{"jsonrpc":"2.0","id":24,"result":1e400}"#,
            br#"{"jsonrpc":"2.0","id":26,"result":{"a":"b"}"#,
            br#"{"jsonrpc":"2.0","id":25,"error":{"code":1,"message":"\ud800"}}"#,
            br#"{"jsonrpc":"2.0","id":27,"error":{"code":1,"message":"x"},"method":"a"} x"#,
        ] {
            assert!(
                matches!(
                    judge(response, response.len(), &InFlight::default()),
                    Verdict::Drop
                ),
                "{}",
                String::from_utf8_lossy(response)
            );
        }
        let big = br#"{"jsonrpc":"2.0","id":31,"result":"xxxx"#;
        assert!(matches!(
            judge(big, MAX_LINE + 1, &InFlight::default()),
            Verdict::Drop
        ));
        // The notification-looking prefix of an oversized line is not answered.
        let note = br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"x":"xxxx"#;
        assert!(matches!(
            judge(note, MAX_LINE + 1, &InFlight::default()),
            Verdict::Drop
        ));
    }
}
