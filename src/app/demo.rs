//! `kernel-mcp demo`: an MCP client that spawns this very binary as the server, speaks
//! JSON-RPC to it over the child's stdio (MCP's stdio transport: one JSON message per line),
//! and runs a three-step analysis, printing each result. Shows the server doing real work.
//! Written against the protocol directly rather than with rmcp's client, so the binary does not
//! carry a second MCP stack (and builds faster); the tests use rmcp's client.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The least an MCP client needs: requests with ids, one notification, results by id.
struct Client {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: i64,
}

impl Client {
    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends a request and waits for the response with its id (notifications are skipped).
    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .context("the server closed its output")?;
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if msg.get("id").and_then(Value::as_i64) != Some(id) || msg.get("method").is_some() {
                continue;
            }
            if let Some(e) = msg.get("error") {
                anyhow::bail!("{method} failed: {e}");
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> anyhow::Result<Value> {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

fn content(r: &Value) -> impl Iterator<Item = &Value> {
    r.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn print_result(step: &str, r: &Value) {
    let error = r.get("isError").and_then(Value::as_bool) == Some(true);
    println!("── {step} {}", if error { "(error)" } else { "" });
    for c in content(r) {
        match c.get("type").and_then(Value::as_str) {
            Some("text") => println!(
                "{}",
                c.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_end()
            ),
            Some("image") => println!(
                "[image {} , {} base64 chars]",
                c.get("mimeType").and_then(Value::as_str).unwrap_or("?"),
                c.get("data").and_then(Value::as_str).map_or(0, str::len)
            ),
            _ => {}
        }
    }
}

/// Runs the demo against a server started from the current executable.
pub async fn run(workspace: &Path) -> anyhow::Result<()> {
    // Create the managed environment first (on a first run it takes a minute, with progress on
    // stderr); the server would otherwise start it in the background and answer "not ready".
    let env = crate::pyenv::ensure_managed().await?;
    println!(
        "python environment: Python {} ({})",
        env.python_version,
        env.package_summary()
    );
    let exe = std::env::current_exe().context("locating the kernel-mcp binary")?;
    std::fs::create_dir_all(workspace)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--workspace").arg(workspace);
    // The server's log would drown the results; keep it in a file.
    let log_dir = workspace.join(".kernel-mcp");
    std::fs::create_dir_all(&log_dir)?;
    let log_path = log_dir.join("demo-server.log");
    let log = std::fs::File::create(&log_path)?;
    println!("server log: {}", log_path.display());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting the server")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        anyhow::bail!("the server's stdio could not be opened");
    };
    let mut client = Client {
        child,
        stdin,
        lines: BufReader::new(stdout).lines(),
        next_id: 0,
    };
    let started = std::time::Instant::now();
    client
        .request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "kernel-mcp-demo", "version": env!("CARGO_PKG_VERSION")}
            }),
        )
        .await
        .context("connecting to the server")?;
    client
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await?;
    let tools = client.request("tools/list", json!({})).await?;
    let names: Vec<&str> = tools
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    println!("connected; tools: {}", names.join(", "));

    let csv = "month,region,revenue\n2026-01,north,120\n2026-01,south,95\n2026-02,north,135\n2026-02,south,101\n2026-03,north,150\n2026-03,south,99\n2026-04,north,161\n2026-04,south,120\n";
    let r = client
        .call("write_file", json!({"path": "sales.csv", "content": csv}))
        .await?;
    print_result("write_file sales.csv", &r);

    let r = client
        .call(
            "execute_python",
            json!({"code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)\ndf.head()"}),
        )
        .await?;
    print_result(
        &format!(
            "step 1: load (first result {:.2} s after start)",
            started.elapsed().as_secs_f64()
        ),
        &r,
    );

    let r = client
        .call(
            "execute_python",
            json!({"code": "summary = df.groupby('region')['revenue'].agg(['sum', 'mean'])\nsummary"}),
        )
        .await?;
    print_result("step 2: summarise (uses df from step 1)", &r);

    let r = client
        .call(
            "execute_python",
            json!({"code": "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(6, 3.5))\nfor region, g in df.groupby('region'):\n    ax.plot(g['month'], g['revenue'], marker='o', label=region)\nax.set_title('Revenue by region'); ax.legend()\nplt.show()"}),
        )
        .await?;
    print_result("step 3: plot", &r);
    let png = content(&r)
        .find(|c| c.get("type").and_then(Value::as_str) == Some("image"))
        .and_then(|c| c.get("data").and_then(Value::as_str))
        .context("the plot step returned no image")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.split_whitespace().collect::<String>())
        .context("decoding the PNG")?;
    anyhow::ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the returned image is not a PNG"
    );
    let out = workspace.join("revenue.png");
    std::fs::write(&out, &bytes)?;
    println!(
        "saved the returned PNG ({} bytes) to {}",
        bytes.len(),
        out.display()
    );
    // Closing stdin ends the session (MCP stdio transport, "Shutdown"); the server exits.
    let Client {
        mut child, stdin, ..
    } = client;
    drop(stdin);
    match tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            let _ = child.kill().await;
        }
    }
    Ok(())
}
