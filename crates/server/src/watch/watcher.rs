//! One watcher's position and filters, independent of how its events travel:
//! the Watch service drives it from a task per watcher, the simulator from its
//! loop. It pulls revisions from the hub, keeps the events its range and
//! filters select, fills `prev_kv` when asked, and moves its position past
//! what it read, so every revision is delivered once and in order.

use etcd_mvcc::{KvStore, MvccError};
use etcd_proto::etcdserverpb::RangeRequest;
use etcd_proto::mvccpb::event::EventType;
use etcd_proto::mvccpb::Event;

use super::{Interest, KeyRange, Selected, WatchHub, WatchReadError};

/// What a watcher wants.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The keys.
    pub range: KeyRange,
    /// The first revision to deliver.
    pub start_revision: i64,
    /// Leave out puts (etcd's `NOPUT` filter).
    pub no_put: bool,
    /// Leave out deletes (etcd's `NODELETE` filter).
    pub no_delete: bool,
    /// Fill each event's `prev_kv`.
    pub prev_kv: bool,
}

/// What one pull found.
#[derive(Debug)]
pub enum Pulled {
    /// The revisions up to `covered` were read; these events of them concern
    /// the watcher (possibly none).
    Events {
        /// The last revision read.
        covered: i64,
        /// The selected events, in revision order.
        events: Vec<Selected>,
    },
    /// Every revision up to the published one was delivered.
    CaughtUp,
    /// The revisions it needs were compacted away: the watcher is canceled.
    Compacted {
        /// The store's compaction revision.
        compact_revision: i64,
    },
    /// The store failed; the member is going down.
    Failed,
}

/// One watcher.
pub struct Watcher {
    interest: Interest,
    spec: WatchSpec,
    next_revision: i64,
    /// The hub's revision when it registered: until it has read past it, the
    /// watcher reads every revision; after, it may skip the quiet ones.
    registered_at: i64,
}

impl Watcher {
    /// Registers a watcher with the hub (before reading its revision, so no
    /// revision published after the read escapes it).
    pub fn new(hub: &WatchHub, spec: WatchSpec) -> Watcher {
        let interest = hub.register(spec.range.clone());
        let registered_at = hub.revision();
        Watcher { interest, next_revision: spec.start_revision, spec, registered_at }
    }

    /// The next revision it will deliver: everything before it was handed out.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// Its registration with the hub (to wait for a flag).
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Moves past revisions known to hold nothing for this watcher: once it
    /// has read up to its registration, the hub flags every revision with an
    /// event in its range, so up to the lowest flag (or, with none, up to the
    /// hub's notified revision) there is nothing to read.
    pub fn skip_quiet(&mut self, hub: &WatchHub) {
        if self.next_revision > self.registered_at {
            let notified = hub.notified_revision();
            let quiet_until = match self.interest.take_pending() {
                Some(flagged) => flagged - 1,
                None => notified,
            };
            self.next_revision = self.next_revision.max(quiet_until + 1);
        }
    }

    /// Reads the next revisions the hub has published.
    pub fn pull(&mut self, hub: &WatchHub, kv: &KvStore) -> Pulled {
        let current = hub.revision();
        if current < self.next_revision {
            return Pulled::CaughtUp;
        }
        let (revisions, covered) = match hub.read(kv, self.next_revision, current) {
            Ok(read) => read,
            Err(WatchReadError::Compacted) => {
                return Pulled::Compacted { compact_revision: kv.compact_revision() }
            }
            Err(WatchReadError::Storage) => return Pulled::Failed,
        };
        // A store that cannot read the previous value fails the watcher rather
        // than deliver an event without the `prev_kv` it asked for.
        let Ok(events) = self.select(kv, revisions) else { return Pulled::Failed };
        assert!(covered >= self.next_revision, "invariant: a watcher's position only grows");
        self.next_revision = covered + 1;
        Pulled::Events { covered, events }
    }

    /// The events of `revisions` this watcher delivers, in order. Without
    /// `prev_kv` every watcher of a fan-out delivers the hub's event as it is;
    /// a revision's last one takes the revision's handle instead of another
    /// count on it (1,000 watchers count on the same one from every core).
    fn select(
        &self,
        kv: &KvStore,
        revisions: Vec<super::RevisionEvents>,
    ) -> Result<Vec<Selected>, MvccError> {
        let mut selected = Vec::new();
        for (_, events) in revisions {
            let mut pending = None;
            for (index, event) in events.events().iter().enumerate() {
                if !self.matches(event) {
                    continue;
                }
                if self.spec.prev_kv {
                    selected.push(Selected::Shaped(self.with_prev_kv(kv, event)?));
                } else if let Some(previous) = pending.replace(index) {
                    selected.push(Selected::Shared { events: events.clone(), index: previous });
                }
            }
            if let Some(index) = pending {
                selected.push(Selected::Shared { events, index });
            }
        }
        Ok(selected)
    }

    fn matches(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let is_put = event.r#type == EventType::Put as i32;
        if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
            return false;
        }
        self.spec.range.contains(&kv.key)
    }

    /// The event with its `prev_kv`, read from history when the event came
    /// from the backend without it.
    fn with_prev_kv(&self, store: &KvStore, event: &Event) -> Result<Event, MvccError> {
        let mut event = event.clone();
        let kv = event.kv.as_ref().expect("matched events have a kv");
        let is_create = event.r#type == EventType::Put as i32 && kv.version == 1;
        if event.prev_kv.is_none() && !is_create {
            let previous = RangeRequest {
                key: kv.key.clone(),
                revision: kv.mod_revision - 1,
                ..Default::default()
            };
            match store.range(&previous) {
                Ok(response) => event.prev_kv = response.kvs.into_iter().next(),
                // The previous version was compacted away: etcd too leaves it out.
                Err(MvccError::Compacted) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(event)
    }
}
