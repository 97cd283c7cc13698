//! What each error reads as: the `Display` of the error types in `error.rs`. The types carry
//! typed facts and sit below every layer; their words are written here, beside the notices
//! (`render.rs`), so all the sentences the model reads are in one place. These impls are
//! found wherever an error is shown (`to_string`, `{e}`) without any layer importing `output`.
//! The HTTP transport's own errors (`serve/`) keep their words where they are: `serve` sits
//! above `output`, and wording them here would make `output` import it.

use std::fmt::{Display, Formatter, Result};

use crate::error::*;

impl Display for WireError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            WireError::NoDelimiter { frames } => write!(f, "message has no <IDS|MSG> delimiter ({frames} frames)"),
            WireError::TooFewFrames { frames } => write!(f, "message has {frames} frames after the delimiter, expected at least 5"),
            WireError::TooLarge { bytes, limit } => write!(f, "message of {bytes} bytes exceeds the {limit} byte limit"),
            WireError::TooMany { what, count, limit } => write!(f, "message has {count} {what}, more than the limit of {limit}"),
            WireError::Scheme { scheme } => write!(f, "signature scheme {scheme:?} is not supported (kernel-mcp speaks hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224)"),
            WireError::BadSignature => write!(f, "bad signature on message"),
            WireError::Json { part, source } => write!(f, "invalid json in {part}: {source}"),
            WireError::Content { msg_type, source } => write!(f, "content of {msg_type} does not match its schema: {source}"),
            WireError::Zmq { op, channel, source } => write!(f, "zeromq {op} on {channel} failed: {source}"),
            WireError::ConnectTimeout { channel } => write!(f, "timed out connecting to the kernel's {channel} channel"),
            WireError::ReaderGone { channel } => write!(f, "the {channel} reader has stopped; the connection to the kernel is gone"),
            WireError::Corrupt { reason } => write!(f, "{reason}; that connection is corrupt and was cut"),
            WireError::Framing(inner) => write!(f, "malformed {inner}"),
        }
    }
}

impl Display for KernelError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            KernelError::Wire(e) => Display::fmt(e, f),
            KernelError::Spec { path, reason } => {
                let path = path.display();
                write!(f, "kernel spec {path}: {reason}")
            }
            KernelError::Spawn { program, source } => write!(f, "could not start the kernel ({program}): {source}"),
            KernelError::Io { what, source } => write!(f, "{what}: {source}"),
            KernelError::StartTimeout { secs, detail } => write!(f, "the kernel did not answer kernel_info within {secs} s{detail}"),
            KernelError::Unavailable { reason } => write!(f, "kernel unavailable: {reason}"),
            KernelError::EnvironmentNotReady => write!(f, "kernel unavailable: the Python environment is being created (first run: ipykernel, numpy, pandas, matplotlib; about a minute); try again shortly. The file tools work meanwhile"),
            KernelError::Busy { waiting } => write!(f, "the kernel is busy: a call is running and {waiting} more already wait behind it, the most --max-queue allows; try again when one finishes"),
            KernelError::SilentTimeout { secs, freed: true } => write!(f, "kernel-mcp's helper code did not finish within {secs} s in the kernel (a value whose repr or attributes block, such as a lazy or remote proxy, can do this), so it was interrupted; the kernel and its variables are kept"),
            KernelError::SilentTimeout { secs, freed: false } => write!(f, "kernel-mcp's helper code did not finish within {secs} s in the kernel and did not stop when interrupted; the kernel is still busy with it: call interrupt_kernel, or restart_kernel if that does not help (its variables are then lost)"),
            KernelError::HelperFailed { ename, evalue } => {
                let evalue = crate::text::one_line(evalue);
                write!(f, "kernel-mcp's helper code raised {ename}{}{evalue} in the kernel (the session may have replaced a standard module or builtin); the kernel and its variables are fine", if evalue.is_empty() { "" } else { ": " })
            }
            KernelError::Protocol(inner) => write!(f, "the kernel sent an unexpected reply: {inner}"),
        }
    }
}

impl Display for Closing {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            Closing::ServerExit => write!(f, "the server is shutting down"),
            Closing::SessionEnded(SessionEnd::EndSession) => {
                write!(f, "this session was ended by end_session")
            }
            Closing::SessionEnded(SessionEnd::Deleted) => {
                write!(f, "this MCP session was ended by its client (HTTP DELETE)")
            }
            Closing::SessionEnded(SessionEnd::Idle) => write!(
                f,
                "this session was ended after --session-idle-timeout without a request"
            ),
            Closing::SessionEnded(SessionEnd::Evicted) => write!(
                f,
                "this session was ended to make room for a new one (--max-sessions)"
            ),
        }
    }
}

impl Display for Unavailable {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            Unavailable::Gateway(e) => Display::fmt(e, f),
            Unavailable::ConnectionFile(e) => Display::fmt(e, f),
            Unavailable::StartupExit { cause, stderr } => write!(f, "the kernel exited during start-up ({cause}){stderr}"),
            Unavailable::StartupLost { reason, stderr } => write!(f, "the kernel went away during start-up ({reason}){stderr}"),
            Unavailable::CrashLoop(inner) => Display::fmt(inner, f),
            Unavailable::DiedInCrashLoop { cause, looping } => write!(f, "the kernel had died since the last call ({cause}) and all variables were lost; {looping}"),
            Unavailable::BackingOff { last_error, secs } => write!(f, "{last_error}; the next start attempt is in {secs} s"),
            Unavailable::Detached { target, cause } => write!(f, "the kernel from {target} went away ({cause}); kernel-mcp does not own it and did not restart it. Start it again, then call restart_kernel to reconnect"),
            Unavailable::ShuttingDown(why) => Display::fmt(why, f),
            Unavailable::NotRunning => write!(f, "no kernel is running"),
            Unavailable::Cancelled => write!(f, "the call was cancelled while waiting for the kernel"),
            Unavailable::ConnectionLost { detail } => write!(f, "lost the connection to the kernel ({detail}); it was stopped, all variables were lost, and the next call starts a new kernel"),
            Unavailable::EndedDuringSilentCode { cause } => write!(f, "the kernel ended while kernel-mcp waited for it ({cause}); all variables were lost, and the next call starts a new kernel"),
            Unavailable::InterpreterNotOurs => write!(f, "this kernel's interpreter is chosen where the kernel runs, not by kernel-mcp"),
            Unavailable::Environment(inner) => Display::fmt(inner, f),
            Unavailable::Poisoned => write!(f, "launcher state is poisoned"),
            Unavailable::StartFailed(inner) => Display::fmt(inner, f),
            Unavailable::NoGateway => write!(f, "no gateway configured"),
        }
    }
}

impl Display for GatewayError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            GatewayError::BadUrl { url, why } => write!(f, "--gateway-url {url}: {why}"),
            GatewayError::BadPath { path, detail } => write!(f, "bad gateway path {path}: {detail}"),
            GatewayError::Unreachable { at, detail, certificate } => write!(f, "the Jupyter gateway at {at} is not reachable ({detail}); {}", if *certificate { "its TLS certificate is not trusted here: add the CA that signed it to the system's trust store, or point SSL_CERT_FILE at a PEM file holding it" } else { "is it running, and is --gateway-url right?" }),
            GatewayError::Refused { at, what, status } => write!(f, "the Jupyter gateway at {at} refused the request {what} (HTTP {status}); check the token (--gateway-token or JUPYTER_GATEWAY_AUTH_TOKEN)"),
            GatewayError::Status { at, what, status, snippet } => write!(f, "the Jupyter gateway at {at} answered HTTP {status} to {what}: {snippet}"),
            GatewayError::BadJson { at, what, detail } => write!(f, "the Jupyter gateway at {at} sent invalid JSON for {what}: {detail}"),
            GatewayError::NoKernelId { at } => write!(f, "the Jupyter gateway at {at} started a kernel but sent no id"),
            GatewayError::BadWebSocketUrl { at, detail } => write!(f, "bad WebSocket URL for {at}: {detail}"),
            GatewayError::WebSocketTimeout { at, secs } => write!(f, "the Jupyter gateway at {at} did not open the kernel's WebSocket within {secs} s"),
            GatewayError::WebSocketRefused { at, detail } => write!(f, "the Jupyter gateway at {at} refused the kernel's WebSocket ({detail}); check the token and that the gateway allows WebSocket connections"),
            GatewayError::Config(inner) => Display::fmt(inner, f),
        }
    }
}

impl Display for ConnectionFileError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            ConnectionFileError::TooLarge { path } => {
                let path = path.display();
                write!(f, "connection file {path} is larger than 64 KiB")
            }
            ConnectionFileError::Invalid {
                path,
                field,
                detail,
            } => {
                let path = path.display();
                write!(f, "connection file {path} is not a valid Jupyter connection file: `{field}`: {detail}")
            }
            ConnectionFileError::PortZero { path } => {
                let path = path.display();
                write!(
                    f,
                    "connection file {path} names port 0; the kernel has not bound its ports yet"
                )
            }
            ConnectionFileError::BadIp { path } => {
                let path = path.display();
                write!(f, "connection file {path} has an invalid ip")
            }
            ConnectionFileError::Unreadable { path, detail } => {
                let path = path.display();
                write!(f, "connection file {path}: {detail}")
            }
            ConnectionFileError::Unreachable { path, detail } => {
                let path = path.display();
                write!(
                    f,
                    "could not connect to the kernel of {path} ({detail}); is it running?"
                )
            }
        }
    }
}

impl Display for EnvError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            EnvError::BadInterpreter { path, reason } => {
                let path = path.display();
                write!(f, "python interpreter {path} not usable: {reason}")
            }
            EnvError::NoIpykernel { python } => write!(f, "ipykernel is not installed for {python}; fix: `{python} -m pip install ipykernel` (or run without --python to use the managed environment)"),
            EnvError::Create { path, reason } => {
                let path = path.display();
                write!(f, "could not create the managed environment at {path}: {reason}")
            }
            EnvError::Io { what, source } => write!(f, "{what}: {source}"),
            EnvError::NoDataDir => write!(f, "no home or data directory: set HOME, XDG_DATA_HOME or KERNEL_MCP_DATA_DIR"),
        }
    }
}

impl Display for WorkspaceError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        // A path may hold what kernel code named a file: shown on one line, its controls and
        // bidi marks visible.
        let shown = |p: &str| crate::text::one_line(p).into_owned();
        match self {
            WorkspaceError::BadPath(inner) => Display::fmt(inner, f),
            WorkspaceError::BadAnswer { what } => write!(f, "{what}"),
            WorkspaceError::Remote(inner) => Display::fmt(inner, f),
            WorkspaceError::Denied { path, reason } => write!(f, "{}: {reason}", shown(path)),
            WorkspaceError::NotFound { path } => {
                write!(f, "{}: not found in the workspace", shown(path))
            }
            WorkspaceError::NotRegular { path } => write!(f, "{}: not a regular file", shown(path)),
            WorkspaceError::IsDirectory { path } => write!(f, "{}: is a directory", shown(path)),
            WorkspaceError::TooLarge { what } => write!(f, "{what}"),
            WorkspaceError::Io { path, source } => write!(f, "{}: {source}", shown(path)),
        }
    }
}

impl Display for PackageError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            PackageError::BadSpec { spec, reason } => write!(f, "{spec:?}: {reason}"),
            PackageError::Protected { name } => write!(f, "{name} is part of the kernel's own machinery (the kernel runs on it); installing or upgrading it could break the running kernel, so it is refused"),
            PackageError::KernelClosure { touched } => write!(f, "{} {} part of what the kernel itself runs on (ipykernel and its dependencies); another version could stop every kernel in this environment from starting, so it is refused and the installed version stays", touched.join(", "), if touched.len() == 1 { "is" } else { "are" }),
            PackageError::Failed(inner) => write!(f, "installer failed: {inner}"),
            PackageError::Timeout { secs } => write!(f, "installer timed out after {secs} s and was killed"),
            PackageError::Spawn(inner) => write!(f, "could not run the installer: {inner}"),
        }
    }
}

impl Display for Refusal {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            Refusal::SaveToNotIpynb { path } => write!(f, "save_to {path}: a notebook path must end in .ipynb; nothing was run"),
            Refusal::ExportNotIpynb { path } => write!(f, "{path}: a notebook path must end in .ipynb, e.g. \"analysis.ipynb\""),
            Refusal::BadNotebook { path, detail } => write!(f, "{path}: {detail}; nothing was run"),
            Refusal::NotebookBuild(inner) => write!(f, "could not build the notebook: {inner}"),
            Refusal::FileTask(inner) => write!(f, "the file task failed: {inner}"),
            Refusal::NoRemoteKernel(inner) => write!(f, "the file tools act on the kernel's working directory on the gateway, and no kernel is available: {inner}"),
            Refusal::RemoteWriteTooLarge { bytes, max } => write!(f, "content is {bytes} bytes; at most {max} bytes can be written into a gateway kernel's folder per write_file call (one WebSocket message). Nothing was written; send the rest in further calls with append: true"),
            Refusal::RemoteNotebookTooLarge { path, bytes, max } => write!(f, "{path}: the notebook is {bytes} bytes; at most {max} bytes can be written into a gateway kernel's folder in one piece (it travels inside one WebSocket message)"),
            Refusal::BadTimeout(inner) => Display::fmt(inner, f),
            Refusal::NoSuchRun { id, latest } => write!(f, "there is no run {id} (runs are numbered from 1 in this session; the latest is {})", latest.map(|l| l.to_string()).unwrap_or_else(|| "none yet".into())),
            Refusal::NoRunYet => write!(f, "no run has been started in this session yet"),
            Refusal::KernelPackages { detail } => write!(f, "could not list the kernel's packages: {}", detail.as_deref().unwrap_or("unexpected answer from the kernel")),
            Refusal::InstalledPackages(inner) => write!(f, "could not list the installed packages: {inner}"),
            Refusal::NoPackageNames => write!(f, "packages is empty; pass a list of package names"),
            Refusal::NothingToInstall => write!(f, "packages is empty; pass a list of package names such as [\"tabulate\"]"),
            Refusal::TooManyPackages { given, max } => write!(f, "{given} packages given; install at most {max} per call"),
            Refusal::BadSpecs(inner) => write!(f, "nothing was installed: {}", inner.join("; ")),
            Refusal::BadPackageName(inner) => write!(f, "{inner:?} is not a package name (letters, digits, '-', '_' and '.' only)"),
            Refusal::TooManyNames { given, max } => write!(f, "{given} names given; check at most {max} per call"),
            Refusal::InstallFailed { error, renamed } => write!(f, "nothing was changed{renamed}: {error}"),
            Refusal::InstallIncomplete { error, renamed } => write!(f, "{error}{renamed}. Nothing may have been installed; try fewer packages, check the names, or start the server with a larger --install-timeout."),
        }
    }
}

impl Display for CrashLoop {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        write!(
            f,
            "the kernel is crash-looping: it failed or died {} times in the last {} s (last cause: {}); ",
            self.deaths, self.span_secs, self.last
        )?;
        match &self.next {
            Some((secs, at)) => write!(f, "the next start attempt is in {secs} s (at {at} UTC)"),
            None => write!(f, "the next call starts it again"),
        }
    }
}

impl Display for KernelAnswer {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        f.write_str(match self {
            KernelAnswer::Unreadable => "unexpected answer from the kernel",
            KernelAnswer::FileData => "the kernel sent unreadable file data",
            KernelAnswer::Image => "the kernel sent an unreadable image",
        })
    }
}

impl Display for crate::notebook::NotebookError {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        use crate::notebook::{NotebookError, MAX_CELLS};
        match self {
            NotebookError::Invalid(why) => write!(f, "not a Jupyter notebook: {why}"),
            NotebookError::Version(v) => write!(
                f,
                "nbformat {v} notebooks are not supported; save it as nbformat 4 (Jupyter 4 or later)"
            ),
            NotebookError::TooManyCells(n) => {
                write!(f, "the notebook has {n} cells; at most {MAX_CELLS} are read")
            }
        }
    }
}

impl Display for ExitCause {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        match self {
            ExitCause::Code(c) => write!(f, "exit code {c}"),
            ExitCause::Signal(s) => {
                let name = crate::process::signal_name(*s);
                let hint = match *s {
                    9 => ", possibly the out-of-memory killer",
                    11 => ", a segmentation fault",
                    6 => ", an abort",
                    _ => "",
                };
                write!(f, "killed by signal {s} ({name}{hint})")
            }
            ExitCause::MemoryLimit => write!(
                f,
                "stopped by the sandbox's memory limit (--memory-limit): the kernel's processes used more memory than allowed"
            ),
            ExitCause::Stopped => write!(f, "stopped by kernel-mcp"),
            ExitCause::Unknown(s) => write!(f, "{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ExitCause;
    use std::path::PathBuf;

    /// The typed reasons read as the sentences the model has always been given.
    #[test]
    fn typed_reasons_are_worded_as_before() {
        let e = KernelError::Unavailable {
            reason: Unavailable::StartupExit {
                cause: ExitCause::Code(1),
                stderr: "; kernel stderr: boom".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "kernel unavailable: the kernel exited during start-up (exit code 1); kernel stderr: boom"
        );
        let looping = CrashLoop {
            deaths: 3,
            span_secs: 1,
            last: "exit code 1".into(),
            next: Some((8, "10:00:08".into())),
        };
        assert_eq!(
            Unavailable::CrashLoop(looping.clone()).to_string(),
            "the kernel is crash-looping: it failed or died 3 times in the last 1 s (last cause: exit code 1); the next start attempt is in 8 s (at 10:00:08 UTC)"
        );
        assert!(Unavailable::DiedInCrashLoop {
            cause: "killed by signal 9 (SIGKILL)".into(),
            looping: CrashLoop { next: None, ..looping },
        }
        .to_string()
        .ends_with("all variables were lost; the kernel is crash-looping: it failed or died 3 times in the last 1 s (last cause: exit code 1); the next call starts it again"));
        let unreachable = |certificate| {
            Unavailable::from(GatewayError::Unreachable {
                at: "http://gw:8888/".into(),
                detail: "connection refused".into(),
                certificate,
            })
            .to_string()
        };
        assert_eq!(
            unreachable(false),
            "the Jupyter gateway at http://gw:8888/ is not reachable (connection refused); is it running, and is --gateway-url right?"
        );
        assert!(unreachable(true).contains("TLS certificate is not trusted"));
        assert_eq!(
            Unavailable::from(ConnectionFileError::PortZero {
                path: PathBuf::from("/r/k.json")
            })
            .to_string(),
            "connection file /r/k.json names port 0; the kernel has not bound its ports yet"
        );
    }

    /// Refusals carry their facts and read as the sentences the model has always been given.
    #[test]
    fn refusals_are_worded_from_their_facts() {
        let e = SessionError::from(Refusal::NoSuchRun {
            id: 7,
            latest: Some(3),
        });
        assert_eq!(
            e.to_string(),
            "there is no run 7 (runs are numbered from 1 in this session; the latest is 3)"
        );
        assert!(Refusal::NoSuchRun {
            id: 1,
            latest: None
        }
        .to_string()
        .ends_with("the latest is none yet)"));
        assert_eq!(
            Refusal::KernelPackages { detail: None }.to_string(),
            "could not list the kernel's packages: unexpected answer from the kernel"
        );
        assert_eq!(
            Refusal::BadPackageName("a b".into()).to_string(),
            "\"a b\" is not a package name (letters, digits, '-', '_' and '.' only)"
        );
        assert_eq!(
            Refusal::BadSpecs(vec!["\"x\": bad".into(), "\"y\": bad".into()]).to_string(),
            "nothing was installed: \"x\": bad; \"y\": bad"
        );
        assert_eq!(
            Refusal::InstallFailed {
                error: "installer failed: no such package".into(),
                renamed: " (sklearn is the import name of scikit-learn; installing scikit-learn)"
                    .into()
            }
            .to_string(),
            "nothing was changed (sklearn is the import name of scikit-learn; installing scikit-learn): installer failed: no such package"
        );
        let closure = |touched: &[&str]| {
            PackageError::KernelClosure {
                touched: touched.iter().map(|t| t.to_string()).collect(),
            }
            .to_string()
        };
        assert!(closure(&["a==1 (installed 2)"]).starts_with("a==1 (installed 2) is part of"));
        assert!(closure(&["a", "b"]).starts_with("a, b are part of what the kernel"));
        assert!(PackageError::Protected {
            name: "pyzmq".into()
        }
        .to_string()
        .starts_with("pyzmq is part of the kernel's own machinery"));
    }

    /// The error types word nothing themselves: every sentence is in this file.
    #[test]
    fn the_error_types_carry_facts_and_no_words() {
        for (file, text) in [
            ("error.rs", include_str!("../../error.rs")),
            ("notebook.rs", include_str!("../../notebook.rs")),
        ] {
            for line in text.lines().map(str::trim) {
                let worded = (line.starts_with("#[error") && line != "#[error(transparent)]")
                    || (line.starts_with("impl") && line.contains("Display for"));
                assert!(!worded, "{file} words an error itself: {line}");
            }
        }
    }
}
