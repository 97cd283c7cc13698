//! A gateway kernel's channels over one WebSocket (`/api/kernels/{id}/channels`): the v1
//! binary subprotocol where the server offers it, JSON messages otherwise (the codecs are
//! `wire/websocket.rs`). One reader task routes what arrives and reconnects a dropped socket
//! on a backoff schedule; sends are bounded in size and time, so a gateway that stops reading
//! loses the kernel instead of hanging it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::rest::{Rest, REST_TIMEOUT};
#[cfg(test)]
use super::timing::Backoff;
use super::timing::{Reconnects, WsTiming};
use crate::error::{GatewayError, KernelError, WireError};
use crate::kernel::backend::Channels;
use crate::wire::{websocket, Channel, Heartbeat, Message, MsgId, Router, Subscription};

/// Largest WebSocket message accepted from the gateway (the same order as the ZeroMQ cap).
const MAX_WS_MESSAGE: usize = 256 << 20;
/// Largest WebSocket message sent to the gateway. The biggest kernel-mcp sends is an
/// execute_request whose code came in one MCP request: at most `limits::MAX_STDIO_LINE` (48 MiB)
/// on stdio, 32 MiB by default over HTTP (`--max-body`); re-encoding it as JSON never grows it
/// (the request already carried it JSON-escaped), and the envelope adds a few KiB. File writes
/// through the kernel are smaller still (`MAX_REMOTE_BYTES`, 9.3 MiB of base64), and
/// Tornado-based gateways refuse client messages over 10 MiB by default anyway. Anything larger
/// is refused before it is sent, so it cannot fill the write buffer below.
const MAX_WS_SEND: usize = crate::limits::MAX_STDIO_LINE + (1 << 20);
/// Bound on tungstenite's write buffer (unlimited by default). It only grows while the gateway
/// does not read: a gateway that floods Ping frames and never reads would otherwise queue Pong
/// replies without end. Room for one whole [`MAX_WS_SEND`] message plus tungstenite's 128 KiB
/// write threshold and the Pongs queued while that message drains.
const MAX_WS_WRITE_BUFFER: usize = MAX_WS_SEND + (4 << 20);
// The write buffer takes any message that may be sent, with room to spare.
const _: () = assert!(MAX_WS_WRITE_BUFFER > MAX_WS_SEND + (128 << 10));
/// The binary kernel WebSocket subprotocol (jupyter_server, "Kernel WebSocket protocols": each
/// message is a table of little-endian u64 offsets, then the channel name, then the header,
/// parent header, metadata and content as JSON, then any buffers).
const V1_PROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// How messages are framed on the kernel's WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsProtocol {
    /// One JSON text message per kernel message (the legacy default).
    Json,
    /// The v1 binary framing.
    V1,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsSink = futures::stream::SplitSink<WsStream, WsMessage>;

/// The kernel's channels multiplexed over one WebSocket (JSON messages with a `channel` key).
/// A dropped socket is reconnected on the [`Backoff`] schedule; if a reconnect fails or the
/// schedule gives up, or a send finds the gateway no longer reading, the router closes and
/// the kernel counts as gone.
pub(super) struct WsChannels {
    /// The kernel's id, for logs.
    id: String,
    session: String,
    /// Whether the current connection speaks the v1 protocol (a reconnect may change it).
    v1: Arc<AtomicBool>,
    sink: Arc<Mutex<WsSink>>,
    router: Router,
    reconnects: Arc<AtomicU32>,
    reader: tokio::task::JoinHandle<()>,
    timing: WsTiming,
}

impl Drop for WsChannels {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the kernel's channels WebSocket for `session`, offering the v1 subprotocol; a server
/// that does not take it (the handshake fails, or it answers without one) gets the JSON
/// protocol on a second connection.
async fn connect_ws(
    rest: &Rest,
    id: &str,
    session: &str,
) -> Result<(WsStream, WsProtocol), KernelError> {
    match connect_ws_with(rest, id, session, true).await {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::trim);
            if chosen == Some(V1_PROTOCOL) {
                return Ok((ws, WsProtocol::V1));
            }
            Ok((ws, WsProtocol::Json))
        }
        Err(first) => match connect_ws_with(rest, id, session, false).await {
            Ok((ws, _)) => Ok((ws, WsProtocol::Json)),
            Err(_) => Err(first),
        },
    }
}

type WsResponse = tokio_tungstenite::tungstenite::handshake::client::Response;

async fn connect_ws_with(
    rest: &Rest,
    id: &str,
    session: &str,
    offer_v1: bool,
) -> Result<(WsStream, WsResponse), KernelError> {
    let mut url = rest.url(&format!("api/kernels/{id}/channels"))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url.query_pairs_mut().append_pair("session_id", session);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| KernelError::Unavailable {
            reason: GatewayError::BadWebSocketUrl {
                at: rest.shown.clone(),
                detail: e.to_string(),
            }
            .into(),
        })?;
    if let Some(t) = &rest.token {
        if let Ok(v) = format!("token {t}").parse() {
            req.headers_mut().insert("Authorization", v);
        }
    }
    if offer_v1 {
        if let Ok(v) = V1_PROTOCOL.parse() {
            req.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE))
        .max_write_buffer_size(MAX_WS_WRITE_BUFFER);
    let (ws, resp) = tokio::time::timeout(
        REST_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .map_err(|_| KernelError::Unavailable {
        reason: GatewayError::WebSocketTimeout {
            at: rest.shown.clone(),
            secs: REST_TIMEOUT.as_secs(),
        }
        .into(),
    })?
    .map_err(|e| KernelError::Unavailable {
        reason: GatewayError::WebSocketRefused {
            at: rest.shown.clone(),
            detail: e.to_string(),
        }
        .into(),
    })?;
    Ok((ws, resp))
}

/// Routes messages from `stream` until it ends, fails, or goes silent: nothing (not even the
/// Pong to a Ping sent after [`WsTiming::ping_after`] of quiet) for a further
/// [`WsTiming::pong_wait`]. The caller reconnects unless the router was closed on purpose.
async fn pump(
    stream: &mut futures::stream::SplitStream<WsStream>,
    sink: &Mutex<WsSink>,
    r: &Router,
    protocol: WsProtocol,
    timing: WsTiming,
) {
    let mut heard = Instant::now();
    let mut pinged = false;
    let timer = tokio::time::sleep(timing.ping_after);
    tokio::pin!(timer);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = &mut timer => {
                // Checked only when the timer fires: a message does not re-arm it.
                let quiet = heard.elapsed();
                if quiet < timing.ping_after {
                    timer.as_mut().reset((heard + timing.ping_after).into());
                    continue;
                }
                if pinged {
                    tracing::warn!(quiet_secs = quiet.as_secs(), "the gateway's WebSocket went silent (no answer to a Ping); reconnecting");
                    return;
                }
                // A send under way holds the sink and has a time limit of its own; the Ping
                // waits for the next quiet spell rather than queue behind it.
                let Ok(mut guard) = sink.try_lock() else {
                    heard = Instant::now();
                    timer.as_mut().reset((heard + timing.ping_after).into());
                    continue;
                };
                let ping = guard.send(WsMessage::Ping(Default::default()));
                if !matches!(tokio::time::timeout(timing.pong_wait, ping).await, Ok(Ok(()))) {
                    tracing::warn!("the gateway's WebSocket took no Ping; reconnecting");
                    return;
                }
                drop(guard);
                pinged = true;
                timer.as_mut().reset((Instant::now() + timing.pong_wait).into());
                continue;
            }
        };
        let Some(item) = item else { return };
        heard = Instant::now();
        pinged = false;
        let decoded = match (&item, protocol) {
            (Ok(WsMessage::Text(t)), WsProtocol::Json) => {
                Some(websocket::decode_json(t.as_bytes()))
            }
            (Ok(WsMessage::Binary(b)), WsProtocol::V1) => Some(websocket::decode_v1(b)),
            (Ok(WsMessage::Binary(_)), WsProtocol::Json) => {
                // JSON-protocol binary frames carry messages with buffers (comms, widgets);
                // the outputs kernel-mcp returns never need them.
                tracing::debug!("ignored a binary WebSocket message");
                None
            }
            _ => None,
        };
        if let Some(d) = decoded {
            match d {
                Ok((channel, m)) => r.route(channel, m).await,
                Err(e) => {
                    tracing::warn!(error = %e, "dropped a malformed message from the gateway")
                }
            }
            continue;
        }
        match item {
            Ok(WsMessage::Close(_)) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the gateway's WebSocket failed");
                return;
            }
        }
    }
}

impl WsChannels {
    pub(super) async fn open(
        rest: &Rest,
        id: &str,
        router: Router,
        timing: WsTiming,
    ) -> Result<WsChannels, KernelError> {
        let session = uuid::Uuid::new_v4().to_string();
        let (ws, protocol) = connect_ws(rest, id, &session).await?;
        tracing::info!(kernel_id = %id, ?protocol, "kernel WebSocket open");
        let protocol_now = Arc::new(AtomicBool::new(protocol == WsProtocol::V1));
        let (sink, mut stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let reconnects = Arc::new(AtomicU32::new(0));
        let kernel_id = id.to_owned();
        let (r, rest, id, sess, snk, count, v1) = (
            router.clone(),
            rest.clone(),
            id.to_owned(),
            session.clone(),
            sink.clone(),
            reconnects.clone(),
            protocol_now.clone(),
        );
        let reader = tokio::spawn(async move {
            let mut protocol = protocol;
            let mut schedule = Reconnects::new(timing.backoff);
            let mut opened = Instant::now();
            loop {
                pump(&mut stream, &snk, &r, protocol, timing).await;
                if r.is_closed() {
                    return;
                }
                let Some(wait) = schedule.after_drop(opened.elapsed()) else {
                    tracing::error!(kernel_id = %id, "the gateway's WebSocket kept closing right after it opened; giving the kernel up");
                    break;
                };
                tokio::time::sleep(wait).await;
                if r.is_closed() {
                    return;
                }
                // One reconnect per drop, with the same session id: the gateway keeps the
                // kernel (and its state) while no client is connected.
                match connect_ws(&rest, &id, &sess).await {
                    Ok((ws, p)) => {
                        let (new_sink, new_stream) = ws.split();
                        let mut guard = snk.lock().await;
                        *guard = new_sink;
                        protocol = p;
                        v1.store(p == WsProtocol::V1, Ordering::SeqCst);
                        drop(guard);
                        stream = new_stream;
                        opened = Instant::now();
                        count.fetch_add(1, Ordering::SeqCst);
                        tracing::warn!(kernel_id = %id, "the gateway's WebSocket dropped and was reconnected");
                    }
                    Err(e) => {
                        tracing::error!(kernel_id = %id, error = %e, "the gateway's WebSocket dropped and could not be reconnected");
                        break;
                    }
                }
            }
            r.close("websocket");
        });
        Ok(WsChannels {
            id: kernel_id,
            session,
            sink,
            router,
            reconnects,
            reader,
            v1: protocol_now,
            timing,
        })
    }
}

#[async_trait]
impl Channels for WsChannels {
    fn session(&self) -> &str {
        &self.session
    }

    fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError> {
        self.router.subscribe(id)
    }

    async fn send(&self, channel: Channel, message: &Message) -> Result<(), WireError> {
        let gone = WireError::ReaderGone {
            channel: "websocket",
        };
        let mut sink = self.sink.lock().await;
        // A send that timed out closed the router and may have left its message half
        // written: nothing more goes on that socket.
        if self.router.is_closed() {
            return Err(gone);
        }
        // Read under the sink's lock: a reconnect swaps both together.
        let frame = if self.v1.load(Ordering::SeqCst) {
            WsMessage::Binary(websocket::encode_v1(channel, message)?.into())
        } else {
            WsMessage::Text(websocket::encode_json(channel, message)?.into())
        };
        let bytes = frame.len();
        if bytes > MAX_WS_SEND {
            return Err(WireError::TooLarge {
                bytes,
                limit: MAX_WS_SEND,
            });
        }
        let limit = self.timing.send_limit(bytes);
        let why = match tokio::time::timeout(limit, sink.send(frame)).await {
            Ok(Ok(())) => return Ok(()),
            // Only a gateway that stops reading fills the buffer (the message fits it).
            Ok(Err(tokio_tungstenite::tungstenite::Error::WriteBufferFull(_))) => {
                "its write buffer is full"
            }
            // A dropped socket: the reader sees it too and reconnects.
            Ok(Err(_)) => return Err(gone),
            Err(_) => "a send did not complete in time",
        };
        tracing::error!(kernel_id = %self.id, bytes, secs = limit.as_secs(), "the gateway stopped reading the kernel's WebSocket ({why}); giving the kernel up");
        self.router.close("websocket");
        Err(gone)
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::NotApplicable
    }

    fn closed(&self) -> bool {
        self.router.is_closed()
    }

    fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::rest::stand_in::fake_rest;
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use crate::wire::message::ExecuteRequest;
    use crate::wire::Content;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

    /// A gateway stand-in on 127.0.0.1 with a small receive buffer (no autotuning), so a big
    /// message cannot vanish into the loopback's buffers. Each kernel WebSocket it accepts
    /// (taking v1 when offered) is treated as `peer` says. Returns the REST handle for it and
    /// the count of WebSockets it accepted.
    async fn fake_gateway(peer: Peer) -> (Rest, Arc<AtomicUsize>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                // The signature is tungstenite's (its `Callback`), large error and all.
                #[allow(clippy::result_large_err)]
                let take_v1 =
                    |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                        if let Some(v) = req.headers().get("Sec-WebSocket-Protocol") {
                            resp.headers_mut()
                                .insert("Sec-WebSocket-Protocol", v.clone());
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, take_v1).await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                match &peer {
                    Peer::Hold => held.push(ws),
                    Peer::Close => {
                        let _ = ws.close(None).await;
                    }
                    Peer::Read(pings) => {
                        let pings = pings.clone();
                        // Reading is what answers Pings (tungstenite queues the Pong).
                        tokio::spawn(async move {
                            while let Some(Ok(m)) = ws.next().await {
                                if m.is_ping() {
                                    pings.send_modify(|n| *n += 1);
                                }
                            }
                        });
                    }
                }
            }
        });
        (fake_rest(addr), accepted)
    }

    /// What a stand-in gateway does with a kernel WebSocket it accepted.
    enum Peer {
        /// Keeps it open and never reads it (a gateway that stopped, a link gone half-open).
        Hold,
        /// Closes it at once.
        Close,
        /// Reads it for good, counting the Pings it receives.
        Read(tokio::sync::watch::Sender<u32>),
    }

    fn execute(session: &str, code: String) -> Message {
        Message::request(
            session,
            Content::ExecuteRequest(ExecuteRequest {
                code,
                silent: false,
                store_history: true,
                user_expressions: Default::default(),
                allow_stdin: false,
                stop_on_error: true,
            }),
        )
    }

    #[tokio::test]
    async fn a_gateway_that_stops_reading_fails_the_send_and_loses_the_kernel() {
        let (rest, accepted) = fake_gateway(Peer::Hold).await;
        let timing = WsTiming {
            send_grace: Duration::from_millis(300),
            min_send_rate: u64::MAX,
            ..WsTiming::DEFAULT
        };
        let router = Router::new();
        let chan = WsChannels::open(&rest, "k", router.clone(), timing)
            .await
            .unwrap();
        // Far more than the socket buffers hold: it is only sent if the gateway reads.
        let big = execute(chan.session(), "x".repeat(16 << 20));
        let first =
            tokio::time::timeout(Duration::from_secs(20), chan.send(Channel::Shell, &big)).await;
        assert!(
            matches!(first, Ok(Err(WireError::ReaderGone { .. }))),
            "{first:?}"
        );
        assert!(router.is_closed(), "the kernel should count as lost");
        assert!(chan.closed());
        // Later sends fail at once instead of queueing behind the stuck socket.
        let small = execute(chan.session(), "1".into());
        let second =
            tokio::time::timeout(Duration::from_secs(5), chan.send(Channel::Shell, &small)).await;
        assert!(matches!(second, Ok(Err(_))), "{second:?}");
        assert!(chan.subscribe(&small.header.msg_id).is_err());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_message_over_the_send_limit_is_refused_and_the_kernel_kept() {
        let (rest, _) = fake_gateway(Peer::Hold).await;
        let router = Router::new();
        let chan = WsChannels::open(&rest, "k", router.clone(), WsTiming::DEFAULT)
            .await
            .unwrap();
        let huge = execute(chan.session(), "x".repeat(MAX_WS_SEND));
        let sent = chan.send(Channel::Shell, &huge).await;
        assert!(matches!(sent, Err(WireError::TooLarge { .. })), "{sent:?}");
        assert!(!router.is_closed());
    }

    /// Opens the channels to a stand-in that treats every WebSocket as `peer` does, and checks
    /// that the reader gives the kernel up (the router closes) after the first connection and
    /// four reconnects, each of which died at once.
    async fn given_up_after_five_quick_deaths(peer: Peer) {
        let (rest, accepted) = fake_gateway(peer).await;
        let router = Router::new();
        let mut chan = WsChannels::open(&rest, "k", router.clone(), brisk())
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(60), &mut chan.reader).await;
        assert!(ended.is_ok(), "the reader kept reconnecting or waiting");
        assert!(router.is_closed());
        assert_eq!(chan.reconnects(), 4);
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_gateway_that_closes_every_websocket_at_once_is_given_up() {
        given_up_after_five_quick_deaths(Peer::Close).await;
    }

    /// Timing with a keep-alive quick enough for a test.
    fn brisk() -> WsTiming {
        WsTiming {
            ping_after: Duration::from_millis(50),
            pong_wait: Duration::from_millis(200),
            backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(4),
                ..WsTiming::DEFAULT.backoff
            },
            ..WsTiming::DEFAULT
        }
    }

    #[tokio::test]
    async fn a_gateway_that_goes_silent_is_pinged_and_then_given_up() {
        // Without Pongs every connection counts as dead: reconnected until the schedule
        // gives up, and then the kernel is lost rather than hung.
        given_up_after_five_quick_deaths(Peer::Hold).await;
    }

    #[tokio::test]
    async fn a_gateway_that_answers_pings_keeps_its_connection() {
        let (pings, mut seen) = tokio::sync::watch::channel(0u32);
        let (rest, accepted) = fake_gateway(Peer::Read(pings)).await;
        let router = Router::new();
        let chan = WsChannels::open(&rest, "k", router.clone(), brisk())
            .await
            .unwrap();
        // Six quiet spells, each ended by a Ping the gateway answered.
        let six = tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|n| *n >= 6)).await;
        assert!(matches!(six, Ok(Ok(_))), "the reader stopped pinging");
        assert!(!router.is_closed());
        assert_eq!(chan.reconnects(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
