//! Kernel backends other than the local launcher: `--existing` (a kernel started by someone
//! else, reached through its connection file) and `--gateway-url` (a real Jupyter Kernel
//! Gateway started on 127.0.0.1 by the test).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::harness::{alive, eventually, is_error, text, Server, HANG};

/// The managed environment's interpreter, as `kernel-mcp setup` reports it.
pub fn managed_python() -> PathBuf {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("setup")
        .stdin(Stdio::null())
        .output()
        .expect("running kernel-mcp setup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("python:"))
        .expect("setup names the interpreter; run `cargo run -- setup`");
    PathBuf::from(line.trim())
}

/// An ipykernel started the way another Jupyter client would start it, outside kernel-mcp.
pub struct ExternalKernel {
    child: std::process::Child,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ExternalKernel {
    /// Starts `python -m ipykernel_launcher -f FILE` (tcp) and waits for it to write FILE.
    pub async fn start() -> ExternalKernel {
        Self::start_with(&[]).await
    }

    /// The same with extra ipykernel arguments (for example `--transport=ipc`).
    pub async fn start_with(extra: &[&str]) -> ExternalKernel {
        let dir = tempfile::Builder::new()
            .prefix("kmcp-ext-")
            .tempdir()
            .unwrap();
        let file = dir.path().join("kernel-ext.json");
        let child = std::process::Command::new(managed_python())
            .args(["-m", "ipykernel_launcher", "-f"])
            .arg(&file)
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // ipykernel writes the connection file once its sockets are bound.
        let written = eventually(HANG, || {
            std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v.get("hb_port").and_then(|p| p.as_u64()).unwrap_or(0) > 0)
                && (extra.is_empty() || k_sockets_bound(&file))
        })
        .await;
        assert!(
            written,
            "the external kernel never wrote {}",
            file.display()
        );
        ExternalKernel {
            child,
            file,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A copy of the connection file with its fields changed by `edit`.
    pub fn variant(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&self.file).unwrap()).unwrap();
        edit(&mut v);
        let path = self.file.with_file_name(name);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        path
    }
}

impl Drop for ExternalKernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For the ipc transport, the socket files exist once the kernel has bound them.
fn k_sockets_bound(file: &Path) -> bool {
    let Some(v) = std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return false;
    };
    let ip = v["ip"].as_str().unwrap_or("");
    v["transport"] != "ipc"
        || ["shell_port", "iopub_port", "hb_port"]
            .iter()
            .all(|p| Path::new(&format!("{ip}-{}", v[p])).exists())
}

fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn existing_kernel_shares_state_and_outlives_the_server() {
    let k = ExternalKernel::start().await;
    let file = arg(&k.file);
    let a = Server::start_with(&["--existing", &file]).await;
    let caps = a
        .client
        .peer_info()
        .and_then(|i| i.capabilities.tools.clone());
    assert_eq!(caps.and_then(|t| t.list_changed), Some(true));
    let r = a.exec("shared = 41\nshared + 1").await;
    assert_eq!(text(&r), "42", "{r:?}");
    // Once the server has asked the kernel about its interpreter, it tells the client to list
    // the tools again, and execute_python's description names that interpreter.
    let told = eventually(HANG, || {
        a.recorder
            .tools_changed
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    })
    .await;
    assert!(told, "no notifications/tools/list_changed");
    let tools = a.client.list_all_tools().await.unwrap();
    let desc = tools
        .iter()
        .find(|t| t.name == "execute_python")
        .and_then(|t| t.description.clone())
        .unwrap_or_default();
    assert!(desc.contains("Environment: Python 3."), "{desc}");

    // A second client of the same kernel sees the variable, and its changes are seen back.
    let b = Server::start_with(&["--existing", &file]).await;
    let r = b.exec("shared += 100\nshared").await;
    assert_eq!(text(&r), "141", "{r:?}");
    let r = a.exec("shared").await;
    assert_eq!(text(&r), "141", "{r:?}");

    // get_environment names the backend and that the kernel is someone else's.
    let env = a.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&env)).unwrap();
    assert_eq!(v["backend"]["kind"], "existing", "{v}");
    assert_eq!(v["backend"]["ownership"], "borrowed", "{v}");
    assert_eq!(v["backend"]["target"], file.as_str(), "{v}");

    // restart_kernel never restarts a kernel we do not own: it reconnects, state kept.
    let r = a.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    assert!(text(&r).contains("belongs to someone else"), "{}", text(&r));
    assert_eq!(text(&a.exec("shared").await), "141");

    // The servers leave; the kernel keeps running and still answers a new client.
    a.close().await;
    b.close().await;
    assert!(
        alive(k.pid()),
        "the existing kernel was stopped by kernel-mcp"
    );
    let c = Server::start_with(&["--existing", &file]).await;
    assert_eq!(text(&c.exec("shared").await), "141");
    c.close().await;
    assert!(alive(k.pid()));
}

#[tokio::test]
async fn existing_kernel_over_ipc_runs_code() {
    let k = ExternalKernel::start_with(&["--transport=ipc"]).await;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&k.file).unwrap()).unwrap();
    assert_eq!(v["transport"], "ipc", "{v}");
    let s = Server::start_with(&["--existing", &arg(&k.file)]).await;
    assert_eq!(
        text(&s.exec("import os\nos.getpid()").await),
        k.pid().to_string()
    );
    // The model is told that this kernel's working directory is not the workspace.
    let instructions = s.instructions();
    assert!(
        instructions.contains("started by another client")
            && instructions.contains(&s.ws().display().to_string()),
        "{instructions}"
    );
    s.close().await;
    assert!(alive(k.pid()));
}

#[tokio::test]
async fn existing_kernel_timeout_interrupts_with_a_message_and_keeps_state() {
    let k = ExternalKernel::start().await;
    let s = Server::start_with(&["--existing", &arg(&k.file)]).await;
    s.exec("kept = 'yes'").await;
    let r = s
        .call(
            "execute_python",
            json!({"code": "import time\nfor _ in range(600): time.sleep(0.1)", "timeout_seconds": 1}),
        )
        .await;
    assert!(is_error(&r), "{r:?}");
    assert!(
        text(&r).contains("the 1 s timeout was reached; variables kept"),
        "{}",
        text(&r)
    );
    assert_eq!(text(&s.exec("kept").await), "'yes'");
    assert!(
        s.log().contains("interrupt"),
        "the server never logged the interrupt"
    );
    s.close().await;
    assert!(alive(k.pid()));
}

#[tokio::test]
async fn existing_kernel_without_a_heartbeat_still_runs_code() {
    let k = ExternalKernel::start().await;
    // Point the heartbeat at a port nothing listens on (bound then released here).
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = k.variant("no-hb.json", |v| v["hb_port"] = json!(dead_port));
    let t = std::time::Instant::now();
    let s = Server::start_with(&["--existing", &arg(&file)]).await;
    assert_eq!(text(&s.exec("6 * 7").await), "42");
    // Start must not wait out a heartbeat connect timeout.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    s.close().await;
}

#[tokio::test]
async fn existing_kernel_that_goes_away_is_reported_not_restarted() {
    let mut k = ExternalKernel::start().await;
    let s = Server::start_with(&["--existing", &arg(&k.file)]).await;
    assert_eq!(text(&s.exec("1 + 1").await), "2");
    k.child.kill().unwrap();
    k.child.wait().unwrap();
    // Wait for the server to notice (heartbeat), then the next call reports it.
    let mut last = String::new();
    let deadline = std::time::Instant::now() + HANG;
    while std::time::Instant::now() < deadline {
        let r = s.exec("1 + 1").await;
        last = text(&r);
        if is_error(&r) {
            break;
        }
    }
    assert!(last.contains("went away"), "{last}");
    assert!(last.contains("did not restart it"), "{last}");
    s.close().await;
}

#[tokio::test]
async fn bad_connection_files_give_clear_errors() {
    let k = ExternalKernel::start().await;
    let md5 = k.variant("md5.json", |v| v["signature_scheme"] = json!("hmac-md5"));
    let s = Server::start_with(&["--existing", &arg(&md5)]).await;
    let r = s.exec("1").await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("\"hmac-md5\" is not supported"),
        "{}",
        text(&r)
    );
    s.close().await;

    let garbage = k.variant("bad.json", |v| v["shell_port"] = json!("not a port"));
    let s = Server::start_with(&["--existing", &arg(&garbage)]).await;
    let r = s.exec("1").await;
    assert!(is_error(&r));
    assert!(text(&r).contains("`shell_port`"), "{}", text(&r));
    s.close().await;
}

/// The Jupyter servers the gateway backend is tested against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    KernelGateway,
    JupyterServer,
    EnterpriseGateway,
}

/// A venv under the test cache with `packages`, created once per process and reused across
/// runs (CI keeps the cache). Enterprise Gateway pins older jupyter_client/jupyter_server than
/// Kernel Gateway 3, so each gets its own.
fn cached_venv(name: &str, packages: &[&str]) -> PathBuf {
    let root = std::env::var_os("KERNEL_MCP_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/kernel-mcp-ci")
        });
    let venv = root.join(name);
    // Written after a complete install; bump it when the package list changes.
    let ready = venv.join(".ready-1");
    if !ready.exists() {
        std::fs::create_dir_all(&root).unwrap();
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success()
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q"])
                .args(packages)
                .status()
                .unwrap()
                .success();
        assert!(ok, "could not install {packages:?} into {}", venv.display());
        std::fs::write(&ready, b"").unwrap();
    }
    venv
}

fn venv_for(kind: Kind) -> PathBuf {
    static KG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    static EG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let stack = ["ipykernel", "matplotlib", "pandas"];
    match kind {
        // jupyter-kernel-gateway brings jupyter_server with it.
        Kind::KernelGateway | Kind::JupyterServer => KG
            .get_or_init(|| {
                cached_venv(
                    "kg",
                    &[&["jupyter-kernel-gateway"][..], &stack[..]].concat(),
                )
            })
            .clone(),
        Kind::EnterpriseGateway => EG
            .get_or_init(|| {
                cached_venv(
                    "eg",
                    &[&["jupyter-enterprise-gateway"][..], &stack[..]].concat(),
                )
            })
            .clone(),
    }
}

/// The Kernel Gateway's environment (also the kernels' interpreter).
fn gateway_bin() -> PathBuf {
    venv_for(Kind::KernelGateway).join("bin/jupyter-kernelgateway")
}

/// A real Jupyter server on 127.0.0.1 with a token, stopped on drop.
pub struct Gateway {
    child: std::process::Child,
    pub url: String,
    pub token: String,
    dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_kind(Kind::KernelGateway).await
    }

    pub async fn start_kind(kind: Kind) -> Gateway {
        Self::start_with(kind, false).await
    }

    /// A Kernel Gateway serving https with a self-signed certificate for 127.0.0.1, written to
    /// `cert.pem` in its folder.
    #[cfg(feature = "tls")]
    pub async fn start_tls() -> Gateway {
        Self::start_with(Kind::KernelGateway, true).await
    }

    async fn start_with(kind: Kind, tls: bool) -> Gateway {
        let venv = venv_for(kind);
        let mut dir = tempfile::Builder::new()
            .prefix("kmcp-gw-")
            .tempdir()
            .unwrap();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tls_args = Vec::new();
        if tls {
            let ok = std::process::Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .args(["-keyout", "key.pem", "-out", "cert.pem"])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "openssl could not make a test certificate");
            tls_args.push(format!(
                "--KernelGatewayApp.certfile={}",
                dir.path().join("cert.pem").display()
            ));
            tls_args.push(format!(
                "--KernelGatewayApp.keyfile={}",
                dir.path().join("key.pem").display()
            ));
        }
        let scheme = if tls { "https" } else { "http" };
        // A free port can be taken by another test between our probe and the server's bind;
        // the servers are told not to wander to another port (port_retries=0) and exit
        // instead, and then we start them again on a fresh one.
        for attempt in 1..=5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
            let mut cmd = match kind {
                Kind::KernelGateway => {
                    let mut c = std::process::Command::new(venv.join("bin/jupyter-kernelgateway"));
                    c.arg("--KernelGatewayApp.ip=127.0.0.1")
                        .arg(format!("--KernelGatewayApp.port={port}"))
                        .arg("--KernelGatewayApp.port_retries=0")
                        .arg(format!("--KernelGatewayApp.auth_token={token}"))
                        .arg("--JupyterWebsocketPersonality.list_kernels=True")
                        .args(&tls_args);
                    c
                }
                Kind::JupyterServer => {
                    let mut c = std::process::Command::new(venv.join("bin/jupyter-server"));
                    c.arg("--ServerApp.ip=127.0.0.1")
                        .arg(format!("--ServerApp.port={port}"))
                        .arg("--ServerApp.port_retries=0")
                        .arg(format!("--IdentityProvider.token={token}"))
                        .arg("--ServerApp.open_browser=False")
                        .arg(format!("--ServerApp.root_dir={}", dir.path().display()))
                        // Only the legacy JSON WebSocket protocol here, so the fallback from the
                        // v1 subprotocol is tested against a real server too.
                        .arg("--ZMQChannelsWebsocketConnection.kernel_ws_protocol=")
                        .arg("--allow-root");
                    c
                }
                Kind::EnterpriseGateway => {
                    let mut c =
                        std::process::Command::new(venv.join("bin/jupyter-enterprisegateway"));
                    // As root, Enterprise Gateway refuses kernels for "root" unless told otherwise.
                    c.arg("--EnterpriseGatewayApp.ip=127.0.0.1")
                        .arg(format!("--EnterpriseGatewayApp.port={port}"))
                        .arg("--EnterpriseGatewayApp.port_retries=0")
                        .arg(format!("--EnterpriseGatewayApp.auth_token={token}"))
                        .arg("--EnterpriseGatewayApp.list_kernels=True")
                        .arg("--EnterpriseGatewayApp.unauthorized_users=nobody-at-all");
                    c
                }
            };
            let child = cmd
                .current_dir(dir.path())
                .env("JUPYTER_RUNTIME_DIR", dir.path())
                .env(
                    "PATH",
                    format!("{}:/usr/bin:/bin", venv.join("bin").display()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut g = Gateway {
                child,
                url: format!("{scheme}://127.0.0.1:{port}"),
                token: token.clone(),
                dir,
            };
            // Ready when its REST API answers; gone when the port was taken.
            let deadline = std::time::Instant::now() + HANG;
            loop {
                if g.kernels().await.is_some() {
                    return g;
                }
                if let Ok(Some(status)) = g.child.try_wait() {
                    assert!(
                        attempt < 5,
                        "{kind:?} exited ({status}) five times; its log:\n{}",
                        g.log()
                    );
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{kind:?} never answered; its log:\n{}",
                    g.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            dir = g.take_dir();
        }
        unreachable!("the loop returns or panics")
    }

    /// Moves the temporary folder out of a gateway that exited, for the next attempt.
    fn take_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.wait();
        std::mem::replace(
            &mut self.dir,
            tempfile::Builder::new()
                .prefix("kmcp-gw-")
                .tempdir()
                .unwrap(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The ids of the kernels the gateway runs (None while it does not answer).
    pub async fn kernels(&self) -> Option<Vec<String>> {
        #[cfg(feature = "tls")]
        if self.url.starts_with("https://") {
            return ids(&self.get_tls("/api/kernels").await?);
        }
        let resp = reqwest::Client::new()
            .get(format!("{}/api/kernels", self.url))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .ok()?;
        ids(&resp.bytes().await.ok()?)
    }

    /// A GET on a TLS gateway. The test's own probe accepts the gateway's self-signed
    /// certificate; kernel-mcp is made to trust it explicitly (SSL_CERT_FILE).
    #[cfg(feature = "tls")]
    async fn get_tls(&self, path: &str) -> Option<Vec<u8>> {
        use http_body_util::BodyExt;
        let u = url::Url::parse(&self.url).ok()?;
        let host = u.host_str()?.to_owned();
        let port = u.port_or_known_default()?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let cx = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .ok()?;
        let tls = tokio_native_tls::TlsConnector::from(cx)
            .connect(&host, tcp)
            .await
            .ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .ok()?;
        let driver = tokio::spawn(conn);
        let req = http::Request::get(format!("{}{path}", u.path().trim_end_matches('/')))
            .header("host", format!("{host}:{port}"))
            .header("authorization", format!("token {}", self.token))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes().to_vec();
        driver.abort();
        Some(body)
    }

    pub async fn server(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--gateway-url", &self.url, "--gateway-token", &self.token];
        args.extend_from_slice(extra);
        Server::start_with(&args).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn gateway_runs_a_stateful_analysis_with_a_plot_and_leaves_no_kernel() {
    analysis_through(Kind::KernelGateway).await;
}

#[tokio::test]
async fn jupyter_server_runs_a_stateful_analysis_with_a_plot_and_leaves_no_kernel() {
    analysis_through(Kind::JupyterServer).await;
}

#[tokio::test]
async fn enterprise_gateway_runs_a_stateful_analysis_with_a_plot_and_leaves_no_kernel() {
    analysis_through(Kind::EnterpriseGateway).await;
}

async fn analysis_through(kind: Kind) {
    let g = Gateway::start_kind(kind).await;
    let s = g.server(&[]).await;
    let r = s
        .exec("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3], 'y': [2, 4, 8]})\nlen(df)")
        .await;
    assert_eq!(text(&r), "3", "{r:?}");
    let r = s.exec("print(df['y'].sum())").await;
    assert_eq!(text(&r), "14\n", "{r:?}");
    let r = s
        .exec("import matplotlib.pyplot as plt\nplt.plot(df['x'], df['y'])\nplt.show()")
        .await;
    let images: Vec<_> = r.content.iter().filter_map(|c| c.as_image()).collect();
    assert_eq!(images.len(), 1, "{r:?}");
    assert_eq!(images[0].mime_type, "image/png");

    let env = s.call("get_environment", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&text(&env)).unwrap();
    assert_eq!(v["backend"]["kind"], "gateway", "{v}");
    assert_eq!(v["backend"]["target"], g.url.as_str(), "{v}");
    let id = v["kernel_id"].as_str().unwrap().to_owned();
    assert_eq!(g.kernels().await.unwrap(), vec![id.clone()]);
    assert!(
        !text(&env).contains(&g.token),
        "the token leaked into get_environment"
    );
    // The binary v1 protocol where the server offers it (Kernel Gateway 3, Enterprise Gateway
    // 3); the Jupyter Server here is set to the legacy protocol, and the JSON fallback is taken.
    let expected = match kind {
        Kind::JupyterServer => "protocol=Json",
        _ => "protocol=V1",
    };
    assert!(
        s.log().contains(expected),
        "expected {expected} in the server log:\n{}",
        s.log()
    );

    s.close().await;
    let gone = async {
        while !g.kernels().await.unwrap_or_default().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(HANG, gone)
        .await
        .expect("the gateway kernel outlived the server");
}

#[tokio::test]
async fn gateway_timeout_interrupts_and_restart_gives_a_fresh_kernel() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    s.exec("kept = 7").await;
    let r = s
        .call(
            "execute_python",
            json!({"code": "import time\nfor _ in range(600): time.sleep(0.1)", "timeout_seconds": 1}),
        )
        .await;
    assert!(is_error(&r), "{r:?}");
    assert!(text(&r).contains("variables kept"), "{}", text(&r));
    assert_eq!(text(&s.exec("kept").await), "7");

    let before = g.kernels().await.unwrap();
    let r = s.call("restart_kernel", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    let r = s.exec("'kept' in globals()").await;
    assert_eq!(text(&r), "False");
    let after = g.kernels().await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before, after, "restart kept the same gateway kernel");
    s.close().await;
}

#[tokio::test]
async fn gateway_errors_name_the_url_and_the_fix_never_the_token() {
    let g = Gateway::start().await;
    let s = Server::start_with(&[
        "--gateway-url",
        &g.url,
        "--gateway-token",
        "wrong-token-123",
    ])
    .await;
    let r = s.exec("1").await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(t.contains(&g.url), "{t}");
    assert!(t.contains("check the token"), "{t}");
    assert!(!t.contains("wrong-token-123"), "{t}");
    assert!(
        !s.log().contains("wrong-token-123"),
        "the token reached the log"
    );
    // On a gateway the files live with the kernel: without one, the file tools say why.
    let r = s.call("list_files", json!({})).await;
    assert!(is_error(&r), "{r:?}");
    let t = text(&r);
    assert!(
        t.contains("working directory on the gateway") && t.contains("check the token"),
        "{t}"
    );
    assert!(!t.contains("wrong-token-123"), "{t}");
    s.close().await;

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let s = Server::start_with(&["--gateway-url", &dead, "--gateway-token", "x"]).await;
    let r = s.exec("1").await;
    assert!(is_error(&r));
    let t = text(&r);
    assert!(t.contains(&dead) && t.contains("not reachable"), "{t}");
    s.close().await;
}

/// A TCP relay on 127.0.0.1 whose open connections the test can cut (a network drop between
/// kernel-mcp and a real gateway); new connections pass again at once.
struct CuttableRelay {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableRelay {
    async fn start(target: &str) -> CuttableRelay {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (cut, rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let mut rx = rx.clone();
                let born = *rx.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        CuttableRelay { url, cut, task }
    }

    fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

impl Drop for CuttableRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn gateway_websocket_drop_is_reconnected_with_state_kept() {
    let g = Gateway::start().await;
    let relay = CuttableRelay::start(&g.url).await;
    let s = Server::start_with(&["--gateway-url", &relay.url, "--gateway-token", &g.token]).await;
    assert_eq!(
        text(&s.exec("survivor = 'still here'\nsurvivor").await),
        "'still here'"
    );
    relay.cut();
    // Wait for the server to reconnect (it logs it), then the next result says so.
    let reconnected = eventually(HANG, || s.log().contains("dropped and was reconnected")).await;
    assert!(reconnected, "no reconnect in the log:\n{}", s.log());
    let r = s.exec("survivor").await;
    let t = crate::harness::texts(&r);
    assert!(t.iter().any(|x| x == "'still here'"), "{t:?}");
    assert!(
        t.iter()
            .any(|x| x.contains("dropped and was re-established")),
        "{t:?}"
    );
    s.close().await;
}

#[tokio::test]
async fn gateway_installs_packages_into_the_kernels_own_interpreter() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    let r = s
        .call("install_package", json!({"packages": ["tabulate"]}))
        .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = s.exec("import tabulate, sys\nsys.prefix").await;
    let venv = gateway_bin().parent().unwrap().parent().unwrap().to_owned();
    assert_eq!(
        text(&r),
        format!("{:?}", venv.to_string_lossy()).replace('"', "'")
    );
    let r = s
        .call(
            "check_packages",
            json!({"packages": ["tabulate", "surely-not-installed-xyz", "zmq"]}),
        )
        .await;
    let t = text(&r);
    assert!(t.contains("tabulate") && t.contains("not installed"), "{t}");
    // An import name is looked up in the kernel's own interpreter (ipykernel needs pyzmq).
    let zmq = t.lines().find(|l| l.starts_with("zmq: ")).unwrap_or("");
    assert!(zmq.ends_with("(import name of pyzmq)"), "{t}");
    // Bad specs are refused before anything reaches the kernel.
    let r = s
        .call(
            "install_package",
            json!({"packages": ["tabulate; import os"]}),
        )
        .await;
    assert!(is_error(&r), "{}", text(&r));
    s.close().await;
}

#[tokio::test]
async fn gateway_file_tools_act_in_the_kernels_working_directory() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    let csv = "x,y\n1,2\n3,4\n";
    let r = s
        .call("write_file", json!({"path": "data/t.csv", "content": csv}))
        .await;
    assert_eq!(text(&r), "wrote 12 bytes to data/t.csv", "{r:?}");
    // The file is where the kernel runs (the gateway's working directory), not in --workspace.
    assert_eq!(
        std::fs::read_to_string(g.dir.path().join("data/t.csv")).unwrap(),
        csv
    );
    assert!(!s.ws().join("data/t.csv").exists());
    let r = s
        .exec("import pandas as pd\nint(pd.read_csv('data/t.csv')['y'].sum())")
        .await;
    assert_eq!(text(&r), "6", "{r:?}");
    let r = s
        .call(
            "write_file",
            json!({"path": "data/t.csv", "content": "5,6\n", "append": true}),
        )
        .await;
    assert_eq!(text(&r), "appended 4 bytes to data/t.csv (now 16 bytes)");
    let r = s
        .call("read_file", json!({"path": "data/t.csv", "limit": 2}))
        .await;
    assert_eq!(
        crate::harness::texts(&r),
        vec!["x,y\n1,2\n", "[lines 1-2 shown; continue with offset=3]"]
    );
    let r = s
        .call("list_files", json!({"recursive": true, "pattern": "*.csv"}))
        .await;
    assert!(text(&r).contains("data/t.csv"), "{}", text(&r));
    s.call(
        "write_file",
        json!({"path": "job.py", "content": "import sys\nresult = sys.argv[1:]\nprint('ran', result)"}),
    )
    .await;
    let r = s
        .call("run_file", json!({"path": "job.py", "args": ["a b"]}))
        .await;
    assert_eq!(text(&r), "ran ['a b']\n", "{r:?}");
    // The same path policy as locally, before anything is sent, and after symlinks are resolved.
    for bad in ["../escape.txt", "/etc/passwd", "~/x"] {
        let r = s
            .call("write_file", json!({"path": bad, "content": "x"}))
            .await;
        assert!(is_error(&r), "{bad}: {r:?}");
    }
    s.exec("import os\nos.symlink('/etc', 'out')").await;
    let r = s.call("read_file", json!({"path": "out/hostname"})).await;
    assert!(
        is_error(&r) && text(&r).contains("outside the workspace"),
        "{r:?}"
    );
    // Nothing was left in the user namespace by the file helper.
    let r = s.exec("sorted(k for k in globals() if not k.startswith('_') and k not in ('In', 'Out', 'exit', 'quit', 'get_ipython', 'open'))").await;
    assert_eq!(text(&r), "['os', 'pd', 'result', 'sys']", "{r:?}");
    s.close().await;
}

#[tokio::test]
async fn gateway_notebooks_are_written_and_run_where_the_kernel_runs() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    s.exec("answer = 6 * 7\nanswer").await;
    let r = s
        .call("export_notebook", json!({"path": "nb/session.ipynb"}))
        .await;
    assert!(!is_error(&r), "{r:?}");
    // In the gateway kernel's folder, not in the local --workspace.
    let saved = g.dir.path().join("nb/session.ipynb");
    let nb: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(nb["nbformat"], 4);
    assert!(!s.ws().join("nb/session.ipynb").exists());
    // Exporting again replaces the session's own file; a file it did not write is kept.
    let r = s
        .call("export_notebook", json!({"path": "nb/session.ipynb"}))
        .await;
    assert!(!is_error(&r), "{r:?}");
    std::fs::write(g.dir.path().join("mine.ipynb"), "{}").unwrap();
    let r = s
        .call("export_notebook", json!({"path": "mine.ipynb"}))
        .await;
    assert!(
        is_error(&r) && text(&r).contains("overwrite: true"),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(g.dir.path().join("mine.ipynb")).unwrap(),
        "{}"
    );
    // run_notebook reads it from there and saves the executed copy there too.
    s.exec("del answer").await;
    let r = s
        .call(
            "run_notebook",
            json!({"path": "nb/session.ipynb", "save_to": "nb/ran.ipynb"}),
        )
        .await;
    assert!(!is_error(&r), "{r:?}");
    let t = crate::harness::texts(&r);
    assert!(t.iter().any(|x| x.contains("42")), "{t:?}");
    assert!(g.dir.path().join("nb/ran.ipynb").exists(), "{t:?}");
    let r = s.exec("answer").await;
    assert_eq!(text(&r), "42");
    s.close().await;
}

#[tokio::test]
async fn gateway_output_over_budget_is_saved_where_read_file_finds_it() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    let tools = s.client.list_all_tools().await.unwrap();
    let exec = tools.iter().find(|t| t.name == "execute_python").unwrap();
    let d = exec.description.as_deref().unwrap_or("");
    assert!(
        d.contains(&format!(
            "on the Jupyter server {}; the file tools act there",
            g.url
        )),
        "{d}"
    );
    let r = s.exec("for i in range(20000): print('line', i)").await;
    let saved = crate::harness::saved_output(&r);
    assert!(saved.starts_with(".kernel-mcp/outputs/"), "{saved}");
    // The server saved it (locally); read_file finds it although other paths go to the gateway.
    let r = s
        .call(
            "read_file",
            json!({"path": saved, "offset": 19999, "limit": 2}),
        )
        .await;
    assert!(!is_error(&r), "{r:?}");
    assert!(
        text(&r).starts_with("line 19998\nline 19999"),
        "{}",
        text(&r)
    );
    s.close().await;
}

#[tokio::test]
async fn gateway_writes_fit_one_websocket_message_or_are_refused_clearly() {
    let g = Gateway::start().await;
    let s = g.server(&[]).await;
    // 6 MiB (8 MiB of base64) reaches the gateway's kernel folder intact.
    let big = "y".repeat(6 << 20);
    let r = s
        .call("write_file", json!({"path": "big.txt", "content": big}))
        .await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(
        std::fs::metadata(g.dir.path().join("big.txt"))
            .unwrap()
            .len(),
        6 << 20
    );
    // Over the per-call limit: refused before anything is sent, saying how to go on.
    let too_big = "z".repeat(8 << 20);
    let r = s
        .call(
            "write_file",
            json!({"path": "bigger.txt", "content": too_big}),
        )
        .await;
    assert!(
        is_error(&r) && text(&r).contains("append: true"),
        "{}",
        text(&r)
    );
    assert!(!g.dir.path().join("bigger.txt").exists());
    // The WebSocket survived: the kernel still answers.
    let r = s.exec("1 + 1").await;
    assert_eq!(text(&r), "2");
    s.close().await;
}

/// With the `tls` feature: a gateway behind https (and wss for the channels), trusted through
/// OpenSSL's own `SSL_CERT_FILE`; an untrusted certificate is a clear error naming the URL.
#[cfg(feature = "tls")]
#[tokio::test]
async fn gateway_over_https_runs_code_when_its_certificate_is_trusted() {
    let g = Gateway::start_tls().await;
    assert!(g.url.starts_with("https://"), "{}", g.url);
    let cert = g.dir.path().join("cert.pem");
    let s = Server::start_with_env(
        &["--gateway-url", &g.url, "--gateway-token", &g.token],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    )
    .await;
    let r = s.exec("x = 21").await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(text(&s.exec("x * 2").await), "42");
    s.close().await;
    assert_eq!(g.kernels().await, Some(vec![]), "the kernel was deleted");
    let s = g.server(&[]).await;
    let r = s.exec("1").await;
    let t = text(&r);
    assert!(is_error(&r) && t.contains(&g.url), "{t}");
    assert!(t.contains("SSL_CERT_FILE"), "{t}");
    s.close().await;
}

/// The kernel ids in a gateway's `GET /api/kernels` answer.
fn ids(body: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|k| k["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[tokio::test]
async fn a_server_that_exits_while_its_spare_starts_leaves_no_gateway_kernel() {
    let g = Gateway::start_kind(Kind::KernelGateway).await;
    let s = g.server(&["--spare"]).await;
    let pid = s.pid as i32;
    // The first call starts the kernel; the spare is still starting when the client leaves.
    let r = s.exec("1 + 1").await;
    assert_eq!(text(&r), "2", "{r:?}");
    // SIGTERM: an orderly exit (closing the harness client would kill the process after a
    // grace period, as rmcp's child transport does).
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        crate::harness::eventually(HANG, || !crate::harness::alive(pid)).await,
        "the server did not exit"
    );
    let dir = s.close().await;
    assert!(
        crate::harness::eventually(HANG, || !crate::harness::alive(pid)).await,
        "the server did not exit"
    );
    // Nothing can delete a kernel once the server is gone: every one must be gone already.
    assert_eq!(
        g.kernels().await.unwrap_or_default(),
        Vec::<String>::new(),
        "kernels left on the gateway; server log:\n{}",
        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
    );
}

/// A server killed with SIGKILL cannot delete its gateway kernel; the next server against the
/// same gateway does, at its first kernel start (`--reap-orphans`, on by default), and leaves
/// the kernels of servers still running alone.
#[tokio::test]
async fn kernels_of_a_killed_server_are_reaped_by_the_next_one() {
    reaped_through(Kind::KernelGateway).await;
}

#[tokio::test]
async fn kernels_of_a_killed_server_are_reaped_on_enterprise_gateway() {
    reaped_through(Kind::EnterpriseGateway).await;
}

async fn reaped_through(kind: Kind) {
    let g = Gateway::start_kind(kind).await;
    let bystander = g.server(&[]).await;
    assert_eq!(text(&bystander.exec("1 + 1").await), "2");
    let kept = g.kernels().await.unwrap_or_default();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let s = g.server(&[]).await;
    assert_eq!(text(&s.exec("2 + 2").await), "4");
    let pid = s.pid as i32;
    let all = g.kernels().await.unwrap_or_default();
    let orphan: Vec<String> = all.iter().filter(|k| !kept.contains(k)).cloned().collect();
    assert_eq!(orphan.len(), 1, "{all:?}");
    let st = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        crate::harness::eventually(HANG, || !crate::harness::alive(pid)).await,
        "the server did not die"
    );
    let _ = s.close().await;
    // Nobody deleted it.
    assert!(g.kernels().await.unwrap_or_default().contains(&orphan[0]));
    let next = g.server(&[]).await;
    assert_eq!(text(&next.exec("3 + 3").await), "6");
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let now = g.kernels().await.unwrap_or_default();
        if !now.contains(&orphan[0]) {
            // The bystander's kernel is still there, and still answers.
            assert!(now.contains(&kept[0]), "{now:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orphan {} was not reaped: {now:?}\n{}",
            orphan[0],
            next.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        next.log()
            .contains("reaping a gateway kernel left by a server that ended without deleting it"),
        "{}",
        next.log()
    );
    assert_eq!(text(&bystander.exec("5 + 5").await), "10");
    bystander.close().await;
    next.close().await;
}
