//! What Linux and macOS helpers share: rlimits, and the supervisor that starts the kernel in
//! the helper's process group, holds the lifeline pipe (stdin) and tears the tree down.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use super::{Policy, Status};

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// Sets the policy's rlimits on the calling process (inherited by the kernel).
pub(super) fn apply_limits(p: &Policy, st: &mut Status) {
    use nix::sys::resource::{setrlimit, Resource};
    let mut applied = Vec::new();
    let mut set = |r: Resource, v: u64, name: &str| match setrlimit(r, v, v) {
        Ok(()) => applied.push(format!("{name}={v}")),
        Err(e) => st.warnings.push(format!("could not set {name}: {e}")),
    };
    if let Some(m) = p.memory_bytes {
        set(Resource::RLIMIT_AS, m, "address space");
    }
    // No single file may outgrow the disk quota either.
    if let Some(f) = file_size_limit(p) {
        set(Resource::RLIMIT_FSIZE, f, "file size");
    }
    if let Some(n) = p.open_files {
        set(Resource::RLIMIT_NOFILE, n, "open files");
    }
    set(Resource::RLIMIT_CORE, 0, "core dumps");
    st.limits = applied.join(", ");
}

/// The server interrupts the kernel with SIGINT to the whole process group; the helper's own
/// processes must survive that. A handler (not SIG_IGN) is reset to the default on exec, so the
/// kernel still gets a normal SIGINT.
pub(super) fn survive_sigint() {
    let noop = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        let _ = signal::sigaction(Signal::SIGINT, &noop);
    }
}

/// Ends this process by `sig` (no core dump), or, where that is not possible (PID 1 of a
/// namespace cannot die of a signal it sends itself), exits 128 + the signal's number.
pub(super) fn die_of(sig: Signal) -> ! {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default disposition is always sound.
    unsafe {
        let _ = signal::sigaction(sig, &dfl);
    }
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = signal::kill(Pid::this(), sig);
    std::process::exit(128 + sig as i32);
}

/// Kills what `kill_round` finds (it returns whether it signalled anything), reaps, and repeats
/// until a round finds nothing: killing a process re-parents its children, so the tree is
/// taken down level by level. Bounded at 100 rounds.
pub(super) fn kill_until_none_left(mut kill_round: impl FnMut(i32, i32) -> bool) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let me = nix::unistd::getpid().as_raw();
    let group = nix::unistd::getpgrp().as_raw();
    for _ in 0..100 {
        let found = kill_round(me, group);
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

/// Set by the watch when it stopped the kernel for the resident memory limit: the helper then
/// exits with [`super::MEMORY_LIMIT_EXIT`] rather than dying of the kernel's SIGKILL.
pub(super) static STOPPED_FOR_MEMORY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The largest file the kernel may write: the file-size limit, and never more than the quota.
pub(super) fn file_size_limit(p: &Policy) -> Option<u64> {
    match (p.file_size_bytes, p.disk_quota) {
        (Some(f), Some(q)) => Some(f.min(q)),
        (f, q) => f.or(q),
    }
}

/// The platform's part of supervising the kernel.
pub(super) struct Hooks {
    /// Runs in the helper before the kernel is spawned (Linux: become a subreaper).
    pub before_spawn: fn(),
    /// Runs in the child between fork and exec; must be async-signal-safe (Linux: PDEATHSIG).
    pub in_child: Option<fn() -> std::io::Result<()>>,
    /// Kills every process of the tree except the helper itself.
    pub kill_descendants: fn(),
    /// Runs once the kernel is running, with its pid (Linux: the quota and CPU watch).
    pub after_spawn: Option<Box<dyn FnOnce(i32) + Send>>,
}

/// How the kernel ended.
enum End {
    Code(i32),
    Signal(Signal),
}

/// Starts `argv`, then waits for the kernel or for the lifeline to close; never returns.
pub(super) fn supervise(argv: &[String], mut hooks: Hooks) -> ! {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("kernel-mcp helper: no kernel command given");
        std::process::exit(2);
    };
    survive_sigint();
    (hooks.before_spawn)();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    if let Some(f) = hooks.in_child {
        // SAFETY: the hook is async-signal-safe (its contract); it runs between fork and exec.
        unsafe {
            cmd.pre_exec(f);
        }
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kernel-mcp helper: could not start {program}: {e}");
            std::process::exit(127);
        }
    };
    // Lifeline: the server holds the write end of our stdin. EOF (or an error) means the server
    // is gone, so take the whole process tree down, the kernel and everything it started.
    let teardown = hooks.kill_descendants;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        teardown();
        std::process::exit(137);
    });
    let kernel = child.id() as i32;
    drop(child);
    if let Some(f) = hooks.after_spawn.take() {
        f(kernel);
    }
    // Reap every child, not just the kernel: as a subreaper (or PID 1 of a namespace) orphans
    // the kernel leaves are ours, and an unreaped one holds a process slot.
    let end = loop {
        use nix::sys::wait::{waitpid, WaitStatus};
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == kernel => break End::Code(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == kernel => {
                break End::Signal(sig)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("kernel-mcp helper: wait failed: {e}");
                teardown();
                std::process::exit(1);
            }
        }
    };
    // The kernel is gone; nothing it started may outlive it.
    teardown();
    match end {
        End::Code(code) => std::process::exit(code),
        End::Signal(_) if STOPPED_FOR_MEMORY.load(std::sync::atomic::Ordering::SeqCst) => {
            std::process::exit(super::MEMORY_LIMIT_EXIT)
        }
        // Die of the same signal so the server reports the kernel's real cause of death.
        End::Signal(s) => die_of(s),
    }
}
