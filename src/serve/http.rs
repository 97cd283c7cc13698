//! MCP over Streamable HTTP at `/mcp` (rmcp's server transport) behind a thin HTTP layer of our
//! own: bearer token, body cap, the session limit's 503 and `/healthz`. Sessions and their
//! kernels live in `sessions.rs`; TLS is left to a reverse proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rmcp::model::JsonRpcMessage;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::front::{Front, Manager};
use super::sessions::{Registry, SESSION_HEADER};

mod request;
use request::{
    answered, initialize_id, json_body, jsonrpc_error, posted, read_request, run_request_key,
    session_not_found, text, Answered, Posted,
};

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
    let bytes = match read_request(&parts.headers, body, st.opts.max_body, session.as_deref()).await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
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
    reaper.abort();
    // A call still running is cut short by its kernel's end and answers with why; rmcp's
    // streams are cancelled (and connections closed) once those answers have gone out.
    let streams = reg.streams();
    reg.shutdown_all().await;
    let answered = futures::future::join_all(streams.iter().map(|s| s.all_closed(ANSWERS_AT_STOP)));
    if answered.await.contains(&false) {
        tracing::warn!(
            secs = ANSWERS_AT_STOP.as_secs(),
            "at exit: a call did not answer in time; its stream is closed without an answer"
        );
    }
    ct.cancel();
    conns.abort_all();
    Ok(())
}

/// How long a stopping server waits for the answers of calls its kernels' end cut short.
const ANSWERS_AT_STOP: std::time::Duration = std::time::Duration::from_secs(10);

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
}
