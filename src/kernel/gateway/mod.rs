//! The gateway backend (`--gateway-url`): kernels started on a Jupyter Server, Kernel Gateway
//! or Enterprise Gateway through its REST API and talked to over the kernel channels WebSocket
//! (`/api/kernels/{id}/channels`): the `v1.kernel.websocket.jupyter.org` binary protocol where
//! the server offers it (Jupyter Server 2, Kernel Gateway 3), the JSON protocol otherwise
//! (older servers, Enterprise Gateway 3). The only module that speaks HTTP; it never logs or
//! returns the token.
//!
//! Over 600 lines as one concern: a gateway kernel's life (create, connect the channels, pump,
//! reconnect, interrupt, restart, delete) shares one state, read best in one place; the HTTP
//! exchange itself is `http1.rs`, the record of started kernels `ledger.rs`, the envelope
//! codecs `wire/websocket.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use url::Url;

mod http1;
mod ledger;

use crate::error::{GatewayError, KernelError, WireError};
use crate::kernel::backend::{Channels, Gone, Lifecycle, Ownership};
use crate::kernel::client::Kernel;
use crate::kernel::source::{Backend, BackendInfo, BackendKind};
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
/// Bound on each REST call; kernel starts get the start-up timeout instead.
const REST_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Characters of a gateway's error body quoted in an error.
const BODY_SNIPPET: usize = 300;

/// Where the gateway is and how to ask it for kernels.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Base URL, e.g. `http://127.0.0.1:8888` (a path prefix is kept).
    pub url: String,
    /// Sent as `Authorization: token ...`; never logged or shown.
    pub token: Option<String>,
    /// Kernelspec to start; `None` lets the gateway pick its default.
    pub kernel_name: Option<String>,
    /// How long a kernel may take to start and answer kernel_info.
    pub startup_timeout: Duration,
    /// Delete kernels that servers now gone (killed, crashed) started on this gateway
    /// (`--reap-orphans`).
    pub reap_orphans: bool,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &redact(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("kernel_name", &self.kernel_name)
            .field("reap_orphans", &self.reap_orphans)
            .finish()
    }
}

/// The URL without user info, query or fragment: safe for logs and reports.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Starts kernels on a Jupyter gateway.
pub struct GatewayBackend {
    cfg: GatewayConfig,
    base: Url,
    shown: String,
    /// The record of kernels started here (None: no data folder, or its lock failed).
    ledger: Option<Arc<ledger::Ledger>>,
    /// Orphans were looked for (once per server, at the first kernel start).
    reaped: AtomicBool,
}

impl GatewayBackend {
    /// Checks the URL and builds the HTTP client; nothing is contacted yet.
    ///
    /// # Errors
    /// A URL that is not `http://` (or `https://` with the `tls` feature), or has no host.
    pub fn new(cfg: GatewayConfig) -> Result<GatewayBackend, KernelError> {
        let bad = |why: &str| KernelError::Unavailable {
            reason: GatewayError::BadUrl {
                url: redact(&cfg.url),
                why: why.to_owned(),
            }
            .into(),
        };
        let mut base = Url::parse(cfg.url.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        match base.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => return Err(bad("https is not built into this kernel-mcp: build it with `--features tls`, or reach the gateway through an http tunnel or proxy on 127.0.0.1 (see the README)")),
            other => return Err(bad(&format!("scheme {other:?} is not http"))),
        }
        if base.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("a user name or password in the URL is not used by Jupyter gateways; give the token with --gateway-token (or JUPYTER_GATEWAY_AUTH_TOKEN)"));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let shown = redact(base.as_str());
        let ledger = crate::dirs::data_dir()
            .map_err(|e| e.to_string())
            .and_then(|d| ledger::Ledger::open(&d).map_err(|e| e.to_string()));
        let ledger = match ledger {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                tracing::warn!(error = %e, "no record of gateway kernels: a crash of this server would leave its kernels to the gateway's idle culling");
                None
            }
        };
        Ok(GatewayBackend {
            cfg,
            base,
            shown,
            ledger,
            reaped: AtomicBool::new(false),
        })
    }

    fn rest(&self) -> Rest {
        Rest {
            base: self.base.clone(),
            shown: self.shown.clone(),
            token: self.cfg.token.clone(),
            ledger: self.ledger.clone(),
        }
    }

    /// Deletes, in the background, the kernels that servers now gone started on this gateway.
    fn reap_orphans(&self) {
        if self.reaped.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(ledger) = &self.ledger else { return };
        if !self.cfg.reap_orphans {
            tracing::info!(gateway = %self.shown, "--reap-orphans false: kernels left by servers that were killed are not looked for");
            return;
        }
        let orphans = ledger.orphans(&self.shown);
        if orphans.ids.is_empty() {
            orphans.done();
            return;
        }
        let rest = self.rest();
        tokio::spawn(async move {
            for id in &orphans.ids {
                tracing::info!(kernel_id = %id, gateway = %rest.shown, "reaping a gateway kernel left by a server that ended without deleting it (--reap-orphans)");
                rest.delete(id).await;
            }
            orphans.done();
        });
    }
}

/// The REST half: cheap to clone into lifecycles and background deletes.
#[derive(Clone)]
struct Rest {
    base: Url,
    shown: String,
    token: Option<String>,
    ledger: Option<Arc<ledger::Ledger>>,
}

impl Rest {
    fn url(&self, path: &str) -> Result<Url, KernelError> {
        self.base.join(path).map_err(|e| KernelError::Unavailable {
            reason: GatewayError::BadPath {
                path: path.to_owned(),
                detail: e.to_string(),
            }
            .into(),
        })
    }

    /// Sends one REST call and returns the JSON body (or `null` for an empty one).
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, KernelError> {
        let what = format!("{method} {path}");
        let url = self.url(path)?;
        let body = body.map(|b| b.to_string().into_bytes());
        // Bounded read: a gateway answer is small JSON.
        let sent = tokio::time::timeout(
            limit,
            http1::exchange(&url, method, self.token.as_deref(), body, 4 << 20),
        )
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {} s", limit.as_secs())));
        let (status, bytes) = sent.map_err(|detail| KernelError::Unavailable {
            reason: GatewayError::Unreachable {
                at: self.shown.clone(),
                // http1's error names the certificate when TLS verification failed.
                certificate: detail.to_ascii_lowercase().contains("certificate"),
                detail,
            }
            .into(),
        })?;
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(KernelError::Unavailable {
                reason: GatewayError::Refused {
                    at: self.shown.clone(),
                    what,
                    status: status.as_u16(),
                }
                .into(),
            });
        }
        if !status.is_success() {
            let snippet: String = String::from_utf8_lossy(&bytes)
                .chars()
                .filter(|c| !c.is_control())
                .take(BODY_SNIPPET)
                .collect();
            return Err(KernelError::Unavailable {
                reason: GatewayError::Status {
                    at: self.shown.clone(),
                    what,
                    status: status.as_u16(),
                    snippet,
                }
                .into(),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| KernelError::Unavailable {
            reason: GatewayError::BadJson {
                at: self.shown.clone(),
                what,
                detail: e.to_string(),
            }
            .into(),
        })
    }

    /// Deletes kernel `id`; once the gateway says it is gone (deleted now, or unknown: 404),
    /// its record goes too. True then; false when it may still run (worth another try).
    async fn delete(&self, id: &str) -> bool {
        let path = format!("api/kernels/{}", path_segment(id));
        let Ok(url) = self.url(&path) else {
            return false;
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            http1::exchange(
                &url,
                http::Method::DELETE,
                self.token.as_deref(),
                None,
                64 << 10,
            ),
        )
        .await
        .unwrap_or_else(|_| Err("timed out after 10 s".to_owned()));
        match sent {
            Ok((status, _)) if status.is_success() || status == http::StatusCode::NOT_FOUND => {
                tracing::info!(
                    kernel_id = id,
                    status = status.as_u16(),
                    "deleted the gateway kernel"
                );
                if let Some(l) = &self.ledger {
                    l.forget(id);
                }
                true
            }
            Ok((status, _)) => {
                tracing::warn!(
                    kernel_id = id,
                    status = status.as_u16(),
                    "could not delete the gateway kernel"
                );
                false
            }
            Err(e) => {
                tracing::warn!(kernel_id = id, error = %e, "could not delete the gateway kernel");
                false
            }
        }
    }
}

/// A kernel id as one URL path segment (ids are UUIDs; anything else is escaped).
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[async_trait]
impl Backend for GatewayBackend {
    async fn start(&self) -> Result<Kernel, KernelError> {
        self.reap_orphans();
        let rest = self.rest();
        let started = Instant::now();
        let deadline = started + self.cfg.startup_timeout;
        let body = match &self.cfg.kernel_name {
            Some(n) => json!({ "name": n }),
            None => json!({}),
        };
        let model = start_kernel(&rest, body, self.cfg.startup_timeout, &self.shown).await?;
        let id = model
            .get("id")
            .and_then(Value::as_str)
            .map(path_segment)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| KernelError::Unavailable {
                reason: GatewayError::NoKernelId {
                    at: self.shown.clone(),
                }
                .into(),
            })?;
        let name = model
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        tracing::info!(kernel_id = %id, kernel_name = %name, gateway = %self.shown, "gateway kernel started");
        if let Some(l) = &self.ledger {
            l.record(&self.shown, &id);
        }
        // From here on the kernel exists: any failure deletes it before returning.
        let life = Remote {
            rest: rest.clone(),
            id: id.clone(),
            router: Router::new(),
            deleted: Arc::new(std::sync::atomic::AtomicU8::new(LIVE)),
        };
        let chan = match WsChannels::open(&rest, &id, life.router.clone(), WsTiming::DEFAULT).await
        {
            Ok(c) => Arc::new(c),
            Err(e) => {
                life.delete().await;
                return Err(e);
            }
        };
        let shown = self.shown.clone();
        let hint = move || format!("; gateway {shown}");
        Kernel::connect(chan, Box::new(life), started, deadline, &hint).await
    }

    fn files_live_with_kernel(&self) -> bool {
        true
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Gateway,
            ownership: Ownership::Owned,
            target: Some(self.shown.clone()),
            kernel_name: self.cfg.kernel_name.clone(),
        }
    }
}

/// How much longer than the start-up timeout a kernel start is followed after its caller gave
/// up, so that a kernel the gateway starts late (Enterprise Gateway launching a pod) is still
/// deleted rather than left running with an id nobody learned.
const LATE_START_GRACE: Duration = Duration::from_secs(300);

/// `POST /api/kernels`, answered within `limit`. The request runs in a task of its own: if
/// the answer comes after `limit`, or the start is cancelled (its future dropped), the kernel
/// the gateway started meanwhile is deleted when its id arrives instead of being leaked.
async fn start_kernel(
    rest: &Rest,
    body: Value,
    limit: Duration,
    shown: &str,
) -> Result<Value, KernelError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task_rest = rest.clone();
    tokio::spawn(async move {
        let answer = task_rest
            .call(
                http::Method::POST,
                "api/kernels",
                Some(body),
                limit.saturating_add(LATE_START_GRACE),
            )
            .await;
        // The receiver is gone: nobody will use this kernel.
        if let Err(Ok(model)) = tx.send(answer) {
            if let Some(id) = model.get("id").and_then(Value::as_str).map(path_segment) {
                tracing::warn!(kernel_id = %id, "a gateway kernel started after its start had been given up; deleting it");
                task_rest.delete(&id).await;
            }
        }
    });
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(KernelError::Unavailable {
            reason: GatewayError::Unreachable {
                at: shown.to_owned(),
                certificate: false,
                detail: "the kernel start stopped unexpectedly".to_owned(),
            }
            .into(),
        }),
        Err(_) => Err(KernelError::Unavailable {
            reason: GatewayError::Unreachable {
                at: shown.to_owned(),
                certificate: false,
                detail: format!("timed out after {} s", limit.as_secs()),
            }
            .into(),
        }),
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsSink = futures::stream::SplitSink<WsStream, WsMessage>;

/// How long a send may take before the gateway counts as no longer reading, and how dropped
/// sockets are reconnected; [`WsTiming::DEFAULT`] outside tests.
#[derive(Debug, Clone, Copy)]
struct WsTiming {
    /// Time every send gets, however small: a gateway that stops reading the socket would
    /// otherwise leave the send (and the sink's lock every other send and the reconnect
    /// need) pending for good, hanging the kernel handle.
    send_grace: Duration,
    /// Bytes per second a big message is allowed on top of the grace: a 48 MiB cell over a
    /// slow tunnel is a slow reader, not a gone one.
    min_send_rate: u64,
    /// When to reconnect a dropped socket, and when to give up.
    backoff: Backoff,
}

impl WsTiming {
    const DEFAULT: WsTiming = WsTiming {
        send_grace: Duration::from_secs(30),
        min_send_rate: 256 << 10,
        backoff: Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
            stable: Duration::from_secs(30),
            quick: Duration::from_secs(5),
            max_quick: 5,
        },
    };

    /// How long sending a message of `bytes` may take.
    fn send_limit(&self, bytes: usize) -> Duration {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let extra = Duration::from_secs(bytes / self.min_send_rate.max(1));
        self.send_grace.saturating_add(extra)
    }
}

/// The reconnect schedule of a kernel WebSocket: a gateway that accepts the handshake and
/// closes at once must not get a tight connect loop (and a warning a pass), and one that keeps
/// doing it has lost the kernel.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// Wait before the second reconnect in a row (the first goes at once), doubled on each
    /// further one...
    first: Duration,
    /// ...up to this.
    max: Duration,
    /// A connection that lived this long worked: the schedule starts over.
    stable: Duration,
    /// A connection that died sooner than this counts as a quick failure...
    quick: Duration,
    /// ...and this many of them with no stable connection between give up.
    max_quick: u32,
}

/// Where a kernel WebSocket is in its [`Backoff`] schedule.
#[derive(Debug)]
struct Reconnects {
    policy: Backoff,
    next: Duration,
    quick: u32,
    /// The next reconnect goes at once: the first drop after a stable connection (a send
    /// meanwhile finds the old socket gone and loses the kernel, so a wait costs state).
    at_once: bool,
}

impl Reconnects {
    fn new(policy: Backoff) -> Reconnects {
        Reconnects {
            policy,
            next: policy.first,
            quick: 0,
            at_once: true,
        }
    }

    /// The wait before reconnecting after a connection that lived `lived` dropped, or `None`
    /// to give up.
    fn after_drop(&mut self, lived: Duration) -> Option<Duration> {
        if lived >= self.policy.stable {
            self.next = self.policy.first;
            self.quick = 0;
            self.at_once = true;
        }
        if lived < self.policy.quick {
            self.quick = self.quick.saturating_add(1);
            if self.quick >= self.policy.max_quick {
                return None;
            }
        }
        if std::mem::take(&mut self.at_once) {
            return Some(Duration::ZERO);
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.policy.max);
        Some(wait)
    }
}

/// The kernel's channels multiplexed over one WebSocket (JSON messages with a `channel` key).
/// A dropped socket is reconnected on the [`Backoff`] schedule; if a reconnect fails or the
/// schedule gives up, or a send finds the gateway no longer reading, the router closes and
/// the kernel counts as gone.
struct WsChannels {
    /// The kernel's id, for logs.
    id: String,
    session: String,
    /// Whether the current connection speaks the v1 protocol (a reconnect may change it).
    v1: Arc<std::sync::atomic::AtomicBool>,
    sink: Arc<Mutex<WsSink>>,
    router: Router,
    reconnects: Arc<std::sync::atomic::AtomicU32>,
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

/// Routes messages from `stream` until it ends (true) or the router was closed on purpose.
async fn pump(
    stream: &mut futures::stream::SplitStream<WsStream>,
    r: &Router,
    protocol: WsProtocol,
) {
    while let Some(item) = stream.next().await {
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
    async fn open(
        rest: &Rest,
        id: &str,
        router: Router,
        timing: WsTiming,
    ) -> Result<WsChannels, KernelError> {
        let session = uuid::Uuid::new_v4().to_string();
        let (ws, protocol) = connect_ws(rest, id, &session).await?;
        tracing::info!(kernel_id = %id, ?protocol, "kernel WebSocket open");
        let protocol_now = Arc::new(std::sync::atomic::AtomicBool::new(
            protocol == WsProtocol::V1,
        ));
        let (sink, mut stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let reconnects = Arc::new(std::sync::atomic::AtomicU32::new(0));
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
                pump(&mut stream, &r, protocol).await;
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

/// A kernel on the gateway, owned by kernel-mcp: deleted on shutdown, kill and drop.
struct Remote {
    rest: Rest,
    id: String,
    router: Router,
    /// [`LIVE`], [`DELETING`] or [`DELETED`]: a DELETE that failed goes back to live, so the
    /// next shutdown, kill or drop tries again.
    deleted: Arc<std::sync::atomic::AtomicU8>,
}

/// The kernel was not deleted yet (or the last DELETE failed).
const LIVE: u8 = 0;
/// A DELETE is under way.
const DELETING: u8 = 1;
/// The gateway said the kernel is gone.
const DELETED: u8 = 2;

impl Remote {
    /// Deletes the kernel unless that is done or under way. The router closes first: the
    /// gateway then closes the socket, and the reader must not reconnect to a kernel being
    /// deleted.
    async fn delete(&self) {
        self.router.close("shutdown");
        if self.claim_delete() {
            let ok = self.rest.delete(&self.id).await;
            Remote::settle(&self.deleted, ok);
        }
    }

    fn delete_in_background(&self) {
        self.router.close("shutdown");
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.claim_delete() {
            return;
        }
        let (rest, id, deleted) = (self.rest.clone(), self.id.clone(), self.deleted.clone());
        rt.spawn(async move {
            let ok = rest.delete(&id).await;
            Remote::settle(&deleted, ok);
        });
    }

    /// True when this caller is to send the DELETE (none done or under way).
    fn claim_delete(&self) -> bool {
        self.deleted
            .compare_exchange(LIVE, DELETING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Records how a DELETE went: done, or back to live for the next attempt.
    fn settle(deleted: &std::sync::atomic::AtomicU8, ok: bool) {
        deleted.store(if ok { DELETED } else { LIVE }, Ordering::SeqCst);
    }

    fn lost(&self) -> Gone {
        Gone::Lost {
            reason: format!(
                "the gateway's WebSocket for kernel {} closed (the kernel died, was culled or the gateway stopped)",
                self.id
            ),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.delete_in_background();
    }
}

#[async_trait]
impl Lifecycle for Remote {
    async fn gone(&self) -> Gone {
        while !self.router.is_closed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.lost()
    }

    fn is_gone(&self) -> Option<Gone> {
        self.router.is_closed().then(|| self.lost())
    }

    async fn interrupt(&self, _chan: &dyn Channels) {
        let path = format!("api/kernels/{}/interrupt", self.id);
        if let Err(e) = self
            .rest
            .call(http::Method::POST, &path, None, REST_TIMEOUT)
            .await
        {
            tracing::warn!(error = %e, "gateway interrupt failed");
        }
    }

    fn kill(&self) {
        self.router.close("killed");
        self.delete_in_background();
    }

    async fn shutdown(&self, _chan: &dyn Channels) {
        self.delete().await;
    }

    fn kernel_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, AtomicUsize};

    use crate::wire::message::ExecuteRequest;
    use crate::wire::Content;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

    /// A gateway stand-in on 127.0.0.1 with a small receive buffer (no autotuning), so a big
    /// message cannot vanish into the loopback's buffers. Each kernel WebSocket it accepts
    /// (taking v1 when offered) is held open and never read when `hold`, else closed at once.
    /// Returns the REST handle for it and the count of WebSockets it accepted.
    async fn fake_gateway(hold: bool) -> (Rest, Arc<AtomicUsize>) {
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
                if hold {
                    held.push(ws);
                } else {
                    let _ = ws.close(None).await;
                }
            }
        });
        (fake_rest(addr), accepted)
    }

    fn fake_rest(addr: std::net::SocketAddr) -> Rest {
        Rest {
            base: Url::parse(&format!("http://{addr}/")).unwrap(),
            shown: format!("http://{addr}"),
            token: None,
            ledger: None,
        }
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

    #[test]
    fn reconnects_back_off_start_over_after_a_stable_connection_and_give_up_on_quick_deaths() {
        let policy = WsTiming::DEFAULT.backoff;
        let ms = Duration::from_millis;
        let quick = ms(100);
        let medium = Duration::from_secs(10);
        let stable = Duration::from_secs(60);
        let mut r = Reconnects::new(policy);
        // At once, then doubling from 0.5 s, capped at 10 s; medium-lived connections do not
        // count as quick.
        let waits: Vec<_> = (0..8).map(|_| r.after_drop(medium)).collect();
        let want = [0, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
        assert_eq!(waits, want.map(|w| Some(ms(w))).to_vec());
        // A stable connection starts the schedule over.
        assert_eq!(r.after_drop(stable), Some(ms(0)));
        assert_eq!(r.after_drop(medium), Some(ms(500)));
        // Five quick deaths in a row give up...
        let mut r = Reconnects::new(policy);
        let waits: Vec<_> = (0..5).map(|_| r.after_drop(quick)).collect();
        assert_eq!(
            waits,
            vec![
                Some(ms(0)),
                Some(ms(500)),
                Some(ms(1000)),
                Some(ms(2000)),
                None
            ]
        );
        // ...unless a stable connection came between them.
        let mut r = Reconnects::new(policy);
        for _ in 0..4 {
            assert!(r.after_drop(quick).is_some());
        }
        assert_eq!(r.after_drop(stable), Some(ms(0)));
        for _ in 0..4 {
            assert!(r.after_drop(quick).is_some());
        }
        assert_eq!(r.after_drop(quick), None);
    }

    #[test]
    fn a_big_message_gets_time_for_a_slow_link() {
        let t = WsTiming::DEFAULT;
        assert_eq!(t.send_limit(0), Duration::from_secs(30));
        assert_eq!(t.send_limit(1 << 20), Duration::from_secs(34));
        assert_eq!(t.send_limit(48 << 20), Duration::from_secs(30 + 192));
        assert!(t.send_limit(usize::MAX) > Duration::from_secs(30));
        // The write buffer takes any message that may be sent, with room to spare.
        const { assert!(MAX_WS_WRITE_BUFFER > MAX_WS_SEND + (128 << 10)) };
    }

    #[tokio::test]
    async fn a_gateway_that_stops_reading_fails_the_send_and_loses_the_kernel() {
        let (rest, accepted) = fake_gateway(true).await;
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
        let (rest, _) = fake_gateway(true).await;
        let router = Router::new();
        let chan = WsChannels::open(&rest, "k", router.clone(), WsTiming::DEFAULT)
            .await
            .unwrap();
        let huge = execute(chan.session(), "x".repeat(MAX_WS_SEND));
        let sent = chan.send(Channel::Shell, &huge).await;
        assert!(matches!(sent, Err(WireError::TooLarge { .. })), "{sent:?}");
        assert!(!router.is_closed());
    }

    #[tokio::test]
    async fn a_gateway_that_closes_every_websocket_at_once_is_given_up() {
        let (rest, accepted) = fake_gateway(false).await;
        let timing = WsTiming {
            backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(4),
                ..WsTiming::DEFAULT.backoff
            },
            ..WsTiming::DEFAULT
        };
        let router = Router::new();
        let mut chan = WsChannels::open(&rest, "k", router.clone(), timing)
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), &mut chan.reader).await;
        assert!(ended.is_ok(), "the reader reconnected without end");
        assert!(router.is_closed());
        // The first connection and four reconnects, each closed at once.
        assert_eq!(chan.reconnects(), 4);
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    /// An HTTP request's head (up to its blank line), as a stand-in reads it.
    async fn read_head(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        head
    }

    /// A gateway stand-in that answers each REST call with the next of `statuses` (then 204),
    /// counting the calls.
    async fn fake_rest_gateway(statuses: &'static [u16]) -> (Rest, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = read_head(&mut tcp).await;
                let n = count.fetch_add(1, Ordering::SeqCst);
                let status = statuses.get(n).copied().unwrap_or(204);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
        });
        (fake_rest(addr), calls)
    }

    #[tokio::test]
    async fn a_failed_delete_is_tried_again_and_a_done_one_is_not() {
        let (rest, calls) = fake_rest_gateway(&[500]).await;
        let life = Remote {
            rest,
            id: "k".into(),
            router: Router::new(),
            deleted: Arc::new(AtomicU8::new(LIVE)),
        };
        life.delete().await;
        // Closed before the DELETE: the reader must not reconnect to a kernel being deleted.
        assert!(life.router.is_closed());
        assert_eq!(life.deleted.load(Ordering::SeqCst), LIVE);
        life.delete().await;
        assert_eq!(life.deleted.load(Ordering::SeqCst), DELETED);
        life.delete().await;
        drop(life);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A kernel start the gateway answers only after the start was given up: the kernel it
    /// started is deleted when its id arrives, not left running unknown.
    #[tokio::test]
    async fn a_kernel_started_after_its_start_timed_out_is_deleted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (answer_now, mut answer) = tokio::sync::watch::channel(false);
        let (deleted_tx, deleted) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let mut deleted_tx = Some(deleted_tx);
            while let Ok((mut tcp, _)) = listener.accept().await {
                let head = read_head(&mut tcp).await;
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let reply = if line.starts_with("POST") {
                    // Answer only once the caller has given up.
                    let _ = answer.wait_for(|now| *now).await;
                    let body = r#"{"id": "late-kernel", "name": "python3"}"#;
                    format!("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                } else {
                    if let Some(tx) = deleted_tx.take() {
                        let _ = tx.send(line);
                    }
                    "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = tcp.write_all(reply.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
        });
        let rest = fake_rest(addr);
        let r = start_kernel(&rest, json!({}), Duration::from_millis(200), "gw").await;
        assert!(r.is_err(), "{r:?}");
        answer_now.send_replace(true);
        let line = tokio::time::timeout(Duration::from_secs(60), deleted).await;
        assert!(
            matches!(&line, Ok(Ok(l)) if l.starts_with("DELETE") && l.contains("/api/kernels/late-kernel")),
            "{line:?}"
        );
    }

    #[test]
    fn redact_drops_credentials_and_query() {
        assert_eq!(
            redact("http://user:secret@gw.example:8888/base/?token=abc#x"),
            "http://gw.example:8888/base"
        );
        assert_eq!(redact("not a url"), "<invalid url>");
    }

    #[test]
    fn urls_other_than_http_are_refused_clearly() {
        let cfg = |url: &str| GatewayConfig {
            url: url.into(),
            token: Some("t0ps3cret".into()),
            kernel_name: None,
            startup_timeout: Duration::from_secs(1),
            reap_orphans: false,
        };
        let https = if cfg!(feature = "tls") {
            None
        } else {
            Some("https://gw:1")
        };
        for bad in ["ftp://x", "nonsense", "http://"].into_iter().chain(https) {
            let e = GatewayBackend::new(cfg(bad)).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(e.contains("--gateway-url"), "{bad}: {e}");
            assert!(!e.contains("t0ps3cret"));
        }
        assert!(GatewayBackend::new(cfg("http://127.0.0.1:9/prefix")).is_ok());
        assert!(GatewayBackend::new(cfg("http://[::1]:9/")).is_ok());
        // Credentials in the URL were never sent on the WebSocket; say where the token goes
        // instead of dropping them silently, and never echo the password.
        for creds in [
            "http://user:pw1234@127.0.0.1:9/",
            "http://user@127.0.0.1:9/",
        ] {
            let e = GatewayBackend::new(cfg(creds)).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(e.contains("--gateway-token"), "{creds}: {e}");
            assert!(!e.contains("pw1234"), "{e}");
        }
    }
}
