//! `serve --listen`: MCP over Streamable HTTP with a kernel and a workspace per session, driven
//! by rmcp's streamable-HTTP client (both protocol eras) and by plain HTTP for refusals.

use std::path::PathBuf;
use std::process::Stdio;

use rmcp::model::{CallToolResult, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

use crate::harness::{alive, eventually, is_error, params, text, Recorder, HANG};

const TOKEN: &str = "test-token-4f2a9c";

/// A `kernel-mcp serve --listen 127.0.0.1:0` child and where it listens.
struct Http {
    child: tokio::process::Child,
    url: String,
    dir: tempfile::TempDir,
    token: Option<String>,
    args: Vec<String>,
}

type Client = RunningService<RoleClient, Recorder>;

impl Http {
    /// The server's `host:port`, for raw HTTP.
    fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    }

    async fn start(args: &[&str], token: Option<&str>) -> Http {
        let dir = tempfile::Builder::new()
            .prefix("kmcp-http-")
            .tempdir()
            .unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::start_in(dir, args, token).await
    }

    /// SIGTERM (an orderly stop), then a new server on the same workspace and flags.
    async fn restart(self) -> Http {
        let Http {
            mut child,
            dir,
            token,
            args,
            ..
        } = self;
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let status = tokio::time::timeout(HANG, child.wait())
            .await
            .expect("the server did not exit after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
        Self::start_in(dir, args, token.as_deref()).await
    }

    /// A server on `dir/ws`; `--persist` (a test flag) lets it snapshot, which the tests
    /// otherwise turn off.
    async fn start_in(dir: tempfile::TempDir, args: Vec<String>, token: Option<&str>) -> Http {
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"));
        cmd.arg("--workspace")
            .arg(dir.path().join("ws"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--no-preload")
            .args(args.iter().filter(|a| *a != "--persist"))
            .env("KERNEL_MCP_LOG", "debug")
            .env_remove("KERNEL_MCP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if !args.iter().any(|a| a == "--persist") {
            cmd.arg("--no-persist");
        }
        if let Some(t) = token {
            cmd.env("KERNEL_MCP_TOKEN", t);
        }
        let child = cmd.spawn().unwrap();
        let log_path = dir.path().join("server.log");
        let mut url = None;
        let found = eventually(HANG, || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            url = log
                .lines()
                .find(|l| l.contains("serving MCP over Streamable HTTP"))
                .and_then(|l| l.split("url=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            url.is_some()
        })
        .await;
        assert!(
            found,
            "the server did not start listening:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        Http {
            child,
            url: url.unwrap(),
            dir,
            token: token.map(str::to_owned),
            args,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn config(&self) -> StreamableHttpClientTransportConfig {
        let c = StreamableHttpClientTransportConfig::with_uri(self.url.as_str());
        match &self.token {
            Some(t) => c.auth_header(t.clone()),
            None => c,
        }
    }

    /// A 2025-11-25 client: one MCP session.
    async fn session(&self) -> Client {
        let t = StreamableHttpClientTransport::from_config(self.config());
        tokio::time::timeout(HANG, Recorder::default().serve(t))
            .await
            .expect("initialize hung")
            .unwrap()
    }

    /// A 2026-07-28 client: `server/discover`, then self-contained requests.
    async fn modern(&self) -> Client {
        let t = StreamableHttpClientTransport::from_config(self.config());
        tokio::time::timeout(
            HANG,
            Recorder::default().serve_with_lifecycle(
                t,
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            ),
        )
        .await
        .expect("discover hung")
        .unwrap()
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the server did not exit after SIGTERM")
            .unwrap()
    }
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    tokio::time::timeout(HANG, c.call_tool(params(tool, args, false)))
        .await
        .unwrap_or_else(|_| panic!("{tool} hung"))
        .unwrap_or_else(|e| panic!("{tool} failed at the protocol level: {e}"))
}

async fn exec(c: &Client, code: &str) -> CallToolResult {
    call(c, "execute_python", json!({ "code": code })).await
}

/// The session's environment report (the first block of get_environment).
async fn environment(c: &Client, extra: Value) -> Value {
    let mut args = json!({});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let r = call(c, "get_environment", args).await;
    let first = r.content[0].as_text().unwrap().text.clone();
    serde_json::from_str(&first).unwrap()
}

async fn kernel_pid(c: &Client, extra: Value) -> i32 {
    // The first call starts (or takes) the kernel; get_environment then names its pid.
    let mut args = json!({"code": "1"});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let r = call(c, "execute_python", args).await;
    assert!(!is_error(&r), "{}", text(&r));
    environment(c, extra).await["kernel_pid"]
        .as_i64()
        .expect("a kernel pid") as i32
}

/// Live processes whose command line names `path` (kernels and helpers name their workspace).
fn naming(path: &std::path::Path) -> Vec<i32> {
    let path = path.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (alive(pid) && String::from_utf8_lossy(&cmd).contains(&path)).then_some(pid)
        })
        .collect()
}

/// The handle a `new_session` result names.
fn handle_of(r: &CallToolResult) -> String {
    let t = text(r);
    t.split("session handle \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no handle in {t:?}"))
        .to_owned()
}

fn post(url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[tokio::test]
async fn legacy_sessions_have_separate_state_and_files() {
    let srv = Http::start(&[], None).await;
    let (a, b) = (srv.session().await, srv.session().await);
    assert!(!is_error(&exec(&a, "x = 'from a'").await));
    call(&a, "write_file", json!({"path": "a.txt", "content": "a"})).await;
    let r = exec(&b, "x").await;
    assert!(is_error(&r), "session b sees a's variable: {}", text(&r));
    assert!(text(&r).starts_with("NameError"), "{}", text(&r));
    let r = call(&b, "read_file", json!({"path": "a.txt"})).await;
    assert!(is_error(&r), "session b reads a's file: {}", text(&r));
    // Not from Python either: b's kernel is jailed to its own folder.
    let a_ws = environment(&a, json!({})).await["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_ws = environment(&b, json!({})).await["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(a_ws, b_ws);
    let r = exec(&b, &format!("open({:?}).read()", format!("{a_ws}/a.txt"))).await;
    assert!(is_error(&r), "b's kernel read a's file: {}", text(&r));
    assert_eq!(text(&exec(&a, "print(x)").await), "from a\n");
    // get_environment describes the session itself.
    let r = call(&a, "get_environment", json!({})).await;
    let facts: Value = serde_json::from_str(&r.content[1].as_text().unwrap().text).unwrap();
    assert_eq!(facts["session"]["kind"], "MCP session (Mcp-Session-Id)");
    assert_eq!(facts["session"]["own_workspace_folder"], true);
    assert!(srv.log().contains("session opened"));
    let _ = a.cancel().await;
    let _ = b.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn handles_have_separate_state_and_files() {
    let srv = Http::start(&[], None).await;
    let c = srv.modern().await;
    let tools = tokio::time::timeout(HANG, c.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    let exec_tool = tools.iter().find(|t| t.name == "execute_python").unwrap();
    assert!(exec_tool.input_schema["properties"]["session"].is_object());
    let required = exec_tool.input_schema["required"].as_array().unwrap();
    assert!(
        !required.contains(&json!("session")),
        "session must be optional"
    );
    assert!(exec_tool
        .description
        .as_deref()
        .unwrap()
        .contains("Working directory: the session's own folder."));
    assert!(tools.iter().any(|t| t.name == "new_session"));
    let h1 = handle_of(&call(&c, "new_session", json!({})).await);
    let h2 = handle_of(&call(&c, "new_session", json!({})).await);
    assert_ne!(h1, h2);
    assert!(h1.len() >= 32, "handle too short to be unguessable: {h1}");
    assert!(!is_error(
        &call(
            &c,
            "execute_python",
            json!({"code": "y = 1", "session": h1})
        )
        .await
    ));
    call(
        &c,
        "write_file",
        json!({"path": "one.txt", "content": "1", "session": h1}),
    )
    .await;
    let r = call(&c, "execute_python", json!({"code": "y", "session": h2})).await;
    assert!(text(&r).starts_with("NameError"), "{}", text(&r));
    let r = call(&c, "read_file", json!({"path": "one.txt", "session": h2})).await;
    assert!(is_error(&r), "{}", text(&r));
    let r = call(
        &c,
        "execute_python",
        json!({"code": "print(y + 1)", "session": h1}),
    )
    .await;
    assert_eq!(text(&r), "2\n");
    // A call without a handle starts a session and says which.
    let r = call(&c, "execute_python", json!({"code": "print('fresh')"})).await;
    assert_eq!(text(&r).lines().next(), Some("fresh"));
    let h3 = handle_of(&r);
    assert!(h3 != h1 && h3 != h2);
    // An unknown handle is an error that says what to do.
    let r = call(
        &c,
        "execute_python",
        json!({"code": "1", "session": "nope"}),
    )
    .await;
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("unknown or expired session handle; nothing was run.")
            && text(&r).contains("Call new_session"),
        "{}",
        text(&r)
    );
    // The log names sessions, but a handle (the session's credential) only by a prefix. (At
    // debug level, which the tests use, rmcp itself logs whole messages; that is not checked.)
    let log = srv.log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kernel_mcp::serve"))
        .collect();
    assert!(ours
        .iter()
        .any(|l| l.contains(&format!("handle:{}", &h1[..12]))));
    assert!(
        !ours.iter().any(|l| l.contains(&h1)),
        "a full handle reached the log"
    );
    let _ = c.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn long_cells_in_two_sessions_run_at_the_same_time() {
    // Each cell announces itself and then waits for the other's announcement; run one after
    // the other, the first would wait out its 60 s and report "alone".
    let srv = Http::start(&["--shared-workspace"], None).await;
    let (a, b) = (srv.session().await, srv.session().await);
    let cell = |me: &str, other: &str| {
        format!(
            "import os, time\nopen('{me}.started', 'w').close()\nend = time.time() + 60\nwhile not os.path.exists('{other}.started') and time.time() < end:\n    time.sleep(0.05)\nprint('together' if os.path.exists('{other}.started') else 'alone')"
        )
    };
    let (ca, cb) = (cell("a", "b"), cell("b", "a"));
    let (ra, rb) = tokio::join!(
        a.call_tool(params(
            "execute_python",
            json!({"code": ca, "timeout_seconds": 90}),
            false
        )),
        b.call_tool(params(
            "execute_python",
            json!({"code": cb, "timeout_seconds": 90}),
            false
        )),
    );
    assert_eq!(text(&ra.unwrap()), "together\n");
    assert_eq!(text(&rb.unwrap()), "together\n");
    let _ = a.cancel().await;
    let _ = b.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn delete_ends_the_session_and_its_kernel() {
    let srv = Http::start(&[], None).await;
    let a = srv.session().await;
    let pid = kernel_pid(&a, json!({})).await;
    assert!(alive(pid));
    // The client's close sends DELETE with its Mcp-Session-Id.
    let _ = tokio::time::timeout(HANG, a.cancel()).await;
    assert!(
        eventually(HANG, || !alive(pid)).await,
        "kernel {pid} outlived its session"
    );
    assert!(srv.log().contains("session ended"), "{}", srv.log());
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn idle_sessions_are_reaped() {
    let srv = Http::start(&["--session-idle-timeout", "2"], None).await;
    let a = srv.session().await;
    let legacy_pid = kernel_pid(&a, json!({})).await;
    assert!(!is_error(&exec(&a, "x = 1").await));
    let c = srv.modern().await;
    let h = handle_of(&call(&c, "new_session", json!({})).await);
    let handle_pid = kernel_pid(&c, json!({"session": h})).await;
    assert!(
        eventually(HANG, || !alive(legacy_pid) && !alive(handle_pid)).await,
        "idle kernels {legacy_pid}/{handle_pid} were not ended"
    );
    let r = call(&c, "execute_python", json!({"code": "1", "session": h})).await;
    assert!(
        is_error(&r) && text(&r).starts_with("unknown or expired session handle"),
        "{}",
        text(&r)
    );
    // The legacy session is gone: the server answers 404 for its id, and rmcp's client either
    // fails or (its default) starts a new session, which has none of the old variables.
    let r = tokio::time::timeout(
        HANG,
        a.call_tool(params("execute_python", json!({"code": "x"}), false)),
    )
    .await
    .unwrap();
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| text(r).starts_with("NameError")),
        "{r:?}"
    );
    assert!(srv
        .log()
        .contains("session idle past --session-idle-timeout"));
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn sessions_beyond_the_limit_get_503() {
    let srv = Http::start(&["--max-sessions", "1"], None).await;
    let a = srv.session().await;
    let r = tokio::time::timeout(HANG, post(&srv.url).body(INIT).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 1);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-sessions"),
        "{body}"
    );
    // The handle era counts against the same limit.
    let c = srv.modern().await;
    let r = call(&c, "new_session", json!({})).await;
    assert!(
        is_error(&r) && text(&r).contains("--max-sessions"),
        "{}",
        text(&r)
    );
    // The existing session is unaffected.
    assert_eq!(text(&exec(&a, "print(3)").await), "3\n");
    let _ = a.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn token_is_required_on_every_request() {
    let srv = Http::start(&[], Some(TOKEN)).await;
    let r = post(&srv.url).body(INIT).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = post(&srv.url)
        .header("authorization", format!("Bearer {TOKEN}x"))
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let health = srv.url.replace("/mcp", "/healthz");
    let r = reqwest::get(&health).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // rmcp's client with the token works end to end.
    let a = srv.session().await;
    assert_eq!(text(&exec(&a, "print(5)").await), "5\n");
    let _ = a.cancel().await;
    assert!(!srv.log().contains(TOKEN), "the token reached the log");
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn foreign_origin_and_host_get_403() {
    let srv = Http::start(&[], None).await;
    let r = post(&srv.url)
        .header("origin", "http://evil.example")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = post(&srv.url)
        .header("host", "evil.example")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The listen address's own origin is fine.
    let port = srv.url.rsplit(':').next().unwrap().trim_end_matches("/mcp");
    let r = post(&srv.url)
        .header("origin", format!("http://localhost:{port}"))
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let srv = Http::start(&["--max-body", "64K"], None).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"pad":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let r = post(&srv.url).body(big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Announced over the cap: refused from the headers alone, and `Expect: 100-continue` is
    // not answered 100 (the client would send the whole body to have it thrown away).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.addr();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(HANG, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await
    .expect("no answer to the headers alone");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(srv.stop().await.success());
}

/// A body of millions of tiny JSON values is refused before anything parses it (parsed, 8 MB
/// of `0,` would take ~130-250 MB, and the 32 MiB default allows four times that).
#[tokio::test]
async fn bodies_of_millions_of_values_get_413() {
    let srv = Http::start(&[], None).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"pad":[{}0]}}}}"#,
        "0,".repeat(4_000_000)
    );
    let r = post(&srv.url).body(big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let said = r.text().await.unwrap_or_default();
    assert!(said.contains("more than 1048576 JSON values"), "{said}");
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn non_loopback_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        HANG,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
            .arg("--workspace")
            .arg(dir.path())
            .args(["--listen", "0.0.0.0:0"])
            .env_remove("KERNEL_MCP_TOKEN")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a bearer token") && err.contains("--token-file"),
        "{err}"
    );
}

#[tokio::test]
async fn server_exit_leaves_no_kernel() {
    let srv = Http::start(&[], None).await;
    let a = srv.session().await;
    let c = srv.modern().await;
    let mut pids = vec![kernel_pid(&a, json!({})).await];
    let h = handle_of(&call(&c, "new_session", json!({})).await);
    pids.push(kernel_pid(&c, json!({"session": h})).await);
    // The spare started for the next session must end too.
    let ws: PathBuf = srv.dir.path().join("ws");
    assert!(srv.stop().await.success());
    for pid in &pids {
        assert!(
            eventually(HANG, || !alive(*pid)).await,
            "kernel {pid} outlived the server"
        );
    }
    assert!(
        eventually(HANG, || naming(&ws).is_empty()).await,
        "processes still name the workspace (the spare's kernel too): {:?}",
        naming(&ws)
    );
    drop(a);
    drop(c);
}

/// The README demo's three steps (load, summarise with the same variables, plot) over HTTP.
async fn three_steps(c: &Client, session: Value) {
    let with = |mut v: Value| {
        if let (Some(a), Some(e)) = (v.as_object_mut(), session.as_object()) {
            a.extend(e.clone());
        }
        v
    };
    let csv = "month,region,revenue\n2026-01,north,120\n2026-01,south,95\n2026-02,north,135\n2026-02,south,101\n";
    let r = call(
        c,
        "write_file",
        with(json!({"path": "sales.csv", "content": csv})),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(
        c,
        "execute_python",
        with(
            json!({"code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)"}),
        ),
    )
    .await;
    assert_eq!(text(&r), "(4, 3)\n");
    let r = call(
        c,
        "execute_python",
        with(json!({"code": "print(df.groupby('region')['revenue'].sum().to_dict())"})),
    )
    .await;
    assert_eq!(text(&r), "{'north': 255, 'south': 196}\n");
    let r = call(
        c,
        "execute_python",
        with(
            json!({"code": "import matplotlib.pyplot as plt\nplt.plot(df['revenue'])\nplt.show()"}),
        ),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    let image = r.content.iter().find_map(|c| c.as_image()).expect("a plot");
    assert_eq!(image.mime_type, "image/png");
}

#[tokio::test]
async fn three_step_analysis_over_http_in_both_eras() {
    let srv = Http::start(&[], Some(TOKEN)).await;
    let legacy = srv.session().await;
    three_steps(&legacy, json!({})).await;
    let modern = srv.modern().await;
    let h = handle_of(&call(&modern, "new_session", json!({})).await);
    three_steps(&modern, json!({ "session": h })).await;
    let _ = legacy.cancel().await;
    let _ = modern.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn a_killed_server_leaves_no_kernel() {
    let mut srv = Http::start(&[], None).await;
    let a = srv.session().await;
    let pid = kernel_pid(&a, json!({})).await;
    let ws = srv.dir.path().join("ws");
    assert!(
        naming(&ws).contains(&pid),
        "the process scan must see the kernel"
    );
    srv.child.start_kill().unwrap();
    let _ = tokio::time::timeout(HANG, srv.child.wait()).await.unwrap();
    // No shutdown ran: the kernel helper's lifeline pipe ends the kernel.
    assert!(
        eventually(HANG, || !alive(pid)).await,
        "kernel {pid} outlived a SIGKILLed server"
    );
    assert!(
        eventually(HANG, || naming(&ws).is_empty()).await,
        "processes outlived a SIGKILLed server (the spare's kernel too): {:?}",
        naming(&ws)
    );
    drop(a);
}

#[tokio::test]
async fn allowed_browser_origins_get_cors_answers() {
    let ui = "http://localhost:6274";
    let srv = Http::start(&["--allow-origin", ui], Some(TOKEN)).await;
    let preflight = |origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, &srv.url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    // A preflight carries no token; it is answered for an allowed origin only.
    let r = preflight(ui).await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], ui);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("mcp-session-id"));
    let r = preflight("http://evil.example").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // The real request from the allowed origin, with the token, is served and readable.
    let r = post(&srv.url)
        .header("origin", ui)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], ui);
    assert!(r.headers().contains_key("mcp-session-id"));
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn token_file_first_line_is_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token");
    std::fs::write(&file, "file-token-77\nnot part of it\n").unwrap();
    let mut srv = Http::start(&["--token-file", file.to_str().unwrap()], None).await;
    let r = post(&srv.url).body(INIT).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    srv.token = Some("file-token-77".into());
    let a = srv.session().await;
    assert_eq!(text(&exec(&a, "print(7)").await), "7\n");
    let _ = a.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn orphaned_sessions_give_way_at_the_limit() {
    let srv = Http::start(&["--max-sessions", "2"], None).await;
    let c = srv.modern().await;
    // Two calls without `session`: two sessions; the second is used again, the first never.
    let r1 = call(&c, "execute_python", json!({"code": "a = 1"})).await;
    let h1 = handle_of(&r1);
    let r2 = call(&c, "execute_python", json!({"code": "b = 2"})).await;
    let h2 = handle_of(&r2);
    let r = call(
        &c,
        "execute_python",
        json!({"code": "print(b)", "session": h2}),
    )
    .await;
    assert_eq!(text(&r), "2\n");
    // Full: the orphan gives way to a new session...
    let r = call(&c, "new_session", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(&c, "execute_python", json!({"code": "a", "session": h1})).await;
    assert!(
        text(&r).starts_with("unknown or expired session handle"),
        "{}",
        text(&r)
    );
    // ...but sessions in use do not.
    let r = call(&c, "new_session", json!({})).await;
    assert!(
        is_error(&r) && text(&r).contains("--max-sessions"),
        "{}",
        text(&r)
    );
    let r = call(
        &c,
        "execute_python",
        json!({"code": "print(b)", "session": h2}),
    )
    .await;
    assert_eq!(text(&r), "2\n");
    assert!(srv.log().contains("the least recently used idle one"));
    let _ = c.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn gateway_sessions_each_get_a_gateway_kernel_and_leave_none() {
    let g = crate::backends::Gateway::start().await;
    let srv = Http::start(
        &[
            "--gateway-url",
            &g.url,
            "--gateway-token",
            &g.token,
            "--no-spare",
        ],
        Some(TOKEN),
    )
    .await;
    let a = srv.session().await;
    let b = srv.session().await;
    assert_eq!(text(&exec(&a, "who = 'a'\nwho").await), "'a'");
    assert_eq!(text(&exec(&b, "'who' in globals()").await), "False");
    let ids = g.kernels().await.unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let v = environment(&a, json!({})).await;
    assert_eq!(v["backend"]["kind"], "gateway", "{v}");
    let _ = a.cancel().await;
    let _ = b.cancel().await;
    assert!(srv.stop().await.success());
    let gone = async {
        while !g.kernels().await.unwrap_or_default().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(HANG, gone)
        .await
        .expect("a session's gateway kernel outlived the server");
}

#[tokio::test]
async fn a_run_outlives_its_http_request_and_each_session_has_its_own() {
    let srv = Http::start(&["--return-after", "1"], None).await;
    let (a, b) = (srv.session().await, srv.session().await);
    let r = exec(
        &a,
        "import time\ntime.sleep(4)\nleft = 'a'\nprint('a done')",
    )
    .await;
    assert!(text(&r).contains("still running as run 1"), "{}", text(&r));
    // The other session has runs of its own, numbered from 1, and is not queued behind a's.
    let r = exec(&b, "left = 'b'\nprint('b quick')").await;
    assert_eq!(text(&r), "b quick\n");
    let r = call(&b, "check_run", json!({})).await;
    assert!(text(&r).contains("already"), "{}", text(&r));
    // a's run finished after its request was answered; check_run in a gets the rest.
    let mut rest = String::new();
    for _ in 0..30 {
        let r = call(&a, "check_run", json!({"run": 1})).await;
        rest.push_str(&text(&r));
        if rest.contains("[the run ") {
            break;
        }
    }
    assert!(
        rest.contains("a done") && rest.contains("[the run finished after "),
        "{rest}"
    );
    assert_eq!(text(&exec(&a, "left").await), "'a'");
    assert_eq!(text(&exec(&b, "left").await), "'b'");
    let _ = a.cancel().await;
    let _ = b.cancel().await;
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn clients_that_end_their_sessions_never_fill_the_server() {
    let srv = Http::start(&["--max-sessions", "2"], None).await;
    // One client that stays: used now, so it never gives way to a newcomer.
    let stay = srv.modern().await;
    let r = call(&stay, "new_session", json!({})).await;
    let kept = handle_of(&r);
    let r = call(
        &stay,
        "execute_python",
        json!({"code": "kept = 1", "session": kept}),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    for i in 0..5 {
        let c = srv.modern().await;
        let r = call(&c, "new_session", json!({})).await;
        assert!(!is_error(&r), "client {i}: {}", text(&r));
        let h = handle_of(&r);
        for code in [format!("x = {i}"), "x * 2".to_owned()] {
            let r = call(&c, "execute_python", json!({"code": code, "session": h})).await;
            assert!(!is_error(&r), "client {i}: {}", text(&r));
        }
        let r = call(&c, "end_session", json!({"session": h})).await;
        assert!(text(&r).contains("the session ended"), "{}", text(&r));
        let r = call(&c, "execute_python", json!({"code": "x", "session": h})).await;
        assert!(
            is_error(&r) && text(&r).contains("unknown or expired"),
            "{}",
            text(&r)
        );
        let _ = c.cancel().await;
    }
    // At the limit with every session fresh, the refusal says when a slot frees.
    let other = srv.modern().await;
    let r = call(&other, "new_session", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(&stay, "new_session", json!({})).await;
    assert!(is_error(&r), "{}", text(&r));
    assert!(text(&r).contains("gives way in about"), "{}", text(&r));
    // The client that stayed still has its state.
    let r = call(
        &stay,
        "execute_python",
        json!({"code": "kept", "session": kept}),
    )
    .await;
    assert_eq!(text(&r), "1");
    let _ = stay.cancel().await;
    let _ = other.cancel().await;
    assert!(srv.stop().await.success());
}

/// A 2025-11-25 client ends its session with DELETE and takes 200 or 204 as success (the
/// Python SDK warns "Session termination failed: 202" otherwise): raw HTTP, status checked.
#[tokio::test]
async fn delete_answers_no_content() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = Http::start(&[], None).await;
    let addr = srv.addr();
    async fn head(addr: &str, request: String) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(HANG, async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
                }
            }
        })
        .await
        .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let init = head(
        &addr,
        format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    )
    .await;
    let id = init
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no session id in {init}"));
    let del = head(
        &addr,
        format!("DELETE /mcp HTTP/1.1\r\nHost: {addr}\r\nMcp-Session-Id: {id}\r\nMCP-Protocol-Version: 2025-11-25\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(del.starts_with("HTTP/1.1 204"), "{del}");
    // Ended: a request on it is answered 404 (MCP transports, "Session Management").
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let again = head(
        &addr,
        format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {id}\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ping}", ping.len()),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");
    assert!(srv.stop().await.success());
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = Http::start(&[], None).await;
    let addr = srv.addr();
    // Five slowloris clients: a request line and one header, then nothing.
    let mut socks = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    // The server closes each (the read sees the end, or an error), well within the hang bound.
    for mut s in socks {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(HANG, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a half-sent request kept its connection open"
        );
    }
    // The server still serves.
    let c = srv.session().await;
    assert_eq!(text(&exec(&c, "print(5)").await), "5\n");
    let _ = c.cancel().await;
    assert!(srv.stop().await.success());
}

/// A client that sends its headers and announces a body it never finishes gets 408 once
/// nothing has arrived for 10 s (many such clients used to hold every connection slot for the
/// whole body's time, ~9 minutes at the default `--max-body`); one that trickles its body gets
/// 408 when the body's time (60 s, +1 s per 64 KiB of `--max-body`) is up. Either way its
/// connection is closed. (The trickle waits those 61 s by design.)
#[tokio::test]
async fn bodies_that_never_arrive_get_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = Http::start(&["--max-body", "64K"], None).await;
    let head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"";
    // Stalled.
    let mut s = tokio::net::TcpStream::connect(&srv.addr()).await.unwrap();
    let started = std::time::Instant::now();
    s.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(HANG, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body kept its connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("nothing of the request body arrived for 10 s"),
        "{answer}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
    // Trickled: a byte every 5 s, never the whole body.
    let mut s = tokio::net::TcpStream::connect(&srv.addr()).await.unwrap();
    let started = std::time::Instant::now();
    s.write_all(head).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(HANG, rd.read_to_end(&mut answer)).await;
    trickle.abort();
    assert!(read.is_ok(), "a trickled body kept its connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 61 s"),
        "{answer}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(60));
    // The server still serves.
    let c = srv.session().await;
    assert_eq!(text(&exec(&c, "print(5)").await), "5\n");
    let _ = c.cancel().await;
    assert!(srv.stop().await.success());
}

/// Sends a `tools/call` of `execute_python` by raw HTTP and returns once the server has
/// answered with its response headers (the body, an SSE stream, carries the result later).
async fn raw_exec(url: &str, session: &Session, id: u64, code: &str) -> reqwest::Response {
    let mut args = json!({ "code": code });
    let mut req = post(url);
    let meta = match session {
        Session::Legacy(sid) => {
            req = req
                .header("mcp-session-id", sid.as_str())
                .header("mcp-protocol-version", "2025-11-25");
            json!({})
        }
        Session::Handle(h) => {
            args["session"] = json!(h);
            req = req
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "execute_python");
            json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}
            })
        }
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "execute_python", "arguments": args, "_meta": meta}});
    tokio::time::timeout(HANG, req.body(body.to_string()).send())
        .await
        .expect("the POST hung")
        .unwrap()
}

/// The texts of the result in a raw response (JSON, or SSE `data:` lines), joined.
async fn raw_text(r: reqwest::Response) -> String {
    let body = tokio::time::timeout(HANG, r.text())
        .await
        .expect("the answer hung")
        .unwrap();
    let result = std::iter::once(body.as_str())
        .chain(body.lines().filter_map(|l| l.strip_prefix("data:")))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or_else(|| panic!("no result in {body}"));
    let texts: Vec<&str> = result["result"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect();
    assert!(!texts.is_empty(), "no text in {result}");
    texts.concat()
}

enum Session {
    Legacy(String),
    Handle(String),
}

/// A 2025-11-25 session opened by raw HTTP: its `Mcp-Session-Id`.
async fn raw_session(url: &str) -> String {
    let r = post(url).body(INIT).send().await.unwrap();
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let r = post(url)
        .header("mcp-session-id", sid.as_str())
        .header("mcp-protocol-version", "2025-11-25")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    sid
}

/// Eight pairs (a slow assignment, then a read of it) sent at the same time on two
/// connections, as clients send parallel tool calls: whichever the server received first (its
/// log says) must run first. Returns how many pairs arrived the other way round.
async fn pairs_in_order(srv: &Http, session: Session, tag: &str) -> usize {
    let scope = match &session {
        // The log names a session by the first 12 characters of its name.
        Session::Legacy(s) | Session::Handle(s) => s.chars().take(12).collect::<String>(),
    };
    let mut previous = "NameError".to_owned();
    let mut swapped = 0;
    for i in 0..8u64 {
        let code = format!("import time\ntime.sleep(0.3)\nshared = '{tag}{i}'");
        let (ida, idb) = (2 * i + 10, 2 * i + 11);
        let (first, second) = tokio::join!(
            raw_exec(&srv.url, &session, ida, &code),
            raw_exec(&srv.url, &session, idb, "print(shared)")
        );
        let (a, b) = tokio::join!(raw_text(first), raw_text(second));
        assert!(!a.contains("Error"), "{a}");
        let log = srv.log();
        // The number the server gave the request as it arrived.
        let at = |id: u64| {
            let needle = format!("request={scope}… #{id} n=");
            log.lines()
                .find_map(|l| l.split_once(&needle).map(|(_, n)| n))
                .and_then(|n| n.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("request {id} of {scope} not logged"))
        };
        if at(ida) < at(idb) {
            assert_eq!(b, format!("{tag}{i}\n"), "pair {tag}{i} arrived in order");
        } else {
            swapped += 1;
            assert!(b.contains(&previous), "pair {tag}{i} arrived swapped: {b}");
        }
        previous = format!("{tag}{i}");
    }
    swapped
}

#[tokio::test]
async fn calls_run_in_the_order_sent_in_every_http_session() {
    // Four sessions at once, two of each era: 4 x 8 back-to-back pairs, each pair in the
    // order its requests reached the server.
    let srv = Http::start(&["--max-sessions", "8"], None).await;
    let (l1, l2) = (raw_session(&srv.url).await, raw_session(&srv.url).await);
    let m = srv.modern().await;
    let h1 = handle_of(&call(&m, "new_session", json!({})).await);
    let h2 = handle_of(&call(&m, "new_session", json!({})).await);
    let swapped = tokio::join!(
        pairs_in_order(&srv, Session::Legacy(l1), "a"),
        pairs_in_order(&srv, Session::Legacy(l2), "b"),
        pairs_in_order(&srv, Session::Handle(h1), "c"),
        pairs_in_order(&srv, Session::Handle(h2), "d"),
    );
    eprintln!("pairs whose second request reached the server first: {swapped:?} of 8 each");
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}

/// One raw 2026-07-28 JSON-RPC request (`params` gets the era's `_meta`, with the tasks
/// extension declared when `tasks`); the answer's JSON.
async fn modern_rpc(url: &str, id: u64, method: &str, mut params: Value, tasks: bool) -> Value {
    let caps = if tasks {
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    } else {
        json!({})
    };
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}
    });
    let mut req = post(url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    // The routing header names the tool, or the task.
    if let Some(name) = params["name"].as_str().or(params["taskId"].as_str()) {
        req = req.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let r = tokio::time::timeout(HANG, req.body(body.to_string()).send())
        .await
        .expect("the POST hung")
        .unwrap();
    let text = tokio::time::timeout(HANG, r.text())
        .await
        .expect("the answer hung")
        .unwrap();
    std::iter::once(text.as_str())
        .chain(text.lines().filter_map(|l| l.strip_prefix("data:")))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v["id"] == json!(id))
        .unwrap_or_else(|| panic!("no answer to {id} in {text}"))
}

/// The MCP tasks extension over HTTP: a 2026-07-28 client that declares it gets a task for a
/// cell that outlasts `return_after`, whose id names the session; `tasks/get` follows it to
/// `completed`. Another session (or a forged id) cannot see it; without the extension the
/// call returns the output so far and a run, as before.
#[tokio::test]
async fn tasks_over_http_belong_to_their_session() {
    let srv = Http::start(&[], None).await;
    let m = srv.modern().await;
    let h = handle_of(&call(&m, "new_session", json!({})).await);
    let other = handle_of(&call(&m, "new_session", json!({})).await);
    let cell = "import time\nprint('step one', flush=True)\ntime.sleep(3)\nprint('done')";
    let args = json!({"code": cell, "return_after": 1, "session": h});
    let r = modern_rpc(
        &srv.url,
        1,
        "tools/call",
        json!({"name": "execute_python", "arguments": args}),
        true,
    )
    .await;
    assert_eq!(r["result"]["resultType"], "task", "{r}");
    let task = r["result"]["taskId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(task.ends_with(&format!("@{h}")), "{r}");
    let get = |task: String| json!({ "taskId": task });
    let mut n = 2;
    let done = loop {
        let g = modern_rpc(&srv.url, n, "tasks/get", get(task.clone()), true).await;
        n += 1;
        if g["result"]["status"] != "working" {
            break g;
        }
        assert!(n < 2000, "{g}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let content = done["result"]["result"]["content"].to_string();
    assert!(
        content.contains("step one") && content.contains("done"),
        "{done}"
    );
    // The same run number in another session, or in a session that does not exist, is not it.
    for forged in [task.replace(&h, &other), task.replace(&h, "nosuchsession")] {
        let g = modern_rpc(&srv.url, n, "tasks/get", get(forged), true).await;
        n += 1;
        assert!(g.get("error").is_some(), "{g}");
    }
    // A legacy MCP session cannot reach a handle session's task either.
    let sid = raw_session(&srv.url).await;
    let r = post(&srv.url)
        .header("mcp-session-id", sid.as_str())
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({"jsonrpc": "2.0", "id": 77, "method": "tasks/get", "params": get(task.clone())})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(r.contains("\"error\"") && !r.contains("step one"), "{r}");
    // Without the extension: the output so far and a run to check.
    let args = json!({"code": "import time\ntime.sleep(3)", "return_after": 1, "session": h});
    let r = modern_rpc(
        &srv.url,
        n,
        "tools/call",
        json!({"name": "execute_python", "arguments": args}),
        false,
    )
    .await;
    assert!(r["result"].get("taskId").is_none(), "{r}");
    assert!(r.to_string().contains("still running as run 2"), "{r}");
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}

/// A 2026-07-28 handle session outlives an orderly server restart: the next server on the
/// same workspace takes the handle back, in the same folder, its variables restored before the
/// first call (which says so). A session that was ended, an unknown handle and a 2025-11-25
/// session (its client re-initializes) do not come back.
#[tokio::test]
async fn a_handle_session_comes_back_after_an_orderly_restart() {
    let srv = Http::start(&["--persist"], None).await;
    let m = srv.modern().await;
    let h = handle_of(&call(&m, "new_session", json!({})).await);
    let r = call(
        &m,
        "execute_python",
        json!({"code": "import math\nx = 41\ndef f(v):\n    return v + 1\nopen('notes.txt', 'w').write('kept')", "session": h}),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    let ended = handle_of(&call(&m, "new_session", json!({})).await);
    let r = call(
        &m,
        "execute_python",
        json!({"code": "z = 1", "session": ended}),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(&m, "end_session", json!({"session": ended})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let _ = m.cancel().await;

    let srv = srv.restart().await;
    let m = srv.modern().await;
    let r = call(
        &m,
        "execute_python",
        json!({"code": "print(f(x), math.pi > 3, open('notes.txt').read())", "session": h}),
    )
    .await;
    assert!(!is_error(&r), "{}\n{}", text(&r), srv.log());
    assert!(text(&r).starts_with("42 True kept\n"), "{}", text(&r));
    assert!(text(&r).contains("restored"), "{}", text(&r));
    for gone in [ended, "f".repeat(64)] {
        let r = call(&m, "execute_python", json!({"code": "1", "session": gone})).await;
        assert!(
            is_error(&r) && text(&r).starts_with("unknown or expired session handle"),
            "{}",
            text(&r)
        );
    }
    let log = srv.log();
    assert!(
        log.contains("session of an earlier server back in its folder"),
        "{log}"
    );
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}

/// Calls that arrive together with the handle of an earlier server's session (a client
/// resuming parallel work after a restart) all land in one revived session: one kernel with
/// the restored variables, no second session holding a slot. (The revival itself is one
/// synchronous step, so two calls rarely overlap inside it; `open_on` gives the later of two
/// that do the session the first opened.)
#[tokio::test]
async fn parallel_calls_with_a_revived_handle_share_one_session() {
    let srv = Http::start(&["--persist", "--max-sessions", "2"], None).await;
    let m = srv.modern().await;
    let h = handle_of(&call(&m, "new_session", json!({})).await);
    let r = call(
        &m,
        "execute_python",
        json!({"code": "kept = 7", "session": h}),
    )
    .await;
    assert!(!is_error(&r), "{}", text(&r));
    let _ = m.cancel().await;

    let srv = srv.restart().await;
    let m = srv.modern().await;
    // Tools that are not runs (no turn to wait for) reach the session lookup at once.
    let looks = (0..16).map(|_| environment(&m, json!({"session": h})));
    // (A kernel still starting has no pid yet: those looks name none.)
    let pids: std::collections::HashSet<i64> = futures::future::join_all(looks)
        .await
        .iter()
        .filter_map(|e| e["kernel_pid"].as_i64())
        .collect();
    assert!(pids.len() <= 1, "{pids:?}\n{}", srv.log());
    // A mark each kernel draws once (pids say nothing: each kernel is pid 2 in its sandbox).
    let code = "import builtins, uuid\nprint(builtins.__dict__.setdefault('_mark', uuid.uuid4().hex), kept)";
    let calls = (0..4).map(|_| call(&m, "execute_python", json!({"code": code, "session": h})));
    let results = futures::future::join_all(calls).await;
    let mut seen = std::collections::HashSet::new();
    for r in &results {
        assert!(!is_error(r), "{}\n{}", text(r), srv.log());
        seen.insert(text(r).lines().next().unwrap_or_default().to_owned());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen.iter().all(|l| l.ends_with(" 7")), "{seen:?}");

    // The revived session is the only one: a second new session still fits the limit of 2.
    let r = call(&m, "new_session", json!({})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(&m, "new_session", json!({})).await;
    assert!(
        is_error(&r),
        "a third session fit a limit of 2: {}",
        text(&r)
    );
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}

/// A session whose run outlived its call (`return_after`) is not idle while the run goes on:
/// a newcomer at --max-sessions does not evict it, and the idle reaper does not end it.
#[tokio::test]
async fn a_session_with_a_run_going_is_neither_evicted_nor_reaped() {
    // Idle timeout 2 s: a session idle for 1 s (the grace) would give way, for 2 s be ended.
    let srv = Http::start(
        &[
            "--max-sessions",
            "1",
            "--session-idle-timeout",
            "2",
            "--return-after",
            "1",
        ],
        None,
    )
    .await;
    let a = srv.session().await;
    let r = exec(&a, "import time\ntime.sleep(6)\nprint('done')").await;
    assert!(text(&r).contains("still running as run 1"), "{}", text(&r));
    // Past both the grace and the idle timeout, every newcomer is told the session is busy.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(3500);
    while std::time::Instant::now() < until {
        let r = tokio::time::timeout(HANG, post(&srv.url).body(INIT).send())
            .await
            .unwrap()
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("every session has a call or a run going"),
            "{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The run's end is still there to collect.
    let mut rest = String::new();
    for _ in 0..30 {
        rest.push_str(&text(&call(&a, "check_run", json!({"run": 1})).await));
        if rest.contains("[the run ") {
            break;
        }
    }
    assert!(
        rest.contains("done") && rest.contains("[the run finished after "),
        "{rest}"
    );
    assert!(!srv.log().contains("least recently used idle one"));
    let _ = a.cancel().await;
    assert!(srv.stop().await.success());
}

/// A 2025-11-25 session evicted for a newcomer at --max-sessions ends on rmcp's side too: its
/// client's next request gets 404, the spec's signal to initialize again, not tool errors.
#[tokio::test]
async fn an_evicted_mcp_session_answers_404() {
    // Idle timeout 4 s: the grace is 2 s, so the eviction comes before the reaper would.
    let srv = Http::start(
        &["--max-sessions", "1", "--session-idle-timeout", "4"],
        None,
    )
    .await;
    let sid = raw_session(&srv.url).await;
    let deadline = std::time::Instant::now() + HANG;
    let newcomer = loop {
        let r = tokio::time::timeout(HANG, post(&srv.url).body(INIT).send())
            .await
            .unwrap()
            .unwrap();
        if r.status().as_u16() != 503 {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never given way");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(newcomer.status().is_success(), "{}", newcomer.status());
    assert!(srv.log().contains("least recently used idle one"));
    let r = post(&srv.url)
        .header("mcp-session-id", sid.as_str())
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "execute_python", "arguments": {"code": "1"}}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 404, "{body}");
    assert!(srv.stop().await.success());
}

/// A body rmcp's types cannot read is answered as the stdio transport answers the same line:
/// a JSON-RPC error carrying the request's id where one can be read (HTTP 200, so the client
/// matches it to its call), else a `null` id with 400 — never rmcp's plain-text 415, never an
/// answer without the id the client waits on. A tool call whose arguments cannot be read gets
/// the tool's own refusal without a session being opened for it. A DELETE or a malformed body
/// for a session that is not there gets 404, as any request for it does.
#[tokio::test]
async fn malformed_bodies_are_answered_with_their_id() {
    let srv = Http::start(&[], None).await;
    let sid = raw_session(&srv.url).await;
    let send = |body: Vec<u8>, session: Option<&str>| {
        let mut req = post(&srv.url).header("mcp-protocol-version", "2025-11-25");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        async move {
            let r = tokio::time::timeout(HANG, req.body(body).send())
                .await
                .expect("the POST hung")
                .unwrap();
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let text = r.text().await.unwrap_or_default();
            (status, ctype, text)
        }
    };
    let lone = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_python\",\"arguments\":{\"code\":\"print('a\\ud800')\"}}}";
    let mut bad_utf8 = br#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"print('"#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe')\"}}}");
    let cases: Vec<(Vec<u8>, u16, Value, i64, &str)> = vec![
        (br#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"x":1e400}}"#.to_vec(), 200, json!(7), -32700, "not valid JSON"),
        (br#"{"jsonrpc":"2.0","id":"q","method":"tools/list"} and more"#.to_vec(), 200, json!("q"), -32700, "trailing characters"),
        (br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"execute_python","arguments":[1]}}"#.to_vec(), 200, json!(8), -32602, "invalid params for tools/call"),
        (lone.as_bytes().to_vec(), 200, json!(9), -32602, "not valid Unicode"),
        (bad_utf8, 200, json!(10), -32602, "not valid Unicode"),
        (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(), 400, Value::Null, -32600, "request id is 1.5"),
        (br#"[{"jsonrpc":"2.0","id":11,"method":"ping"}]"#.to_vec(), 400, Value::Null, -32600, "batches are not supported"),
        (b"garbage".to_vec(), 400, Value::Null, -32700, "not valid JSON"),
        (Vec::new(), 400, Value::Null, -32700, "empty"),
    ];
    for (body, status, id, code, says) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, ctype, text) = send(body, Some(&sid)).await;
        assert_eq!(got, status, "{shown}: {text}");
        assert!(ctype.starts_with("application/json"), "{shown}: {ctype}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown}: {e}: {text}"));
        assert_eq!(v["id"], id, "{shown}: {text}");
        assert_eq!(v["error"]["code"], json!(code), "{shown}: {text}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{shown}: {message}");
    }
    // The same refused call without a session (the 2026-07-28 era) opens none: the answer
    // comes straight back, and the log names one session opened, the raw one above.
    let (got, _, text) = send(lone.as_bytes().to_vec(), None).await;
    assert_eq!(got, 200, "{text}");
    assert!(text.contains("not valid Unicode"), "{text}");
    let opened = |log: &str| log.matches("session opened").count();
    assert_eq!(opened(&srv.log()), 1, "{}", srv.log());
    // A session that is not there: 404 for a malformed body and for a DELETE.
    let (got, _, text) = send(b"garbage".to_vec(), Some("no-such-session")).await;
    assert_eq!(got, 404, "{text}");
    let del = reqwest::Client::new()
        .delete(&srv.url)
        .header("mcp-session-id", "no-such-session")
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 404);
    // The session itself was not disturbed.
    let r = raw_exec(&srv.url, &Session::Legacy(sid), 12, "print(6 * 7)").await;
    assert_eq!(raw_text(r).await, "42\n");
    assert!(srv.stop().await.success());
}

/// True when a file named `name` exists anywhere below `root`.
fn found_below(root: &std::path::Path, name: &str) -> bool {
    find_below(root, name).is_some()
}

/// A session ended while a call of it runs (a `DELETE` of its MCP session, or `end_session`
/// of its handle) stops its kernel, and the call is still answered, saying why: before, the
/// DELETE dropped the call's stream with no JSON-RPC response at all, and `end_session` made
/// the call say "the server is shutting down".
#[tokio::test]
async fn ending_a_session_mid_call_answers_the_call_with_why() {
    let srv = Http::start(&[], None).await;
    let code = |mark: &str| {
        format!("import pathlib, time\npathlib.Path('{mark}').write_text('1')\ntime.sleep(120)")
    };
    // The 2025-11-25 era: DELETE.
    let sid = raw_session(&srv.url).await;
    let url = srv.url.clone();
    let (s, c) = (sid.clone(), code("started-legacy"));
    let running =
        tokio::spawn(
            async move { raw_text(raw_exec(&url, &Session::Legacy(s), 5, &c).await).await },
        );
    assert!(eventually(HANG, || found_below(srv.dir.path(), "started-legacy")).await);
    let del = reqwest::Client::new()
        .delete(&srv.url)
        .header("mcp-session-id", sid.as_str())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let said = tokio::time::timeout(HANG, running).await.unwrap().unwrap();
    assert!(
        said.contains("stopped while running this code: this MCP session was ended by its client (HTTP DELETE)"),
        "{said}"
    );
    // The 2026-07-28 era: end_session.
    let m = srv.modern().await;
    let h = handle_of(&call(&m, "new_session", json!({})).await);
    let args = json!({"code": code("started-handle"), "session": h});
    let call_running = {
        let p = m.peer().clone();
        tokio::spawn(async move {
            tokio::time::timeout(HANG, p.call_tool(params("execute_python", args, false)))
                .await
                .expect("the call hung")
                .expect("the call failed at the protocol level")
        })
    };
    assert!(eventually(HANG, || found_below(srv.dir.path(), "started-handle")).await);
    let ended = call(&m, "end_session", json!({"session": h})).await;
    assert!(
        text(&ended).contains("the session ended"),
        "{}",
        text(&ended)
    );
    let r = tokio::time::timeout(HANG, call_running)
        .await
        .unwrap()
        .unwrap();
    assert!(is_error(&r));
    assert!(
        text(&r).contains("stopped while running this code: this session was ended by end_session"),
        "{}",
        text(&r)
    );
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}

/// A client whose connection drops while its call runs gets the call's result later: the
/// answer that showed a run's end is kept, and `check_run` with the run's number shows it
/// again (before, the result went out on the dead stream and check_run said only "returned
/// already; nothing new").
#[tokio::test]
async fn a_result_lost_with_its_connection_is_shown_again() {
    let srv = Http::start(&[], None).await;
    let sid = raw_session(&srv.url).await;
    let code = "import pathlib, time\npathlib.Path('started-lost').write_text('1')\nwhile not pathlib.Path('go-lost').exists(): time.sleep(0.05)\nprint('the result')";
    let lost = {
        let (url, s) = (srv.url.clone(), sid.clone());
        tokio::spawn(
            async move { raw_text(raw_exec(&url, &Session::Legacy(s), 5, code).await).await },
        )
    };
    let mut started = None;
    assert!(
        eventually(HANG, || {
            started = find_below(srv.dir.path(), "started-lost");
            started.is_some()
        })
        .await
    );
    // The client goes away (its connection closes), then the run ends.
    lost.abort();
    let _ = lost.await;
    let folder = started.and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    std::fs::write(folder.expect("a session folder").join("go-lost"), "1").unwrap();
    let check = |id: u64, args: Value| {
        let mut req = post(&srv.url)
            .header("mcp-session-id", sid.as_str())
            .header("mcp-protocol-version", "2025-11-25");
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "check_run", "arguments": args}});
        req = req.body(body.to_string());
        async move {
            raw_text(
                tokio::time::timeout(HANG, req.send())
                    .await
                    .expect("check_run hung")
                    .unwrap(),
            )
            .await
        }
    };
    // Until the run's end has been shown once (to the dropped call, or to this loop).
    let mut id = 10;
    loop {
        id += 1;
        let t = check(id, json!({"wait_seconds": 5})).await;
        if t.contains("returned already") {
            assert!(
                t.contains(r#"check_run {"run": 1} shows that result again"#),
                "{t}"
            );
            break;
        }
        assert!(id < 40, "{t}");
    }
    let again = check(99, json!({"run": 1})).await;
    assert!(again.starts_with("the result\n"), "{again}");
    assert!(again.contains("shown again"), "{again}");
    assert!(srv.stop().await.success());
}

/// The first file named `name` below `root`.
fn find_below(root: &std::path::Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(root).ok()?.flatten().find_map(|e| {
        let p = e.path();
        if e.file_name() == name {
            Some(p)
        } else if p.is_dir() && !p.is_symlink() {
            find_below(&p, name)
        } else {
            None
        }
    })
}

/// A server stopped (SIGTERM) while a call runs answers that call, saying why, before it
/// closes the connection (before, the stream ended at once with no response).
#[tokio::test]
async fn a_stopping_server_answers_its_running_calls() {
    let srv = Http::start(&[], None).await;
    let sid = raw_session(&srv.url).await;
    let url = srv.url.clone();
    let code =
        "import pathlib, time\npathlib.Path('started-stop').write_text('1')\ntime.sleep(120)";
    let running = tokio::spawn(async move {
        raw_text(raw_exec(&url, &Session::Legacy(sid), 5, code).await).await
    });
    assert!(eventually(HANG, || found_below(srv.dir.path(), "started-stop")).await);
    assert!(srv.stop().await.success());
    let said = tokio::time::timeout(HANG, running).await.unwrap().unwrap();
    assert!(
        said.contains("stopped while running this code: the server is shutting down"),
        "{said}"
    );
}

/// The attack: kernel code replaces its session folder's `.kernel-mcp` with a link to a
/// folder outside, then the session ends (`end_session`; DELETE, idle and eviction take the
/// same path). The server removes the session's snapshot folder and tidies the session folder
/// with its own rights: it must never follow that link (it emptied `<outside>/snapshot`).
#[tokio::test]
async fn ending_a_session_never_removes_through_a_link_the_kernel_planted() {
    let outside = tempfile::tempdir().unwrap();
    let keep = outside.path().join("snapshot").join("keep.txt");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::write(&keep, "precious").unwrap();
    std::fs::create_dir_all(outside.path().join("outputs")).unwrap();
    let srv = Http::start(&["--persist"], None).await;
    let m = srv.modern().await;
    let h = handle_of(&call(&m, "new_session", json!({})).await);
    let code = format!(
        "import os, shutil\nshutil.rmtree('.kernel-mcp', ignore_errors=True)\nos.symlink({:?}, '.kernel-mcp')\nprint(os.readlink('.kernel-mcp'))",
        outside.path().display().to_string()
    );
    let r = call(&m, "execute_python", json!({"code": code, "session": h})).await;
    assert!(!is_error(&r), "{}", text(&r));
    let r = call(&m, "end_session", json!({"session": h})).await;
    assert!(text(&r).contains("the session ended"), "{}", text(&r));
    assert!(
        eventually(HANG, || srv.log().contains("session folder tidied")).await,
        "{}",
        srv.log()
    );
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap_or_default(),
        "precious"
    );
    assert!(outside.path().join("outputs").is_dir());
    let _ = m.cancel().await;
    assert!(srv.stop().await.success());
}
