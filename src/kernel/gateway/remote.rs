//! A kernel the gateway runs for this server: deleted on shutdown, kill and drop (a failed
//! DELETE is tried again by the next of them), and counted as gone when its WebSocket closes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::rest::{Rest, REST_TIMEOUT};
use crate::kernel::backend::{Channels, Gone, Lifecycle};
use crate::wire::Router;

/// A kernel on the gateway, owned by kernel-mcp: deleted on shutdown, kill and drop.
pub(super) struct Remote {
    rest: Rest,
    id: String,
    /// The router of the kernel's channels: closed when they are lost or the kernel deleted.
    pub(super) router: Router,
    /// [`LIVE`], [`DELETING`] or [`DELETED`]: a DELETE that failed goes back to live, so the
    /// next shutdown, kill or drop tries again.
    deleted: Arc<AtomicU8>,
}

/// The kernel was not deleted yet (or the last DELETE failed).
const LIVE: u8 = 0;
/// A DELETE is under way.
const DELETING: u8 = 1;
/// The gateway said the kernel is gone.
const DELETED: u8 = 2;

impl Remote {
    /// The kernel `id`, live on the gateway `rest` talks to, whose channels feed `router`.
    pub(super) fn new(rest: Rest, id: String, router: Router) -> Remote {
        Remote {
            rest,
            id,
            router,
            deleted: Arc::new(AtomicU8::new(LIVE)),
        }
    }

    /// Deletes the kernel unless that is done or under way. The router closes first: the
    /// gateway then closes the socket, and the reader must not reconnect to a kernel being
    /// deleted.
    pub(super) async fn delete(&self) {
        self.router.close("shutdown");
        if self.claim_delete() {
            let ok = self.rest.delete(&self.id).await;
            Remote::settle(&self.deleted, ok);
        }
    }

    fn delete_in_background(&self) {
        self.router.close("shutdown");
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.claim_delete() {
            return;
        }
        let (rest, id, deleted) = (self.rest.clone(), self.id.clone(), self.deleted.clone());
        rt.spawn(async move {
            let ok = rest.delete(&id).await;
            Remote::settle(&deleted, ok);
        });
    }

    /// True when this caller is to send the DELETE (none done or under way).
    fn claim_delete(&self) -> bool {
        self.deleted
            .compare_exchange(LIVE, DELETING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Records how a DELETE went: done, or back to live for the next attempt.
    fn settle(deleted: &AtomicU8, ok: bool) {
        deleted.store(if ok { DELETED } else { LIVE }, Ordering::SeqCst);
    }

    fn lost(&self) -> Gone {
        Gone::Lost {
            reason: format!(
                "the gateway's WebSocket for kernel {} closed (the kernel died, was culled or the gateway stopped)",
                self.id
            ),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.delete_in_background();
    }
}

#[async_trait]
impl Lifecycle for Remote {
    async fn gone(&self) -> Gone {
        self.router.closed().await;
        self.lost()
    }

    fn is_gone(&self) -> Option<Gone> {
        self.router.is_closed().then(|| self.lost())
    }

    async fn interrupt(&self, _chan: &dyn Channels) {
        let path = format!("api/kernels/{}/interrupt", self.id);
        if let Err(e) = self
            .rest
            .call(http::Method::POST, &path, None, REST_TIMEOUT)
            .await
        {
            tracing::warn!(error = %e, "gateway interrupt failed");
        }
    }

    fn kill(&self) {
        self.router.close("killed");
        self.delete_in_background();
    }

    async fn shutdown(&self, _chan: &dyn Channels) {
        self.delete().await;
    }

    fn kernel_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::rest::stand_in::fake_rest_gateway;
    use super::*;

    #[tokio::test]
    async fn a_failed_delete_is_tried_again_and_a_done_one_is_not() {
        let (rest, calls) = fake_rest_gateway(&[500]).await;
        let life = Remote::new(rest, "k".into(), Router::new());
        life.delete().await;
        // Closed before the DELETE: the reader must not reconnect to a kernel being deleted.
        assert!(life.router.is_closed());
        assert_eq!(life.deleted.load(Ordering::SeqCst), LIVE);
        life.delete().await;
        assert_eq!(life.deleted.load(Ordering::SeqCst), DELETED);
        life.delete().await;
        drop(life);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
