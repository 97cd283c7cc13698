//! Unix process-tree lifetime and interrupts: the kernel (or its helper) leads its own process
//! group; interrupts are SIGINT to the group, kills SIGKILL to the group. On Linux a kernel
//! started without the helper also gets PDEATHSIG.

use std::process::ExitStatus;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::ExitCause;

/// Variables the kernel needs on this platform besides the common allow-list.
pub(super) const ENV_ALLOW: &[&str] = &[];

/// Separator of PATH entries.
pub(super) const PATH_SEP: char = ':';

/// PATH when the server has none.
pub(super) const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// Settings applied before the spawn; `adopt` turns them into a `Tree`.
pub(super) struct Pending;

/// The kernel's process tree: its process group.
#[derive(Debug)]
pub(super) struct Tree {
    pgid: i32,
}

/// Puts the child in a new process group (and, on Linux without the helper, gives it PDEATHSIG).
pub(super) fn prepare(c: &mut tokio::process::Command, helper: bool) -> std::io::Result<Pending> {
    c.process_group(0);
    #[cfg(target_os = "linux")]
    if !helper {
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe. PDEATHSIG kills the kernel if the server thread that spawned it
        // dies. With the helper, its lifeline pipe does this for the whole process group.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = helper;
    Ok(Pending)
}

impl Pending {
    /// The tree of the spawned child `pid` (the leader of its group).
    pub(super) fn adopt(self, pid: i32, _child: &tokio::process::Child) -> std::io::Result<Tree> {
        Ok(Tree { pgid: pid })
    }
}

impl Tree {
    /// Sends SIGINT to the kernel's process group (interrupt_mode `signal`).
    pub(super) fn interrupt(&self) {
        if let Err(e) = killpg(Pid::from_raw(self.pgid), Signal::SIGINT) {
            tracing::debug!(pid = self.pgid, error = %e, "SIGINT failed");
        }
    }

    /// Kills the whole process group.
    pub(super) fn kill(&self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }
}

/// Why a child ended.
pub(super) fn exit_cause(status: ExitStatus) -> ExitCause {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCause::Code(c),
        (None, Some(s)) => ExitCause::Signal(s),
        _ => ExitCause::Unknown(status.to_string()),
    }
}

/// The signal's name, e.g. "SIGKILL".
pub(super) fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown")
}
