//! A bounded framing check in front of each kernel socket's decoder. The `zeromq` crate
//! reserves the length a frame header announces before any of it arrives, so one forged header
//! (2^62 bytes) would abort the server. Every byte the kernel sends passes through
//! [`FrameLimiter`] first, inside the socket's own reader (the patched `zeromq`'s read filter,
//! vendor/zeromq/PATCHES.md; no relay socket, no extra hop): a message over the limits never
//! reaches the decoder. While the stream can still be framed, only that message is dropped
//! (counted in [`Drops`], said to the call); when it cannot (reserved flag bits, a frame
//! announced far beyond any message) the connection is cut and marked corrupt. Bytes from the
//! server to the kernel are not touched.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::watch;

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
        /// Passed on, or dropped with its message.
        pass: bool,
    },
}

/// Flag bits ZMTP 3.x defines (MORE, LONG, COMMAND); the others are reserved and zero.
const FLAG_BITS: u8 = 0b111;

/// A frame announced bigger than this many times the message limit is taken as a broken
/// stream, not a big message: dropping it would mean reading (and discarding) gigabytes that
/// likely never come while the channel stays silent, so the connection is cut instead.
const SKIPPABLE: u64 = 16;

/// Filters a ZMTP byte stream frame by frame without holding more than a frame header: a
/// multipart message larger than `max_message` bytes or of more than [`MAX_FRAMES`] frames,
/// and a command over 1 MiB, are dropped (the framing stays intact, so the connection is
/// kept); only a stream that can no longer be framed is an error.
#[derive(Debug)]
pub struct FrameLimiter {
    state: State,
    max_message: u64,
    message_bytes: u64,
    message_frames: usize,
    /// Frames of the current message already passed on.
    passed: usize,
    /// The rest of the current message is being dropped.
    dropping: bool,
    /// The header of the frame being read (flags, size), held until its size is known.
    header: [u8; 9],
    header_len: usize,
    /// Messages dropped since the last [`FrameLimiter::take_dropped`], and why the last was.
    dropped: u64,
    why: Option<String>,
}

impl FrameLimiter {
    /// A limiter for a fresh connection (the greeting comes first).
    pub fn new(max_message: usize) -> Self {
        FrameLimiter {
            state: State::Greeting { left: GREETING },
            max_message: u64::try_from(max_message).unwrap_or(u64::MAX),
            message_bytes: 0,
            message_frames: 0,
            passed: 0,
            dropping: false,
            header: [0; 9],
            header_len: 0,
            dropped: 0,
            why: None,
        }
    }

    /// Appends to `out` what of `bytes` may pass: everything but the frames of dropped
    /// messages (a message cut short after some of its frames passed gets an empty last frame,
    /// so the reader sees one malformed message and drops it). An error says why the stream
    /// cannot be framed any more.
    pub fn filter(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.state {
                State::Greeting { left } => {
                    let n = left.min(rest.len());
                    let (now, tail) = rest.split_at(n);
                    out.extend_from_slice(now);
                    rest = tail;
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
                    if flags & !FLAG_BITS != 0 {
                        return Err(format!(
                            "a frame with reserved flag bits set ({flags:#04x}), so the stream cannot be framed"
                        ));
                    }
                    self.header[0] = flags;
                    self.header_len = 1;
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
                    if let Some(slot) = self.header.get_mut(self.header_len) {
                        *slot = b;
                        self.header_len += 1;
                    }
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
                    if value / SKIPPABLE > self.max_message {
                        return Err(format!(
                            "a message of at least {value} bytes (limit {})",
                            self.max_message
                        ));
                    }
                    let pass = self.admit(command, more, value, out);
                    if pass {
                        out.extend_from_slice(
                            self.header.get(..self.header_len).unwrap_or_default(),
                        );
                    }
                    self.state = if value == 0 {
                        self.end_frame(command, more)
                    } else {
                        State::Body {
                            command,
                            more,
                            left: value,
                            pass,
                        }
                    };
                }
                State::Body {
                    command,
                    more,
                    left,
                    pass,
                } => {
                    let n = left.min(u64::try_from(rest.len()).unwrap_or(u64::MAX));
                    // n <= rest.len(), so it fits in usize.
                    let (now, tail) = rest.split_at(usize::try_from(n).unwrap_or(rest.len()));
                    if pass {
                        out.extend_from_slice(now);
                    }
                    rest = tail;
                    self.state = match left - n {
                        0 => self.end_frame(command, more),
                        left => State::Body {
                            command,
                            more,
                            left,
                            pass,
                        },
                    };
                }
            }
        }
        Ok(())
    }

    /// Whether the frame whose header was just read passes; counts it against its message.
    fn admit(&mut self, command: bool, more: bool, size: u64, out: &mut BytesMut) -> bool {
        if command {
            if size > MAX_COMMAND {
                self.note(format!(
                    "a command frame of {size} bytes (limit {MAX_COMMAND})"
                ));
                return false;
            }
            return true;
        }
        if self.dropping {
            return false;
        }
        self.message_frames += 1;
        self.message_bytes = self.message_bytes.saturating_add(size);
        let over = if self.message_bytes > self.max_message {
            Some(format!(
                "a message of at least {} bytes (limit {})",
                self.message_bytes, self.max_message
            ))
        } else if self.message_frames > MAX_FRAMES {
            Some(format!("a message of more than {MAX_FRAMES} frames"))
        } else {
            None
        };
        let Some(why) = over else {
            self.passed += 1;
            return true;
        };
        self.note(why);
        if self.passed > 0 {
            // The frames that passed said MORE: end their message with an empty frame.
            out.extend_from_slice(&[0, 0]);
        }
        // The rest of the message (if this frame is not its last) goes too.
        self.dropping = more;
        if !more {
            self.reset_message();
        }
        false
    }

    fn note(&mut self, why: String) {
        self.dropped = self.dropped.saturating_add(1);
        self.why = Some(why);
    }

    fn reset_message(&mut self) {
        self.message_bytes = 0;
        self.message_frames = 0;
        self.passed = 0;
    }

    fn end_frame(&mut self, command: bool, more: bool) -> State {
        if !command && !more {
            self.reset_message();
            self.dropping = false;
        }
        State::Flags
    }

    /// Messages dropped since the last call, and why the last of them was.
    pub fn take_dropped(&mut self) -> Option<(u64, String)> {
        let n = std::mem::take(&mut self.dropped);
        let why = self.why.take()?;
        (n > 0).then_some((n, why))
    }
}

/// Why a connection was cut, shared by the sockets of one kernel connection.
pub type Corrupt = watch::Sender<Option<String>>;

/// Messages the sockets of one kernel connection dropped (over a limit, framing intact): how
/// many in all, and why the last one was.
#[derive(Debug, Default)]
pub struct Drops {
    inner: std::sync::Mutex<(u64, Option<String>)>,
}

impl Drops {
    pub(super) fn add(&self, n: u64, why: String) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 = g.0.saturating_add(n);
        g.1 = Some(why);
    }

    /// Messages dropped so far, and why the last was.
    pub fn total(&self) -> (u64, Option<String>) {
        match self.inner.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// One connection's check, run by the socket's own reader on every chunk it reads (the
/// `ReadFilter` hook of the patched `zeromq`, vendor/zeromq/PATCHES.md): the limiter, and where
/// it reports what it cut or dropped.
struct Guard {
    limiter: FrameLimiter,
    channel: &'static str,
    corrupt: Corrupt,
    drops: Arc<Drops>,
}

impl zeromq::ReadFilter for Guard {
    fn filter(&mut self, input: &[u8], output: &mut BytesMut) -> std::io::Result<()> {
        let channel = self.channel;
        if let Err(what) = self.limiter.filter(input, output) {
            let reason = format!("the kernel sent {what} on {channel}");
            tracing::error!(%reason, "kernel connection is corrupt; cutting it");
            self.corrupt.send_replace(Some(reason.clone()));
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
        }
        if let Some((n, what)) = self.limiter.take_dropped() {
            let why = format!("the kernel sent {what} on {channel}");
            tracing::warn!(messages = n, reason = %why, "dropped a message from the kernel; the connection is kept");
            self.drops.add(n, why);
        }
        Ok(())
    }
}

/// The check for every connection of one kernel socket (`channel` names it in reports): a
/// fresh [`FrameLimiter`] per connection, since each starts with its greeting. A stream that
/// can no longer be framed sets `corrupt` and closes the connection; a dropped message is
/// counted in `drops`.
pub fn filter(
    channel: &'static str,
    max_message: usize,
    corrupt: Corrupt,
    drops: Arc<Drops>,
) -> zeromq::ReadFilterFactory {
    Arc::new(move || {
        Box::new(Guard {
            limiter: FrameLimiter::new(max_message),
            channel,
            corrupt: corrupt.clone(),
            drops: drops.clone(),
        })
    })
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

    /// Runs `stream` through a limiter in chunks of `chunk`; what passed, or the error.
    fn run(l: &mut FrameLimiter, stream: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        for c in stream.chunks(chunk.max(1)) {
            l.filter(c, &mut out)?;
        }
        Ok(out.to_vec())
    }

    /// A three-frame message with a body of `n` bytes.
    fn message(n: usize) -> Vec<u8> {
        let mut m = frame(0b1, b"<IDS|MSG>");
        m.extend(frame(0b1, &vec![b'x'; n]));
        m.extend(frame(0, b"{}"));
        m
    }

    #[test]
    fn well_formed_traffic_passes_in_any_chunking() {
        let mut stream = greeting();
        stream.extend(frame(0b100, b"\x05READY\x0bSocket-Type\x00\x00\x00\x03PUB"));
        for _ in 0..3 {
            stream.extend(message(300));
        }
        stream.extend(frame(0, b""));
        for chunk in [1, 2, 7, 64, 1000, stream.len()] {
            let mut l = FrameLimiter::new(1000);
            assert_eq!(
                run(&mut l, &stream, chunk).as_ref(),
                Ok(&stream),
                "chunk size {chunk}"
            );
            assert_eq!(l.state, State::Flags);
            assert_eq!(l.take_dropped(), None);
        }
    }

    #[test]
    fn a_message_over_the_limit_is_dropped_and_the_next_passes() {
        let mut stream = greeting();
        stream.extend(message(10));
        let first = stream.len();
        // Over the byte limit in its second frame: the first frame passed already.
        stream.extend(message(2000));
        stream.extend(message(20));
        for chunk in [1, 3, 64, stream.len()] {
            let mut l = FrameLimiter::new(1000);
            let out = run(&mut l, &stream, chunk).unwrap_or_default();
            let mut want = stream.get(..first).unwrap_or_default().to_vec();
            // Its first frame, then an empty last frame closing it.
            want.extend(frame(0b1, b"<IDS|MSG>"));
            want.extend([0, 0]);
            want.extend(message(20));
            assert_eq!(out, want, "chunk size {chunk}");
            assert_eq!(
                l.take_dropped(),
                Some((
                    1,
                    "a message of at least 2009 bytes (limit 1000)".to_owned()
                ))
            );
            assert_eq!(l.take_dropped(), None);
        }
    }

    #[test]
    fn a_message_over_the_limit_in_its_first_frame_leaves_no_trace() {
        let mut stream = greeting();
        stream.extend(frame(0, &[b'y'; 2000]));
        stream.extend(message(5));
        let mut l = FrameLimiter::new(1000);
        let mut want = greeting();
        want.extend(message(5));
        assert_eq!(run(&mut l, &stream, 100), Ok(want));
        assert_eq!(l.take_dropped().map(|d| d.0), Some(1));
    }

    #[test]
    fn too_many_frames_drop_the_message_not_the_stream() {
        let mut stream = greeting();
        stream.extend((0..100_000).flat_map(|_| frame(0b1, b"")));
        stream.extend(frame(0, b""));
        stream.extend(message(1));
        let mut l = FrameLimiter::new(usize::MAX);
        let out = run(&mut l, &stream, 4096).unwrap_or_default();
        let mut want = greeting();
        want.extend((0..MAX_FRAMES).flat_map(|_| frame(0b1, b"")));
        want.extend([0, 0]);
        want.extend(message(1));
        assert_eq!(out, want);
        assert_eq!(
            l.take_dropped(),
            Some((1, format!("a message of more than {MAX_FRAMES} frames")))
        );
    }

    #[test]
    fn an_announced_giant_frame_cuts_the_stream_before_its_body() {
        let mut l = FrameLimiter::new(512 << 20);
        let mut stream = greeting();
        // Long frame, 2^62 bytes announced, no body at all.
        stream.push(0b10);
        stream.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert_eq!(
            run(&mut l, &stream, stream.len()),
            Err("a message of at least 4611686018427387904 bytes (limit 536870912)".to_owned())
        );
        // The largest possible announcement too.
        let mut l = FrameLimiter::new(512 << 20);
        let mut stream = greeting();
        stream.push(0b11);
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(run(&mut l, &stream, 5).is_err());
    }

    #[test]
    fn reserved_flag_bits_cut_the_stream() {
        let mut l = FrameLimiter::new(1000);
        let mut stream = greeting();
        stream.extend([0b1000_0000, 0]);
        assert!(run(&mut l, &stream, 1)
            .err()
            .is_some_and(|e| e.contains("reserved flag bits")));
    }

    #[test]
    fn oversized_commands_are_dropped() {
        let mut l = FrameLimiter::new(usize::MAX);
        let mut stream = greeting();
        let big = (MAX_COMMAND + 1) as usize;
        stream.push(0b110);
        stream.extend_from_slice(&(big as u64).to_be_bytes());
        stream.extend(vec![0u8; big]);
        stream.extend(message(3));
        let mut want = greeting();
        want.extend(message(3));
        assert_eq!(run(&mut l, &stream, 65536), Ok(want));
        assert_eq!(l.take_dropped().map(|d| d.0), Some(1));
    }

    /// The hook inside `zeromq` end to end: a peer completes the ZMTP handshake as a ROUTER,
    /// then announces a frame of 2^62 bytes. The socket's own reader runs the limiter, so the
    /// connection is cut and marked corrupt; without the filter, `zeromq` would reserve the
    /// announced length and abort this test process.
    #[tokio::test]
    async fn a_forged_frame_is_cut_inside_the_sockets_reader() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use zeromq::{Socket, SocketRecv};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            panic!("cannot listen on 127.0.0.1: {listener:?}");
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("no local address");
        };
        let peer = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut hello = greeting();
            hello.extend(frame(
                0b100,
                b"\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER",
            ));
            hello.push(0b10);
            hello.extend_from_slice(&(1u64 << 62).to_be_bytes());
            if s.write_all(&hello).await.is_err() {
                return;
            }
            // Held open until the socket hangs up: the cut must come from the filter.
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let (corrupt, mut seen) = watch::channel(None::<String>);
        let drops = Arc::new(Drops::default());
        let mut options = zeromq::SocketOptions::default();
        options.read_filter(filter("shell", 1 << 20, corrupt, drops.clone()));
        let mut dealer = zeromq::DealerSocket::with_options(options);
        let hang = std::time::Duration::from_secs(60);
        let connected = tokio::time::timeout(hang, dealer.connect(&format!("tcp://{addr}"))).await;
        // The forged header may come in the same read as the handshake (the connect fails
        // with the cut) or after it (the cut comes with the first receive).
        assert!(connected.is_ok(), "the connect hung");
        // The socket reads only while someone receives.
        let cut = tokio::time::timeout(hang, async {
            loop {
                tokio::select! {
                    biased;
                    r = seen.wait_for(Option::is_some) => break r.map(|v| v.clone()).ok().flatten(),
                    r = dealer.recv() => if let Ok(m) = r {
                        panic!("a message came through: {m:?}");
                    },
                }
            }
        })
        .await;
        assert_eq!(
            cut,
            Ok(Some(
                "the kernel sent a message of at least 4611686018427387904 bytes (limit 1048576) on shell"
                    .to_owned()
            ))
        );
        assert_eq!(drops.total(), (0, None));
        peer.abort();
    }
}
