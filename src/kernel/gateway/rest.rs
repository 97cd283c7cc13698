//! The gateway's REST calls (Jupyter Server REST API, `/api/kernels`): start a kernel (and
//! delete one that started after its caller gave up), delete, interrupt. Errors come back as
//! typed `GatewayError`s; the token is sent, never logged.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::{http1, ledger};
use crate::error::{GatewayError, KernelError};

/// Bound on each REST call; kernel starts get the start-up timeout instead.
pub(super) const REST_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters of a gateway's error body quoted in an error.
const BODY_SNIPPET: usize = 300;

/// The REST half: cheap to clone into lifecycles and background deletes.
#[derive(Clone)]
pub(super) struct Rest {
    pub(super) base: Url,
    /// The gateway's URL as logs and errors show it (no credentials).
    pub(super) shown: String,
    pub(super) token: Option<String>,
    pub(super) ledger: Option<Arc<ledger::Ledger>>,
}

impl Rest {
    pub(super) fn url(&self, path: &str) -> Result<Url, KernelError> {
        self.base.join(path).map_err(|e| KernelError::Unavailable {
            reason: GatewayError::BadPath {
                path: path.to_owned(),
                detail: e.to_string(),
            }
            .into(),
        })
    }

    /// Sends one REST call and returns the JSON body (or `null` for an empty one).
    pub(super) async fn call(
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
    pub(super) async fn delete(&self, id: &str) -> bool {
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
pub(super) fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// How much longer than the start-up timeout a kernel start is followed after its caller gave
/// up, so that a kernel the gateway starts late (Enterprise Gateway launching a pod) is still
/// deleted rather than left running with an id nobody learned.
const LATE_START_GRACE: Duration = Duration::from_secs(300);

/// `POST /api/kernels`, answered within `limit`. The request runs in a task of its own: if
/// the answer comes after `limit`, or the start is cancelled (its future dropped), the kernel
/// the gateway started meanwhile is deleted when its id arrives instead of being leaked.
pub(super) async fn start_kernel(
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

/// Gateway stand-ins for the unit tests of this module's siblings.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod stand_in {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use url::Url;

    use super::Rest;

    pub fn fake_rest(addr: std::net::SocketAddr) -> Rest {
        Rest {
            base: Url::parse(&format!("http://{addr}/")).unwrap(),
            shown: format!("http://{addr}"),
            token: None,
            ledger: None,
        }
    }

    /// An HTTP request's head (up to its blank line), as a stand-in reads it.
    pub async fn read_head(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
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
    pub async fn fake_rest_gateway(statuses: &'static [u16]) -> (Rest, Arc<AtomicUsize>) {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::stand_in::{fake_rest, read_head};
    use super::*;
    use serde_json::json;
    use tokio::io::AsyncWriteExt;

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
}
