//! Linux: Landlock (filesystem, TCP, signal and abstract-socket scoping), seccomp (other
//! sockets, io_uring) and rlimits, applied by the single-threaded helper to itself. Lifetime: the
//! helper is a subreaper, the kernel gets PDEATHSIG, and teardown walks /proc. The watch over
//! disk, memory and CPU that runs beside the kernel is in `watch.rs`.

use std::path::PathBuf;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::unix::{apply_limits, supervise as supervise_unix, Hooks};
use super::{namespaces, Policy, Status, LINUX_MECHANISM};

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

fn apply_landlock(
    p: &Policy,
    net_ns: bool,
    private_dev: bool,
    st: &mut Status,
) -> Result<(), String> {
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
    // In a network namespace of its own the kernel reaches nothing but its loopback, so TCP
    // stays open there: ipykernel binds its subprocess-output pipe on 127.0.0.1.
    let tcp_rules = !p.network && !net_ns;
    if tcp_rules {
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
    let mut write = existing(&p.write);
    if private_dev {
        // The sandbox's own devpts instance: ptys for `!shell` and `%pip`, none of the host's;
        // and its own /tmp, a private tmpfs the README promises is writable.
        write.extend(existing(&[
            PathBuf::from("/dev/pts"),
            PathBuf::from("/dev/ptmx"),
            PathBuf::from("/tmp"),
        ]));
    }
    created = created
        .add_rules(landlock::path_beneath_rules(write, AccessFs::from_all(abi)))
        .map_err(e)?;
    if private_dev {
        // Inside the namespaces the root holds only what the policy shows: listing folders
        // (`ls /`, `os.walk`) reveals nothing more. File contents stay per the rules above.
        created = created
            .add_rules(landlock::path_beneath_rules(
                [PathBuf::from("/")],
                AccessFs::ReadDir,
            ))
            .map_err(e)?;
    }
    if tcp_rules {
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
    } else if net_ns {
        "off: a network namespace with only its own loopback".into()
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
    } else if n < 4 && tcp_rules {
        st.warnings
            .push("Landlock ABI < 4: TCP is blocked by seccomp instead".into());
    }
    Ok(())
}

fn apply_seccomp(
    p: &Policy,
    tcp_blocked_by_landlock: bool,
    net_ns: bool,
    st: &mut Status,
) -> Result<(), String> {
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
    if net_ns {
        socket_rules.push(SeccompRule::new(vec![domain(libc::AF_PACKET)?]).map_err(e)?);
    } else if !p.network {
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
    // Address families a notebook has no use for are denied whatever the network setting:
    // AF_VSOCK (on a VM guest it reaches the hypervisor's services past any network
    // namespace), Bluetooth, AF_ALG, CAN, TIPC, RDS and the rest. Kept: unix, IPv4, IPv6 and
    // netlink (libzmq reads the interface list through it). AF_PACKET is not among them.
    let not = |d: i32| Cond::new(0, Len::Dword, Op::Ne, d as u64).map_err(e);
    socket_rules.push(
        SeccompRule::new(vec![
            not(libc::AF_UNIX)?,
            not(libc::AF_INET)?,
            not(libc::AF_INET6)?,
            not(libc::AF_NETLINK)?,
        ])
        .map_err(e)?,
    );
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        std::collections::BTreeMap::new();
    rules.insert(libc::SYS_socket, socket_rules);
    // io_uring can reach the network and files past seccomp's view of syscalls. The rest
    // would let kernel code inspect or steer other processes (ptrace, process_vm_*), change
    // the mount and namespace layout the sandbox is built of, or reach the kernel's attack
    // surface a notebook never needs (keyrings, bpf, perf, userfaultfd, modules, file handles).
    for sc in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_mount_setattr,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
    ] {
        rules.insert(sc, vec![]);
    }
    // clone(2) that makes namespaces (flags are its first argument on x86_64 and aarch64).
    let mut clone_rules = Vec::new();
    for flag in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ] {
        let f = flag as u64;
        clone_rules.push(
            SeccompRule::new(vec![
                Cond::new(0, Len::Qword, Op::MaskedEq(f), f).map_err(e)?
            ])
            .map_err(e)?,
        );
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // No setuid or setgid bit on anything the kernel creates or changes: the workspace is an
    // idmapped mount, so on the host a file it writes belongs to the folder's owner (root, for
    // a server run as root), and a setuid copy of a shell there would give any local user who
    // can reach the workspace that owner's rights (`nosuid` and `no_new_privs` only disarm the
    // bit inside the sandbox). Refused where the mode is set: chmod and its variants, and the
    // calls that create a file with a mode.
    let mut add_mode_rules = |sc: i64, arg: u8| -> Result<(), String> {
        let bits = |bit: u64| -> Result<SeccompRule, String> {
            SeccompRule::new(vec![
                Cond::new(arg, Len::Dword, Op::MaskedEq(bit), bit).map_err(e)?
            ])
            .map_err(e)
        };
        rules
            .entry(sc)
            .or_default()
            .extend([bits(libc::S_ISUID as u64)?, bits(libc::S_ISGID as u64)?]);
        Ok(())
    };
    /// fchmodat2(2) (Linux 6.6), the same number on every architecture.
    const SYS_FCHMODAT2: i64 = 452;
    add_mode_rules(libc::SYS_fchmod, 1)?;
    add_mode_rules(libc::SYS_fchmodat, 2)?;
    add_mode_rules(SYS_FCHMODAT2, 2)?;
    add_mode_rules(libc::SYS_openat, 3)?;
    add_mode_rules(libc::SYS_mknodat, 2)?;
    #[cfg(target_arch = "x86_64")]
    {
        add_mode_rules(libc::SYS_chmod, 1)?;
        add_mode_rules(libc::SYS_open, 2)?;
        add_mode_rules(libc::SYS_creat, 1)?;
        add_mode_rules(libc::SYS_mknod, 1)?;
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
    // clone3(2) passes its flags in memory seccomp cannot read: say it does not exist, and libc
    // falls back to clone(2), which the filter above sees.
    let mut c3 = std::collections::BTreeMap::new();
    c3.insert(libc::SYS_clone3, vec![]);
    // openat2(2) passes its mode in memory too (struct open_how): likewise, libc and Python
    // open files with openat(2), which the filter above sees.
    c3.insert(libc::SYS_openat2, vec![]);
    let filter = SeccompFilter::new(
        c3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(e)?;
    let prog: seccompiler::BpfProgram = filter.try_into().map_err(e)?;
    seccompiler::apply_filter(&prog).map_err(|x| x.to_string())?;
    let sockets = if p.network {
        ""
    } else if net_ns {
        "packet sockets, "
    } else if tcp_blocked_by_landlock {
        "UDP, raw and packet sockets, "
    } else {
        "all IP and packet sockets, "
    };
    st.seccomp = format!(
        "{sockets}address families other than unix, IP and netlink (vsock, ...), io_uring, ptrace, mount and namespace calls, bpf, perf, keyrings, setuid and setgid modes denied"
    );
    Ok(())
}

/// Applies `policy` to the calling (single-threaded) process. Everything started afterwards
/// inherits it, so the kernel's argv needs no prefix. With namespaces, this returns in PID 1 of
/// the new sandbox (the calling process stays outside and never returns).
pub(super) fn apply(policy: &Policy) -> (Status, Vec<String>) {
    let mut st = Status {
        mechanism: LINUX_MECHANISM.into(),
        ..Status::default()
    };
    let mut net_ns = false;
    let mut in_ns = false;
    match &policy.namespaces {
        Some(ns) => match namespaces::enter(policy, ns) {
            Ok(who) => {
                in_ns = true;
                net_ns = ns.private_network;
                st.namespaces = namespaces::describe(ns, &who);
                if let namespaces::Identity::HostRoot(why) = who {
                    st.warnings.push(format!(
                        "the server runs as root and the kernel keeps host root's uid (idmapped \
                         mounts are not available here: {why}): root-only files in the folders \
                         the sandbox shows stay readable to it"
                    ));
                }
            }
            Err(e) => {
                st.namespaces = format!("not available ({e})");
                st.warnings.push(format!(
                    "user namespaces are not available here ({e}): host processes, host UNIX \
                     sockets and the read-only system files stay visible to the kernel"
                ));
            }
        },
        None => {
            let why = policy
                .namespaces_off
                .clone()
                .unwrap_or_else(|| "not asked for".into());
            st.namespaces = format!("off ({why})");
            st.warnings.push(format!("namespace layer off: {why}"));
        }
    }
    if let Err(e) = apply_landlock(policy, net_ns, in_ns, &mut st) {
        st.landlock = "not enforced".into();
        st.warnings.push(format!("Landlock failed: {e}"));
    }
    let tcp_by_landlock = st.landlock_abi >= 4;
    if let Err(e) = apply_seccomp(policy, tcp_by_landlock, net_ns, &mut st) {
        st.seccomp = "not applied".into();
        st.warnings.push(format!("seccomp failed: {e}"));
    }
    apply_limits(policy, &mut st);
    if in_ns {
        if let Some(n) = policy.processes {
            // Counted per user namespace, so this bounds the sandbox, not the user's session.
            match nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, n, n) {
                Ok(()) => st.limits.push_str(&format!(", processes={n}")),
                Err(e) => st.warnings.push(format!("could not set processes: {e}")),
            }
        }
        namespaces::drop_capabilities();
    }
    st.quota = describe_watch(policy);
    st.enforced = st.landlock == "fully enforced" && (in_ns || policy.namespaces.is_none());
    (st, Vec::new())
}

fn describe_watch(p: &Policy) -> String {
    let mut parts = Vec::new();
    match p.disk_quota {
        Some(q) => parts.push(format!(
            "disk quota {} on what the kernel adds to the workspace and HOME",
            crate::limits::human_bytes(q)
        )),
        None => parts.push("no disk quota".to_owned()),
    }
    if let Some(c) = p.detached_cpu_secs {
        parts.push(format!("detached processes: {c} CPU seconds each"));
    }
    if let Some(m) = p.resident_bytes {
        parts.push(format!(
            "memory {} resident for all the kernel's processes together",
            crate::limits::human_bytes(m)
        ));
    }
    parts.join("; ")
}

/// Kills every process of our process group and every descendant re-parented to us, repeating
/// until none is left (killing a process re-parents its children to us, the subreaper).
fn kill_descendants() {
    super::unix::kill_until_none_left(|me, group| {
        let mut found = false;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                // Fields after the command name: state, ppid, pgrp, ...
                let Some(rest) = crate::pids::stat_after_name(pid) else {
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
        found
    });
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
pub(super) fn supervise(argv: &[String], policy: Option<&Policy>) -> ! {
    let watch = policy.and_then(super::watch::Watch::from_policy);
    supervise_unix(
        argv,
        Hooks {
            before_spawn: become_subreaper,
            in_child: Some(die_with_helper),
            kill_descendants,
            after_spawn: watch.map(|w| {
                Box::new(move |kernel: i32| {
                    std::thread::spawn(move || w.run(kernel));
                }) as Box<dyn FnOnce(i32) + Send>
            }),
        },
    )
}
