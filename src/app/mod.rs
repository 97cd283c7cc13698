//! The `kernel-mcp` application: parse flags, log to stderr, pick the Python environment, start
//! the kernel in the background and serve MCP on stdio (or HTTP) until stdin closes or a signal
//! arrives; `setup`, `demo` and the sandbox helper's hidden mode too. `src/main.rs` only calls
//! [`main`]. The one library module that uses `anyhow`: its errors end the process.

mod cli;
mod config;
mod demo;
mod stdio;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rmcp::ServiceExt;

use crate::kernel::connection::RuntimeDir;
use crate::kernel::{KernelHandle, KernelSpec, LocalLauncher};
use crate::output::OutputLimits;
use crate::pyenv;
use crate::tools::{Environments, Server, Settings};

use crate::workspace::Workspace;
use cli::{Cli, Command, Opts};
use config::{
    disk_quota, env_source, named_envs, open_workspace, resolve_env, sandbox_config,
    sandbox_policy, DEFAULT_WORKSPACE,
};
use stdio::{stdio, stop_signal};

/// Logging to stderr, filtered by `KERNEL_MCP_LOG` (`level` or `target=level` directives joined
/// by commas, e.g. `debug` or `kernel_mcp=debug,zeromq=error`); an unparsable value falls back to
/// `default` and says so. Records of crates that log through `log` (zeromq, tungstenite) are
/// bridged in.
fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("KERNEL_MCP_LOG").ok();
    let parsed = from_env.as_deref().map(log_filter);
    let filter = match &parsed {
        Some(Ok(Some(t))) => t.clone(),
        _ => log_filter(default).ok().flatten().unwrap_or_default(),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let shown = filter.to_string();
    tracing_subscriber::registry().with(fmt).with(filter).init();
    if let (Some(raw), Some(Err(e))) = (&from_env, &parsed) {
        tracing::warn!("KERNEL_MCP_LOG={raw:?} is not a valid filter ({e}); using {default:?}");
    }
    // Says which filter is in effect, for whoever turned debug on.
    tracing::debug!(filter = %shown, "log filter");
}

/// Parses a log filter: directives separated by commas, blanks around them ignored; `None` when
/// there is none (an empty value means the default). Span and field filters (`target[span]`)
/// are not supported and are refused rather than silently matching nothing.
fn log_filter(raw: &str) -> Result<Option<tracing_subscriber::filter::Targets>, String> {
    let directives: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Ok(None);
    }
    if let Some(d) = directives.iter().find(|d| d.contains(['[', ']', '{', '}'])) {
        return Err(format!(
            "span and field filters such as {d:?} are not supported"
        ));
    }
    directives
        .join(",")
        .parse()
        .map(Some)
        .map_err(|e| format!("{e}"))
}

async fn serve(o: Opts) -> anyhow::Result<()> {
    let swept = RuntimeDir::sweep_stale();
    if swept > 0 {
        tracing::info!(
            swept,
            "removed runtime dirs of kernel-mcp servers that are gone"
        );
    }
    let (workspace, workspace_note) = open_workspace(o.workspace.as_deref())?;
    let workspace = Arc::new(workspace);
    if let Some(j) = &o.journal {
        anyhow::ensure!(
            j.to_ascii_lowercase().ends_with(".ipynb"),
            "--journal {j:?}: the journal is a notebook; give a path ending in .ipynb"
        );
        workspace
            .path(j)
            .map_err(|e| anyhow::anyhow!("--journal {j:?}: {e}"))?;
    }
    if o.timeout > o.max_timeout {
        tracing::warn!(
            timeout = o.timeout.as_secs_f64(),
            max_timeout = o.max_timeout.as_secs_f64(),
            "--timeout is above --max-timeout; calls use --max-timeout"
        );
    }
    if o.output_budget < 1000 {
        tracing::warn!(
            output_budget = o.output_budget,
            "--output-budget is below 1000 characters; 1000 is used"
        );
    }
    // Resolved once: the quota the model is told is the quota the sandbox enforces.
    let quota = disk_quota(&o, workspace.root());
    let settings = Settings {
        default_timeout: o.timeout.min(o.max_timeout),
        max_timeout: o.max_timeout,
        interrupt_grace: o.interrupt_grace,
        output: OutputLimits {
            text_budget: o.output_budget.max(1000),
            max_images: o.max_images,
            image_fit: crate::output::images::ImageFit {
                max_px: u32::try_from(o.max_image_px).unwrap_or(1568),
                max_bytes: o.max_image_bytes,
            },
            sandbox: sandbox_policy(&o, workspace.root(), quota).map(Arc::new),
            ..OutputLimits::default()
        },
        install_timeout: o.install_timeout,
        workspace_note,
        journal: o.journal.clone(),
        return_after: o.return_after,
        // Over HTTP only handle sessions, each in its own folder, are snapshotted (the
        // registry decides: serve/revive.rs).
        snapshot_max: (!o.no_persist).then(|| o.snapshot_max.0.unwrap_or(u64::MAX)),
    };
    let spare = crate::kernel::SpareConfig {
        enabled: !o.no_spare,
        preload: (!o.no_preload).then(|| crate::kernel::PRELOAD_ANALYSIS_STACK.to_owned()),
    };
    // Over HTTP with a gateway, every session gets a gateway kernel of its own.
    if let (Some(listen), Some(_)) = (o.listen.clone(), &o.gateway_url) {
        let opts = o.clone();
        let make = move || -> Result<Arc<dyn crate::kernel::Backend>, crate::error::KernelError> {
            match remote_backend(&opts) {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(crate::error::KernelError::Unavailable {
                    reason: crate::error::Unavailable::NoGateway,
                }),
                Err(e) => Err(crate::error::KernelError::Unavailable {
                    reason: crate::error::GatewayError::Config(e.to_string()).into(),
                }),
            }
        };
        // Check the flags once now, so a bad URL stops the server at start.
        make()?;
        let kernels = crate::serve::sessions::KernelSource::Remote(Arc::new(make));
        let envs = Environments {
            active: "default".into(),
            info: pyenv::remote("gateway kernel"),
            named: BTreeMap::new(),
        };
        return serve_http(&o, &listen, workspace, kernels, settings, envs).await;
    }
    anyhow::ensure!(
        !(o.listen.is_some() && o.existing.is_some()),
        "--existing cannot be served over --listen: every HTTP session needs a kernel of its own, and an existing kernel is one shared kernel; use --gateway-url or a local kernel"
    );
    // A kernel someone else runs: no local environment, sandbox or spare of ours.
    if let Some(remote) = remote_backend(&o)? {
        let kind = match remote.describe().kind {
            crate::kernel::BackendKind::Gateway => "gateway kernel",
            _ => "existing kernel",
        };
        let kernel = KernelHandle::with_backend(remote, o.max_queue, spare);
        kernel.warm_up();
        let envs = Environments {
            active: "default".into(),
            info: pyenv::remote(kind),
            named: BTreeMap::new(),
        };
        let server = Server::new(kernel.clone(), workspace, settings, envs);
        {
            // Learn the kernel's own interpreter once it answers, for descriptions and reports.
            let (kernel, server) = (kernel.clone(), server.clone());
            tokio::spawn(async move {
                if kernel.info().await.is_ok() {
                    match kernel
                        .evaluate(pyenv::KERNEL_PROBE_EXPR, Duration::from_secs(30))
                        .await
                    {
                        Ok(repr) => match pyenv::parse_kernel_probe(&repr, kind) {
                            Some(info) => server.set_env_info(info),
                            None => tracing::warn!("could not read the kernel's interpreter facts"),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "could not ask the kernel about its interpreter")
                        }
                    }
                }
            });
        }
        return run_stdio(server, kernel).await;
    }
    // On a first run the managed environment takes a minute to create: serve MCP at once and
    // create it in the background, so a client such as Claude Desktop does not time out.
    let source = env_source(&o);
    // Over HTTP the environment is created before listening: sessions all need it at once.
    let background =
        o.listen.is_none() && source == pyenv::EnvSource::Managed && !pyenv::managed_ready();
    // An unusable interpreter must not stop the server: the file tools still work, and
    // execute_python says what is wrong and how to fix it.
    let mut env_problem = None;
    let env = if background {
        tracing::warn!("first run: creating the managed Python environment in the background");
        pyenv::preparing()
    } else {
        match pyenv::resolve(&source).await {
            Ok(env) => env,
            Err(e) => {
                let reason = pyenv::explain(&e);
                tracing::error!(%reason, "the Python environment is not usable; serving without a kernel");
                env_problem = Some(reason.clone());
                pyenv::unavailable(&reason)
            }
        }
    };
    tracing::info!(python = %env.python.display(), version = %env.python_version, packages = %env.package_summary(), "python environment");
    // ipc is used and tested over unix sockets only; on Windows the flag is refused before any
    // kernel starts (the relay refused it at connect time until round 3's seventh session).
    #[cfg(not(unix))]
    if matches!(o.transport, crate::kernel::Transport::Ipc) {
        anyhow::bail!(
            "--transport ipc needs unix sockets, which kernel-mcp does not use on this platform; use --transport tcp (the default here)"
        );
    }
    let spec = match &o.kernel_spec {
        Some(p) => KernelSpec::load(p)?,
        None => KernelSpec::builtin()?,
    };
    let launcher = LocalLauncher {
        spec,
        python: env.python.clone(),
        workspace: workspace.root().to_path_buf(),
        transport: o.transport,
        startup_timeout: o.startup_timeout,
        extra_env: BTreeMap::new(),
        helper: crate::sandbox::helper_exe(),
        sandbox: sandbox_config(&o, &env, quota).await?,
        allow_source_builds: o.allow_source_builds,
    };
    let envs = Environments {
        active: "default".into(),
        info: env,
        named: named_envs(&o)?,
    };
    if let Some(listen) = o.listen.clone() {
        let kernels = crate::serve::sessions::KernelSource::Local(Box::new(launcher));
        return serve_http(&o, &listen, workspace, kernels, settings, envs).await;
    }
    let kernel = KernelHandle::new(launcher, o.max_queue, spare);
    match env_problem {
        Some(reason) => kernel.set_env_error(Some(reason)),
        // Start the kernel while the client does the MCP handshake.
        None => kernel.warm_up(),
    }
    let server = Server::new(kernel.clone(), workspace, settings, envs);
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
                    kernel.set_env_error(Some(format!(
                        "the Python environment could not be created: {}",
                        pyenv::explain(&e)
                    )));
                }
            }
        });
    }
    run_stdio(server, kernel).await
}

/// The backend for `--existing` or `--gateway-url`, if one was asked for.
fn remote_backend(o: &Opts) -> anyhow::Result<Option<Arc<dyn crate::kernel::Backend>>> {
    if let Some(path) = &o.existing {
        anyhow::ensure!(
            path.is_file(),
            "--existing {}: no such connection file",
            path.display()
        );
        return Ok(Some(Arc::new(
            crate::kernel::existing::ExistingBackend::new(path.clone(), o.startup_timeout),
        )));
    }
    if let Some(url) = &o.gateway_url {
        let cfg = crate::kernel::gateway::GatewayConfig {
            url: url.clone(),
            token: o.gateway_token.clone().filter(|t| !t.is_empty()),
            kernel_name: o.kernel_name.clone(),
            startup_timeout: o.startup_timeout,
            reap_orphans: o.reap_orphans,
        };
        let backend = crate::kernel::gateway::GatewayBackend::new(cfg)?;
        return Ok(Some(Arc::new(backend)));
    }
    Ok(None)
}

/// Serves MCP on stdio until the client leaves or a signal arrives, then ends the kernel.
async fn run_stdio(server: Server, kernel: Arc<KernelHandle>) -> anyhow::Result<()> {
    // One session on stdio: MCP tasks map onto its runs.
    let server = server.with_tasks();
    // Requests a strict parser would drop silently get a clear error instead (see stdin_guard).
    let (stdin, stdout) = stdio();
    let transport = crate::stdin_guard::guard(stdin, stdout);
    let finisher = transport.finisher();
    let session = server.session().clone();
    let service = server.serve(transport).await;
    let outcome = match service {
        Ok(running) => {
            let stop = stop_signal()?;
            tokio::select! {
                r = running.waiting() => r.map(|reason| tracing::info!(?reason, "client disconnected")).map_err(anyhow::Error::from),
                name = stop => { tracing::info!("{name}: shutting down"); Ok(()) }
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
    // An orderly exit (stdin EOF, SIGTERM, SIGHUP) keeps the variables for the next server.
    match tokio::time::timeout(Duration::from_secs(120), session.snapshot_at_exit()).await {
        Ok(Some(Ok(s))) => tracing::info!("at exit: {s}"),
        Ok(Some(Err(e))) => tracing::warn!("at exit: no snapshot: {e}"),
        Ok(None) => {}
        Err(_) => tracing::warn!("at exit: the snapshot took over 120 s and was abandoned"),
    }
    kernel.shutdown().await;
    // Whatever the transport wrote last still reaches stdout.
    let _ = tokio::time::timeout(Duration::from_secs(1), finisher.finish()).await;
    outcome
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
    kernels: crate::serve::sessions::KernelSource,
    settings: Settings,
    envs: Environments,
) -> anyhow::Result<()> {
    use crate::serve::{http, sessions};
    let opts = http::HttpOptions {
        listen: listen_addr(listen).await?,
        token: bearer_token(o)?,
        allow_origins: o.allow_origin.clone(),
        max_body: o
            .max_body
            .0
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(usize::MAX),
    };
    opts.check()?;
    anyhow::ensure!(o.max_sessions > 0, "--max-sessions must be at least 1");
    let template = sessions::SessionTemplate {
        kernels: kernels.clone(),
        max_queue: o.max_queue,
        settings: settings.clone(),
        envs: envs.clone(),
        preload: !o.no_preload,
    };
    let limits = sessions::SessionLimits {
        max_sessions: o.max_sessions,
        idle_timeout: o.session_idle_timeout,
        shared_workspace: o.shared_workspace,
        spares: if o.no_spare { 0 } else { 1 },
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let bound = listener.local_addr()?;
    // The tool list comes from a server whose kernel is never started.
    let template_server = Server::new(
        kernels.handle(workspace.root(), o.max_queue)?,
        workspace.clone(),
        settings,
        envs,
    );
    let reg = sessions::Registry::new(template, workspace, limits);
    let front = crate::serve::front::Front::new(reg.clone(), template_server);
    tracing::info!(
        url = %format!("http://{bound}{}", http::MCP_PATH),
        auth = if opts.token.is_some() { "bearer token" } else { "none (loopback only)" },
        max_sessions = o.max_sessions,
        "serving MCP over Streamable HTTP"
    );
    let stop = async {
        match stop_signal() {
            Ok(signal) => {
                let name = signal.await;
                tracing::info!("{name}: shutting down");
            }
            Err(_) => {
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

/// The whole program: `src/main.rs` calls this and nothing else.
pub fn main() -> anyhow::Result<()> {
    tune_allocator();
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(crate::rich::svg::DRAW_ARG) {
        crate::rich::svg::draw_main();
    }
    if raw.get(1).map(String::as_str) == Some(crate::sandbox::HELPER_ARG) {
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
        crate::sandbox::helper_main(policy, argv);
    }
    let cli = Cli::parse();
    // The demo is an MCP client printing results; its own logs would only get in the way.
    init_logging(if matches!(cli.command, Some(Command::Demo)) {
        "warn"
    } else {
        "info,zeromq=error"
    });
    // One worker thread over stdio: one client's calls, and the kernel's messages for them,
    // form one chain of events, and a second worker mostly added cross-thread wake-ups (the
    // `bench -- --latency` steady state, five alternating runs each: `x + 1` through MCP
    // 1.128× the direct client with two workers, 1.069× with one; server CPU per call 640 ->
    // 560 µs). Blocking work has its own threads either way. Over HTTP many sessions run at
    // once: two workers.
    let workers = if cli.opts.listen.is_some() { 2 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match cli.command {
            None | Some(Command::Serve) => serve(cli.opts).await,
            Some(Command::Setup) => setup(cli.opts).await,
            Some(Command::Demo) => {
                let ws = cli.opts.workspace.clone();
                demo::run(&ws.unwrap_or_else(|| DEFAULT_WORKSPACE.into())).await
            }
        }
    });
    // The stdin reader sits in a blocking read that never returns on its own; do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cli::DiskQuota;
    use std::path::PathBuf;

    #[test]
    fn log_filters_ignore_blank_directives_and_refuse_span_filters() {
        use tracing::Level;
        assert!(matches!(super::log_filter(""), Ok(None)));
        assert!(matches!(super::log_filter(" , "), Ok(None)));
        let Ok(Some(t)) = super::log_filter("info, ") else {
            panic!("`info, ` did not parse")
        };
        assert!(t.would_enable("hyper", &Level::INFO));
        assert!(
            !t.would_enable("hyper", &Level::TRACE),
            "a blank directive enabled TRACE"
        );
        let Ok(Some(t)) = super::log_filter(" kernel_mcp=debug ,zeromq=error") else {
            panic!("directives did not parse")
        };
        assert!(t.would_enable("kernel_mcp::wire", &Level::DEBUG));
        assert!(!t.would_enable("zeromq", &Level::WARN));
        assert!(super::log_filter("kernel_mcp[span]=debug").is_err());
        assert!(super::log_filter("kernel_mcp=loud").is_err());
    }

    fn opts(args: &[&str]) -> Result<Opts, clap::Error> {
        Cli::try_parse_from(std::iter::once("kernel-mcp").chain(args.iter().copied()))
            .map(|c| c.opts)
    }

    #[test]
    fn bundle_flags_parse() -> Result<(), clap::Error> {
        assert!(!opts(&[])?.allow_network);
        assert!(opts(&["--allow-network"])?.allow_network);
        assert!(opts(&["--allow-network=true"])?.allow_network);
        assert!(!opts(&["--allow-network=false"])?.allow_network);
        assert!(opts(&["--allow-network=maybe"]).is_err());
        // The bundle's folder list: any number of folders after one flag, none included.
        let o = opts(&[
            "--workspace",
            "/w",
            "--allow-network=false",
            "--read-only-dirs",
        ])?;
        assert!(o.read_only_dirs.is_empty());
        let o = opts(&["--allow-read", "/a", "--read-only-dirs", "/b", "/c d"])?;
        assert_eq!(o.allow_read, vec![PathBuf::from("/a")]);
        assert_eq!(
            o.read_only_dirs,
            vec![PathBuf::from("/b"), PathBuf::from("/c d")]
        );
        assert_eq!(o.workspace, None);
        Ok(())
    }

    #[test]
    fn write_limits_refuse_sizes_no_kernel_could_start_with() -> Result<(), clap::Error> {
        for bad in ["1", "1M", "15M", "-5", "nan"] {
            assert!(opts(&["--disk-quota", bad]).is_err(), "--disk-quota {bad}");
            assert!(
                opts(&["--max-file-size", bad]).is_err(),
                "--max-file-size {bad}"
            );
        }
        assert_eq!(
            opts(&["--disk-quota", "0"])?.disk_quota,
            DiskQuota::Size(crate::limits::SizeLimit(None))
        );
        assert_eq!(opts(&["--disk-quota", "auto"])?.disk_quota, DiskQuota::Auto);
        assert_eq!(
            opts(&["--disk-quota", "16M"])?.disk_quota,
            DiskQuota::Size(crate::limits::SizeLimit(Some(16 << 20)))
        );
        assert_eq!(opts(&["--max-file-size", "0"])?.max_file_size.0, None);
        assert!(opts(&["--detached-cpu-limit", "99999999999999999999"]).is_err());
        assert_eq!(opts(&["--detached-cpu-limit", "0"])?.detached_cpu_limit, 0);
        Ok(())
    }
}
