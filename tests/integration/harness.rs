//! Starts the built `kernel-mcp` binary in a temp workspace and talks MCP to it with rmcp's client.
// The process helpers serve the unix-only modules (lifecycle, files).
#![cfg_attr(not(unix), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

/// Generous bound on any single await: catches hangs, never times speed.
pub const HANG: Duration = Duration::from_secs(90);

/// The test client: records progress notifications it receives.
#[derive(Clone, Default)]
pub struct Recorder {
    pub progress: std::sync::Arc<std::sync::Mutex<Vec<rmcp::model::ProgressNotificationParam>>>,
    /// How many notifications/tools/list_changed arrived.
    pub tools_changed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rmcp::ClientHandler for Recorder {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::default()
    }

    fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _ctx: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.progress.lock().unwrap().push(params);
        std::future::ready(())
    }

    fn on_tool_list_changed(
        &self,
        _ctx: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.tools_changed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(())
    }
}

pub struct Server {
    pub client: RunningService<RoleClient, Recorder>,
    pub recorder: Recorder,
    pub dir: tempfile::TempDir,
    pub pid: u32,
}

/// Fails with the set-up command when the managed environment is missing.
fn check_env() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
        .arg("setup")
        .stdin(Stdio::null())
        .output()
        .expect("running kernel-mcp setup");
    assert!(
        out.status.success(),
        "the Python kernel environment is not usable; run `cargo run -- setup` first.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static ENV_OK: std::sync::Once = std::sync::Once::new();

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> Server {
        Self::start_with_env(args, &[]).await
    }

    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_opts(args, env, &[], false).await
    }

    /// The server with `env` set, the variables in `remove` taken out of what it inherits, and,
    /// with `in_workspace`, the workspace as its working directory (as clients that start
    /// servers in the project folder do).
    pub async fn start_opts(
        args: &[&str],
        env: &[(&str, &str)],
        remove: &[&str],
        in_workspace: bool,
    ) -> Server {
        Self::start_full(args, env, remove, in_workspace, None).await
    }

    /// A server on the workspace folder `ws` (which outlives it: a second server can use it).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub async fn start_on(ws: &Path, args: &[&str]) -> Server {
        Self::start_full(args, &[], &[], false, Some(ws.to_path_buf())).await
    }

    async fn start_full(
        args: &[&str],
        env: &[(&str, &str)],
        remove: &[&str],
        in_workspace: bool,
        workspace: Option<PathBuf>,
    ) -> Server {
        ENV_OK.call_once(check_env);
        let dir = tempfile::Builder::new()
            .prefix("kmcp-test-")
            .tempdir()
            .unwrap();
        let ws = workspace.unwrap_or_else(|| dir.path().join("ws"));
        std::fs::create_dir_all(&ws).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"));
        cmd.arg("--workspace").arg(&ws);
        // Tests run many servers at once on a small machine: no warm spare unless a test asks.
        if !args.contains(&"--spare") {
            cmd.arg("--no-spare");
        }
        // Nor the background import of numpy/pandas/matplotlib, unless a test asks ("--preload").
        if !args.contains(&"--preload") && !args.contains(&"--spare") {
            cmd.arg("--no-preload");
        }
        // Nor snapshots of the variables (they write into the workspace), unless asked for.
        if !args.contains(&"--persist") {
            cmd.arg("--no-persist");
        }
        cmd.args(
            args.iter()
                .filter(|a| **a != "--spare" && **a != "--preload" && **a != "--persist"),
        );
        cmd.env("KERNEL_MCP_LOG", "debug");
        for k in remove {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if in_workspace {
            cmd.current_dir(&ws);
        }
        let (proc, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let pid = proc.id().unwrap();
        let recorder = Recorder::default();
        let client = match tokio::time::timeout(HANG, recorder.clone().serve(proc))
            .await
            .expect("MCP initialize hung")
        {
            Ok(c) => c,
            Err(e) => panic!(
                "MCP initialize failed: {e}; server log:\n{}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            ),
        };
        Server {
            client,
            recorder,
            dir,
            pid,
        }
    }

    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// The instructions the server sent at initialize (empty when it sent none).
    pub fn instructions(&self) -> String {
        self.client
            .peer_info()
            .and_then(|i| i.instructions.clone())
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        self.try_call(tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool} failed at the protocol level: {e}"))
    }

    /// The call as a future, to run several at once or to cancel by dropping it.
    pub fn request(
        &self,
        tool: &str,
        args: Value,
        progress: bool,
    ) -> impl std::future::Future<Output = Result<CallToolResult, rmcp::ServiceError>> + '_ {
        self.client.call_tool(params(tool, args, progress))
    }

    pub async fn try_call(
        &self,
        tool: &str,
        args: Value,
    ) -> Result<CallToolResult, rmcp::ServiceError> {
        tokio::time::timeout(HANG, self.client.call_tool(params(tool, args, false)))
            .await
            .unwrap_or_else(|_| panic!("{tool} hung"))
    }

    pub async fn exec(&self, code: &str) -> CallToolResult {
        self.call("execute_python", serde_json::json!({ "code": code }))
            .await
    }

    /// `exec` with its own timeout, for cells that run long on purpose.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub async fn exec_for(&self, code: &str, seconds: f64) -> CallToolResult {
        self.call(
            "execute_python",
            serde_json::json!({ "code": code, "timeout_seconds": seconds }),
        )
        .await
    }

    pub async fn close(self) -> tempfile::TempDir {
        let _ = tokio::time::timeout(HANG, self.client.cancel()).await;
        self.dir
    }
}

/// Request params for `tool`, with a progress token when `progress`.
pub fn params(tool: &str, args: Value, progress: bool) -> CallToolRequestParams {
    let Value::Object(map) = args else {
        panic!("args must be an object")
    };
    let mut p = CallToolRequestParams::new(tool.to_owned()).with_arguments(map);
    if progress {
        p.meta = Some(rmcp::model::RequestMetaObject::with_progress_token(
            rmcp::model::ProgressToken(rmcp::model::NumberOrString::String(
                format!("{tool}-progress").into(),
            )),
        ));
    }
    p
}

/// The file a truncated result says its full output was saved in (workspace-relative).
pub fn saved_output(r: &CallToolResult) -> String {
    let note = texts(r)
        .into_iter()
        .find(|t| t.contains("output truncated"))
        .expect("a truncation note");
    let path = note
        .split("saved in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next());
    path.expect("a saved-output path in the note").to_owned()
}

/// The text blocks of a result.
pub fn texts(r: &CallToolResult) -> Vec<String> {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// All text of a result, joined.
pub fn text(r: &CallToolResult) -> String {
    texts(r).join("")
}

pub fn is_error(r: &CallToolResult) -> bool {
    r.is_error == Some(true)
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The host pid of the process the kernel calls `inner` (its PID namespace's number), found
/// among the server's descendants; `inner` itself when the kernel has no PID namespace. A pid
/// that no process has (so `alive` is false) when none matches.
#[cfg_attr(not(unix), allow(dead_code))]
pub fn host_pid(server: u32, inner: i32) -> i32 {
    let mut todo = vec![server as i32];
    let mut seen = 0;
    while let Some(pid) = todo.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ns: Vec<i32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if pid != server as i32 && ns.len() > 1 && ns.last() == Some(&inner) {
            return pid;
        }
        if pid == inner && ns.len() == 1 && pid != server as i32 {
            return pid;
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    i32::MAX
}

/// Waits up to `limit` for `cond`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// A bare JSON-RPC peer on the server's stdio, for inputs a well-behaved client cannot send.
pub struct Raw {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Messages read while waiting for something else (notifications before a response).
    seen: Vec<Value>,
    pub dir: tempfile::TempDir,
}

impl Raw {
    pub async fn start() -> Raw {
        let mut raw = Self::spawn().await;
        raw.send(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await;
        raw.response(0).await;
        raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        raw
    }

    /// The server with nothing sent yet (no handshake).
    pub async fn spawn() -> Raw {
        Self::spawn_with(&[]).await
    }

    /// `spawn` with extra server arguments.
    pub async fn spawn_with(args: &[&str]) -> Raw {
        use tokio::io::AsyncBufReadExt;
        ENV_OK.call_once(check_env);
        let dir = tempfile::Builder::new()
            .prefix("kmcp-raw-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kernel-mcp"))
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Raw {
            child,
            stdin: Some(stdin),
            lines,
            seen: Vec::new(),
            dir,
        }
    }

    /// The server's process id.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Closes the server's stdin and returns its exit status.
    pub async fn close(mut self) -> std::process::ExitStatus {
        self.stdin = None;
        tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the server did not exit after stdin closed")
            .unwrap()
    }

    pub async fn send(&mut self, line: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Every line on stdout must be JSON; returns the response with this id.
    pub async fn response(&mut self, id: i64) -> Value {
        self.first(&format!("the response for id {id}"), |v| v["id"] == id)
            .await
    }

    /// The first notification with this method (read before or after).
    pub async fn notification(&mut self, method: &str) -> Value {
        self.first(&format!("a {method} notification"), |v| {
            v["method"] == method && v.get("id").is_none()
        })
        .await
    }

    /// The first message matching `want`, from those already read, else from stdout.
    pub async fn first(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&want) {
            return self.seen.remove(i);
        }
        loop {
            let line = tokio::time::timeout(HANG, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {what}"))
                .unwrap()
                .unwrap_or_else(|| panic!("stdout closed before {what}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-JSON on stdout: {line:?}: {e}"));
            if want(&v) {
                return v;
            }
            if self.seen.len() < 1000 {
                self.seen.push(v);
            }
        }
    }
}

/// A local package index on 127.0.0.1 serving the files of `dir`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub struct Index {
    child: std::process::Child,
    /// The index's URL, e.g. for `--find-links`.
    pub url: String,
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl Index {
    pub fn serve(dir: &Path) -> Index {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        Index {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A venv at `dir` on the managed environment's base interpreter that sees the managed
/// environment's packages through a .pth file, so tests can install into it without touching
/// the environment other tests' kernels use. Returns its python.
#[cfg(target_os = "linux")]
pub fn venv_over_managed(dir: &Path, with_pip: bool) -> PathBuf {
    let managed = kernel_mcp::pyenv::managed_env_dir().unwrap();
    let cfg = std::fs::read_to_string(managed.join("pyvenv.cfg")).unwrap();
    let home = cfg
        .lines()
        .find_map(|l| {
            l.strip_prefix("home")
                .map(|v| v.trim_start_matches([' ', '=']).trim().to_owned())
        })
        .unwrap();
    let mut venv = std::process::Command::new(Path::new(&home).join("python3"));
    venv.args(["-m", "venv", "--clear"]);
    if !with_pip {
        venv.arg("--without-pip");
    }
    assert!(venv.arg(dir).status().unwrap().success());
    let lib = std::fs::read_dir(managed.join("lib"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .unwrap()
        .file_name();
    std::fs::write(
        dir.join("lib")
            .join(&lib)
            .join("site-packages")
            .join("kmcp-managed.pth"),
        format!(
            "{}\n",
            managed
                .join("lib")
                .join(&lib)
                .join("site-packages")
                .display()
        ),
    )
    .unwrap();
    dir.join("bin/python")
}

/// A process's peak resident memory (VmHWM), in MiB.
#[cfg(target_os = "linux")]
pub fn peak_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}
