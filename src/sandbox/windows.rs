//! Windows: no OS sandbox for the kernel yet (said at start, in get_environment and in the
//! README). The server binds the kernel's process tree with a Job Object (process.rs), so
//! no launch helper runs; `supervise` exists only so a helper started by hand still works.

use super::{Policy, Status};

/// The server starts the kernel itself, inside a Job Object.
pub(super) const USES_HELPER: bool = false;

/// Said at start, in get_environment and in the README.
pub(super) const UNAVAILABLE: Option<&str> = Some(
    "Windows has no OS sandbox for the kernel yet: it runs with this user's full rights (network included); only the file tools are jailed to the workspace",
);

/// Nothing is confined, so nothing is listed.
pub(super) const SYSTEM_READ: &[&str] = &[];

/// Nothing is confined, so nothing is listed.
pub(super) const DEV_WRITE: &[&str] = &[];

/// Reports that nothing is enforced.
pub(super) fn apply(_policy: &Policy) -> (Status, Vec<String>) {
    let why = UNAVAILABLE.unwrap_or_default().to_owned();
    let st = Status {
        mechanism: "none".into(),
        filesystem: "NOT RESTRICTED".into(),
        network: "NOT RESTRICTED".into(),
        warnings: vec![why],
        ..Status::default()
    };
    (st, Vec::new())
}

/// Runs the kernel and exits with its exit code.
pub(super) fn supervise(argv: &[String], _policy: Option<&Policy>) -> ! {
    let Some((program, args)) = argv.split_first() else {
        std::process::exit(2);
    };
    match std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("kernel-mcp helper: could not start {program}: {e}");
            std::process::exit(127);
        }
    }
}
