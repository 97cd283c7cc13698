//! MCP over Streamable HTTP at `/mcp` (rmcp's server transport) behind a thin HTTP layer of our
//! own: bearer token, body cap, the session limit's 503 and `/healthz`. Sessions and their
//! kernels live in `sessions.rs`; TLS is left to a reverse proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::front::{Front, Manager};
use super::sessions::{Registry, SESSION_HEADER};

/// The path MCP is served at.
pub const MCP_PATH: &str = "/mcp";
/// The unauthenticated health check path.
pub const HEALTH_PATH: &str = "/healthz";

type Body = BoxBody<Bytes, Infallible>;

/// How the HTTP endpoint is exposed.
#[derive(Clone)]
pub struct HttpOptions {
    pub listen: SocketAddr,
    /// The bearer token every `/mcp` request must carry (None: no auth, loopback only).
    pub token: Option<String>,
    /// Browser origins allowed besides the listen address itself, e.g. `https://app.example.com`.
    pub allow_origins: Vec<String>,
    /// Largest request body accepted.
    pub max_body: usize,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("HttpOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("allow_origins", &self.allow_origins)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Why the endpoint cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error("listening on {0} (not a loopback address) needs a bearer token: pass --token-file PATH or set KERNEL_MCP_TOKEN; put TLS in front with a reverse proxy")]
    TokenRequired(SocketAddr),
    #[error("the bearer token is empty")]
    EmptyToken,
}

impl HttpOptions {
    /// Refuses a network-reachable endpoint without a token.
    pub fn check(&self) -> Result<(), ExposureError> {
        if self.token.as_deref().is_some_and(|t| t.is_empty()) {
            return Err(ExposureError::EmptyToken);
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(ExposureError::TokenRequired(self.listen));
        }
        Ok(())
    }

    /// `Host` values accepted (DNS-rebinding protection); empty accepts any.
    fn allowed_hosts(&self) -> Vec<String> {
        let ip = self.listen.ip();
        if ip.is_unspecified() {
            // Bound to every address: the names it is reached by are not known here. A token is
            // required in this case, which a rebinding page cannot supply.
            return Vec::new();
        }
        let mut hosts = vec![ip.to_string()];
        if ip.is_loopback() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        hosts.extend(self.allow_origins.iter().filter_map(|o| origin_host(o)));
        hosts
    }

    /// `Origin` values accepted: the listen address's own, plus `--allow-origin`.
    fn allowed_origins(&self) -> Vec<String> {
        let port = self.listen.port();
        let ip = self.listen.ip();
        let mut origins = Vec::new();
        if ip.is_loopback() {
            for h in ["localhost", "127.0.0.1", "[::1]"] {
                origins.push(format!("http://{h}:{port}"));
            }
        } else if !ip.is_unspecified() {
            origins.push(format!("http://{}", self.listen));
        }
        origins.extend(self.allow_origins.iter().cloned());
        origins
    }
}

/// The host part of an origin such as `https://app.example.com:8443`.
fn origin_host(origin: &str) -> Option<String> {
    let rest = origin.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let uri: http::uri::Authority = authority.parse().ok()?;
    Some(
        uri.host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

/// True when `header` is `Bearer <token>`, compared in constant time (over digests, so the
/// length of the token does not leak either).
pub fn bearer_ok(header: Option<&[u8]>, token: &str) -> bool {
    let Some(h) = header else { return false };
    let Some(presented) = h
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .and_then(|_| h.get(7..))
    else {
        return false;
    };
    let a = Sha256::digest(presented.trim_ascii());
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON-RPC error body for `id` with an HTTP status.
fn jsonrpc_error(
    status: StatusCode,
    id: serde_json::Value,
    code: i32,
    message: &str,
) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    json_response(status, body.to_string())
}

/// The arrival key (see `arrival`) of a run request: a `tools/call` of a run tool, scoped by
/// its session (the `Mcp-Session-Id` header, else the 2026-07-28 `session` argument). A call
/// without a session opens a new one, which has nothing earlier to wait for.
fn run_request_key(msg: &ClientJsonRpcMessage, session_header: Option<&str>) -> Option<String> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    let ClientRequest::CallToolRequest(call) = &r.request else {
        return None;
    };
    if !crate::arrival::RUN_TOOLS.contains(&call.params.name.as_ref()) {
        return None;
    }
    let scope = match session_header {
        Some(s) => s,
        None => call
            .params
            .arguments
            .as_ref()?
            .get(crate::serve::sessions::SESSION_ARG)?
            .as_str()?,
    };
    // Keyed as rmcp echoes the id (`2.0` is `2`), as the handler looks it up.
    Some(crate::arrival::scoped_key(
        Some(scope),
        &r.id.clone().into_json_value(),
    ))
}

/// Marks its requests answered (see `arrival::done`) when dropped: with the response body,
/// which ends after the request's final response was sent, or when the client went away.
struct Answered(Vec<String>);

impl Drop for Answered {
    fn drop(&mut self) {
        for k in &self.0 {
            crate::arrival::done(k);
        }
    }
}

/// The id of a JSON-RPC `initialize` request, if `msg` is one.
fn initialize_id(msg: &ClientJsonRpcMessage) -> Option<serde_json::Value> {
    let JsonRpcMessage::Request(r) = msg else {
        return None;
    };
    matches!(r.request, ClientRequest::InitializeRequest(_)).then(|| r.id.clone().into_json_value())
}

/// What becomes of a POST body, read once (by the reader the stdio transport uses, so a
/// malformed request is answered alike on both transports).
enum Posted {
    /// rmcp handles it (the body as it came).
    Pass(Box<ClientJsonRpcMessage>),
    /// Answered here with this JSON-RPC error.
    Answer(String),
    /// Not a message that can be answered (a notification or a response that cannot be read,
    /// an empty body): why.
    Refuse(String),
}

fn posted(body: &[u8]) -> Posted {
    use crate::stdin_guard::{read, read_stand_in, stand_in_answer, Reading};
    match read(body) {
        Reading::Message(m) => Posted::Pass(m),
        Reading::Answer(a) => Posted::Answer(a),
        Reading::Silent(why) => Posted::Refuse(why),
        // Over stdio the stand-in goes to the tool, which refuses it; here a call reaches a
        // tool only through its session, which a refused call must not open: the tool's
        // answer is given here.
        Reading::StandIn(text) => match read_stand_in(&text) {
            Reading::Message(m) => match stand_in_answer(&m) {
                Some(a) => Posted::Answer(a),
                None => Posted::Refuse("the request could not be read".into()),
            },
            Reading::Answer(a) => Posted::Answer(a),
            Reading::Silent(why) => Posted::Refuse(why),
            Reading::StandIn(_) => Posted::Refuse("the request could not be read".into()),
        },
    }
}

/// The HTTP answer to a request refused with the JSON-RPC error `reply`: 200 when the error
/// carries the request's id (the client matches it to its call, as it does rmcp's in-band
/// errors), 400 when it cannot (`null` id: the body was not a request that can be answered).
fn answered(reply: String) -> Response<Body> {
    let has_id = serde_json::from_str::<serde_json::Value>(&reply)
        // A raw echoed id (a lone surrogate escape) is an id too.
        .map_or(true, |v| v.get("id").is_some_and(|id| !id.is_null()));
    let status = if has_id {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    json_response(status, reply)
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The answer to a body over `--max-body`.
fn too_large(max: usize) -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: requests are limited to {max} bytes (--max-body)\n"),
    )
}

/// rmcp's answer to a request for a session it does not have.
fn session_not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found: Session not found\n")
}

/// True when the request says its body is JSON (rmcp answers any other 415 before reading it).
fn json_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// How long a request body may take to arrive once its headers have: 60 s, and 1 s more per
/// 64 KiB `--max-body` allows (the default 32 MiB: ~9 minutes, room for a slow link), so a
/// body that never comes cannot hold a connection forever.
fn body_timeout(max_body: usize) -> std::time::Duration {
    let extra = u64::try_from(max_body / (64 << 10)).unwrap_or(u64::MAX);
    std::time::Duration::from_secs(60u64.saturating_add(extra))
}

/// Longest pause in a request body: a client that stops sending mid-body is answered 408 at
/// once rather than when the whole body's time is up (minutes at the default `--max-body`),
/// so stalled bodies cannot fill the connection slots (the header phase has the same 10 s).
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a request body was not read.
enum BodyFault {
    /// Nothing arrived for [`BODY_STALL`].
    Stalled,
    /// The whole body took longer than its time.
    Late,
    TooLarge,
    Unreadable(String),
}

/// Reads a request body of at most `max` bytes within `total`, no pause longer than
/// [`BODY_STALL`].
async fn read_body(
    body: Incoming,
    max: usize,
    total: std::time::Duration,
) -> Result<Bytes, BodyFault> {
    let deadline = tokio::time::Instant::now() + total;
    let mut body = Limited::new(body, max);
    let mut out = bytes::BytesMut::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = left.min(BODY_STALL);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) if wait < BODY_STALL => return Err(BodyFault::Late),
            Err(_) => return Err(BodyFault::Stalled),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BodyFault::TooLarge)
            }
            Ok(Some(Err(e))) => return Err(BodyFault::Unreadable(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
}

struct State {
    opts: HttpOptions,
    /// Origins answered with CORS headers (the same list rmcp validates `Origin` against).
    allowed_origins: Vec<String>,
    reg: Arc<Registry>,
    mcp: StreamableHttpService<Front, Manager>,
}

/// The request's `Origin` when it is one the endpoint allows (for CORS answers).
fn cors_origin(req: &Request<Incoming>, allowed: &[String]) -> Option<http::HeaderValue> {
    let origin = req.headers().get(http::header::ORIGIN)?;
    let o = origin.to_str().ok()?.trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
        .then(|| origin.clone())
}

/// Headers a browser client may send (CORS preflight answer).
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, accept, mcp-session-id, mcp-protocol-version, mcp-method, mcp-name, last-event-id";

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, Infallible> {
    let cors = cors_origin(&req, &st.allowed_origins);
    let mut resp = route(req, &st, cors.is_some()).await;
    if let Some(origin) = cors {
        let h = resp.headers_mut();
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            http::HeaderValue::from_static("mcp-session-id"),
        );
        h.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
    Ok(resp)
}

async fn route(req: Request<Incoming>, st: &State, cors: bool) -> Response<Body> {
    // A browser's preflight carries no credentials; answer it for allowed origins only.
    if req.method() == http::Method::OPTIONS && req.uri().path() == MCP_PATH {
        if !cors {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: Origin header is not allowed\n",
            );
        }
        let mut r = text(StatusCode::NO_CONTENT, "");
        let h = r.headers_mut();
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            http::HeaderValue::from_static("GET, POST, DELETE"),
        );
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            http::HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        h.insert(
            http::header::ACCESS_CONTROL_MAX_AGE,
            http::HeaderValue::from_static("600"),
        );
        return r;
    }
    serve_mcp(req, st).await
}

async fn serve_mcp(req: Request<Incoming>, st: &State) -> Response<Body> {
    let path = req.uri().path();
    if path == HEALTH_PATH {
        return match *req.method() {
            http::Method::GET | http::Method::HEAD => text(StatusCode::OK, "ok\n"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"),
        };
    }
    if path != MCP_PATH {
        return text(StatusCode::NOT_FOUND, "Not Found: MCP is served at /mcp\n");
    }
    if let Some(token) = &st.opts.token {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|h| h.as_bytes());
        if !bearer_ok(header, token) {
            tracing::warn!(method = %req.method(), "rejected a request without a valid bearer token");
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: send Authorization: Bearer <token>\n",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"kernel-mcp\""),
            );
            return r;
        }
    }
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    // A body announced over the cap is refused before any of it is read (and before hyper
    // answers `Expect: 100-continue`, which it does when the body is first read): the client
    // is not asked to send megabytes only to have them thrown away.
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(st.opts.max_body).unwrap_or(u64::MAX)) {
        tracing::warn!(session = ?session, bytes = declared, "request body over --max-body (declared)");
        return too_large(st.opts.max_body);
    }
    // The body gets its own bounds: hyper's header timeout ends with the headers, and a client
    // announcing a body it never sends would hold the connection (and its slot) for good.
    let body_limit = body_timeout(st.opts.max_body);
    let bytes = match read_body(body, st.opts.max_body, body_limit).await {
        Ok(b) => b,
        Err(BodyFault::Stalled) => {
            tracing::warn!(session = ?session, "request body stalled");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "Request Timeout: nothing of the request body arrived for {} s\n",
                    BODY_STALL.as_secs()
                ),
            );
        }
        Err(BodyFault::Late) => {
            tracing::warn!(session = ?session, secs = body_limit.as_secs(), "request body not received in time");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "Request Timeout: the request body did not arrive within {} s\n",
                    body_limit.as_secs()
                ),
            );
        }
        Err(BodyFault::TooLarge) => {
            tracing::warn!(session = ?session, "request body over --max-body");
            return too_large(st.opts.max_body);
        }
        Err(BodyFault::Unreadable(e)) => {
            tracing::warn!(session = ?session, error = %e, "request body rejected");
            return text(
                StatusCode::BAD_REQUEST,
                "Bad Request: the body could not be read\n",
            );
        }
    };
    // Before anything parses it (here and in rmcp): a body of millions of tiny values.
    if let Some(n) = crate::stdin_guard::too_many_values(&bytes) {
        tracing::warn!(session = ?session, values = n, "request body rejected: too many JSON values");
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Payload Too Large: the request holds more than {} JSON values; send large data as one string (text, or base64) or in several calls\n",
                crate::wire::message::MAX_JSON_VALUES
            ),
        );
    }
    let known = session.as_deref().map(|id| st.reg.get(id).is_some());
    if let Some(id) = &session {
        tracing::debug!(session = %id, method = %parts.method, "request");
        st.reg.touch(id);
    }
    let delete = parts.method == http::Method::DELETE;
    if delete && known == Some(false) {
        // rmcp accepts a DELETE of any id; a session that is not (or no longer) here is 404,
        // as a POST or GET for it is (Streamable HTTP, "Session Management").
        return session_not_found();
    }
    // The body read once, here: what rmcp cannot take is answered as the stdio transport
    // answers it (rmcp's own answer is a plain-text 415 without the request's id).
    let message = if parts.method == http::Method::POST && json_body(&parts.headers) {
        match posted(&bytes) {
            Posted::Pass(m) => Some(m),
            // An ended session: the 404 that tells the client to start again comes first.
            _ if known == Some(false) => return session_not_found(),
            Posted::Answer(reply) => return answered(reply),
            Posted::Refuse(why) => {
                tracing::warn!(session = ?session, "refused a request body: {why}");
                let code = if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
                    -32700
                } else {
                    -32600
                };
                return jsonrpc_error(StatusCode::BAD_REQUEST, serde_json::Value::Null, code, &why);
            }
        }
    } else {
        None
    };
    if let (None, Some(id)) = (&session, message.as_deref().and_then(initialize_id)) {
        let max = st.reg.limits().max_sessions;
        if let Some(next) = st.reg.full() {
            tracing::warn!(max, "refused a new session: --max-sessions reached");
            let mut r = jsonrpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                -32000,
                &format!(
                    "the server already runs {max} sessions, its limit (--max-sessions); {}",
                    crate::serve::sessions::next_free_words(next, st.reg.evict_grace())
                ),
            );
            let retry = next.unwrap_or(30).clamp(1, 3600).to_string();
            if let Ok(v) = http::HeaderValue::from_str(&retry) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    // Run requests are numbered here, where a session's POSTs arrive in order; rmcp's
    // handlers may start in another order (see `arrival`).
    let keys: Vec<String> = message
        .as_deref()
        .and_then(|m| run_request_key(m, session.as_deref()))
        .into_iter()
        .collect();
    for k in &keys {
        // A session handle is a credential: the log gets a prefix of the session's name.
        let (scope, id) = k.split_once('\u{1f}').unwrap_or(("", k));
        let scope: String = scope.chars().take(12).collect();
        let n = crate::arrival::arrived(k.clone());
        tracing::debug!(request = %format!("{scope}… #{id}"), n, "run request arrived");
    }
    let answered = Answered(keys);
    // A request of an MCP session: its stream is counted open until its body ends, so a
    // DELETE waits for its answer (see `Manager::close_session`).
    let stream = match (message.as_deref(), session.as_deref()) {
        (Some(JsonRpcMessage::Request(_)), Some(id)) => st.reg.get(id).map(|s| s.stream_opened()),
        _ => None,
    };
    let req = Request::from_parts(parts, Full::new(bytes));
    let r = st.mcp.handle(req).await;
    let r = if answered.0.is_empty() && stream.is_none() {
        r
    } else {
        let (head, body) = r.into_parts();
        let body = body.map_frame(move |f| {
            let _keep = (&answered, &stream);
            f
        });
        Response::from_parts(head, body.boxed())
    };
    if delete && r.status() == StatusCode::ACCEPTED {
        // The session is ended by the time rmcp answers; clients of the 2025-11-25 era (the
        // Python SDK) take 200/204 as success and warn "Session termination failed: 202".
        let mut ended = text(StatusCode::NO_CONTENT, "");
        ended.headers_mut().remove(http::header::CONTENT_TYPE);
        return ended;
    }
    r
}

/// Serves MCP on `listener` until `stop` resolves, then ends every session and its kernel.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: HttpOptions,
    reg: Arc<Registry>,
    front: Front,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut opts = opts;
    // With port 0 the kernel chose the port: origins are checked against the real one.
    opts.listen = listener.local_addr()?;
    let ct = CancellationToken::new();
    let manager = Arc::new(Manager::new(reg.clone()));
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(opts.allowed_hosts())
        .with_allowed_origins(opts.allowed_origins())
        .enforce_origin_validation()
        .with_max_request_body_bytes(opts.max_body)
        .with_cancellation_token(ct.clone());
    let mcp = StreamableHttpService::new(move || Ok(front.clone()), manager.clone(), config);
    let reaper = tokio::spawn(manager.clone().reap(ct.clone()));
    let st = Arc::new(State {
        allowed_origins: opts.allowed_origins(),
        opts,
        reg: reg.clone(),
        mcp,
    });
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set stays small.
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_CONNECTIONS {
            // Slow or idle clients must not hold every file descriptor.
            tracing::warn!(%peer, open = conns.len(), "refused a connection: too many open");
            drop(stream);
            continue;
        }
        let st = st.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                // A client that opens a connection and dribbles (or never finishes) its
                // headers is cut after HEADER_READ_TIMEOUT (slowloris).
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("stopping: ending every session and its kernel");
    ct.cancel();
    reaper.abort();
    reg.shutdown_all().await;
    conns.abort_all();
    Ok(())
}

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most connections open at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        assert!(bearer_ok(Some(b"Bearer s3cret"), "s3cret"));
        assert!(bearer_ok(Some(b"bearer s3cret"), "s3cret"));
        assert!(!bearer_ok(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!bearer_ok(Some(b"Bearer s3cretX"), "s3cret"));
        assert!(!bearer_ok(Some(b"Basic s3cret"), "s3cret"));
        assert!(!bearer_ok(Some(b"Bearer"), "s3cret"));
        assert!(!bearer_ok(Some(b""), "s3cret"));
        assert!(!bearer_ok(None, "s3cret"));
    }

    #[test]
    fn exposure_rules() {
        let mut o = HttpOptions {
            listen: "0.0.0.0:8000".parse().unwrap_or_else(|_| unreachable!()),
            token: None,
            allow_origins: vec![],
            max_body: 1,
        };
        assert!(matches!(o.check(), Err(ExposureError::TokenRequired(_))));
        o.token = Some(String::new());
        assert!(matches!(o.check(), Err(ExposureError::EmptyToken)));
        o.token = Some("t".into());
        assert!(o.check().is_ok());
        o.listen = "127.0.0.1:8000".parse().unwrap_or_else(|_| unreachable!());
        o.token = None;
        assert!(o.check().is_ok());
        o.listen = "[::1]:8000".parse().unwrap_or_else(|_| unreachable!());
        assert!(o.check().is_ok());
    }

    #[test]
    fn origins_and_hosts_follow_the_listen_address() {
        let o = HttpOptions {
            listen: "127.0.0.1:8123".parse().unwrap_or_else(|_| unreachable!()),
            token: None,
            allow_origins: vec!["https://app.example.com".into()],
            max_body: 1,
        };
        assert!(o
            .allowed_origins()
            .contains(&"http://localhost:8123".to_owned()));
        assert!(o
            .allowed_origins()
            .contains(&"https://app.example.com".to_owned()));
        assert!(o.allowed_hosts().contains(&"app.example.com".to_owned()));
        assert!(o.allowed_hosts().contains(&"localhost".to_owned()));
        assert_eq!(origin_host("https://[::1]:9/x").as_deref(), Some("::1"));
        assert_eq!(origin_host("nonsense"), None);
    }

    fn message(text: &str) -> ClientJsonRpcMessage {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn run_requests_are_keyed_by_their_session() {
        let call = |id: &str, tool: &str, args: &str| {
            message(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
            ))
        };
        let one = call("1", "execute_python", r#"{"code":"1"}"#);
        assert_eq!(
            run_request_key(&one, Some("s1")),
            Some(crate::arrival::scoped_key(
                Some("s1"),
                &serde_json::json!(1)
            ))
        );
        // No session at all: a new one is opened, nothing to order.
        assert_eq!(run_request_key(&one, None), None);
        let handle = call("\"a\"", "run_file", r#"{"path":"x.py","session":"h9"}"#);
        assert_eq!(
            run_request_key(&handle, None),
            Some(crate::arrival::scoped_key(
                Some("h9"),
                &serde_json::json!("a")
            ))
        );
        assert_eq!(
            run_request_key(&call("3", "read_file", "{}"), Some("s")),
            None
        );
        // Keyed as rmcp echoes the id (`2.0` is `2`), as the handler looks it up.
        assert_eq!(
            run_request_key(&call("2.0", "execute_python", "{}"), Some("s")),
            Some(crate::arrival::scoped_key(Some("s"), &serde_json::json!(2)))
        );
        let list = message(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
        assert_eq!(run_request_key(&list, Some("s")), None);
    }

    #[test]
    fn initialize_requests_are_recognised() {
        let init = message(
            r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        );
        assert_eq!(initialize_id(&init), Some(serde_json::json!(3)));
        let list = message(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
        assert_eq!(initialize_id(&list), None);
    }

    /// What each kind of body gets: passed on, answered in-band with its id (200), or refused
    /// with a `null` id (400), never rmcp's plain-text 415.
    #[test]
    fn bodies_rmcp_cannot_read_are_answered_with_their_id() {
        let status_and_id = |body: &str| -> (StatusCode, serde_json::Value, i64) {
            let reply = match posted(body.as_bytes()) {
                Posted::Pass(m) => panic!("{body}: passed on as {m:?}"),
                Posted::Answer(a) => a,
                Posted::Refuse(why) => panic!("{body}: refused unanswered ({why})"),
            };
            let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
            (
                answered(reply).status(),
                v.get("id").cloned().unwrap_or_default(),
                v.pointer("/error/code")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or_default(),
            )
        };
        let ok = StatusCode::OK;
        let bad = StatusCode::BAD_REQUEST;
        for (body, want) in [
            // Not JSON, with a readable id.
            (r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"x":1e400}}"#, (ok, serde_json::json!(7), -32700)),
            (r#"{"jsonrpc":"2.0","id":"q","method":"tools/list"} trailing"#, (ok, serde_json::json!("q"), -32700)),
            // Known method, params that do not fit it.
            (r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_python","arguments":[1]}}"#, (ok, serde_json::json!(8), -32602)),
            // A tool call whose arguments are not valid Unicode: the tool's own refusal.
            ("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_python\",\"arguments\":{\"code\":\"a\\ud800\"}}}", (ok, serde_json::json!(9), -32602)),
            // No id to answer.
            ("[1,2]", (bad, serde_json::Value::Null, -32600)),
            ("garbage", (bad, serde_json::Value::Null, -32700)),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, (bad, serde_json::Value::Null, -32600)),
        ] {
            assert_eq!(status_and_id(body), want, "{body}");
        }
        // Nothing to answer at all: refused with a reason.
        for body in [
            "",
            "  ",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":7}"#,
        ] {
            assert!(
                matches!(posted(body.as_bytes()), Posted::Refuse(_)),
                "{body}"
            );
        }
        let fine = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"1"}}}"#;
        assert!(matches!(posted(fine.as_bytes()), Posted::Pass(_)));
    }
}
