//! The launch helper: `kernel-mcp __kernel-launch -- <argv>` runs single-threaded between the
//! server and the kernel. It holds a lifeline pipe from the server (its stdin) and kills the
//! kernel's whole process group when that pipe closes, however the server died.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// The hidden subcommand name.
pub const HELPER_ARG: &str = "__kernel-launch";

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// Runs the helper with the kernel's argv and never returns.
pub fn helper_main(argv: &[String]) -> ! {
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
        let _ = signal::killpg(nix::unistd::getpgrp(), Signal::SIGKILL);
        std::process::exit(137);
    });
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kernel-mcp helper: wait failed: {e}");
            std::process::exit(1);
        }
    };
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
