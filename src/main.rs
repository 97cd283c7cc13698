//! The `kernel-mcp` binary: parse flags, log to stderr, pick the Python environment, start the
//! kernel in the background and serve MCP on stdio until stdin closes or a signal arrives.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmcp::ServiceExt;

use kernel_mcp::kernel::connection::RuntimeDir;
use kernel_mcp::kernel::{KernelHandle, KernelSpec, LocalLauncher, Transport};
use kernel_mcp::output::OutputLimits;
use kernel_mcp::pyenv;
use kernel_mcp::tools::{Environments, Server, Settings};
use kernel_mcp::workspace::Workspace;

#[derive(Parser, Debug)]
#[command(
    name = "kernel-mcp",
    version,
    about = "MCP server: a stateful Python interpreter backed by a real Jupyter kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Debug, Clone)]
struct Opts {
    /// Folder the file tools are jailed to and the kernel's working directory (created if missing).
    #[arg(long, default_value = "./workspace", global = true)]
    workspace: PathBuf,
    /// Use this Python interpreter (it must have ipykernel) instead of the managed environment.
    #[arg(long, global = true)]
    python: Option<PathBuf>,
    /// Use the Python of this virtualenv or uv venv (its bin/python).
    #[arg(long, global = true, conflicts_with = "python")]
    venv: Option<PathBuf>,
    /// Use the Python of this conda environment (found with `conda env list`).
    #[arg(long, global = true, conflicts_with_all = ["python", "venv"])]
    conda_env: Option<String>,
    /// Offer another environment to the model by name: NAME=PATH (a venv dir or an interpreter). Repeatable.
    #[arg(long = "env", value_name = "NAME=PATH", global = true)]
    envs: Vec<String>,
    /// Seconds an install_package run may take before the installer is killed.
    #[arg(long, default_value_t = 300.0, global = true)]
    install_timeout: f64,
    /// Kernel spec: a kernel.json file or a folder holding one (default: the built-in spec).
    #[arg(long, global = true)]
    kernel_spec: Option<PathBuf>,
    /// Default execute_python timeout in seconds.
    #[arg(long, default_value_t = 60.0, global = true)]
    timeout: f64,
    /// Largest timeout_seconds a call may ask for.
    #[arg(long, default_value_t = 3600.0, global = true)]
    max_timeout: f64,
    /// Seconds to wait after an interrupt before the kernel is killed and restarted.
    #[arg(long, default_value_t = 3.0, global = true)]
    interrupt_grace: f64,
    /// Characters of text output returned per call before head/tail truncation.
    #[arg(long, default_value_t = 20_000, global = true)]
    output_budget: usize,
    /// Most images returned per call.
    #[arg(long, default_value_t = 10, global = true)]
    max_images: usize,
    /// Seconds the kernel may take to start.
    #[arg(long, default_value_t = 60.0, global = true)]
    startup_timeout: f64,
    /// How the server talks to the kernel: ipc (unix sockets in a private dir) or tcp (127.0.0.1).
    #[arg(long, value_enum, default_value_t = Transport::Ipc, global = true)]
    transport: Transport,
    /// OS sandbox for the kernel: strict (Landlock + seccomp + rlimits, best effort), require
    /// (refuse to run without every layer), or off.
    #[arg(long, value_enum, default_value_t = SandboxMode::Strict, global = true)]
    sandbox: SandboxMode,
    /// Let the kernel use the network (off by default under the sandbox).
    #[arg(long, global = true)]
    allow_network: bool,
    /// Extra read-only directory for the kernel (repeatable), e.g. a shared data folder.
    #[arg(long, value_name = "DIR", global = true)]
    allow_read: Vec<PathBuf>,
    /// Kernel address-space limit, e.g. 4G, 512M (0 = none).
    #[arg(long, default_value = "4G", global = true)]
    memory_limit: String,
    /// Largest file the kernel may write, e.g. 8G (0 = none).
    #[arg(long, default_value = "8G", global = true)]
    max_file_size: String,
    /// Do not keep a warm spare kernel (saves its memory; restarts then take a cold start).
    #[arg(long, global = true)]
    no_spare: bool,
    /// Do not pre-import numpy, pandas and matplotlib in the spare kernel.
    #[arg(long, global = true)]
    no_preload: bool,
    /// Most execute calls waiting behind the running one before "busy" is returned.
    #[arg(long, default_value_t = 16, global = true)]
    max_queue: usize,
    /// Serve MCP over Streamable HTTP at http://HOST:PORT/mcp instead of stdio, with a kernel
    /// and a workspace folder per session.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    listen: Option<String>,
    /// File holding the bearer token HTTP clients must send (default: env KERNEL_MCP_TOKEN).
    /// Required when --listen is not a loopback address.
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
    /// A browser origin allowed to call the HTTP endpoint, e.g. https://app.example.com (repeatable).
    #[arg(long, value_name = "ORIGIN", global = true)]
    allow_origin: Vec<String>,
    /// Most HTTP sessions at once; beyond it a new session gets HTTP 503.
    #[arg(long, default_value_t = 8, global = true)]
    max_sessions: usize,
    /// Seconds without a request after which an HTTP session and its kernel end.
    #[arg(long, default_value_t = 1800.0, global = true)]
    session_idle_timeout: f64,
    /// HTTP sessions share the workspace root instead of each getting its own folder in it.
    #[arg(long, global = true)]
    shared_workspace: bool,
    /// Largest HTTP request body, e.g. 32M.
    #[arg(long, default_value = "32M", global = true)]
    max_body: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SandboxMode {
    Strict,
    Require,
    Off,
}

fn parse_size(s: &str) -> anyhow::Result<Option<u64>> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let units = [
        ('k', 1u64 << 10),
        ('m', 1 << 20),
        ('g', 1 << 30),
        ('t', 1 << 40),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|&(u, m)| t.strip_suffix(u).map(|n| (n, m)))
        .unwrap_or((t, 1));
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size like 4G or 512M"))?;
    anyhow::ensure!(n.is_finite() && n >= 0.0, "{s:?} is not a size");
    let bytes = (n * mult as f64) as u64;
    Ok((bytes > 0).then_some(bytes))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP on stdin/stdout (the default).
    Serve,
    /// Create or check the managed Python environment and print what is in it.
    Setup,
    /// Run a three-step analysis through the server, as an MCP client would, and print each result.
    Demo,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KERNEL_MCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
}

fn env_source(o: &Opts) -> pyenv::EnvSource {
    if let Some(p) = &o.python {
        pyenv::EnvSource::Interpreter(p.clone())
    } else if let Some(v) = &o.venv {
        pyenv::EnvSource::Venv(v.clone())
    } else if let Some(c) = &o.conda_env {
        pyenv::EnvSource::Conda(c.clone())
    } else {
        pyenv::EnvSource::Managed
    }
}

async fn resolve_env(o: &Opts) -> anyhow::Result<pyenv::EnvInfo> {
    Ok(pyenv::resolve(&env_source(o)).await?)
}

fn named_envs(o: &Opts) -> anyhow::Result<BTreeMap<String, pyenv::EnvSource>> {
    let mut named = BTreeMap::new();
    named.insert("default".to_owned(), env_source(o));
    for e in &o.envs {
        let (name, source) =
            pyenv::parse_named(e).map_err(|m| anyhow::anyhow!("--env {e:?}: {m}"))?;
        named.insert(name, source);
    }
    Ok(named)
}

fn secs(v: f64, name: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "--{name} must be a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

async fn sandbox_config(
    o: &Opts,
    env: &pyenv::EnvInfo,
) -> anyhow::Result<Option<kernel_mcp::kernel::SandboxConfig>> {
    if o.sandbox == SandboxMode::Off {
        tracing::warn!("kernel sandbox is OFF (--sandbox off): the kernel can read and write everything this user can");
        return Ok(None);
    }
    let cfg = kernel_mcp::kernel::SandboxConfig {
        python_paths: env.paths.clone(),
        extra_read: o.allow_read.clone(),
        network: o.allow_network,
        memory_bytes: parse_size(&o.memory_limit).context("--memory-limit")?,
        file_size_bytes: parse_size(&o.max_file_size).context("--max-file-size")?,
        require: o.sandbox == SandboxMode::Require,
        mpl_cache: pyenv::font_cache(env).await,
    };
    if o.sandbox == SandboxMode::Require {
        kernel_mcp::kernel::sandbox::probe(o.allow_network).map_err(|e| {
            anyhow::anyhow!("--sandbox require: not every sandbox layer is available here: {e}")
        })?;
    }
    Ok(Some(cfg))
}

async fn serve(o: Opts) -> anyhow::Result<()> {
    let swept = RuntimeDir::sweep_stale();
    if swept > 0 {
        tracing::info!(
            swept,
            "removed runtime dirs of kernel-mcp servers that are gone"
        );
    }
    let workspace = Arc::new(Workspace::open(&o.workspace).context("opening the workspace")?);
    // On a first run the managed environment takes a minute to create: serve MCP at once and
    // create it in the background, so a client such as Claude Desktop does not time out.
    let source = env_source(&o);
    // Over HTTP the environment is created before listening: sessions all need it at once.
    let background =
        o.listen.is_none() && source == pyenv::EnvSource::Managed && !pyenv::managed_ready();
    let env = if background {
        tracing::warn!("first run: creating the managed Python environment in the background");
        pyenv::preparing()
    } else {
        resolve_env(&o).await?
    };
    tracing::info!(python = %env.python.display(), version = %env.python_version, packages = %env.package_summary(), "python environment");
    let spec = match &o.kernel_spec {
        Some(p) => KernelSpec::load(p)?,
        None => KernelSpec::builtin()?,
    };
    let launcher = LocalLauncher {
        spec,
        python: env.python.clone(),
        workspace: workspace.root().to_path_buf(),
        transport: o.transport,
        startup_timeout: secs(o.startup_timeout, "startup-timeout")?,
        extra_env: BTreeMap::new(),
        helper: std::env::current_exe().ok(),
        sandbox: sandbox_config(&o, &env).await?,
    };
    let spare = kernel_mcp::kernel::SpareConfig {
        enabled: !o.no_spare,
        preload: (!o.no_preload).then(|| kernel_mcp::kernel::PRELOAD_ANALYSIS_STACK.to_owned()),
    };
    if let Some(listen) = o.listen.clone() {
        return serve_http(
            &o,
            &listen,
            workspace,
            launcher,
            settings(&o)?,
            envs(&o, env)?,
        )
        .await;
    }
    let kernel = KernelHandle::new(launcher, o.max_queue, spare);
    // Start the kernel while the client does the MCP handshake.
    kernel.warm_up();
    let server = Server::new(kernel.clone(), workspace, settings(&o)?, envs(&o, env)?);
    if background {
        let (kernel, server) = (kernel.clone(), server.clone());
        tokio::spawn(async move {
            match pyenv::ensure_managed().await {
                Ok(info) => {
                    kernel.set_python(info.python.clone(), info.paths.clone());
                    server.set_env_info(info);
                    kernel.warm_up();
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not create the managed Python environment");
                    kernel.set_env_error(e.to_string());
                }
            }
        });
    }
    // Requests a strict parser would drop silently get a clear error instead (see stdin_guard).
    let input = kernel_mcp::stdin_guard::spawn(tokio::io::stdin());
    let transport =
        rmcp::transport::async_rw::AsyncRwTransport::new_server(input, tokio::io::stdout())
            .with_max_line_length(kernel_mcp::stdin_guard::MAX_LINE + 1024 * 1024);
    let service = server.serve(transport).await;
    let outcome = match service {
        Ok(running) => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::select! {
                r = running.waiting() => r.map(|reason| tracing::info!(?reason, "client disconnected")).map_err(anyhow::Error::from),
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
                _ = hup.recv() => { tracing::info!("SIGHUP: shutting down"); Ok(()) }
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
            }
        }
        // A 2026-07-28 client may probe with `server/discover` (answered inside rmcp's start-up
        // loop) and close without ever choosing a lifecycle: that is a normal end, not a failure.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            tracing::info!("client closed the connection before starting a session");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("MCP initialization failed: {e}")),
    };
    kernel.shutdown().await;
    outcome
}

fn settings(o: &Opts) -> anyhow::Result<Settings> {
    Ok(Settings {
        default_timeout: secs(o.timeout, "timeout")?,
        max_timeout: secs(o.max_timeout, "max-timeout")?,
        interrupt_grace: secs(o.interrupt_grace, "interrupt-grace")?,
        output: OutputLimits {
            text_budget: o.output_budget.max(1000),
            max_images: o.max_images,
            ..OutputLimits::default()
        },
        install_timeout: secs(o.install_timeout, "install-timeout")?,
    })
}

fn envs(o: &Opts, env: pyenv::EnvInfo) -> anyhow::Result<Environments> {
    Ok(Environments {
        active: "default".into(),
        info: env,
        named: named_envs(o)?,
    })
}

/// The bearer token: the first line of --token-file, else KERNEL_MCP_TOKEN (surrounding
/// whitespace ignored).
fn bearer_token(o: &Opts) -> anyhow::Result<Option<String>> {
    let raw = match &o.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --token-file {}", p.display()))?,
        ),
        None => std::env::var("KERNEL_MCP_TOKEN").ok(),
    };
    Ok(raw.map(|t| t.lines().next().unwrap_or_default().trim().to_owned()))
}

async fn listen_addr(listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    let mut addrs = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen:?} is not HOST:PORT"))?;
    addrs
        .next()
        .with_context(|| format!("--listen {listen:?} names no address"))
}

async fn serve_http(
    o: &Opts,
    listen: &str,
    workspace: Arc<Workspace>,
    launcher: LocalLauncher,
    settings: Settings,
    envs: Environments,
) -> anyhow::Result<()> {
    use kernel_mcp::serve::{http, sessions};
    let opts = http::HttpOptions {
        listen: listen_addr(listen).await?,
        token: bearer_token(o)?,
        allow_origins: o.allow_origin.clone(),
        max_body: parse_size(&o.max_body)
            .context("--max-body")?
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(usize::MAX),
    };
    opts.check()?;
    anyhow::ensure!(o.max_sessions > 0, "--max-sessions must be at least 1");
    let template = sessions::SessionTemplate {
        launcher: launcher.clone(),
        max_queue: o.max_queue,
        settings: settings.clone(),
        envs: envs.clone(),
        preload: !o.no_preload,
    };
    let limits = sessions::SessionLimits {
        max_sessions: o.max_sessions,
        idle_timeout: secs(o.session_idle_timeout, "session-idle-timeout")?,
        shared_workspace: o.shared_workspace,
        spares: if o.no_spare { 0 } else { 1 },
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let bound = listener.local_addr()?;
    // The tool list comes from a server whose kernel is never started.
    let template_server = Server::new(
        KernelHandle::new(launcher, o.max_queue, Default::default()),
        workspace.clone(),
        settings,
        envs,
    );
    let reg = sessions::Registry::new(template, workspace, limits);
    let front = sessions::Front::new(reg.clone(), template_server);
    tracing::info!(
        url = %format!("http://{bound}{}", http::MCP_PATH),
        auth = if opts.token.is_some() { "bearer token" } else { "none (loopback only)" },
        max_sessions = o.max_sessions,
        "serving MCP over Streamable HTTP"
    );
    let stop = async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        match (term, hup) {
            (Ok(mut term), Ok(mut hup)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = hup.recv() => tracing::info!("SIGHUP: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    http::serve(listener, opts, reg, front, stop).await?;
    Ok(())
}

async fn setup(o: Opts) -> anyhow::Result<()> {
    let env = resolve_env(&o).await?;
    println!("python:     {}", env.python.display());
    println!("version:    {}", env.python_version);
    println!(
        "kind:       {}",
        if env.kind.is_empty() {
            "managed"
        } else {
            &env.kind
        }
    );
    for (name, v) in &env.packages {
        println!("{name:<11} {}", v.as_deref().unwrap_or("(not installed)"));
    }
    if env_source(&o) == pyenv::EnvSource::Managed {
        println!("env dir:    {}", pyenv::managed_env_dir()?.display());
    }
    Ok(())
}

/// Keeps the server's memory flat under big outputs: glibc serves large blocks from the heap once
/// its dynamic mmap threshold has grown, and tens of MB of freed stream messages then stay
/// resident. A fixed threshold maps every block over 1 MiB and unmaps it when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(kernel_mcp::kernel::sandbox::HELPER_ARG) {
        let mut rest = raw.get(2..).unwrap_or_default();
        let mut policy = None;
        if rest.first().map(String::as_str) == Some("--policy") {
            policy = rest.get(1).map(String::as_str);
            rest = rest.get(2..).unwrap_or_default();
        }
        let argv = match rest.first().map(String::as_str) {
            Some("--") => rest.get(1..).unwrap_or_default(),
            _ => rest,
        };
        kernel_mcp::kernel::sandbox::helper_main(policy, argv);
    }
    let cli = Cli::parse();
    // The demo is an MCP client printing results; its own logs would only get in the way.
    init_logging(if matches!(cli.command, Some(Command::Demo)) {
        "warn"
    } else {
        "info,zeromq=error"
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match cli.command {
            None | Some(Command::Serve) => serve(cli.opts).await,
            Some(Command::Setup) => setup(cli.opts).await,
            Some(Command::Demo) => kernel_mcp::demo::run(&cli.opts.workspace).await,
        }
    });
    // The stdin reader sits in a blocking read that never returns on its own; do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}
