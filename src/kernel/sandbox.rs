//! The launch helper: `kernel-mcp __kernel-launch [--policy JSON] -- <argv>` runs between the
//! server and the kernel. Single-threaded, it applies the OS sandbox to itself (Landlock, seccomp,
//! rlimits; inherited by the kernel and all it starts), then holds a lifeline pipe from the server
//! (its stdin) and kills the kernel's whole process group when that pipe closes.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// The hidden subcommand name.
pub const HELPER_ARG: &str = "__kernel-launch";

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// What the kernel may do. Built by the server, applied by the helper to itself before it starts the kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// Directories and files readable (and executable).
    pub read: Vec<PathBuf>,
    /// Directories and files readable and writable.
    pub write: Vec<PathBuf>,
    /// Allow network access.
    pub network: bool,
    /// TCP ports the kernel may bind (its own channels when the transport is tcp).
    pub bind_ports: Vec<u16>,
    /// Address-space limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Largest file the kernel may write, in bytes.
    pub file_size_bytes: Option<u64>,
    /// Most open files.
    pub open_files: Option<u64>,
    /// Fail instead of running with a partial sandbox.
    pub require: bool,
    /// Where to write the status report (JSON).
    pub status_file: Option<PathBuf>,
}

/// What the sandbox actually enforces on this machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// "fully enforced", "partially enforced" or "not enforced".
    pub landlock: String,
    /// Landlock ABI in use (0 when unavailable).
    pub landlock_abi: i32,
    /// Filesystem rule summary.
    pub filesystem: String,
    /// Network rule summary.
    pub network: String,
    /// Signal and abstract-socket scoping.
    pub scoping: String,
    /// seccomp summary.
    pub seccomp: String,
    /// rlimits applied.
    pub limits: String,
    /// Problems met while applying the sandbox.
    pub warnings: Vec<String>,
}

impl Status {
    /// One line for logs and reports.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "landlock {} (ABI {}); filesystem: {}; network: {}; scoping: {}; seccomp: {}; limits: {}",
            self.landlock, self.landlock_abi, self.filesystem, self.network, self.scoping, self.seccomp, self.limits
        );
        if !self.warnings.is_empty() {
            s.push_str(&format!("; WARNINGS: {}", self.warnings.join(" | ")));
        }
        s
    }

    /// True when every layer asked for is in force.
    pub fn complete(&self) -> bool {
        self.landlock == "fully enforced" && self.warnings.is_empty()
    }
}

fn abi_number(abi: landlock::ABI) -> i32 {
    use landlock::ABI;
    match abi {
        ABI::Unsupported => 0,
        ABI::V1 => 1,
        ABI::V2 => 2,
        ABI::V3 => 3,
        ABI::V4 => 4,
        ABI::V5 => 5,
        ABI::V6 => 6,
        ABI::V7 => 7,
        ABI::V8 => 8,
        _ => 9,
    }
}

fn apply_landlock(p: &Policy, st: &mut Status) -> Result<(), String> {
    use landlock::{
        make_bitflags, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus,
        NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let e = |x: landlock::RulesetError| x.to_string();
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?;
    if !p.network {
        rs = rs.handle_access(AccessNet::from_all(abi)).map_err(e)?;
    }
    rs = rs
        .scope(make_bitflags!(Scope::{AbstractUnixSocket | Signal}))
        .map_err(e)?;
    let mut created = rs.create().map_err(e)?;
    let existing =
        |v: &[PathBuf]| -> Vec<PathBuf> { v.iter().filter(|p| p.exists()).cloned().collect() };
    created = created
        .add_rules(landlock::path_beneath_rules(
            existing(&p.read),
            AccessFs::from_read(abi),
        ))
        .map_err(e)?;
    created = created
        .add_rules(landlock::path_beneath_rules(
            existing(&p.write),
            AccessFs::from_all(abi),
        ))
        .map_err(e)?;
    if !p.network {
        for port in &p.bind_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::BindTcp))
                .map_err(e)?;
        }
    }
    let status = created.restrict_self().map_err(e)?;
    st.landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not enforced",
    }
    .into();
    st.landlock_abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => abi_number(effective_abi),
        _ => 0,
    };
    let n = st.landlock_abi;
    st.filesystem = if n >= 1 {
        format!(
            "read-only {} paths, read-write {} paths, all else denied",
            p.read.len(),
            p.write.len()
        )
    } else {
        "NOT RESTRICTED (Landlock unavailable)".into()
    };
    st.network = if p.network {
        "allowed (--allow-network)".into()
    } else if n >= 4 {
        "TCP connect/bind denied by Landlock".into()
    } else {
        "TCP NOT restricted by Landlock (ABI < 4)".into()
    };
    st.scoping = if n >= 6 {
        "signals and abstract unix sockets confined to the sandbox".into()
    } else {
        "NOT scoped (Landlock ABI < 6)".into()
    };
    if n == 0 {
        st.warnings.push(
            "Landlock is not available on this kernel: the filesystem is NOT restricted".into(),
        );
    } else if n < 4 && !p.network {
        st.warnings
            .push("Landlock ABI < 4: TCP is blocked by seccomp instead".into());
    }
    Ok(())
}

fn apply_seccomp(p: &Policy, tcp_blocked_by_landlock: bool, st: &mut Status) -> Result<(), String> {
    use nix::libc;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
        SeccompFilter, SeccompRule, TargetArch,
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))?;
    let e = |x: seccompiler::BackendError| x.to_string();
    let domain = |d: i32| Cond::new(0, Len::Dword, Op::Eq, d as u64).map_err(e);
    let kind = |t: i32| Cond::new(1, Len::Dword, Op::MaskedEq(0xf), t as u64).map_err(e);
    let mut socket_rules = Vec::new();
    if !p.network {
        // AF_NETLINK stays open: libzmq reads the interface list (getifaddrs) when it binds and
        // aborts the kernel if that fails. Netlink route sockets only read host network state.
        socket_rules.push(SeccompRule::new(vec![domain(libc::AF_PACKET)?]).map_err(e)?);
        for d in [libc::AF_INET, libc::AF_INET6] {
            if tcp_blocked_by_landlock {
                for t in [libc::SOCK_DGRAM, libc::SOCK_RAW] {
                    socket_rules.push(SeccompRule::new(vec![domain(d)?, kind(t)?]).map_err(e)?);
                }
            } else {
                socket_rules.push(SeccompRule::new(vec![domain(d)?]).map_err(e)?);
            }
        }
    }
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        std::collections::BTreeMap::new();
    if !socket_rules.is_empty() {
        rules.insert(libc::SYS_socket, socket_rules);
    }
    // io_uring can reach the network and files past seccomp's view of syscalls.
    for sc in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ] {
        rules.insert(sc, vec![]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(e)?;
    let prog: seccompiler::BpfProgram = filter.try_into().map_err(e)?;
    seccompiler::apply_filter(&prog).map_err(|x| x.to_string())?;
    st.seccomp = if p.network {
        "io_uring denied".into()
    } else if tcp_blocked_by_landlock {
        "UDP, raw and packet sockets and io_uring denied".into()
    } else {
        "all IP and packet sockets and io_uring denied".into()
    };
    Ok(())
}

fn apply_limits(p: &Policy, st: &mut Status) {
    use nix::sys::resource::{setrlimit, Resource};
    let mut applied = Vec::new();
    let mut set = |r: Resource, v: u64, name: &str| match setrlimit(r, v, v) {
        Ok(()) => applied.push(format!("{name}={v}")),
        Err(e) => st.warnings.push(format!("could not set {name}: {e}")),
    };
    if let Some(m) = p.memory_bytes {
        set(Resource::RLIMIT_AS, m, "address space");
    }
    if let Some(f) = p.file_size_bytes {
        set(Resource::RLIMIT_FSIZE, f, "file size");
    }
    if let Some(n) = p.open_files {
        set(Resource::RLIMIT_NOFILE, n, "open files");
    }
    set(Resource::RLIMIT_CORE, 0, "core dumps");
    st.limits = applied.join(", ");
}

/// Applies `policy` to the calling (single-threaded) process. Everything started afterwards inherits it.
pub fn apply(policy: &Policy) -> Status {
    let mut st = Status::default();
    if let Err(e) = apply_landlock(policy, &mut st) {
        st.landlock = "not enforced".into();
        st.warnings.push(format!("Landlock failed: {e}"));
    }
    let tcp_by_landlock = st.landlock_abi >= 4;
    if let Err(e) = apply_seccomp(policy, tcp_by_landlock, &mut st) {
        st.seccomp = "not applied".into();
        st.warnings.push(format!("seccomp failed: {e}"));
    }
    apply_limits(policy, &mut st);
    st
}

/// The read-only system locations every Python needs.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/dev",
    "/nix/store",
    "/run/current-system",
];

/// Files under /dev a kernel may also write.
pub const DEV_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/shm"];

impl Policy {
    /// The policy for a kernel: system and Python paths read-only; workspace and scratch read-write.
    pub fn for_kernel(
        python_paths: &[PathBuf],
        extra_read: &[PathBuf],
        workspace: &Path,
        scratch: &Path,
    ) -> Policy {
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.extend(python_paths.iter().cloned());
        read.extend(extra_read.iter().cloned());
        let mut write = vec![workspace.to_path_buf(), scratch.to_path_buf()];
        write.extend(DEV_WRITE.iter().map(PathBuf::from));
        Policy {
            read,
            write,
            ..Policy::default()
        }
    }
}

/// Kills every process of our process group and every descendant re-parented to us, repeating
/// until none is left (killing a process re-parents its children to us, the subreaper).
fn kill_descendants() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let me = nix::unistd::getpid().as_raw();
    let group = nix::unistd::getpgrp().as_raw();
    for _ in 0..100 {
        let mut found = false;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // Fields after the command name: state, ppid, pgrp, ...
                let Some((_, rest)) = stat.rsplit_once(") ") else {
                    continue;
                };
                let mut f = rest.split_whitespace();
                let state = f.next();
                let ppid = f.next().and_then(|v| v.parse::<i32>().ok());
                let pgrp = f.next().and_then(|v| v.parse::<i32>().ok());
                if state == Some("Z") {
                    continue;
                }
                if ppid == Some(me) || pgrp == Some(group) {
                    let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    found = true;
                }
            }
        }
        while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if st == WaitStatus::StillAlive {
                break;
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Checks, in a throwaway helper process, that every sandbox layer can be applied here.
pub fn probe(network: bool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tmp = std::env::temp_dir();
    let mut policy = Policy::for_kernel(&[], &[], &tmp, &tmp);
    policy.network = network;
    let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg(HELPER_ARG)
        .arg("--policy")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs the helper with the kernel's argv and never returns.
pub fn helper_main(policy: Option<&str>, argv: &[String]) -> ! {
    if let Some(json) = policy {
        let policy: Policy = match serde_json::from_str(json) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kernel-mcp helper: bad sandbox policy: {e}");
                std::process::exit(2);
            }
        };
        let status = apply(&policy);
        eprintln!("kernel-mcp sandbox: {}", status.summary());
        if let Some(f) = &policy.status_file {
            let _ = std::fs::write(f, serde_json::to_vec(&status).unwrap_or_default());
        }
        if policy.require && !status.complete() {
            eprintln!("kernel-mcp helper: --sandbox require: the sandbox is incomplete on this machine; refusing to start the kernel");
            std::process::exit(121);
        }
        if argv.is_empty() {
            // A probe: report and exit.
            std::process::exit(if status.complete() { 0 } else { 1 });
        }
    }
    let Some((program, args)) = argv.split_first() else {
        eprintln!("kernel-mcp helper: no kernel command given");
        std::process::exit(2);
    };
    // The server interrupts the kernel with SIGINT to our process group; the helper itself must
    // survive that. A handler (not SIG_IGN) is reset to the default on exec, so the kernel still
    // gets a normal SIGINT.
    let noop = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        let _ = signal::sigaction(Signal::SIGINT, &noop);
    }
    // As a subreaper, descendants that detach (setsid, double fork) are re-parented to us
    // instead of init, so the teardown below can still find and kill them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("kernel-mcp helper: could not become a subreaper: {e}");
    }
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: only prctl(2) runs between fork and exec. If the helper dies, the kernel dies.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kernel-mcp helper: could not start {program}: {e}");
            std::process::exit(127);
        }
    };
    // Lifeline: the server holds the write end of our stdin. EOF (or an error) means the server
    // is gone, so take the whole process group down, the kernel and everything it started.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        kill_descendants();
        std::process::exit(137);
    });
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kernel-mcp helper: wait failed: {e}");
            kill_descendants();
            std::process::exit(1);
        }
    };
    // The kernel is gone; nothing it started may outlive it.
    kill_descendants();
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    if let Some(sig) = status.signal() {
        // Die of the same signal so the server reports the kernel's real cause of death.
        if let Ok(s) = Signal::try_from(sig) {
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: restoring the default disposition is always sound.
            unsafe {
                let _ = signal::sigaction(s, &dfl);
            }
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = signal::kill(Pid::this(), s);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(1);
}
