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
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    /// The lowest revision with an event in the range not yet taken.
    pending: Option<i64>,
    /// A wake-up not yet waited for.
    flagged: bool,
    /// Who waits for one (one waker at most: whoever polled last).
    /// Plain `std` wakers: no runtime needed.
    waker: Option<Waker>,
}

impl Signal {
    /// Flags `revision` (keeping the lowest flagged) and wakes the watcher.
    pub(super) fn flag(&self, revision: i64) {
        let waker = {
            let mut state = self.state.lock().expect("watch signal lock");
            state.pending = Some(state.pending.map_or(revision, |p| p.min(revision)));
            state.flagged = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready (and the flag taken) when flagged since the last time this was
    /// ready; otherwise `cx`'s waker is kept for the next flag.
    fn poll_flagged(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().expect("watch signal lock");
        if std::mem::take(&mut state.flagged) {
            return Poll::Ready(());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
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
        self.signal.state.lock().expect("watch signal lock").pending.take()
    }

    /// Waits until a batch flags this watcher (returns at once if one did since
    /// the last wait).
    pub async fn flagged(&self) {
        std::future::poll_fn(|cx| self.signal.poll_flagged(cx)).await;
    }

    /// [`flagged`](Interest::flagged) for a caller polling by hand: ready, and
    /// the flag taken, if a batch flagged this watcher since the last time it
    /// was; otherwise `cx`'s waker is woken by the next flag (one waker per
    /// interest: the last one polled).
    pub fn poll_flagged(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.signal.poll_flagged(cx)
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.registry.lock().expect("watch registry lock").remove(self.id, &self.range);
    }
}
