//! The five kernel sockets. Exactly one reader task per socket; readers route each message to
//! the caller waiting on its `parent_header.msg_id`. Only this module touches `zeromq` sockets.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use zeromq::prelude::*;
use zeromq::{DealerSendHalf, DealerSocket, ReqSocket, SocketOptions, SubSocket, ZmqMessage};

use super::frames::{Frames, MAX_IOPUB_BYTES, MAX_MESSAGE_BYTES};
use super::guard;
use super::message::{Channel, Content, InputReply, Message, MsgId};
use super::replay::DigestHistory;
use super::router::{Heartbeat, Router, Subscription};
use super::signer::Signer;
use crate::error::WireError;

/// Where the kernel's sockets live (full zeromq endpoints such as `ipc:///run/x/k-1`).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub shell: String,
    pub iopub: String,
    pub stdin: String,
    pub control: String,
    pub heartbeat: String,
}

/// An open connection to one kernel: send halves behind locks, one reader task per socket.
pub struct Connection {
    session: String,
    signer: Signer,
    shell: Mutex<DealerSendHalf>,
    control: Mutex<DealerSendHalf>,
    routes: Router,
    heartbeat: watch::Receiver<Heartbeat>,
    /// Messages the sockets' guards dropped (over a limit, framing intact).
    drops: Arc<guard::Drops>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn zmq_err(op: &'static str, channel: Channel) -> impl FnOnce(zeromq::ZmqError) -> WireError {
    move |source| WireError::Zmq {
        op,
        channel: channel.name(),
        source: Box::new(source),
    }
}

async fn connect<S: Socket>(
    socket: &mut S,
    endpoint: &str,
    channel: Channel,
    timeout: Duration,
) -> Result<(), WireError> {
    match tokio::time::timeout(timeout, socket.connect(endpoint)).await {
        Ok(r) => r.map_err(zmq_err("connect", channel)),
        Err(_) => Err(WireError::ConnectTimeout {
            channel: channel.name(),
        }),
    }
}

fn options(identity: &[u8], timeout: Duration) -> SocketOptions {
    let mut o = SocketOptions::default();
    o.connect_timeout(timeout);
    if let Ok(id) = zeromq::util::PeerIdentity::try_from(identity.to_vec()) {
        o.peer_identity(id);
    }
    o
}

/// Signature check plus replay check, shared by every reader of one connection (jupyter_client's
/// Session keeps one digest history for all channels too).
#[derive(Clone)]
struct Verifier {
    signer: Signer,
    history: Arc<StdMutex<DigestHistory>>,
    /// Where a message refused for its size of parsed JSON is counted, like the frame check's.
    drops: Arc<guard::Drops>,
}

fn decode(parts: ZmqMessage, verifier: &Verifier, channel: Channel) -> Option<Message> {
    let frames: Vec<Bytes> = parts.into_vec();
    let size: usize = frames.iter().map(Bytes::len).sum();
    if size > 1 << 20 {
        tracing::debug!(channel = channel.name(), size, "large message");
    }
    let signature = Frames::signature(&frames).cloned();
    let frames = Frames::parse(frames, &verifier.signer);
    // Only a verified signature is recorded: a garbled message cannot evict real ones.
    if let (Ok(_), Some(sig)) = (&frames, &signature) {
        let fresh = match verifier.history.lock() {
            Ok(mut h) => h.accept(sig),
            Err(poisoned) => poisoned.into_inner().accept(sig),
        };
        if !fresh {
            tracing::warn!(
                channel = channel.name(),
                "dropped a replayed message from the kernel (its signature was seen before)"
            );
            return None;
        }
    }
    match frames.and_then(Message::from_frames) {
        Ok(m) => Some(m),
        // (Only this check's refusals: the frame limits are reported by the guard.)
        Err(WireError::TooMany { what, count, limit }) if what.starts_with("JSON values") => {
            let why = format!(
                "the kernel sent a message with more than {limit} {what} (at least {count}) on {}",
                channel.name()
            );
            tracing::warn!(reason = %why, "dropped a message from the kernel; the connection is kept");
            verifier.drops.add(1, why);
            None
        }
        Err(e) => {
            let error = e.to_string();
            tracing::warn!(channel = channel.name(), error = %crate::text::sanitize(&error), "dropped a malformed message from the kernel");
            None
        }
    }
}

impl Connection {
    /// Connects all five channels and starts their reader tasks.
    pub async fn open(
        endpoints: &Endpoints,
        signer: Signer,
        timeout: Duration,
    ) -> Result<Connection, WireError> {
        let drops = Arc::new(guard::Drops::default());
        let verifier = Verifier {
            signer: signer.clone(),
            history: Arc::new(StdMutex::new(DigestHistory::default())),
            drops: drops.clone(),
        };
        let session = uuid::Uuid::new_v4().to_string();
        let identity = format!("kernel-mcp-{}", &session[..8.min(session.len())]);
        let routes = Router::new();
        let mut tasks = Vec::new();

        // Every socket checks the kernel's frames in its own reader (see guard.rs): a forged
        // frame header can then cut the connection, never abort the server.
        let (corrupt_tx, mut corrupt_rx) = watch::channel(None::<String>);
        let guarded = |identity: &[u8], channel: Channel| {
            let max = if channel == Channel::IoPub {
                MAX_IOPUB_BYTES
            } else {
                MAX_MESSAGE_BYTES
            };
            let mut o = options(identity, timeout);
            o.read_filter(guard::filter(
                channel.name(),
                max,
                corrupt_tx.clone(),
                drops.clone(),
            ));
            o
        };
        let mut shell = DealerSocket::with_options(guarded(identity.as_bytes(), Channel::Shell));
        connect(&mut shell, &endpoints.shell, Channel::Shell, timeout).await?;
        let mut control = DealerSocket::with_options(guarded(
            format!("{identity}-c").as_bytes(),
            Channel::Control,
        ));
        connect(&mut control, &endpoints.control, Channel::Control, timeout).await?;
        // stdin's identity must match shell's (messaging spec, "Messages on the stdin ROUTER/DEALER channel").
        let mut stdin = DealerSocket::with_options(guarded(identity.as_bytes(), Channel::Stdin));
        connect(&mut stdin, &endpoints.stdin, Channel::Stdin, timeout).await?;
        let mut iopub =
            SubSocket::with_options(guarded(format!("{identity}-i").as_bytes(), Channel::IoPub));
        connect(&mut iopub, &endpoints.iopub, Channel::IoPub, timeout).await?;
        let heartbeat_filter = guard::filter(
            Channel::Heartbeat.name(),
            MAX_MESSAGE_BYTES,
            corrupt_tx.clone(),
            drops.clone(),
        );
        {
            let routes = routes.clone();
            tasks.push(tokio::spawn(async move {
                let _keep_sender = corrupt_tx;
                if corrupt_rx.wait_for(Option::is_some).await.is_ok() {
                    let reason = corrupt_rx.borrow().clone().unwrap_or_default();
                    routes.set_corrupt(reason);
                    routes.close("guard");
                }
            }));
        }
        iopub
            .subscribe("")
            .await
            .map_err(zmq_err("subscribe", Channel::IoPub))?;

        let (shell_tx, shell_rx) = shell.split();
        let (control_tx, control_rx) = control.split();
        let (stdin_tx, mut stdin_rx) = stdin.split();

        tasks.push(tokio::spawn(read_loop(
            shell_rx,
            Channel::Shell,
            routes.clone(),
            verifier.clone(),
        )));
        tasks.push(tokio::spawn(read_loop(
            control_rx,
            Channel::Control,
            routes.clone(),
            verifier.clone(),
        )));
        tasks.push(tokio::spawn(read_loop(
            iopub,
            Channel::IoPub,
            routes.clone(),
            verifier.clone(),
        )));
        {
            // We always send allow_stdin=false, so a conforming kernel never asks. If one
            // does anyway, answer with an empty line rather than leave it blocked forever.
            let signer = signer.clone();
            let verifier = verifier.clone();
            let session = session.clone();
            let mut stdin_tx = stdin_tx;
            tasks.push(tokio::spawn(async move {
                while let Ok(parts) = stdin_rx.recv().await {
                    let Some(req) = decode(parts, &verifier, Channel::Stdin) else {
                        continue;
                    };
                    if !matches!(req.content, Content::InputRequest(_)) {
                        continue;
                    }
                    tracing::warn!(
                        "kernel asked for input although allow_stdin was false; answering empty"
                    );
                    let mut reply = Message::request(
                        &session,
                        Content::InputReply(InputReply {
                            value: String::new(),
                        }),
                    );
                    reply.parent_header = Some(req.header.clone());
                    reply.identities = req.identities.clone();
                    if let Ok(frames) = reply.to_frames() {
                        if let Ok(zm) = ZmqMessage::try_from(frames.encode(&signer)) {
                            let _ = stdin_tx.send(zm).await;
                        }
                    }
                }
            }));
        }
        let (hb_tx, hb_rx) = watch::channel(Heartbeat::Unknown);
        tasks.push(tokio::spawn(heartbeat_loop(
            endpoints.heartbeat.clone(),
            heartbeat_filter,
            hb_tx,
        )));

        Ok(Connection {
            session,
            signer,
            shell: Mutex::new(shell_tx),
            control: Mutex::new(control_tx),
            routes,
            heartbeat: hb_rx,
            drops,
            tasks,
        })
    }

    /// This client's session id (goes into every header we send).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Registers interest in messages whose parent is `id`. Call before sending the request.
    pub fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError> {
        self.routes.subscribe(id)
    }

    /// Signs and sends `message` on `channel` (shell or control).
    pub async fn send(&self, channel: Channel, message: &Message) -> Result<(), WireError> {
        let frames = message.to_frames()?.encode(&self.signer);
        let zm = ZmqMessage::try_from(frames).map_err(|_| WireError::TooFewFrames { frames: 0 })?;
        let lock = match channel {
            Channel::Control => &self.control,
            _ => &self.shell,
        };
        lock.lock()
            .await
            .send(zm)
            .await
            .map_err(zmq_err("send", channel))
    }

    /// True once a reader has stopped: the connection can never answer again.
    pub fn closed(&self) -> bool {
        self.routes.is_closed()
    }

    /// The latest heartbeat state.
    pub fn heartbeat(&self) -> Heartbeat {
        *self.heartbeat.borrow()
    }

    /// Messages from the kernel dropped so far for breaking a limit (the connection was kept),
    /// and why the last one was.
    pub fn dropped(&self) -> (u64, Option<String>) {
        self.drops.total()
    }
}

/// The one reader of a socket: decode, verify, route by parent; on a socket error close all routes.
async fn read_loop<S: SocketRecv>(
    mut socket: S,
    channel: Channel,
    routes: Router,
    verifier: Verifier,
) {
    loop {
        match socket.recv().await {
            Ok(parts) => {
                if let Some(m) = decode(parts, &verifier, channel) {
                    routes.route(channel, m).await;
                }
            }
            Err(e) => {
                tracing::warn!(channel = channel.name(), error = %e, "reader stopped");
                routes.close(channel.name());
                return;
            }
        }
    }
}

/// Pings the kernel's heartbeat (REQ/REP echo) once a second and publishes the result.
///
/// The heartbeat is advisory, as in jupyter_client: the socket is connected here, not in
/// `Connection::open`, so a kernel whose heartbeat port does not answer still runs code; its
/// state only reads `Missed`.
async fn heartbeat_loop(
    endpoint: String,
    filter: zeromq::ReadFilterFactory,
    tx: watch::Sender<Heartbeat>,
) {
    let mut missed = 0u32;
    let mut hb: Option<ReqSocket> = None;
    loop {
        if hb.is_none() {
            let mut options = SocketOptions::default();
            options.read_filter(filter.clone());
            let mut fresh = ReqSocket::with_options(options);
            if tokio::time::timeout(Duration::from_secs(3), fresh.connect(&endpoint))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                hb = Some(fresh);
            }
        }
        let ok = match hb.as_mut() {
            Some(sock) => async {
                sock.send(ZmqMessage::from(b"ping".to_vec())).await.ok()?;
                tokio::time::timeout(Duration::from_secs(3), sock.recv())
                    .await
                    .ok()?
                    .ok()
            }
            .await
            .is_some(),
            None => false,
        };
        if ok {
            missed = 0;
            let _ = tx.send(Heartbeat::Alive);
        } else {
            missed = missed.saturating_add(1);
            let _ = tx.send(Heartbeat::Missed(missed));
            tracing::debug!(missed, "heartbeat missed");
            // A REQ socket that lost its reply stays in the "awaiting reply" state
            // (ZeroMQ REQ/REP lockstep), so start over with a fresh socket.
            hb = None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(key: &[u8]) -> Verifier {
        Verifier {
            signer: Signer::new(key),
            history: Arc::new(StdMutex::new(DigestHistory::default())),
            drops: Arc::default(),
        }
    }

    fn wire(msg: &Message, signer: &Signer) -> Option<ZmqMessage> {
        let frames = msg.to_frames().ok()?.encode(signer);
        ZmqMessage::try_from(frames).ok()
    }

    #[test]
    fn a_replayed_message_is_dropped() {
        let v = verifier(b"key");
        let msg = Message::request("s", Content::KernelInfoRequest);
        let other = Message::request("s", Content::KernelInfoRequest);
        let (Some(a), Some(a_again), Some(b)) = (
            wire(&msg, &v.signer),
            wire(&msg, &v.signer),
            wire(&other, &v.signer),
        ) else {
            panic!("could not encode the test messages");
        };
        assert!(decode(a, &v, Channel::IoPub).is_some());
        assert!(
            decode(a_again, &v, Channel::Shell).is_none(),
            "a replay was accepted"
        );
        assert!(decode(b, &v, Channel::IoPub).is_some());
        // A badly signed copy is rejected without touching the history.
        let forged = wire(&other, &Signer::new(b"wrong"));
        assert!(forged.is_some_and(|f| decode(f, &v, Channel::IoPub).is_none()));
        assert_eq!(v.history.lock().map(|h| h.len()).unwrap_or(0), 2);
    }
}
