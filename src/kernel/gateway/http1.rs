//! The gateway's REST calls: one HTTP/1.1 exchange per call on its own connection, with hyper's
//! client connection API. A gateway is asked a handful of times per kernel (start, interrupt,
//! restart, delete), so there is no pool to keep, and no proxy: the REST calls go where the
//! channels WebSocket goes (a proxy or tunnel is configured as `--gateway-url` itself). Not
//! done, unlike reqwest: redirects are not followed (a 3xx is reported with its status), and
//! a host's addresses are tried one after another within the connect bound, not raced.

use std::time::Duration;

use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::{Host, Position, Url};

/// Bound on opening the TCP connection (the whole call has its own, longer bound).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method url` (with a JSON `body` and the token, if any) and returns the status and at
/// most `cap` bytes of the response body. Errors are one line naming the cause (refused,
/// timed out, TLS, protocol), without the URL, which the caller shows redacted.
pub async fn exchange(
    url: &Url,
    method: Method,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    cap: usize,
) -> Result<(StatusCode, Vec<u8>), String> {
    let host = url.host().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let connect = async {
        match &host {
            Host::Domain(d) => TcpStream::connect((*d, port)).await,
            Host::Ipv4(a) => TcpStream::connect((*a, port)).await,
            Host::Ipv6(a) => TcpStream::connect((*a, port)).await,
        }
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connecting timed out after {} s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);

    // Host carries the port when it is not the scheme's default (RFC 9110, 7.2).
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(&url[Position::BeforePath..Position::AfterQuery])
        .header(header::HOST, authority)
        .header(header::CONNECTION, "close")
        .header(header::ACCEPT, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("token {t}"));
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("bad request: {e}"))?;

    match url.scheme() {
        "http" => send(TokioIo::new(tcp), req, cap).await,
        #[cfg(feature = "tls")]
        "https" => {
            let tls = native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}"))?;
            // The name to verify: an IP address without IPv6's brackets (they belong to URLs
            // and Host headers, not to certificate checks).
            let name = match &host {
                Host::Domain(d) => (*d).to_owned(),
                Host::Ipv4(a) => a.to_string(),
                Host::Ipv6(a) => a.to_string(),
            };
            let stream = tokio_native_tls::TlsConnector::from(tls)
                .connect(&name, tcp)
                .await
                .map_err(|e| format!("TLS: {}", chain(&e)))?;
            send(TokioIo::new(stream), req, cap).await
        }
        other => Err(format!("scheme {other:?} is not supported")),
    }
}

/// One request on a fresh connection; the connection is driven alongside and ends with it.
async fn send<T>(
    io: T,
    req: Request<Full<Bytes>>,
    cap: usize,
) -> Result<(StatusCode, Vec<u8>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| chain(&e))?;
    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| chain(&e))?;
            if let Ok(data) = frame.into_data() {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
                if out.len() >= cap {
                    break;
                }
            }
        }
        Ok((status, out))
        // `sender` and the body drop here, which lets the connection future finish.
    };
    let (result, _) = futures::join!(exchange, conn);
    result
}

/// An error and its sources, joined: "connection closed before message completed: ...".
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}
