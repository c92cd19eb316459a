//! Which watchers care about which keys, so a batch wakes only the watchers it
//! concerns: an idle watcher costs nothing per write, however many there are.
//!
//! A watcher registers its key range and gets an [`Interest`]. Publishing a batch
//! flags every interest one of its events falls in with the lowest such revision
//! and wakes it. A watcher that has caught up then knows that the revisions
//! before the flagged one hold nothing for it and that, with no flag, nothing up
//! to [`WatchHub::notified_revision`](super::WatchHub::notified_revision) does;
//! it can skip them instead of reading them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The keys a watcher watches, in etcd's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// One key.
    Single(Vec<u8>),
    /// Every key `>=` this one (etcd's `range_end = "\0"`).
    From(Vec<u8>),
    /// Keys in `[start, end)`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => key == k.as_slice(),
            KeyRange::From(start) => key >= start.as_slice(),
            KeyRange::Between(start, end) => key >= start.as_slice() && key < end.as_slice(),
        }
    }
}

/// What publishing leaves for one watcher.
#[derive(Default)]
pub(super) struct Signal {
    /// The lowest revision with an event in the range not yet taken.
    pending: Mutex<Option<i64>>,
    /// A flag not yet waited for, and the task waiting for one (a watcher has
    /// one task: one waker at most). Plain `std` wakers: no runtime needed.
    wake: Mutex<(bool, Option<Waker>)>,
}

impl Signal {
    pub(super) fn flag(&self, revision: i64) {
        {
            let mut pending = self.pending.lock().expect("watch signal lock");
            *pending = Some(pending.map_or(revision, |p| p.min(revision)));
        }
        let waker = {
            let mut wake = self.wake.lock().expect("watch signal lock");
            wake.0 = true;
            wake.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Completes once the signal was flagged since the last time one completed.
struct Flagged<'a>(&'a Signal);

impl Future for Flagged<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut wake = self.0.wake.lock().expect("watch signal lock");
        if std::mem::take(&mut wake.0) {
            return Poll::Ready(());
        }
        wake.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Every registered watcher, by how its range is looked up.
#[derive(Default)]
pub(super) struct Registry {
    next_id: u64,
    single: HashMap<Vec<u8>, Vec<(u64, Arc<Signal>)>>,
    ranges: Vec<(u64, KeyRange, Arc<Signal>)>,
}

impl Registry {
    /// The watchers `key` concerns.
    pub(super) fn for_key<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Iterator<Item = (u64, &'a Arc<Signal>)> + 'a {
        let single = self.single.get(key).into_iter().flatten().map(|(id, s)| (*id, s));
        let ranges =
            self.ranges.iter().filter(move |(_, r, _)| r.contains(key)).map(|(id, _, s)| (*id, s));
        single.chain(ranges)
    }

    /// Every watcher.
    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<Signal>> {
        self.single.values().flatten().map(|(_, s)| s).chain(self.ranges.iter().map(|(_, _, s)| s))
    }

    fn insert(&mut self, range: KeyRange, signal: Arc<Signal>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        match range {
            KeyRange::Single(key) => self.single.entry(key).or_default().push((id, signal)),
            range => self.ranges.push((id, range, signal)),
        }
        id
    }

    fn remove(&mut self, id: u64, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => {
                if let Some(list) = self.single.get_mut(key) {
                    list.retain(|(i, _)| *i != id);
                    if list.is_empty() {
                        self.single.remove(key);
                    }
                }
            }
            _ => self.ranges.retain(|(i, _, _)| *i != id),
        }
    }
}

/// A registered watcher's side: wait for a flag, take it. Dropping it
/// unregisters the watcher.
pub struct Interest {
    id: u64,
    range: KeyRange,
    signal: Arc<Signal>,
    registry: Arc<Mutex<Registry>>,
}

impl Interest {
    pub(super) fn register(registry: &Arc<Mutex<Registry>>, range: KeyRange) -> Interest {
        let signal = Arc::new(Signal::default());
        let id =
            registry.lock().expect("watch registry lock").insert(range.clone(), signal.clone());
        Interest { id, range, signal, registry: registry.clone() }
    }

    /// The range this watcher registered.
    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    /// Takes the lowest flagged revision, if any.
    pub fn take_pending(&self) -> Option<i64> {
        self.signal.pending.lock().expect("watch signal lock").take()
    }

    /// Waits until a batch flags this watcher (returns at once if one did since
    /// the last wait).
    pub async fn flagged(&self) {
        Flagged(&self.signal).await;
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.registry.lock().expect("watch registry lock").remove(self.id, &self.range);
    }
}
