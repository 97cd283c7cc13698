//! The gateway backend (`--gateway-url`): kernels started on a Jupyter Server, Kernel Gateway
//! or Enterprise Gateway through its REST API and talked to over the kernel channels WebSocket
//! (`/api/kernels/{id}/channels`, the JSON message protocol). The only module that speaks HTTP;
//! it never logs or returns the token.

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

use super::backend::{Backend, BackendInfo, BackendKind, Channels, Gone, Lifecycle, Ownership};
use super::client::Kernel;
use crate::error::{KernelError, WireError};
use crate::wire::{Channel, Content, Header, Heartbeat, Message, MsgId, Router, Subscription};

/// Largest WebSocket message accepted from the gateway (the same order as the ZeroMQ cap).
const MAX_WS_MESSAGE: usize = 256 << 20;
/// Bound on each REST call; kernel starts get the start-up timeout instead.
const REST_TIMEOUT: Duration = Duration::from_secs(30);
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
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &redact(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("kernel_name", &self.kernel_name)
            .finish()
    }
}

/// The URL without user info, query or fragment: safe for logs and reports.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
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
    base: reqwest::Url,
    shown: String,
    http: reqwest::Client,
}

impl GatewayBackend {
    /// Checks the URL and builds the HTTP client; nothing is contacted yet.
    ///
    /// # Errors
    /// A URL that is not `http://` (TLS is left to a proxy in this build), or has no host.
    pub fn new(cfg: GatewayConfig) -> Result<GatewayBackend, KernelError> {
        let bad = |why: &str| KernelError::Unavailable {
            reason: format!("--gateway-url {}: {why}", redact(&cfg.url)),
        };
        let mut base =
            reqwest::Url::parse(cfg.url.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        match base.scheme() {
            "http" => {}
            "https" => return Err(bad("https is not built into this kernel-mcp; reach the gateway through an http tunnel or proxy on 127.0.0.1 (see the README)")),
            other => return Err(bad(&format!("scheme {other:?} is not http"))),
        }
        if base.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let shown = redact(base.as_str());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(&format!("HTTP client: {e}")))?;
        Ok(GatewayBackend {
            cfg,
            base,
            shown,
            http,
        })
    }

    fn rest(&self) -> Rest {
        Rest {
            http: self.http.clone(),
            base: self.base.clone(),
            shown: self.shown.clone(),
            token: self.cfg.token.clone(),
        }
    }
}

/// The REST half: cheap to clone into lifecycles and background deletes.
#[derive(Clone)]
struct Rest {
    http: reqwest::Client,
    base: reqwest::Url,
    shown: String,
    token: Option<String>,
}

impl Rest {
    fn url(&self, path: &str) -> Result<reqwest::Url, KernelError> {
        self.base.join(path).map_err(|e| KernelError::Unavailable {
            reason: format!("bad gateway path {path}: {e}"),
        })
    }

    /// Sends one REST call and returns the JSON body (or `null` for an empty one).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, KernelError> {
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, self.url(path)?).timeout(limit);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("token {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| KernelError::Unavailable {
            reason: format!(
                "the Jupyter gateway at {} is not reachable ({}); is it running, and is --gateway-url right?",
                self.shown,
                describe_http_error(&e)
            ),
        })?;
        let status = resp.status();
        // Bounded read: a gateway answer is small JSON.
        let bytes = read_capped(resp, 4 << 20).await;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(KernelError::Unavailable {
                reason: format!(
                    "the Jupyter gateway at {} refused the request {what} (HTTP {}); check the token (--gateway-token or JUPYTER_GATEWAY_AUTH_TOKEN)",
                    self.shown,
                    status.as_u16()
                ),
            });
        }
        if !status.is_success() {
            let snippet: String = String::from_utf8_lossy(&bytes)
                .chars()
                .filter(|c| !c.is_control())
                .take(BODY_SNIPPET)
                .collect();
            return Err(KernelError::Unavailable {
                reason: format!(
                    "the Jupyter gateway at {} answered HTTP {} to {what}: {snippet}",
                    self.shown,
                    status.as_u16()
                ),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| KernelError::Unavailable {
            reason: format!(
                "the Jupyter gateway at {} sent invalid JSON for {what}: {e}",
                self.shown
            ),
        })
    }

    async fn delete(&self, id: &str) {
        let path = format!("api/kernels/{}", path_segment(id));
        match self
            .call(
                reqwest::Method::DELETE,
                &path,
                None,
                Duration::from_secs(10),
            )
            .await
        {
            Ok(_) => tracing::info!(kernel_id = id, "deleted the gateway kernel"),
            Err(e) => {
                tracing::warn!(kernel_id = id, error = %e, "could not delete the gateway kernel")
            }
        }
    }
}

/// The error chain of a reqwest error, without the URL (which is shown separately).
fn describe_http_error(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        parts.insert(0, "timed out".into());
    }
    if parts.is_empty() {
        "request failed".into()
    } else {
        parts.join(": ")
    }
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if out.len() >= cap {
            break;
        }
    }
    out
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
        let rest = self.rest();
        let started = Instant::now();
        let deadline = started + self.cfg.startup_timeout;
        let body = match &self.cfg.kernel_name {
            Some(n) => json!({ "name": n }),
            None => json!({}),
        };
        let model = rest
            .call(
                reqwest::Method::POST,
                "api/kernels",
                Some(body),
                self.cfg.startup_timeout,
            )
            .await?;
        let id = model
            .get("id")
            .and_then(Value::as_str)
            .map(path_segment)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| KernelError::Unavailable {
                reason: format!(
                    "the Jupyter gateway at {} started a kernel but sent no id",
                    self.shown
                ),
            })?;
        let name = model
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        tracing::info!(kernel_id = %id, kernel_name = %name, gateway = %self.shown, "gateway kernel started");
        // From here on the kernel exists: any failure deletes it before returning.
        let life = Remote {
            rest: rest.clone(),
            id: id.clone(),
            router: Router::new(),
            deleted: AtomicBool::new(false),
        };
        let chan = match WsChannels::open(&rest, &id, life.router.clone()).await {
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

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsSink = futures::stream::SplitSink<WsStream, WsMessage>;

/// The kernel's channels multiplexed over one WebSocket (JSON messages with a `channel` key).
/// A dropped socket is reconnected once per drop; if that fails the router closes and the
/// kernel counts as gone.
struct WsChannels {
    session: String,
    sink: Arc<Mutex<WsSink>>,
    router: Router,
    reconnects: Arc<std::sync::atomic::AtomicU32>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for WsChannels {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the kernel's channels WebSocket for `session`.
async fn connect_ws(rest: &Rest, id: &str, session: &str) -> Result<WsStream, KernelError> {
    let mut url = rest.url(&format!("api/kernels/{id}/channels"))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url.query_pairs_mut().append_pair("session_id", session);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| KernelError::Unavailable {
            reason: format!("bad WebSocket URL for {}: {e}", rest.shown),
        })?;
    if let Some(t) = &rest.token {
        if let Ok(v) = format!("token {t}").parse() {
            req.headers_mut().insert("Authorization", v);
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let (ws, _) = tokio::time::timeout(
        REST_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .map_err(|_| KernelError::Unavailable {
        reason: format!(
            "the Jupyter gateway at {} did not open the kernel's WebSocket within {} s",
            rest.shown,
            REST_TIMEOUT.as_secs()
        ),
    })?
    .map_err(|e| KernelError::Unavailable {
        reason: format!(
            "the Jupyter gateway at {} refused the kernel's WebSocket ({e}); check the token and that the gateway allows WebSocket connections",
            rest.shown
        ),
    })?;
    Ok(ws)
}

/// Routes messages from `stream` until it ends (true) or the router was closed on purpose.
async fn pump(stream: &mut futures::stream::SplitStream<WsStream>, r: &Router) {
    while let Some(item) = stream.next().await {
        match item {
            Ok(WsMessage::Text(t)) => match decode(t.as_bytes()) {
                Ok((channel, m)) => r.route(channel, m).await,
                Err(e) => {
                    tracing::warn!(error = %e, "dropped a malformed message from the gateway")
                }
            },
            Ok(WsMessage::Binary(_)) => {
                // Binary frames carry messages with buffers (comms, widgets); the outputs
                // kernel-mcp returns never need them.
                tracing::debug!("ignored a binary WebSocket message");
            }
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
    async fn open(rest: &Rest, id: &str, router: Router) -> Result<WsChannels, KernelError> {
        let session = uuid::Uuid::new_v4().to_string();
        let ws = connect_ws(rest, id, &session).await?;
        let (sink, mut stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let reconnects = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (r, rest, id, sess, snk, count) = (
            router.clone(),
            rest.clone(),
            id.to_owned(),
            session.clone(),
            sink.clone(),
            reconnects.clone(),
        );
        let reader = tokio::spawn(async move {
            loop {
                pump(&mut stream, &r).await;
                if r.is_closed() {
                    return;
                }
                // One reconnect per drop, with the same session id: the gateway keeps the
                // kernel (and its state) while no client is connected.
                match connect_ws(&rest, &id, &sess).await {
                    Ok(ws) => {
                        let (new_sink, new_stream) = ws.split();
                        *snk.lock().await = new_sink;
                        stream = new_stream;
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
            session,
            sink,
            router,
            reconnects,
            reader,
        })
    }
}

/// Decodes one JSON WebSocket message (jupyter_server's default kernel protocol).
fn decode(bytes: &[u8]) -> Result<(Channel, Message), WireError> {
    #[derive(serde::Deserialize)]
    struct Ws {
        header: Header,
        #[serde(default)]
        parent_header: Value,
        #[serde(default)]
        metadata: Value,
        #[serde(default)]
        content: Value,
        #[serde(default)]
        channel: String,
    }
    let m: Ws = serde_json::from_slice(bytes).map_err(|source| WireError::Json {
        part: "websocket message",
        source,
    })?;
    let channel = match m.channel.as_str() {
        "shell" => Channel::Shell,
        "iopub" => Channel::IoPub,
        "control" => Channel::Control,
        "stdin" => Channel::Stdin,
        _ => Channel::IoPub,
    };
    let parent_header = Header::parent_from(m.parent_header)?;
    let content_bytes = serde_json::to_vec(&m.content).map_err(|source| WireError::Json {
        part: "content",
        source,
    })?;
    let content = Content::parse(&m.header.msg_type, &content_bytes)?;
    Ok((
        channel,
        Message {
            identities: Vec::new(),
            header: m.header,
            parent_header,
            metadata: m.metadata,
            content,
            buffers: Vec::new(),
        },
    ))
}

/// Encodes a message for the WebSocket.
fn encode(channel: Channel, m: &Message) -> Result<String, WireError> {
    let content: Value =
        serde_json::from_slice(&m.content.to_json().map_err(|source| WireError::Json {
            part: "content",
            source,
        })?)
        .map_err(|source| WireError::Json {
            part: "content",
            source,
        })?;
    let v = json!({
        "header": m.header,
        "parent_header": m.parent_header.as_ref().map(|h| json!(h)).unwrap_or_else(|| json!({})),
        "metadata": m.metadata,
        "content": content,
        "channel": channel.name(),
        "buffers": [],
    });
    serde_json::to_string(&v).map_err(|source| WireError::Json {
        part: "message",
        source,
    })
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
        let text = encode(channel, message)?;
        self.sink
            .lock()
            .await
            .send(WsMessage::Text(text.into()))
            .await
            .map_err(|_| WireError::ReaderGone {
                channel: "websocket",
            })
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
    deleted: AtomicBool,
}

impl Remote {
    async fn delete(&self) {
        if !self.deleted.swap(true, Ordering::SeqCst) {
            self.rest.delete(&self.id).await;
        }
    }

    fn delete_in_background(&self) {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return;
        }
        let (rest, id) = (self.rest.clone(), self.id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { rest.delete(&id).await });
        }
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
            .call(reqwest::Method::POST, &path, None, REST_TIMEOUT)
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
        };
        for bad in ["ftp://x", "nonsense", "https://gw:1", "http://"] {
            let e = GatewayBackend::new(cfg(bad)).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(e.contains("--gateway-url"), "{bad}: {e}");
            assert!(!e.contains("t0ps3cret"));
        }
        assert!(GatewayBackend::new(cfg("http://127.0.0.1:9/prefix")).is_ok());
    }

    #[test]
    fn websocket_messages_round_trip() {
        let m = Message::request("s", Content::KernelInfoRequest);
        let text = encode(Channel::Shell, &m).unwrap();
        let (ch, back) = decode(text.as_bytes()).unwrap();
        assert_eq!(ch, Channel::Shell);
        assert_eq!(back, m);
        assert!(decode(b"{\"header\": 5}").is_err());
        assert!(decode(b"[]").is_err());
    }
}
