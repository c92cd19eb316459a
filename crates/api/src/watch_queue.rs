//! The outbound queue of one watch stream: an unbounded channel with a count of
//! what is queued, so a watcher's send is one push (no semaphore to acquire) and
//! senders wait only once the client has fallen [`QUEUED_MAX`] responses
//! behind. The bound is soft: senders that checked at the same time may each
//! add one more, so a stream holds at most `QUEUED_MAX` plus its number of
//! watchers.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, Notify};
use tokio_stream::Stream;

/// Responses queued per stream before its watchers wait for the client.
pub(crate) const QUEUED_MAX: usize = 256;

/// The count shared by both ends.
struct Shared {
    queued: AtomicUsize,
    /// Wakes senders waiting for room (and tells them when the client left).
    room: Notify,
}

/// The sending end (cloned for every watcher of the stream).
pub(crate) struct Sender<T> {
    tx: mpsc::UnboundedSender<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender { tx: self.tx.clone(), shared: self.shared.clone() }
    }
}

/// The client went away: nothing more can be sent.
#[derive(Debug)]
pub(crate) struct Closed;

impl<T> Sender<T> {
    /// Queues `item`, first waiting while the queue is full.
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed> {
        loop {
            // Registered before the check: a wake-up between the two is kept.
            let room = self.shared.room.notified();
            if self.tx.is_closed() {
                return Err(Closed);
            }
            if self.shared.queued.load(Ordering::Acquire) < QUEUED_MAX {
                break;
            }
            room.await;
        }
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(item).map_err(|_| Closed)
    }

    /// Resolves once the receiving end is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The receiving end, a stream of what was sent, in order.
pub(crate) struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<T>,
    shared: Arc<Shared>,
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            let before = self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            assert!(before > 0, "invariant: a received response was counted when queued");
            if before >= QUEUED_MAX {
                self.shared.room.notify_waiters();
            }
        }
        polled
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Senders waiting for room learn that the client is gone.
        self.rx.close();
        self.shared.room.notify_waiters();
    }
}

/// A queue for one stream.
pub(crate) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared { queued: AtomicUsize::new(0), room: Notify::new() });
    (Sender { tx, shared: shared.clone() }, Receiver { rx, shared })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_full_queue_holds_senders_until_the_client_reads_or_leaves() {
        let (tx, mut rx) = queue::<usize>();
        for i in 0..QUEUED_MAX {
            tx.send(i).await.unwrap();
        }
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(QUEUED_MAX).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "a full queue holds the sender");
        assert_eq!(rx.next().await, Some(0));
        blocked.await.unwrap().expect("room was made");
        for i in 1..=QUEUED_MAX {
            assert_eq!(rx.next().await, Some(i), "in order, nothing lost");
        }
        // Full again, then the client leaves: the waiting sender is told.
        for i in 0..QUEUED_MAX {
            tx.send(i).await.unwrap();
        }
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(0).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(rx);
        let told = tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
            .await
            .expect("a sender waiting for room learns the client left");
        assert!(told.unwrap().is_err());
        assert!(tx.send(1).await.is_err());
    }
}
