//! A bounded relay in front of each kernel socket. The `zeromq` crate reserves the length a
//! frame header announces before any of it arrives, so one forged header (2^62 bytes) aborts
//! the server. Every byte the kernel sends passes through [`FrameLimiter`] first; a frame or
//! message over the limit never reaches `zeromq`: the connection is cut and marked corrupt.
//! Bytes from the server to the kernel are copied unchanged.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::WireError;

/// ZMTP 3.x greeting length (signature, version, mechanism, as-server, filler).
const GREETING: usize = 64;
/// Largest command frame (READY, SUBSCRIBE, PING ... are a few hundred bytes).
const MAX_COMMAND: u64 = 1 << 20;
/// Most frames in one multipart message (a Jupyter message has 6 plus identities and buffers).
pub const MAX_FRAMES: usize = 1024;

/// Where the limiter is in the ZMTP stream (RFC 23, "Framing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting {
        left: usize,
    },
    Flags,
    Size {
        command: bool,
        more: bool,
        left: usize,
        value: u64,
    },
    Body {
        command: bool,
        more: bool,
        left: u64,
    },
}

/// Checks a ZMTP byte stream frame by frame without holding any of it: a frame or a multipart
/// message larger than `max_message` bytes, a command over 1 MiB or a message of more than
/// [`MAX_FRAMES`] frames is an error.
#[derive(Debug)]
pub struct FrameLimiter {
    state: State,
    max_message: u64,
    message_bytes: u64,
    message_frames: usize,
}

impl FrameLimiter {
    /// A limiter for a fresh connection (the greeting comes first).
    pub fn new(max_message: usize) -> Self {
        FrameLimiter {
            state: State::Greeting { left: GREETING },
            max_message: u64::try_from(max_message).unwrap_or(u64::MAX),
            message_bytes: 0,
            message_frames: 0,
        }
    }

    /// Advances over `bytes`; an error names what was over the limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.state {
                State::Greeting { left } => {
                    let n = left.min(rest.len());
                    rest = rest.get(n..).unwrap_or_default();
                    self.state = match left - n {
                        0 => State::Flags,
                        left => State::Greeting { left },
                    };
                }
                State::Flags => {
                    let Some((&flags, tail)) = rest.split_first() else {
                        break;
                    };
                    rest = tail;
                    let long = flags & 0b10 != 0;
                    self.state = State::Size {
                        command: flags & 0b100 != 0,
                        more: flags & 0b1 != 0,
                        left: if long { 8 } else { 1 },
                        value: 0,
                    };
                }
                State::Size {
                    command,
                    more,
                    left,
                    value,
                } => {
                    let Some((&b, tail)) = rest.split_first() else {
                        break;
                    };
                    rest = tail;
                    // At most 8 bytes are shifted in, so this cannot overflow.
                    let value = (value << 8) | u64::from(b);
                    if left > 1 {
                        self.state = State::Size {
                            command,
                            more,
                            left: left - 1,
                            value,
                        };
                        continue;
                    }
                    self.check_frame(command, value)?;
                    self.state = if value == 0 {
                        self.end_frame(command, more)
                    } else {
                        State::Body {
                            command,
                            more,
                            left: value,
                        }
                    };
                }
                State::Body {
                    command,
                    more,
                    left,
                } => {
                    let n = left.min(u64::try_from(rest.len()).unwrap_or(u64::MAX));
                    // n <= rest.len(), so it fits in usize.
                    rest = rest
                        .get(usize::try_from(n).unwrap_or(rest.len())..)
                        .unwrap_or_default();
                    self.state = match left - n {
                        0 => self.end_frame(command, more),
                        left => State::Body {
                            command,
                            more,
                            left,
                        },
                    };
                }
            }
        }
        Ok(())
    }

    fn check_frame(&mut self, command: bool, size: u64) -> Result<(), String> {
        if command {
            return if size > MAX_COMMAND {
                Err(format!(
                    "a command frame of {size} bytes (limit {MAX_COMMAND})"
                ))
            } else {
                Ok(())
            };
        }
        self.message_frames += 1;
        self.message_bytes = self.message_bytes.saturating_add(size);
        if self.message_bytes > self.max_message {
            return Err(format!(
                "a message of at least {} bytes (limit {})",
                self.message_bytes, self.max_message
            ));
        }
        if self.message_frames > MAX_FRAMES {
            return Err(format!("a message of more than {MAX_FRAMES} frames"));
        }
        Ok(())
    }

    fn end_frame(&mut self, command: bool, more: bool) -> State {
        if !command && !more {
            self.message_bytes = 0;
            self.message_frames = 0;
        }
        State::Flags
    }
}

/// Where a relay listens and where it forwards to.
#[derive(Debug, Clone)]
enum Target {
    Ipc(PathBuf),
    Tcp(String),
}

fn target(endpoint: &str) -> Option<Target> {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return Some(Target::Ipc(PathBuf::from(path)));
    }
    endpoint
        .strip_prefix("tcp://")
        .map(|addr| Target::Tcp(addr.to_owned()))
}

/// Why a connection was cut, shared by the relays of one kernel connection.
pub type Corrupt = watch::Sender<Option<String>>;

/// A running relay: the endpoint `zeromq` should connect to, and the task serving it.
pub struct Relay {
    pub endpoint: String,
    pub task: JoinHandle<()>,
}

/// Starts a relay for the kernel socket at `endpoint`; `channel` names it in reports, and a
/// connection that breaks the limits sets `corrupt`.
///
/// # Errors
/// When the endpoint is of an unknown transport or the relay cannot listen.
pub async fn relay(
    endpoint: &str,
    channel: &'static str,
    max_message: usize,
    corrupt: Corrupt,
) -> Result<Relay, WireError> {
    let io = |source: std::io::Error| WireError::Relay {
        channel,
        reason: source.to_string(),
    };
    let Some(upstream) = target(endpoint) else {
        return Err(WireError::Relay {
            channel,
            reason: format!("unknown transport in {endpoint}"),
        });
    };
    match upstream {
        #[cfg(not(unix))]
        Target::Ipc(path) => Err(WireError::Relay {
            channel,
            reason: format!(
                "the ipc transport ({}) needs unix sockets; use --transport tcp",
                path.display()
            ),
        }),
        #[cfg(unix)]
        Target::Ipc(path) => {
            let mut local = path.clone().into_os_string();
            local.push(".relay");
            let local = PathBuf::from(local);
            let _ = std::fs::remove_file(&local);
            let listener = tokio::net::UnixListener::bind(&local).map_err(io)?;
            let endpoint = format!("ipc://{}", local.display());
            let task = tokio::spawn(async move {
                let mut conns = JoinSet::new();
                while let Ok((down, _)) = listener.accept().await {
                    // Reconnects (the heartbeat opens a fresh socket after a miss) must not
                    // pile up finished entries.
                    while conns.try_join_next().is_some() {}
                    let path = path.clone();
                    let corrupt = corrupt.clone();
                    conns.spawn(async move {
                        let up = retry(|| tokio::net::UnixStream::connect(path.clone())).await;
                        pipe(down, up, channel, max_message, corrupt).await;
                    });
                }
            });
            Ok(Relay { endpoint, task })
        }
        Target::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(io)?;
            let port = listener.local_addr().map_err(io)?.port();
            let endpoint = format!("tcp://127.0.0.1:{port}");
            let task = tokio::spawn(async move {
                let mut conns = JoinSet::new();
                while let Ok((down, _)) = listener.accept().await {
                    // Reconnects (the heartbeat opens a fresh socket after a miss) must not
                    // pile up finished entries.
                    while conns.try_join_next().is_some() {}
                    let addr = addr.clone();
                    let corrupt = corrupt.clone();
                    conns.spawn(async move {
                        let up = retry(|| tokio::net::TcpStream::connect(addr.clone())).await;
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        pipe(down, up, channel, max_message, corrupt).await;
                    });
                }
            });
            Ok(Relay { endpoint, task })
        }
    }
}

/// Connects to the kernel's socket, waiting for the kernel to bind it: the server connects
/// while the kernel is still starting, as `zeromq` itself would keep trying. The relay is
/// dropped with its connection, which ends the wait.
async fn retry<S, F, Fut>(connect: F) -> S
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Ok(s) = connect().await {
            return s;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// Copies server -> kernel unchanged and kernel -> server through a limiter, until either
/// side closes or the kernel breaks a limit.
async fn pipe<D, U>(down: D, up: U, channel: &'static str, max_message: usize, corrupt: Corrupt)
where
    D: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let to_kernel = async {
        let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
    };
    let from_kernel = async {
        let mut limiter = FrameLimiter::new(max_message);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match up_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = buf.get(..n).unwrap_or_default();
            if let Err(what) = limiter.feed(chunk) {
                let reason = format!("the kernel sent {what} on {channel}");
                tracing::error!(%reason, "kernel connection is corrupt; cutting it");
                corrupt.send_replace(Some(reason));
                return;
            }
            if down_w.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection (both streams drop here).
    tokio::select! {
        _ = to_kernel => {}
        _ = from_kernel => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Vec<u8> {
        let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1];
        g.extend_from_slice(b"NULL");
        g.resize(GREETING, 0);
        g
    }

    fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        if body.len() > 255 {
            f.push(flags | 0b10);
            f.extend_from_slice(&(body.len() as u64).to_be_bytes());
        } else {
            f.push(flags);
            f.push(body.len() as u8);
        }
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn well_formed_traffic_passes_in_any_chunking() {
        let mut stream = greeting();
        stream.extend(frame(0b100, b"\x05READY\x0bSocket-Type\x00\x00\x00\x03PUB"));
        for _ in 0..3 {
            stream.extend(frame(0b1, b"<IDS|MSG>"));
            stream.extend(frame(0b1, &[b'x'; 300]));
            stream.extend(frame(0, b"{}"));
        }
        stream.extend(frame(0, b""));
        for chunk in [1, 2, 7, 64, 1000, stream.len()] {
            let mut l = FrameLimiter::new(1000);
            for c in stream.chunks(chunk) {
                assert_eq!(l.feed(c), Ok(()), "chunk size {chunk}");
            }
            assert_eq!(l.state, State::Flags);
        }
    }

    #[test]
    fn an_announced_giant_frame_is_refused_before_its_body() {
        let mut l = FrameLimiter::new(512 << 20);
        let mut stream = greeting();
        // Long frame, 2^62 bytes announced, no body at all.
        stream.push(0b10);
        stream.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let err = l.feed(&stream).err().unwrap_or_default();
        assert_eq!(
            err,
            "a message of at least 4611686018427387904 bytes (limit 536870912)"
        );
        // The largest possible announcement too.
        let mut l = FrameLimiter::new(512 << 20);
        let mut stream = greeting();
        stream.push(0b11);
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(l.feed(&stream).is_err());
    }

    #[test]
    fn many_small_frames_add_up() {
        let mut l = FrameLimiter::new(1000);
        assert_eq!(l.feed(&greeting()), Ok(()));
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = l.feed(&frame(0b1, &[0; 100])) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(
            err.as_deref(),
            Some("a message of at least 1100 bytes (limit 1000)")
        );
        let mut l = FrameLimiter::new(usize::MAX);
        assert_eq!(l.feed(&greeting()), Ok(()));
        let frames: Vec<u8> = (0..=MAX_FRAMES).flat_map(|_| frame(0b1, b"")).collect();
        assert_eq!(
            l.feed(&frames),
            Err(format!("a message of more than {MAX_FRAMES} frames"))
        );
    }

    #[test]
    fn oversized_commands_are_refused() {
        let mut l = FrameLimiter::new(usize::MAX);
        let mut stream = greeting();
        stream.push(0b110);
        stream.extend_from_slice(&(MAX_COMMAND + 1).to_be_bytes());
        assert!(l.feed(&stream).is_err());
    }
}
