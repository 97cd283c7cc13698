//! The local backend: kernels started as child processes of this server, inside the OS sandbox,
//! with the managed (or a chosen) Python environment. Owns the process, its runtime dir and
//! its sandbox status; the protocol lives in `client`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::backend::{Channels, Gone, Lifecycle, Ownership};
use super::client::Kernel;
use super::connection::{ConnectionInfo, RuntimeDir, Transport};
use super::source::{Backend, BackendInfo, BackendKind};
use super::spec::{InterruptMode, KernelSpec};
use crate::error::KernelError;
use crate::process::{kernel_env, ExitCause, KernelProcess, LaunchCommand};
use crate::wire::message::ShutdownRequest;
use crate::wire::{Channel, Connection, Content, Message};

/// Everything needed to start a kernel locally.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    pub spec: KernelSpec,
    pub python: PathBuf,
    pub workspace: PathBuf,
    pub transport: Transport,
    pub startup_timeout: Duration,
    pub extra_env: BTreeMap<String, String>,
    /// The launch helper (this binary); `None` starts the kernel directly.
    pub helper: Option<PathBuf>,
    /// The OS sandbox (needs the helper); `None` runs the kernel unconfined.
    pub sandbox: Option<SandboxConfig>,
    /// Let install_package build source distributions where no sandbox can hold the build
    /// (`--allow-source-builds`); elsewhere installs run sandboxed or, with the sandbox off,
    /// as the user.
    pub allow_source_builds: bool,
}

/// Sandbox settings that do not change from one kernel to the next.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// Paths the interpreter reads (from the environment probe).
    pub python_paths: Vec<PathBuf>,
    /// Extra read-only directories (`--allow-read`).
    pub extra_read: Vec<PathBuf>,
    pub network: bool,
    pub memory_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub require: bool,
    /// A prebuilt matplotlib font cache copied into each kernel's scratch config dir.
    pub mpl_cache: Option<PathBuf>,
    /// Try the Linux namespace layer (user, mount, PID, IPC, UTS, network).
    pub namespaces: bool,
    /// Why the namespace layer is off, when `namespaces` is false (said in the status).
    pub namespaces_off: Option<String>,
    /// Bytes the kernel may add to the workspace and its HOME (`--disk-quota`).
    pub disk_quota: Option<u64>,
    /// CPU seconds each process that leaves the kernel's session may use.
    pub detached_cpu_secs: Option<u64>,
    /// Size of each private tmpfs (HOME, /tmp, /dev/shm) under namespaces.
    pub tmpfs_bytes: u64,
    /// Most processes in the sandbox (namespaces only).
    pub processes: Option<u64>,
}

/// Set once the namespace layer failed to build on this machine: later kernels skip it.
static NAMESPACES_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts kernels as local child processes.
pub struct LocalBackend {
    launcher: StdMutex<LocalLauncher>,
}

impl LocalBackend {
    /// A backend that launches kernels with `launcher`.
    pub fn new(launcher: LocalLauncher) -> LocalBackend {
        LocalBackend {
            launcher: StdMutex::new(launcher),
        }
    }

    /// A copy of the launcher's settings.
    pub fn launcher(&self) -> Option<LocalLauncher> {
        self.launcher.lock().ok().map(|l| l.clone())
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn start(&self) -> Result<Kernel, KernelError> {
        let l = self.launcher().ok_or(KernelError::Unavailable {
            reason: crate::error::Unavailable::Poisoned,
        })?;
        start(&l).await
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Local,
            ownership: Ownership::Owned,
            target: None,
            kernel_name: self.launcher().map(|l| l.spec.display_name.clone()),
        }
    }

    fn python(&self) -> Option<PathBuf> {
        self.launcher().map(|l| l.python)
    }

    fn install_mode(&self) -> crate::sandbox::InstallMode {
        use crate::sandbox::{InstallMode, InstallerSandbox};
        let Some(l) = self.launcher() else {
            return InstallMode::WheelsOnly;
        };
        let Some(sb) = &l.sandbox else {
            // The user turned the sandbox off: installs run as the user, as before. Where
            // there is none to turn on, source builds wait for --allow-source-builds.
            return if crate::sandbox::UNAVAILABLE.is_some() && !l.allow_source_builds {
                InstallMode::WheelsOnly
            } else {
                InstallMode::Unconfined
            };
        };
        let helper = match &l.helper {
            Some(h) if cfg!(target_os = "linux") => h.clone(),
            _ if l.allow_source_builds => return InstallMode::Unconfined,
            _ => return InstallMode::WheelsOnly,
        };
        let bin = l.python.parent();
        let venv = bin
            .filter(|b| b.file_name().is_some_and(|n| n == "bin" || n == "Scripts"))
            .and_then(|b| b.parent())
            .filter(|root| root.join("pyvenv.cfg").is_file());
        let writable = match venv {
            Some(root) => vec![root.to_path_buf()],
            None => sb
                .python_paths
                .iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with("-packages"))
                })
                .cloned()
                .collect(),
        };
        let cache = crate::dirs::data_dir()
            .map(|d| d.join("install-cache"))
            .unwrap_or_else(|_| std::env::temp_dir().join("kernel-mcp-install-cache"));
        let extra_read = sb.extra_read.clone();
        InstallMode::Sandboxed(InstallerSandbox {
            helper,
            python_paths: sb.python_paths.clone(),
            extra_read,
            writable,
            cache,
            namespaces: sb.namespaces && NAMESPACES_FAILED.get().is_none(),
        })
    }

    fn set_python(&self, python: PathBuf, paths: Vec<PathBuf>) -> bool {
        if let Ok(mut l) = self.launcher.lock() {
            l.python = python;
            if let Some(sb) = l.sandbox.as_mut() {
                sb.python_paths = paths;
            }
        }
        true
    }

    fn sandboxed(&self) -> bool {
        self.launcher().is_some_and(|l| l.sandbox.is_some())
    }

    fn interpreter_is_local(&self) -> bool {
        true
    }
}

/// A local kernel process: the process group, its runtime dir and what its sandbox enforces.
/// Field order is drop order: the process group dies, then the files go.
struct LocalProcess {
    process: KernelProcess,
    runtime: RuntimeDir,
    sandbox: Option<crate::sandbox::Status>,
    interrupt_mode: InterruptMode,
}

#[async_trait]
impl Lifecycle for LocalProcess {
    async fn gone(&self) -> Gone {
        Gone::Exited(self.process.wait().await)
    }

    fn is_gone(&self) -> Option<Gone> {
        self.process.exited().map(Gone::Exited)
    }

    async fn interrupt(&self, chan: &dyn Channels) {
        match self.interrupt_mode {
            InterruptMode::Signal => {
                tracing::debug!(
                    pid = self.process.pid(),
                    "interrupting the kernel with SIGINT"
                );
                self.process.interrupt();
            }
            InterruptMode::Message => {
                tracing::debug!(
                    pid = self.process.pid(),
                    "interrupting the kernel with interrupt_request (interrupt_mode message)"
                );
                let msg = Message::request(chan.session(), Content::InterruptRequest);
                if let Err(e) = chan.send(Channel::Control, &msg).await {
                    tracing::warn!(error = %e, "interrupt_request failed; sending SIGINT");
                    self.process.interrupt();
                }
            }
        }
    }

    fn kill(&self) {
        self.process.kill();
    }

    async fn shutdown(&self, chan: &dyn Channels) {
        if self.process.exited().is_none() {
            let msg = Message::request(
                chan.session(),
                Content::ShutdownRequest(ShutdownRequest { restart: false }),
            );
            if let Ok(mut sub) = chan.subscribe(&msg.header.msg_id) {
                if chan.send(Channel::Control, &msg).await.is_ok() {
                    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
                        while let Ok(m) = sub.recv().await {
                            if matches!(m.message.content, Content::ShutdownReply(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
            }
            if self
                .process
                .wait_for(Duration::from_secs(2))
                .await
                .is_none()
            {
                tracing::warn!(
                    pid = self.process.pid(),
                    "kernel did not exit after shutdown_request; killing"
                );
            }
        }
        self.process.kill();
        self.runtime.remove_now();
    }

    fn pid(&self) -> Option<i32> {
        Some(self.process.pid())
    }

    fn stderr_hint(&self) -> String {
        self.process.stderr_hint()
    }

    fn sandbox(&self) -> Option<&crate::sandbox::Status> {
        self.sandbox.as_ref()
    }
}

/// Spawns a kernel (inside the sandbox when configured) and completes the handshake.
pub async fn start(l: &LocalLauncher) -> Result<Kernel, KernelError> {
    let started = Instant::now();
    let runtime = RuntimeDir::create()?;
    let info = ConnectionInfo::new(l.transport, runtime.path())?;
    let conn_file = runtime.path().join("kernel.json");
    info.write(&conn_file)?;
    let mut env = kernel_env(&l.spec.env, &l.python);
    env.extend(l.extra_env.clone());
    let mut argv = l.spec.expand_argv(&l.python, &conn_file);
    let status_file = runtime.path().join("sandbox.json");
    let mut ns_on = false;
    if let (Some(sb), Some(_)) = (&l.sandbox, &l.helper) {
        let scratch = runtime.path().join("home");
        for sub in ["", "tmp", "ipython", "mpl", "cache", "config"] {
            let _ = std::fs::create_dir_all(scratch.join(sub));
        }
        if let Some(cache) = &sb.mpl_cache {
            copy_font_cache(cache, &scratch.join("mpl"));
        }
        let s = |p: &str| scratch.join(p).to_string_lossy().into_owned();
        env.insert("HOME".into(), s(""));
        env.insert("TMPDIR".into(), s("tmp"));
        env.insert("IPYTHONDIR".into(), s("ipython"));
        env.insert("MPLCONFIGDIR".into(), s("mpl"));
        env.insert("XDG_CACHE_HOME".into(), s("cache"));
        env.insert("XDG_CONFIG_HOME".into(), s("config"));
        env.insert("PYTHONNOUSERSITE".into(), "1".into());
        // Read by the start-up code: `%pip install` points to install_package instead.
        env.insert("KERNEL_MCP_SANDBOX".into(), "1".into());
        let mut policy = crate::sandbox::Policy::for_kernel(
            &sb.python_paths,
            &sb.extra_read,
            &l.workspace,
            runtime.path(),
        );
        policy.network = sb.network;
        // Linux counts what is used (resident memory, all processes together): an
        // address-space cap kills runtimes that reserve large ranges and use little (V8 behind
        // vl-convert/Altair, a JVM). Elsewhere the address-space cap per process stays.
        if cfg!(target_os = "linux") {
            policy.resident_bytes = sb.memory_bytes;
        } else {
            policy.memory_bytes = sb.memory_bytes;
        }
        policy.file_size_bytes = sb.file_size_bytes;
        policy.open_files = Some(4096);
        policy.require = sb.require;
        policy.status_file = Some(status_file.clone());
        let failed = NAMESPACES_FAILED.get();
        if sb.namespaces && failed.is_none() {
            policy.namespaces = Some(crate::sandbox::NsPolicy {
                runtime: runtime.path().to_path_buf(),
                scratch: scratch.clone(),
                tmpfs_bytes: sb.tmpfs_bytes.max(16 << 20),
                // The server must reach a tcp kernel's ports on the host's loopback.
                private_network: !sb.network && info.transport != Transport::Tcp,
            });
        } else {
            policy.namespaces_off = failed
                .map(|why| format!("they failed to build here: {why}"))
                .or_else(|| sb.namespaces_off.clone());
        }
        ns_on = policy.namespaces.is_some();
        policy.disk_quota = sb.disk_quota;
        // Everywhere the kernel can write: the workspace, its runtime dir (HOME is inside), and
        // with namespaces its private /tmp and /dev/shm (the watch runs inside them).
        policy.quota_paths = vec![l.workspace.clone(), runtime.path().to_path_buf()];
        if ns_on {
            policy
                .quota_paths
                .extend([PathBuf::from("/tmp"), PathBuf::from("/dev/shm")]);
        }
        policy.detached_cpu_secs = sb.detached_cpu_secs;
        policy.processes = sb.processes;
        if info.transport == Transport::Tcp {
            policy.bind_ports = vec![
                info.shell_port,
                info.iopub_port,
                info.stdin_port,
                info.control_port,
                info.hb_port,
            ];
        }
        let json =
            serde_json::to_string(&policy).map_err(|e| KernelError::Protocol(e.to_string()))?;
        argv = ["--policy".to_owned(), json, "--".to_owned()]
            .into_iter()
            .chain(argv)
            .collect();
    }
    let cmd = LaunchCommand {
        argv,
        cwd: l.workspace.clone(),
        env,
        helper: l.helper.clone(),
    };
    let process = KernelProcess::spawn(&cmd)?;
    let deadline = started + l.startup_timeout;
    let died = |cause: ExitCause, process: &KernelProcess| KernelError::Unavailable {
        reason: crate::error::Unavailable::StartupExit {
            cause,
            stderr: process.stderr_hint(),
        },
    };
    let endpoints = info.endpoints();
    let conn = tokio::select! {
        c = Connection::open(&endpoints, crate::wire::Signer::new(info.key.as_bytes()), l.startup_timeout) => c?,
        cause = process.wait() => {
            if ns_on && matches!(cause, ExitCause::Code(crate::sandbox::NS_SETUP_FAILED)) {
                let why = process.stderr_hint();
                tracing::warn!(why = %why, "the sandbox's namespaces failed to build; starting without them");
                let why = match why.trim() {
                    "" => "see the server log".to_owned(),
                    w => w.to_owned(),
                };
                let _ = NAMESPACES_FAILED.set(why);
                return Box::pin(start(l)).await;
            }
            return Err(died(cause, &process));
        }
    };
    let sandbox = std::fs::read(&status_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::sandbox::Status>(&b).ok());
    match &sandbox {
        Some(st) if st.complete() => tracing::info!(sandbox = %st.summary(), "kernel sandbox"),
        Some(st) => tracing::warn!(sandbox = %st.summary(), "kernel sandbox is INCOMPLETE"),
        None if l.sandbox.is_some() => tracing::warn!("kernel sandbox status unknown"),
        None => {}
    }
    let life = LocalProcess {
        process,
        runtime,
        sandbox,
        interrupt_mode: l.spec.interrupt_mode,
    };
    let stderr = life.process.stderr_source();
    let hint = move || stderr.hint();
    Kernel::connect(Arc::new(conn), Box::new(life), started, deadline, &hint).await
}

/// Copies matplotlib's prebuilt font list into a fresh config dir, so the first plot in a new
/// kernel does not rebuild it (about a second).
fn copy_font_cache(from: &std::path::Path, to: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("fontlist") {
            let _ = std::fs::copy(e.path(), to.join(name));
        }
    }
}
