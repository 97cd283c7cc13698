//! Windows process-tree lifetime and interrupts: the kernel is put in a Job Object with
//! KILL_ON_JOB_CLOSE (closing our handle, also when the server dies, kills the whole tree), and
//! interrupted through ipykernel's JPY_INTERRUPT_EVENT, an inheritable event handle. A kernel
//! that ignores the event is killed after the grace period (KernelHandle's usual fallback).

use std::process::ExitStatus;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, TRUE};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent};

use super::ExitCause;

/// Variables Python needs on Windows besides the common allow-list.
pub(super) const ENV_ALLOW: &[&str] = &[
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "USERNAME",
    "HOMEDRIVE",
    "HOMEPATH",
    "APPDATA",
    "LOCALAPPDATA",
    "PROGRAMDATA",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
];

/// Separator of PATH entries.
pub(super) const PATH_SEP: char = ';';

/// PATH when the server has none.
pub(super) const DEFAULT_PATH: &str = "";

/// An owned Win32 handle, kept as an integer so the tree is Send and Sync.
#[derive(Debug)]
struct Owned(isize);

impl Owned {
    fn new(h: HANDLE) -> Option<Owned> {
        (!h.is_null()).then_some(Owned(h as isize))
    }

    fn raw(&self) -> HANDLE {
        self.0 as HANDLE
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle is owned by this value and closed exactly once.
        unsafe {
            CloseHandle(self.raw());
        }
    }
}

/// The interrupt event, created before the spawn so the kernel inherits it.
pub(super) struct Pending {
    event: Option<Owned>,
}

/// The kernel's process tree: its Job Object and its interrupt event.
#[derive(Debug)]
pub(super) struct Tree {
    job: Option<Owned>,
    event: Option<Owned>,
}

/// Creates the inheritable interrupt event and names it in the child's environment.
pub(super) fn prepare(c: &mut tokio::process::Command, _helper: bool) -> std::io::Result<Pending> {
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: std::ptr::null_mut(),
        bInheritHandle: TRUE,
    };
    // SAFETY: `sa` outlives the call; an auto-reset, initially unsignalled, unnamed event, as
    // ipykernel's own ParentPollerWindows expects.
    let event = Owned::new(unsafe { CreateEventW(&sa, 0, 0, std::ptr::null()) });
    match &event {
        Some(e) => {
            c.env("JPY_INTERRUPT_EVENT", e.0.to_string());
        }
        None => tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "no interrupt event: interrupts will kill the kernel after the grace period"
        ),
    }
    Ok(Pending { event })
}

impl Pending {
    /// Puts the spawned child in a new Job Object that kills it, and all it starts, on close.
    /// (A process the child starts before this runs is not in the job; Python's start-up takes
    /// far longer than this call.)
    pub(super) fn adopt(self, _pid: i32, child: &tokio::process::Child) -> std::io::Result<Tree> {
        // SAFETY: plain Win32 calls on handles we own; the struct is fully initialized.
        let job = unsafe {
            let Some(job) = Owned::new(CreateJobObjectW(std::ptr::null(), std::ptr::null())) else {
                return Err(std::io::Error::last_os_error());
            };
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            if SetInformationJobObject(
                job.raw(),
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            ) == 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let Some(process) = child.raw_handle() else {
                return Err(std::io::Error::other("the kernel exited at once"));
            };
            if AssignProcessToJobObject(job.raw(), process as HANDLE) == 0 {
                return Err(std::io::Error::last_os_error());
            }
            job
        };
        Ok(Tree {
            job: Some(job),
            event: self.event,
        })
    }
}

impl Tree {
    /// Signals the kernel's interrupt event (ipykernel raises KeyboardInterrupt).
    pub(super) fn interrupt(&self) {
        match &self.event {
            // SAFETY: the event handle is owned and open.
            Some(e) => unsafe {
                if SetEvent(e.raw()) == 0 {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "SetEvent failed");
                }
            },
            None => tracing::debug!("no interrupt event; waiting for the kill fallback"),
        }
    }

    /// Kills every process in the job.
    pub(super) fn kill(&self) {
        if let Some(j) = &self.job {
            // SAFETY: the job handle is owned and open.
            unsafe {
                TerminateJobObject(j.raw(), 1);
            }
        }
    }
}

/// Why a child ended (Windows has exit codes only).
pub(super) fn exit_cause(status: ExitStatus) -> ExitCause {
    match status.code() {
        Some(c) => ExitCause::Code(c),
        None => ExitCause::Unknown(status.to_string()),
    }
}

/// Windows has no signals; the number is only echoed.
pub(super) fn signal_name(_sig: i32) -> &'static str {
    "unknown"
}
