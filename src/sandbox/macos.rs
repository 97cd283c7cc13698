//! macOS: a Seatbelt profile generated from the policy (seatbelt.rs) and applied by starting
//! the kernel through `sandbox-exec -p`, plus rlimits. Lifetime: the lifeline pipe and the
//! helper's process group (no PDEATHSIG or subreaper here): teardown kills the group and the
//! helper's children. A descendant that leaves the group and re-parents to launchd escapes.

use std::path::{Path, PathBuf};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::unix::{apply_limits, supervise as supervise_unix, Hooks};
use super::{seatbelt, Policy, Status};

/// The helper wraps the kernel's argv in `sandbox-exec`.
pub(super) const USES_HELPER: bool = true;

/// Seatbelt is available on every supported macOS.
pub(super) const UNAVAILABLE: Option<&str> = None;

const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";

/// The read-only system locations every Python needs: the OS, Command Line Tools, python.org's
/// framework builds, Homebrew, MacPorts, time zones; and the Chrome or Chromium app bundle that
/// plotly (kaleido) and Bokeh draw charts with (an app bundle holds no user data).
pub(super) const SYSTEM_READ: &[&str] = &[
    "/Applications/Google Chrome.app",
    "/Applications/Chromium.app",
    "/usr",
    "/bin",
    "/sbin",
    "/System",
    "/Library/Frameworks",
    "/Library/Developer/CommandLineTools",
    "/Applications/Xcode.app/Contents/Developer",
    "/private/etc",
    "/private/var/db/timezone",
    "/opt/homebrew",
    "/opt/local",
    "/dev",
];

/// Device files a kernel may also write.
pub(super) const DEV_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/dtracehelper"];

/// Seatbelt matches real paths (`/tmp` is `/private/tmp`); missing paths are dropped, as on Linux.
fn resolved(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect()
}

fn real_home() -> Option<PathBuf> {
    // The kernel's HOME is its scratch dir; ask the user database for the real one.
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
    std::fs::canonicalize(&user.dir).ok()
}

/// Sets the rlimits on the helper and returns the `sandbox-exec` prefix for the kernel's argv.
pub(super) fn apply(policy: &Policy) -> (Status, Vec<String>) {
    let mut st = Status {
        mechanism: "seatbelt".into(),
        ..Status::default()
    };
    // macOS does not enforce RLIMIT_AS, and lowering it can fail: it is not claimed.
    let limits = Policy {
        memory_bytes: None,
        ..policy.clone()
    };
    apply_limits(&limits, &mut st);
    if policy.memory_bytes.is_some() {
        st.limits
            .push_str(" (no address-space limit: macOS does not enforce RLIMIT_AS)");
    }
    if !Path::new(SANDBOX_EXEC).exists() {
        st.filesystem = "NOT RESTRICTED (sandbox-exec missing)".into();
        st.network = "NOT RESTRICTED".into();
        st.warnings.push(format!(
            "{SANDBOX_EXEC} not found: the kernel runs unconfined"
        ));
        return (st, Vec::new());
    }
    let real = Policy {
        read: resolved(&policy.read),
        write: resolved(&policy.write),
        ..policy.clone()
    };
    let text = seatbelt::profile(&real, real_home().as_deref());
    st.filesystem = format!(
        "read-only {} paths, read-write {} paths, secrets (~/.ssh, keychains) and other apps' data denied, all else denied",
        real.read.len(),
        real.write.len()
    );
    st.network = if policy.network {
        "allowed (--allow-network)".into()
    } else {
        "denied by Seatbelt except the kernel's own channels".into()
    };
    st.scoping = "signals confined to the sandbox".into();
    st.enforced = true;
    (st, vec![SANDBOX_EXEC.into(), "-p".into(), text])
}

/// Up to 4096 pids from one libproc listing call.
fn list(f: impl Fn(*mut nix::libc::c_void, nix::libc::c_int) -> nix::libc::c_int) -> Vec<i32> {
    let mut buf = vec![0i32; 4096];
    let bytes = i32::try_from(buf.len() * std::mem::size_of::<i32>()).unwrap_or(i32::MAX);
    let n = f(buf.as_mut_ptr().cast(), bytes);
    let n = usize::try_from(n).unwrap_or(0).min(buf.len());
    buf.truncate(n);
    buf.retain(|&p| p > 0);
    buf
}

/// Kills every process of our process group and every child of ours, until none is left.
fn kill_descendants() {
    super::unix::kill_until_none_left(|me, group| {
        // SAFETY: each call writes at most `bytes` bytes into the buffer `list` owns.
        let mut pids = list(|b, n| unsafe { nix::libc::proc_listpgrppids(group, b, n) });
        pids.extend(list(|b, n| unsafe {
            nix::libc::proc_listchildpids(me, b, n)
        }));
        let mut found = false;
        for pid in pids.into_iter().filter(|&p| p != me) {
            if signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                found = true;
            }
        }
        found
    });
}

fn nothing() {}

/// Starts the kernel and supervises it; never returns.
pub(super) fn supervise(argv: &[String], _policy: Option<&Policy>) -> ! {
    supervise_unix(
        argv,
        Hooks {
            before_spawn: nothing,
            in_child: None,
            kill_descendants,
            after_spawn: None,
        },
    )
}
