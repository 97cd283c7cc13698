//! Checks an unpacked MCP Bundle the way Claude Desktop would use it: reads its manifest.json,
//! fills in `${__dirname}` and the user_config values (a temp workspace, one read-only folder,
//! network off), starts the manifest's command, and asks the server for tools/list. Fails unless
//! the server answers and serves every tool the manifest lists.
//!
//! Run: `scripts/build-mcpb --check` (it unpacks the bundle and runs this), or by hand:
//! `cargo run --release --example check_bundle -- <unpacked bundle dir>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::Value;

/// The manifest's command and arguments with every variable filled in.
fn command_line(
    manifest: &Value,
    dir: &Path,
    workspace: &Path,
    extra: &Path,
) -> anyhow::Result<Vec<String>> {
    let cfg = manifest
        .pointer("/server/mcp_config")
        .context("manifest has no server.mcp_config")?;
    let platform = if cfg!(windows) {
        "win32"
    } else if cfg!(target_os = "macos") {
        "darwin"
    } else {
        "linux"
    };
    let over = cfg.pointer(&format!("/platform_overrides/{platform}"));
    let pick = |key: &str| over.and_then(|o| o.get(key)).or_else(|| cfg.get(key));
    let command = pick("command")
        .and_then(Value::as_str)
        .context("manifest has no command")?;
    let args: Vec<&str> = pick("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fill = |s: &str| {
        s.replace("${__dirname}", &dir.to_string_lossy())
            .replace("${user_config.workspace}", &workspace.to_string_lossy())
            .replace("${user_config.allow_network}", "false")
    };
    let mut out = vec![fill(command)];
    for a in args {
        // A `multiple` folder list expands to one argument per folder.
        if a == "${user_config.read_only_dirs}" {
            out.push(extra.to_string_lossy().into_owned());
        } else {
            out.push(fill(a));
        }
    }
    if let Some(left) = out.iter().find(|a| a.contains("${")) {
        bail!("unfilled variable in the manifest's command line: {left}");
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: check_bundle <unpacked bundle dir>")?,
    );
    let dir = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
        .context("reading manifest.json")?;
    let scratch =
        std::env::temp_dir().join(format!("kernel-mcp-bundle-check-{}", std::process::id()));
    let (workspace, extra) = (scratch.join("workspace"), scratch.join("shared-data"));
    std::fs::create_dir_all(&extra)?;
    let argv = command_line(&manifest, &dir, &workspace, &extra)?;
    println!("command: {argv:?}");
    let (program, args) = argv.split_first().context("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    let result = async {
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let client = tokio::time::timeout(Duration::from_secs(60), ().serve(transport))
            .await
            .context("no MCP handshake within 60 s")?
            .context("MCP handshake")?;
        let tools = tokio::time::timeout(Duration::from_secs(60), client.list_all_tools())
            .await
            .context("no tools/list answer within 60 s")??;
        let served: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        let listed: Vec<&str> = manifest
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| t.get("name")?.as_str()).collect())
            .unwrap_or_default();
        let missing: Vec<&&str> = listed.iter().filter(|n| !served.contains(n)).collect();
        let unlisted: Vec<&&str> = served.iter().filter(|n| !listed.contains(n)).collect();
        let _ = client.cancel().await;
        if served.is_empty() || !missing.is_empty() {
            bail!("the manifest lists tools the server does not serve: {missing:?} (served: {served:?})");
        }
        if !unlisted.is_empty() {
            println!("note: served but not listed in the manifest: {unlisted:?}");
        }
        if !workspace.is_dir() {
            bail!("the server did not create the workspace {}", workspace.display());
        }
        println!("bundle ok: the server answered tools/list with {} tools", served.len());
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
