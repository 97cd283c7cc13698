//! Routing of kernel messages to the request waiting for them, by `parent_header.msg_id`.
//! Transport-free: the ZeroMQ channels and the gateway's WebSocket both feed one `Router`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::mpsc;

use super::message::{Channel, Message, MsgId};
use crate::error::WireError;

/// A message delivered to a waiting request, with the channel it came on.
#[derive(Debug)]
pub struct Incoming {
    pub channel: Channel,
    pub message: Message,
}

/// How many messages may wait for one request before the reader applies back-pressure.
/// Small on purpose: stream messages can be tens of MB each, and the consumer is fast.
const ROUTE_CAPACITY: usize = 4;

/// Heartbeat state published by a connection's heartbeat task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Unknown,
    Alive,
    Missed(u32),
    /// The transport has no heartbeat of its own (a gateway's WebSocket); liveness is the socket.
    NotApplicable,
}

#[derive(Default)]
struct Routes {
    /// `None` once a reader has died: new subscriptions fail instead of hanging.
    map: StdMutex<Option<HashMap<MsgId, mpsc::Sender<Incoming>>>>,
    closed_by: StdMutex<Option<&'static str>>,
    /// Set when the connection was cut because the peer broke the frame limits.
    corrupt: StdMutex<Option<String>>,
    /// Cancelled by `close`, for those who wait for the end rather than poll it.
    ended: tokio_util::sync::CancellationToken,
}

/// The routing table shared by a connection's readers and its callers.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<Routes>,
}

impl Router {
    /// An open router with no subscriptions.
    pub fn new() -> Self {
        Router {
            routes: Arc::new(Routes {
                map: StdMutex::new(Some(HashMap::new())),
                closed_by: StdMutex::new(None),
                corrupt: StdMutex::new(None),
                ended: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    fn sender(&self, id: &MsgId) -> Option<mpsc::Sender<Incoming>> {
        let guard = self.routes.map.lock().ok()?;
        guard.as_ref()?.get(id).cloned()
    }

    /// Marks the connection dead: waiting requests see an error, new subscriptions fail.
    pub fn close(&self, channel: &'static str) {
        if let Ok(mut m) = self.routes.map.lock() {
            *m = None;
        }
        if let Ok(mut c) = self.routes.closed_by.lock() {
            c.get_or_insert(channel);
        }
        self.routes.ended.cancel();
    }

    /// Resolves once the router is closed (at once if it is).
    pub async fn closed(&self) {
        if !self.is_closed() {
            self.routes.ended.cancelled().await;
        }
    }

    /// Records why the connection is corrupt (call before `close`).
    pub fn set_corrupt(&self, reason: String) {
        if let Ok(mut c) = self.routes.corrupt.lock() {
            *c = Some(reason);
        }
    }

    /// The error for callers once the router is closed.
    fn gone(&self) -> WireError {
        match self.routes.corrupt.lock().ok().and_then(|c| c.clone()) {
            Some(reason) => WireError::Corrupt { reason },
            None => WireError::ReaderGone {
                channel: self.closed_by().unwrap_or("kernel"),
            },
        }
    }

    /// Which reader closed the router, if it is closed.
    pub fn closed_by(&self) -> Option<&'static str> {
        self.routes.closed_by.lock().ok().and_then(|c| *c)
    }

    /// True once the router is closed.
    pub fn is_closed(&self) -> bool {
        self.routes.map.lock().map(|m| m.is_none()).unwrap_or(true)
    }

    /// Registers interest in messages whose parent is `id`. Call before sending the request.
    pub fn subscribe(&self, id: &MsgId) -> Result<Subscription, WireError> {
        let (tx, rx) = mpsc::channel(ROUTE_CAPACITY);
        let mut guard = self
            .routes
            .map
            .lock()
            .map_err(|_| WireError::ReaderGone { channel: "router" })?;
        let Some(map) = guard.as_mut() else {
            return Err(self.gone());
        };
        map.insert(id.clone(), tx);
        Ok(Subscription {
            id: id.clone(),
            rx,
            router: self.clone(),
        })
    }

    /// Delivers `message` to the request it answers; drops it when no such request is live.
    pub async fn route(&self, channel: Channel, message: Message) {
        let Some(parent) = message.parent_id().cloned() else {
            tracing::trace!(
                channel = channel.name(),
                msg_type = %crate::text::sanitize(&message.header.msg_type),
                "message without parent"
            );
            return;
        };
        match self.sender(&parent) {
            Some(tx) => {
                // A closed receiver means the request finished; dropping is right.
                let _ = tx.send(Incoming { channel, message }).await;
            }
            None => {
                tracing::debug!(
                    channel = channel.name(),
                    msg_type = %crate::text::sanitize(&message.header.msg_type),
                    parent = %crate::text::sanitize(&parent.to_string()),
                    "dropped a message whose request is not live"
                );
            }
        }
    }
}

/// Messages for one request; the route is removed when this is dropped.
pub struct Subscription {
    id: MsgId,
    rx: mpsc::Receiver<Incoming>,
    router: Router,
}

impl Subscription {
    /// The next message for this request; an error when the connection is gone.
    pub async fn recv(&mut self) -> Result<Incoming, WireError> {
        match self.rx.recv().await {
            Some(m) => Ok(m),
            None => Err(self.router.gone()),
        }
    }

    /// The request id this subscription listens for.
    pub fn id(&self) -> &MsgId {
        &self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut m) = self.router.routes.map.lock() {
            if let Some(map) = m.as_mut() {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::message::{Content, Header};

    fn reply_to(id: &MsgId) -> Message {
        let mut m = Message::request("s", Content::InterruptRequest);
        m.parent_header = Some(Header {
            msg_id: id.clone(),
            ..m.header.clone()
        });
        m
    }

    #[tokio::test]
    async fn routes_by_parent_and_drops_strangers() {
        let r = Router::new();
        let id = MsgId::new();
        let mut sub = r.subscribe(&id).unwrap();
        r.route(Channel::IoPub, reply_to(&MsgId::new())).await;
        r.route(Channel::Shell, reply_to(&id)).await;
        let got = sub.recv().await.unwrap();
        assert_eq!(got.channel, Channel::Shell);
        assert!(sub.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn closing_wakes_waiters_and_refuses_new_subscriptions() {
        let r = Router::new();
        let mut sub = r.subscribe(&MsgId::new()).unwrap();
        r.close("iopub");
        drop(r.clone());
        // The sender side is gone with the map, so the waiter sees the error.
        assert!(sub.recv().await.is_err());
        assert!(r.subscribe(&MsgId::new()).is_err());
        assert_eq!(r.closed_by(), Some("iopub"));
    }

    #[tokio::test]
    async fn closed_resolves_when_the_router_closes_and_at_once_after() {
        let r = Router::new();
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.closed().await }
        });
        // Still waiting while the router is open.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r.close("websocket");
        tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(60), r.closed())
            .await
            .unwrap();
        // A default router is closed from the start.
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            Router::default().closed(),
        )
        .await
        .unwrap();
    }
}
