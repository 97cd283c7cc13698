//! A line filter between the process's stdin and the MCP transport. JSON-RPC requests that a
//! strict parser would silently drop (so the client waits forever) are turned into requests the
//! tools reject with a clear error: invalid UTF-8, lone UTF-16 surrogate escapes, numbers no
//! float can hold, and oversized lines. It also writes stdout, so a request reusing the id of
//! one still in flight gets an error at once instead of being passed on. Ids are tracked as
//! rmcp echoes them (`1.0` is answered as `1`); a request rmcp cannot read (an id such as
//! `1.5` or `{}`, no `"jsonrpc":"2.0"`) is answered here, because rmcp's answer to it carries
//! `"id":null` and would never release the id.
//!
//! The parts: `repair.rs` turns lines a strict parser would drop into requests carrying a
//! rejection; `ids.rs` reads what each line means for the ids in flight (and answers the
//! requests rmcp would refuse); this file moves the lines between the pipes.

mod ids;
mod repair;

pub use ids::MAX_IN_FLIGHT;
use ids::{classify, refusal, response_id, Seen};
use repair::{inspect, oversized, too_many, PREFIX};
pub use repair::{repair, too_many_values};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};

/// The argument key that carries a rejection reason to the tools' argument extractor.
pub const REJECT_KEY: &str = "__kernel_mcp_rejected";

/// Largest request line passed on; longer lines are replaced by a rejection.
pub const MAX_LINE: usize = crate::limits::MAX_STDIO_LINE;

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
        let read_as = match &out {
            Some(replacement) => replacement.as_bytes(),
            None => line.strip_suffix(b"\n").unwrap_or(&line),
        };
        let seen = parsed
            .as_ref()
            .map(|m| classify(m, read_as))
            .unwrap_or(Seen::Other);
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

    type Lines = tokio::io::Lines<BufReader<DuplexStream>>;

    /// The next line one side reads (None at the end or on an error).
    async fn next(lines: &mut Lines) -> Option<String> {
        lines.next_line().await.ok().flatten()
    }

    /// Writes `bytes` for the other side to read.
    async fn send(to: &mut DuplexStream, bytes: &[u8]) {
        to.write_all(bytes).await.unwrap_or_default();
    }

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
        send(&mut client_in, format!("{ping}{ping}").as_bytes()).await;
        // The first reaches the transport; the second is answered by the guard.
        let first = next(&mut transport_in).await;
        assert_eq!(first.as_deref(), ping.strip_suffix('\n'));
        let refusal = next(&mut client_out).await.unwrap_or_default();
        assert!(
            refusal.contains("\"id\":1") && refusal.contains("already in use"),
            "{refusal}"
        );
        // Once the first is answered, the id is free again.
        let answer = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
        send(&mut transport_out, format!("{answer}\n").as_bytes()).await;
        let got = next(&mut client_out).await;
        assert_eq!(got.as_deref(), Some(answer));
        send(&mut client_in, ping.as_bytes()).await;
        let again = next(&mut transport_in).await;
        assert_eq!(again.as_deref(), ping.strip_suffix('\n'));
    }

    /// `1.0` is answered as `1`: the answer frees the id; an id rmcp refuses is answered here.
    #[tokio::test]
    async fn ids_are_released_by_answers_that_normalise_them() {
        let (mut client_in, mut transport_out, mut transport_in, mut client_out) = pipes();
        let float = "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"ping\"}\n";
        let bad = "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}\n";
        send(&mut client_in, format!("{float}{bad}").as_bytes()).await;
        let first = next(&mut transport_in).await;
        assert_eq!(first.as_deref(), float.strip_suffix('\n'));
        let refusal = next(&mut client_out).await.unwrap_or_default();
        assert!(
            refusal.contains("\"id\":null") && refusal.contains("request id is 1.5"),
            "{refusal}"
        );
        // rmcp answers `1.0` as `1`.
        let answer = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
        send(&mut transport_out, format!("{answer}\n").as_bytes()).await;
        let got = next(&mut client_out).await;
        assert_eq!(got.as_deref(), Some(answer));
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        send(&mut client_in, ping.as_bytes()).await;
        let again = next(&mut transport_in).await;
        assert_eq!(again.as_deref(), ping.strip_suffix('\n'));
    }
}
