//! The binary's process plumbing: stdin/stdout as async streams, and the signals that stop
//! the server.

pub(crate) type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
pub(crate) type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// The process's stdin and stdout as async streams. tokio's `stdin()`/`stdout()` do every read
/// and write on a blocking-pool thread (two thread hand-offs per call); when they are a pipe or
/// a socket (what MCP clients give a server: Node/Electron use socketpairs), they are read and
/// written directly on the event loop instead. Anything else (a terminal, a file) keeps the
/// portable path.
pub(crate) fn stdio() -> (Reader, Writer) {
    #[cfg(unix)]
    if let (Some(r), Some(w)) = (unix_stdio::reader(), unix_stdio::writer()) {
        return (r, w);
    }
    (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
}

#[cfg(unix)]
mod unix_stdio {
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::FileTypeExt;

    use super::{Reader, Writer};

    /// What fd 0 or 1 is, when it can be driven by the event loop (a duplicate of it).
    enum Stream {
        Pipe(std::fs::File),
        Socket(std::os::unix::net::UnixStream),
    }

    fn stream(fd: std::os::fd::BorrowedFd<'_>) -> Option<Stream> {
        let owned: OwnedFd = fd.try_clone_to_owned().ok()?;
        let file = std::fs::File::from(owned);
        let kind = file.metadata().ok()?.file_type();
        if kind.is_fifo() {
            return Some(Stream::Pipe(file));
        }
        if kind.is_socket() {
            let s = std::os::unix::net::UnixStream::from(OwnedFd::from(file));
            s.set_nonblocking(true).ok()?;
            return Some(Stream::Socket(s));
        }
        None
    }

    pub fn reader() -> Option<Reader> {
        Some(match stream(std::io::stdin().as_fd())? {
            Stream::Pipe(f) => Box::new(tokio::net::unix::pipe::Receiver::from_file(f).ok()?),
            Stream::Socket(s) => Box::new(tokio::net::UnixStream::from_std(s).ok()?),
        })
    }

    pub fn writer() -> Option<Writer> {
        Some(match stream(std::io::stdout().as_fd())? {
            Stream::Pipe(f) => Box::new(tokio::net::unix::pipe::Sender::from_file(f).ok()?),
            Stream::Socket(s) => Box::new(tokio::net::UnixStream::from_std(s).ok()?),
        })
    }
}

/// Resolves with the signal's name when the OS asks the server to stop (unix: SIGTERM, SIGHUP,
/// SIGINT; Windows: Ctrl-C, Ctrl-Break, console close).
#[cfg(unix)]
pub(crate) fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    })
}

#[cfg(windows)]
pub(crate) fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::windows::{ctrl_break, ctrl_close};
    let mut brk = ctrl_break()?;
    let mut close = ctrl_close()?;
    Ok(async move {
        tokio::select! {
            _ = brk.recv() => "Ctrl-Break",
            _ = close.recv() => "console close",
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
        }
    })
}
