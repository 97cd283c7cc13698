//! Benchmark: what kernel-mcp adds on top of the kernel, measured in one run on this machine.
//!
//! Run: `cargo run --release --example bench` (add `-- --quick` to skip the 1 GB print).
//! It builds the server binary if needed, uses the managed Python environment, and prints a
//! table of medians and ratios: MCP round trip vs kernel-mcp's direct wire client vs a fresh
//! `python -c` per call; output throughput and the server's peak memory; start-up, restart and
//! idle memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use tokio_util::sync::CancellationToken;

use kernel_mcp::kernel::{ExecLimits, Kernel, LocalLauncher, OutputSink, SandboxConfig, Transport};
use kernel_mcp::wire::Content;

struct Discard;
impl OutputSink for Discard {
    fn output(&mut self, _content: &Content) {}
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p90(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() * 9 / 10).copied().unwrap_or(f64::NAN)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the command name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // (/proc exists on Linux only; elsewhere this reports 0.)
    #[cfg(unix)]
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    #[cfg(not(unix))]
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

fn server_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .context("locating target dir")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", "kernel-mcp"]);
    if release {
        cmd.arg("--release");
    }
    anyhow::ensure!(cmd.status()?.success(), "building kernel-mcp failed");
    Ok(profile_dir.join("kernel-mcp"))
}

struct Mcp {
    client: RunningService<RoleClient, ()>,
    pid: u32,
}

async fn start_server(bin: &Path, ws: &Path, extra: &[&str]) -> anyhow::Result<Mcp> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--workspace").arg(ws).args(extra);
    cmd.env("KERNEL_MCP_LOG", "warn");
    let (proc, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = proc.id().context("server pid")?;
    let client = ().serve(proc).await?;
    Ok(Mcp { client, pid })
}

async fn call(m: &Mcp, tool: &str, args: serde_json::Value) -> anyhow::Result<CallToolResult> {
    let serde_json::Value::Object(map) = args else {
        anyhow::bail!("args")
    };
    Ok(m.client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(map))
        .await?)
}

async fn exec(m: &Mcp, code: &str) -> anyhow::Result<CallToolResult> {
    call(
        m,
        "execute_python",
        serde_json::json!({ "code": code, "timeout_seconds": 600 }),
    )
    .await
}

fn row(name: &str, value: String, note: &str) {
    println!("| {name:<52} | {value:>14} | {note} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = 500;
    let bin = server_binary()?;
    let env = kernel_mcp::pyenv::ensure_managed().await?;
    let ws = std::env::temp_dir().join(format!("kernel-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&ws)?;
    println!(
        "kernel-mcp benchmark — {} cores, Python {} ({})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        env.python_version,
        env.package_summary()
    );
    println!();
    println!("| measurement | value | note |");
    println!("|---|---:|---|");

    // 1. Direct wire client, no MCP: the baseline the server's own cost is measured against.
    let launcher = LocalLauncher {
        spec: kernel_mcp::kernel::KernelSpec::builtin()?,
        python: env.python.clone(),
        workspace: ws.clone(),
        transport: Transport::Ipc,
        startup_timeout: Duration::from_secs(60),
        extra_env: Default::default(),
        helper: Some(bin.clone()),
        sandbox: Some(SandboxConfig {
            python_paths: env.paths.clone(),
            memory_bytes: Some(8 << 30),
            ..Default::default()
        }),
    };
    let t = Instant::now();
    let kernel = Kernel::start(&launcher).await?;
    let cold_start = t.elapsed().as_secs_f64() * 1000.0;
    let limits = ExecLimits {
        timeout: Duration::from_secs(600),
        grace: Duration::from_secs(3),
        progress: false,
    };
    let cancel = CancellationToken::new();
    kernel
        .execute("x = 1", &limits, &cancel, &mut Discard)
        .await?;
    for _ in 0..20 {
        kernel
            .execute("x + 1", &limits, &cancel, &mut Discard)
            .await?;
    }
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        kernel
            .execute("x + 1", &limits, &cancel, &mut Discard)
            .await?;
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let direct_med = median(&mut direct);
    let big_print = "line = 'x' * 99\nfor _ in range(100_000):\n    print(line)";
    let t = Instant::now();
    kernel
        .execute(big_print, &limits, &cancel, &mut Discard)
        .await?;
    let direct_10mb = t.elapsed().as_secs_f64();
    drop(kernel);

    // 2. Through MCP: a client process talking to the built binary over stdio.
    let t = Instant::now();
    let m = start_server(
        &bin,
        &ws,
        &["--max-images", "60", "--output-budget", "20000"],
    )
    .await?;
    let r = exec(&m, "x = 1\nx + 1").await?;
    let first = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(r.is_error != Some(true), "first call failed");
    for _ in 0..20 {
        exec(&m, "x + 1").await?;
    }
    let mut mcp = Vec::with_capacity(n);
    let cpu_before = cpu_seconds(m.pid);
    for _ in 0..n {
        let t = Instant::now();
        exec(&m, "x + 1").await?;
        mcp.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let server_cpu_us = (cpu_seconds(m.pid) - cpu_before) / n as f64 * 1e6;
    let mcp_med = median(&mut mcp);
    let mcp_p90 = p90(&mut mcp);
    tokio::time::sleep(Duration::from_secs(8)).await; // let the spare finish starting
    let idle_rss = status_kb(m.pid, "VmRSS:");

    // 3. A fresh interpreter per call (what spawn-per-call executors pay, before any imports).
    let mut spawn = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let out = std::process::Command::new(&env.python)
            .args(["-c", "x = 1\nprint(x + 1)"])
            .output()?;
        anyhow::ensure!(out.status.success());
        spawn.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let spawn_med = median(&mut spawn);
    let mut spawn_pd = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = std::process::Command::new(&env.python)
            .args(["-c", "import pandas\nx = 1\nprint(x + 1)"])
            .output()?;
        anyhow::ensure!(out.status.success());
        spawn_pd.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let spawn_pd_med = median(&mut spawn_pd);

    row(
        "x + 1 round trip, direct wire client (median of 500)",
        format!("{direct_med:.3} ms"),
        "baseline: the kernel's own cost + ZeroMQ",
    );
    row(
        "x + 1 round trip through MCP stdio (median of 500)",
        format!("{mcp_med:.3} ms"),
        &format!(
            "p90 {mcp_p90:.3} ms; ratio to direct {:.3}x (target <= 1.15x)",
            mcp_med / direct_med
        ),
    );
    row(
        "server CPU time per x + 1 call (user + system)",
        format!("{server_cpu_us:.0} µs"),
        "the server's own work: MCP JSON, routing, signing, output shaping",
    );
    row(
        "fresh bare `python -c` per call (median of 30)",
        format!("{spawn_med:.1} ms"),
        &format!("MCP is {:.1}x faster (target >= 10x)", spawn_med / mcp_med),
    );
    row(
        "fresh `python -c 'import pandas ...'` per call (median of 10)",
        format!("{spawn_pd_med:.0} ms"),
        &format!(
            "MCP is {:.0}x faster: state persists, imports are paid once",
            spawn_pd_med / mcp_med
        ),
    );

    // 4. Output throughput.
    let t = Instant::now();
    let r = exec(&m, big_print).await?;
    let mcp_10mb = t.elapsed().as_secs_f64();
    let returned: usize = r
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.len())
        .sum();
    row(
        "print 10 MB: kernel via direct wire client",
        format!("{direct_10mb:.2} s"),
        "baseline",
    );
    row(
        "print 10 MB: through MCP (budgeted, full text saved)",
        format!("{mcp_10mb:.2} s"),
        &format!(
            "{:.2}x the kernel's time (target < 2x); {returned} chars returned",
            mcp_10mb / direct_10mb
        ),
    );
    let t = Instant::now();
    let r = exec(&m, "import matplotlib.pyplot as plt\nfor i in range(50):\n    plt.figure(figsize=(4, 3))\n    plt.plot(range(i + 2))\n    plt.show()").await?;
    let figs = r.content.iter().filter(|c| c.as_image().is_some()).count();
    row(
        "50 matplotlib figures through MCP",
        format!("{:.2} s", t.elapsed().as_secs_f64()),
        &format!("{figs} PNG images returned"),
    );
    row(
        "server peak RSS so far",
        format!("{:.1} MB", status_kb(m.pid, "VmHWM:") as f64 / 1024.0),
        "",
    );
    if !quick {
        let t = Instant::now();
        exec(
            &m,
            "line = 'x' * 999\nfor _ in range(1_000_000):\n    print(line)",
        )
        .await?;
        row(
            "print 1 GB through MCP",
            format!("{:.1} s", t.elapsed().as_secs_f64()),
            &format!(
                "server peak RSS {:.1} MB (target < 100 MB)",
                status_kb(m.pid, "VmHWM:") as f64 / 1024.0
            ),
        );
    }

    // 5. Start-up, restart, idle memory.
    row(
        "server start to first result (spawn + MCP init + x+1)",
        format!("{first:.0} ms"),
        &format!("a cold kernel start alone is {cold_start:.0} ms"),
    );
    let mut warm = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(8)).await; // a fresh spare is started after each swap
        let t = Instant::now();
        call(&m, "restart_kernel", serde_json::json!({})).await?;
        exec(&m, "1 + 1").await?;
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    row(
        "restart_kernel to next result, warm spare (median of 3)",
        format!("{:.0} ms", median(&mut warm)),
        "target < 150 ms",
    );
    row(
        "server idle RSS",
        format!("{:.1} MB", idle_rss as f64 / 1024.0),
        "target < 20 MB",
    );
    m.client.cancel().await?;

    let m = start_server(&bin, &ws, &["--no-spare"]).await?;
    exec(&m, "1").await?;
    let mut cold = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        call(&m, "restart_kernel", serde_json::json!({})).await?;
        exec(&m, "1 + 1").await?;
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    row(
        "restart_kernel to next result, no spare (median of 3)",
        format!("{:.0} ms", median(&mut cold)),
        "a cold ipykernel start",
    );
    m.client.cancel().await?;
    let _ = std::fs::remove_dir_all(&ws);
    Ok(())
}
