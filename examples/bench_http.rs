//! Benchmark of `serve --listen` (MCP over Streamable HTTP, a kernel per session): memory per
//! idle session, time from a new session's `initialize` to its first result with and without
//! warm spares, and `x + 1` throughput with 1, 2 and 4 concurrent sessions.
//!
//! Run: `cargo run --release --example bench_http`. It builds the server binary if needed and
//! uses the managed Python environment; it prints a markdown table.

#[path = "common/mod.rs"]
mod common;
use common::server_binary;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};

type Client = RunningService<RoleClient, ()>;

struct Srv {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Srv {
    async fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Srv> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("server.log");
        let child = tokio::process::Command::new(bin)
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KERNEL_MCP_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find(|l| l.contains("serving MCP over Streamable HTTP"))
                .and_then(|l| l.split("url=").nth(1))
                .and_then(|r| r.split_whitespace().next())
            {
                return Ok(Srv {
                    child,
                    url: url.to_owned(),
                    _dir: dir,
                });
            }
            anyhow::ensure!(Instant::now() < end, "server did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn session(&self) -> anyhow::Result<Client> {
        Ok(
            ().serve(StreamableHttpClientTransport::from_uri(self.url.as_str()))
                .await?,
        )
    }

    async fn stop(mut self) {
        // A clean stop (SIGTERM) ends every session's kernel; elsewhere, kill.
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        #[cfg(not(unix))]
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

async fn exec(c: &Client, code: &str) -> anyhow::Result<String> {
    let serde_json::Value::Object(map) = serde_json::json!({ "code": code }) else {
        anyhow::bail!("args")
    };
    let r = c
        .call_tool(CallToolRequestParams::new("execute_python").with_arguments(map))
        .await?;
    anyhow::ensure!(r.is_error != Some(true), "call failed: {r:?}");
    Ok(r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect())
}

/// Proportional set size (KiB) of `root` and all its descendants.
fn tree_pss_kb(root: u32) -> u64 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|&&p| in_tree(p))
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Pss:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

fn row(name: &str, value: String, note: &str) {
    println!("| {name:<58} | {value:>12} | {note} |");
}

/// PSS added per idle session (MiB), with `extra` server flags.
async fn per_session_mib(bin: &Path, extra: &[&str], n: usize) -> anyhow::Result<(f64, f64)> {
    let srv = Srv::start(bin, extra).await?;
    // Let the spare start and settle before the baseline.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let base = tree_pss_kb(srv.pid());
    let mut sessions = Vec::new();
    for _ in 0..n {
        let c = srv.session().await?;
        exec(&c, "x = 1").await?;
        sessions.push(c);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let total = tree_pss_kb(srv.pid());
    let per = (total.saturating_sub(base)) as f64 / 1024.0 / n as f64;
    for c in sessions {
        let _ = c.cancel().await;
    }
    srv.stop().await;
    Ok((per, base as f64 / 1024.0))
}

/// Median time from a new session's initialize to its first `x + 1` result (ms).
async fn first_result_ms(bin: &Path, extra: &[&str], runs: usize) -> anyhow::Result<f64> {
    let srv = Srv::start(bin, extra).await?;
    let mut times = Vec::new();
    for _ in 0..runs {
        // Time for a spare to be (re)started and preloaded, as between real sessions.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let t = Instant::now();
        let c = srv.session().await?;
        exec(&c, "x = 1\nx + 1").await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let _ = c.cancel().await;
    }
    srv.stop().await;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
}

/// `x + 1` calls per second summed over `k` sessions running at once for `secs`.
async fn throughput(sessions: &[Client], k: usize, secs: f64) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let counts = futures::future::try_join_all(sessions.iter().take(k).map(|c| async move {
        let mut n = 0u64;
        while Instant::now() < end {
            exec(c, "x + 1").await?;
            n += 1;
        }
        Ok::<u64, anyhow::Error>(n)
    }))
    .await?;
    Ok(counts.iter().sum::<u64>() as f64 / secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let bin = server_binary()?;
    println!("| measurement | value | note |\n|---|---:|---|");

    let n = 4;
    let (pre, base_pre) = per_session_mib(&bin, &["--max-sessions", "16"], n).await?;
    row(
        "PSS per idle session, preloaded kernel (server + kernels)",
        format!("{pre:.0} MiB"),
        &format!(
            "{:.1} sessions per GiB; {n} sessions; server + spare at rest {base_pre:.0} MiB",
            1024.0 / pre
        ),
    );
    let (bare, _) = per_session_mib(&bin, &["--max-sessions", "16", "--no-preload"], n).await?;
    row(
        "PSS per idle session, --no-preload",
        format!("{bare:.0} MiB"),
        &format!("{:.1} sessions per GiB", 1024.0 / bare),
    );

    let warm = first_result_ms(&bin, &["--no-preload"], 5).await?;
    row(
        "new session: initialize to first result, warm spare",
        format!("{warm:.0} ms"),
        "median of 5",
    );
    let cold = first_result_ms(&bin, &["--no-spare"], 5).await?;
    row(
        "new session: initialize to first result, --no-spare",
        format!("{cold:.0} ms"),
        "median of 5; cold kernel start",
    );

    let srv = Srv::start(&bin, &["--no-preload", "--max-sessions", "8"]).await?;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let c = srv.session().await?;
        exec(&c, "x = 1").await?;
        sessions.push(c);
    }
    let secs = 5.0;
    let one = throughput(&sessions, 1, secs).await?;
    row(
        "`x + 1` throughput, 1 session",
        format!("{one:.0}/s"),
        "1.00x",
    );
    for k in [2, 4] {
        let t = throughput(&sessions, k, secs).await?;
        row(
            &format!("`x + 1` throughput, {k} concurrent sessions"),
            format!("{t:.0}/s"),
            &format!("{:.2}x one session (2 cores)", t / one),
        );
    }
    for c in sessions {
        let _ = c.cancel().await;
    }
    srv.stop().await;
    Ok(())
}
