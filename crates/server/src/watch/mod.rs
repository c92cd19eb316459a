//! The watch hub: where applied changes meet watchers.
//!
//! The apply loop publishes each batch's events, grouped per revision, into a bounded
//! in-memory ring of recent revisions and then announces the new store revision.
//! Watchers never get pushed to: each one pulls the revisions it still needs, from the
//! ring when they are recent and from the backend when they fell out of it. So a slow
//! watcher only slows itself, the apply loop never waits for anyone, and no event can
//! be lost or duplicated: a watcher's position is a revision, and every revision is
//! read exactly once. Watchers register their key ranges ([`interest`]) so a batch
//! wakes only those it concerns, and caught-up watchers skip the revisions that
//! were never flagged for them.

mod interest;
mod shared;
mod watcher;

pub use interest::{Interest, KeyRange};
pub use shared::{Published, Selected};
pub use watcher::{Pulled, WatchSpec, Watcher};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use etcd_mvcc::{KvStore, MvccError};
use etcd_proto::mvccpb::event::EventType;
use etcd_proto::mvccpb::Event;

/// Revisions kept in memory at most.
const RING_REVISIONS_MAX: usize = 8192;
/// Bytes of events kept in memory at most (approximate: keys and values).
const RING_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Revisions handed out per read at most, so a far-behind watcher catches up in
/// bounded steps.
pub const READ_REVISIONS_MAX: i64 = 256;

/// The events of one revision, shared by every watcher that reads them.
pub type RevisionEvents = (i64, Arc<Published>);

#[derive(Default)]
struct Ring {
    /// Events per revision, oldest first; revisions are contiguous.
    revisions: VecDeque<RevisionEvents>,
    bytes: usize,
}

/// Recent events and the published store revision.
pub struct WatchHub {
    ring: RwLock<Ring>,
    /// The published store revision.
    revision: AtomicI64,
    registry: Arc<Mutex<interest::Registry>>,
    /// Every watcher concerned by a revision up to this one has been flagged.
    notified: AtomicI64,
}

fn event_bytes(events: &[Event]) -> usize {
    events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 64).sum()
}

/// Why a watcher cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchReadError {
    /// The revisions it needs were compacted away.
    Compacted,
    /// The store failed; the member is going down.
    Storage,
}

impl WatchHub {
    /// A hub whose store is at `current_revision`.
    pub fn new(current_revision: i64) -> WatchHub {
        WatchHub {
            ring: RwLock::default(),
            revision: AtomicI64::new(current_revision),
            registry: Arc::default(),
            notified: AtomicI64::new(current_revision),
        }
    }

    /// Called by the apply loop after a batch is committed: remembers its events and
    /// announces `current_revision`.
    pub fn publish(&self, batch: Vec<(i64, Vec<Event>)>, current_revision: i64) {
        let mut published: Vec<RevisionEvents> = Vec::with_capacity(batch.len());
        if !batch.is_empty() {
            let mut ring = self.ring.write().expect("watch ring lock");
            for (revision, events) in batch {
                if let Some((last, _)) = ring.revisions.back() {
                    if revision != last + 1 {
                        // Only contiguous revisions can be served from memory.
                        ring.revisions.clear();
                        ring.bytes = 0;
                    }
                }
                ring.bytes += event_bytes(&events);
                let events = Arc::new(Published::new(events));
                published.push((revision, events.clone()));
                ring.revisions.push_back((revision, events));
            }
            while ring.revisions.len() > RING_REVISIONS_MAX || ring.bytes > RING_BYTES_MAX {
                let Some((_, events)) = ring.revisions.pop_front() else { break };
                ring.bytes -= event_bytes(events.events());
            }
        }
        self.revision.store(current_revision, Ordering::Release);
        // Flag the concerned watchers only now that the batch is readable and
        // announced, under the registry lock: a watcher registered before this is
        // flagged; one registered after reads the announced revision when it
        // registers and catches up to it on its own.
        let registry = self.registry.lock().expect("watch registry lock");
        let mut concerned: HashMap<u64, (i64, &Arc<interest::Signal>)> = HashMap::new();
        for (revision, events) in &published {
            for event in events.events() {
                let Some(kv) = &event.kv else { continue };
                for (id, signal) in registry.for_key(&kv.key) {
                    concerned.entry(id).or_insert((*revision, signal));
                }
            }
        }
        for (revision, signal) in concerned.into_values() {
            signal.flag(revision);
        }
        self.notified.fetch_max(current_revision, Ordering::Release);
    }

    /// Forgets the remembered events (the store was replaced by a snapshot) and
    /// announces `current_revision`; watchers then read history from the backend.
    pub fn reset(&self, current_revision: i64) {
        let mut ring = self.ring.write().expect("watch ring lock");
        ring.revisions.clear();
        ring.bytes = 0;
        drop(ring);
        let before = self.revision.swap(current_revision, Ordering::AcqRel);
        // Nobody knows which watchers the jump concerns: every one re-reads it.
        let registry = self.registry.lock().expect("watch registry lock");
        for signal in registry.all() {
            signal.flag(before + 1);
        }
        self.notified.fetch_max(current_revision, Ordering::Release);
    }

    /// Registers a watcher of `range`. Register before reading [`revision`]: every
    /// revision after the one read then flags the interest if it concerns it.
    ///
    /// [`revision`]: WatchHub::revision
    pub fn register(&self, range: KeyRange) -> Interest {
        Interest::register(&self.registry, range)
    }

    /// Every watcher concerned by a revision up to this one has been flagged.
    /// Read it before taking an interest's flag.
    pub fn notified_revision(&self) -> i64 {
        self.notified.load(Ordering::Acquire)
    }

    /// The published store revision.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The events of revisions `from..=to` (at most [`READ_REVISIONS_MAX`] of them),
    /// grouped per revision, and the last revision covered. Recent revisions come from
    /// memory; older ones from the backend (without `prev_kv`).
    pub fn read(
        &self,
        kv: &KvStore,
        from: i64,
        to: i64,
    ) -> Result<(Vec<RevisionEvents>, i64), WatchReadError> {
        let compacted = kv.compact_revision();
        if from < compacted {
            // etcd cancels a watcher that needs compacted history, even when the
            // revisions happen to still be in memory.
            return Err(WatchReadError::Compacted);
        }
        let to = to.min(from + READ_REVISIONS_MAX - 1);
        {
            let ring = self.ring.read().expect("watch ring lock");
            if let (Some((first, _)), Some((last, _))) =
                (ring.revisions.front(), ring.revisions.back())
            {
                if from >= *first && from <= *last {
                    let covered = to.min(*last);
                    let skip = (from - first) as usize;
                    let taken: Vec<RevisionEvents> = ring
                        .revisions
                        .iter()
                        .skip(skip)
                        .take_while(|(revision, _)| *revision <= covered)
                        .map(|(revision, events)| match *revision <= compacted {
                            true => (*revision, Arc::new(as_compacted(events.events()))),
                            false => (*revision, events.clone()),
                        })
                        .collect();
                    return Ok((taken, covered));
                }
            }
        }
        let events = kv.events_range(from, to).map_err(|e| match e {
            MvccError::Compacted => WatchReadError::Compacted,
            other => {
                tracing::error!(error = %other, "reading watch history failed");
                WatchReadError::Storage
            }
        })?;
        let mut grouped: Vec<(i64, Vec<Event>)> = Vec::new();
        for event in events {
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            match grouped.last_mut() {
                Some((last, list)) if *last == revision => list.push(event),
                _ => grouped.push((revision, vec![event])),
            }
        }
        Ok((grouped.into_iter().map(|(r, e)| (r, Arc::new(Published::new(e)))).collect(), to))
    }
}

/// The events of the compaction revision as the backend still holds them: the
/// compaction removed that revision's tombstones and every older revision, so
/// no delete and no `prev_kv` (etcd's watch reads both from the backend: its
/// prev_kv is a read at the revision before, which is compacted).
fn as_compacted(events: &[Event]) -> Published {
    Published::new(
        events
            .iter()
            .filter(|e| e.r#type != EventType::Delete as i32)
            .map(|e| Event { prev_kv: None, ..e.clone() })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::KeyValue;

    fn put(key: &str, revision: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue { key: key.into(), mod_revision: revision, ..Default::default() }),
            prev_kv: None,
        }
    }

    #[test]
    fn ring_serves_contiguous_recent_revisions_and_bounds_its_size() {
        let hub = WatchHub::new(1);
        for revision in 2..(RING_REVISIONS_MAX as i64 + 100) {
            hub.publish(vec![(revision, vec![put("k", revision)])], revision);
        }
        let ring = hub.ring.read().expect("lock");
        assert_eq!(ring.revisions.len(), RING_REVISIONS_MAX);
        let first = ring.revisions.front().expect("first").0;
        let revisions: Vec<i64> = ring.revisions.iter().map(|(r, _)| *r).collect();
        assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(first, RING_REVISIONS_MAX as i64 + 99 - RING_REVISIONS_MAX as i64 + 1);
    }

    /// Applies `ops` (a key with a value to put, or `None` to delete it) one
    /// revision each, publishing every batch's events as the apply loop does.
    fn apply(
        kv: &KvStore,
        backend: &etcd_storage::Backend,
        hub: &WatchHub,
        ops: &[(&str, Option<&str>)],
    ) {
        use etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
        for (key, value) in ops {
            let mut batch = kv.begin_batch(backend).expect("batch");
            match value {
                Some(v) => {
                    let put = PutRequest {
                        key: key.as_bytes().into(),
                        value: v.as_bytes().into(),
                        ..Default::default()
                    };
                    batch.put(&put, &|_| true).expect("put");
                }
                None => {
                    let del =
                        DeleteRangeRequest { key: key.as_bytes().into(), ..Default::default() };
                    batch.delete_range(&del).expect("delete");
                }
            }
            let events = batch.commit(false).expect("commit").events;
            hub.publish(events, kv.current_revision());
        }
    }

    fn compact(kv: &KvStore, backend: &etcd_storage::Backend, rev: i64) {
        let mut batch = kv.begin_batch(backend).expect("batch");
        batch.compact(rev).expect("compact");
        batch.commit(false).expect("commit");
    }

    /// (type, key, mod revision, prev_kv's mod revision) of what `read` serves.
    fn served(hub: &WatchHub, kv: &KvStore, from: i64) -> Vec<(i32, String, i64, Option<i64>)> {
        let (revisions, _) = hub.read(kv, from, kv.current_revision()).expect("read");
        revisions
            .iter()
            .flat_map(|(_, events)| events.events().iter())
            .map(|e| {
                let kv = e.kv.as_ref().expect("kv");
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                (e.r#type, key, kv.mod_revision, e.prev_kv.as_ref().map(|p| p.mod_revision))
            })
            .collect()
    }

    /// A fresh store on a temporary backend and its hub.
    fn store_and_hub() -> (tempfile::TempDir, Arc<etcd_storage::Backend>, KvStore, WatchHub) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(etcd_storage::Backend::open(&dir.path().join("db")).expect("open"));
        let kv = KvStore::open(backend.clone()).expect("store");
        let hub = WatchHub::new(kv.current_revision());
        (dir, backend, kv, hub)
    }

    #[test]
    fn the_compaction_revision_is_served_from_memory_as_the_backend_holds_it() {
        let (_dir, backend, kv, hub) = store_and_hub();
        // a@2, b@3, b@4, delete a@5, b@6
        let ops =
            [("a", Some("1")), ("b", Some("1")), ("b", Some("2")), ("a", None), ("b", Some("3"))];
        apply(&kv, &backend, &hub, &ops);
        let (put, delete) = (EventType::Put as i32, EventType::Delete as i32);
        let all = served(&hub, &kv, 2);
        assert_eq!(all[2], (put, "b".into(), 4, Some(3)), "the ring holds prev kvs");
        assert_eq!(all[3], (delete, "a".into(), 5, Some(2)));
        compact(&kv, &backend, 4);
        // b@3, the previous version of b@4, is gone: so is the prev kv (a read
        // at 3 is refused as compacted). Later revisions keep theirs: a read at
        // 4 still finds a@2 and b@4.
        assert_eq!(
            served(&hub, &kv, 4),
            [
                (put, "b".into(), 4, None),
                (delete, "a".into(), 5, Some(2)),
                (put, "b".into(), 6, Some(4))
            ]
        );
        compact(&kv, &backend, 5);
        // The tombstone at the compaction revision was removed.
        assert_eq!(served(&hub, &kv, 5), [(put, "b".into(), 6, Some(4))]);
        assert_eq!(hub.read(&kv, 4, 6).err(), Some(WatchReadError::Compacted));
    }

    /// (type, key, mod revision, prev value) of the events a watcher delivers.
    fn delivered(
        watcher: &mut Watcher,
        hub: &WatchHub,
        kv: &KvStore,
    ) -> Vec<(i32, String, i64, Option<String>)> {
        let mut out = Vec::new();
        loop {
            watcher.skip_quiet(hub);
            match watcher.pull(hub, kv) {
                Pulled::Events { events, .. } => out.extend(events.into_iter().map(|e| {
                    let e = e.into_event();
                    let kv = e.kv.expect("kv");
                    let prev = e.prev_kv.map(|p| String::from_utf8_lossy(&p.value).into_owned());
                    (e.r#type, String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision, prev)
                })),
                Pulled::CaughtUp => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_watcher_delivers_its_range_from_its_start_with_its_filters() {
        let (_dir, backend, kv, hub) = store_and_hub();
        let spec = |range: KeyRange, start: i64| WatchSpec {
            range,
            start_revision: start,
            no_put: false,
            no_delete: false,
            prev_kv: true,
        };
        let mut all = Watcher::new(&hub, spec(KeyRange::From(b"a".to_vec()), 1));
        let mut b_only = Watcher::new(
            &hub,
            WatchSpec { no_put: true, ..spec(KeyRange::Single(b"b".to_vec()), 1) },
        );
        // a@2, b@3, b@4, delete b@5, c@6
        let ops =
            [("a", Some("1")), ("b", Some("1")), ("b", Some("2")), ("b", None), ("c", Some("3"))];
        apply(&kv, &backend, &hub, &ops);
        let (put, delete) = (EventType::Put as i32, EventType::Delete as i32);
        assert_eq!(
            delivered(&mut all, &hub, &kv),
            [
                (put, "a".into(), 2, None),
                (put, "b".into(), 3, None),
                (put, "b".into(), 4, Some("1".into())),
                (delete, "b".into(), 5, Some("2".into())),
                (put, "c".into(), 6, None),
            ]
        );
        assert_eq!(all.next_revision(), 7, "everything up to the head was delivered");
        assert_eq!(delivered(&mut b_only, &hub, &kv), [(delete, "b".into(), 5, Some("2".into()))]);
        // A watcher that starts later skips what came before; one whose start
        // was compacted away is told so.
        let mut late = Watcher::new(&hub, spec(KeyRange::From(b"a".to_vec()), 5));
        assert_eq!(delivered(&mut late, &hub, &kv).len(), 2);
        compact(&kv, &backend, 4);
        let mut early = Watcher::new(&hub, spec(KeyRange::From(b"a".to_vec()), 2));
        early.skip_quiet(&hub);
        assert!(matches!(early.pull(&hub, &kv), Pulled::Compacted { compact_revision: 4 }));
    }

    #[test]
    fn publishing_announces_the_revision() {
        let hub = WatchHub::new(1);
        hub.publish(vec![(2, vec![put("a", 2)])], 2);
        assert_eq!(hub.revision(), 2);
        hub.publish(vec![], 2);
        assert_eq!(hub.revision(), 2);
    }

    #[tokio::test]
    async fn a_batch_flags_only_the_watchers_it_concerns_with_their_lowest_revision() {
        let hub = WatchHub::new(1);
        let single = hub.register(KeyRange::Single(b"a".to_vec()));
        let prefix = hub.register(KeyRange::Between(b"p/".to_vec(), b"p0".to_vec()));
        let from = hub.register(KeyRange::From(b"x".to_vec()));
        let idle = hub.register(KeyRange::Single(b"zzz-not-written".to_vec()));
        hub.publish(vec![(2, vec![put("p/1", 2)]), (3, vec![put("a", 3), put("p/2", 3)])], 3);
        assert_eq!(hub.notified_revision(), 3);
        assert_eq!(single.take_pending(), Some(3));
        assert_eq!(prefix.take_pending(), Some(2), "the lowest flagged revision");
        assert_eq!(from.take_pending(), None);
        assert_eq!(idle.take_pending(), None);
        // A flag also wakes the watcher, even when it waits only afterwards.
        tokio::time::timeout(std::time::Duration::from_secs(1), single.flagged())
            .await
            .expect("flagged watchers are woken");
        hub.publish(vec![(4, vec![put("y", 4)])], 4);
        assert_eq!(from.take_pending(), Some(4));
        assert_eq!(single.take_pending(), None, "taking clears the flag");
    }

    #[test]
    fn dropped_interests_are_forgotten_and_a_reset_flags_everyone() {
        let hub = WatchHub::new(5);
        let kept = hub.register(KeyRange::Single(b"k".to_vec()));
        let dropped = hub.register(KeyRange::From(b"a".to_vec()));
        drop(dropped);
        assert_eq!(hub.registry.lock().unwrap().all().count(), 1);
        hub.reset(40);
        assert_eq!(kept.take_pending(), Some(6), "re-read everything after the old revision");
        assert_eq!(hub.notified_revision(), 40);
        drop(kept);
        assert_eq!(hub.registry.lock().unwrap().all().count(), 0);
    }
}
