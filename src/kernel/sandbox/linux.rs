//! Linux: Landlock (filesystem, TCP, signal and abstract-socket scoping), seccomp (other
//! sockets, io_uring) and rlimits, applied by the single-threaded helper to itself. Lifetime: the
//! helper is a subreaper, the kernel gets PDEATHSIG, and teardown walks /proc.

use std::path::PathBuf;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::unix::{apply_limits, supervise as supervise_unix, Hooks};
use super::{Policy, Status, LINUX_MECHANISM};

/// The helper applies the sandbox to itself before it starts the kernel.
pub(super) const USES_HELPER: bool = true;

/// Linux always has a sandbox (how much of it depends on the kernel's Landlock ABI).
pub(super) const UNAVAILABLE: Option<&str> = None;

/// The read-only system locations every Python needs.
pub(super) const SYSTEM_READ: &[&str] = &[
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
pub(super) const DEV_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/shm"];

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

/// Applies `policy` to the calling (single-threaded) process. Everything started afterwards
/// inherits it, so the kernel's argv needs no prefix.
pub(super) fn apply(policy: &Policy) -> (Status, Vec<String>) {
    let mut st = Status {
        mechanism: LINUX_MECHANISM.into(),
        ..Status::default()
    };
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
    st.enforced = st.landlock == "fully enforced";
    (st, Vec::new())
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

fn become_subreaper() {
    // As a subreaper, descendants that detach (setsid, double fork) are re-parented to us
    // instead of init, so the teardown can still find and kill them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("kernel-mcp helper: could not become a subreaper: {e}");
    }
}

fn die_with_helper() -> std::io::Result<()> {
    // Only prctl(2) runs between fork and exec. If the helper dies, the kernel dies.
    nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)
}

/// Starts the kernel and supervises it; never returns.
pub(super) fn supervise(argv: &[String]) -> ! {
    supervise_unix(
        argv,
        &Hooks {
            before_spawn: become_subreaper,
            in_child: Some(die_with_helper),
            kill_descendants,
        },
    )
}
