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
//!
//! The parts: `rest.rs` (the REST calls: start, delete, interrupt), `channels.rs` (the kernel's
//! channels over one WebSocket: connect, pump, reconnect, bounded sends), `timing.rs` (when a
//! socket counts as dead, the reconnect schedule), `remote.rs` (a kernel
//! the gateway runs for us: its lifecycle and deletion), `http1.rs` (one HTTP exchange) and
//! `ledger.rs` (the record of started kernels, for reaping after a crash).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use url::Url;

mod channels;
mod http1;
mod ledger;
mod remote;
mod rest;
mod timing;

use crate::error::{GatewayError, KernelError};
use crate::kernel::backend::Ownership;
use crate::kernel::client::Kernel;
use crate::kernel::source::{Backend, BackendInfo, BackendKind};
use crate::wire::Router;
use channels::WsChannels;
use remote::Remote;
use rest::{path_segment, start_kernel, Rest};
use timing::WsTiming;

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
        let life = Remote::new(rest.clone(), id.clone(), Router::new());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

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
