//! `kernel-mcp demo`: an MCP client (rmcp over a child's stdio) that spawns this very binary as
//! the server and runs a three-step analysis, printing each result. Shows the server doing real work.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;

fn print_result(step: &str, r: &CallToolResult) {
    println!(
        "── {step} {}",
        if r.is_error == Some(true) {
            "(error)"
        } else {
            ""
        }
    );
    for c in &r.content {
        if let Some(t) = c.as_text() {
            println!("{}", t.text.trim_end());
        } else if let Some(i) = c.as_image() {
            println!("[image {} , {} base64 chars]", i.mime_type, i.data.len());
        }
    }
}

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
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
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(log).spawn()?;
    let started = std::time::Instant::now();
    let client = ().serve(transport).await.context("connecting to the server")?;
    let tools = client.list_all_tools().await?;
    println!(
        "connected; tools: {}",
        tools
            .iter()
            .map(|t| t.name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let csv = "month,region,revenue\n2026-01,north,120\n2026-01,south,95\n2026-02,north,135\n2026-02,south,101\n2026-03,north,150\n2026-03,south,99\n2026-04,north,161\n2026-04,south,120\n";
    let r = client
        .call_tool(
            CallToolRequestParams::new("write_file").with_arguments(args(
                serde_json::json!({"path": "sales.csv", "content": csv}),
            )),
        )
        .await?;
    print_result("write_file sales.csv", &r);

    let r = client
        .call_tool(CallToolRequestParams::new("execute_python").with_arguments(args(serde_json::json!({
            "code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)\ndf.head()"
        }))))
        .await?;
    print_result(
        &format!(
            "step 1: load (first result {:.2} s after start)",
            started.elapsed().as_secs_f64()
        ),
        &r,
    );

    let r = client
        .call_tool(
            CallToolRequestParams::new("execute_python").with_arguments(args(serde_json::json!({
                "code": "summary = df.groupby('region')['revenue'].agg(['sum', 'mean'])\nsummary"
            }))),
        )
        .await?;
    print_result("step 2: summarise (uses df from step 1)", &r);

    let r = client
        .call_tool(CallToolRequestParams::new("execute_python").with_arguments(args(serde_json::json!({
            "code": "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(6, 3.5))\nfor region, g in df.groupby('region'):\n    ax.plot(g['month'], g['revenue'], marker='o', label=region)\nax.set_title('Revenue by region'); ax.legend()\nplt.show()"
        }))))
        .await?;
    print_result("step 3: plot", &r);
    let png = r
        .content
        .iter()
        .find_map(|c| c.as_image())
        .context("the plot step returned no image")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.data.split_whitespace().collect::<String>())
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
    client.cancel().await?;
    Ok(())
}
