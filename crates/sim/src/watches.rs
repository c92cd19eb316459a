//! Watch clients and etcd's watch guarantees. Every revision any member
//! applies goes into a reference history (and must be the same wherever it is
//! applied); each watch client follows a key range through the server's own
//! watcher core on some member, resumes from where it was on another member
//! when its member goes away (or at random), and every batch it receives is
//! checked against the reference:
//! - ordered and unique: revisions only grow, none twice;
//! - atomic: a revision's events come together, all of them;
//! - reliable: no revision with an event in the range is skipped, across
//!   resumes on other members too (compaction excepted: the client restarts at
//!   the compaction revision, as etcd's clients do);
//! - bookmarkable: a caught-up watcher's position (what a progress notification
//!   reports) means every event up to it was delivered: checked as a batch
//!   with no events up to it;
//! - resumable: now and then a client watches again from an older revision
//!   and is checked from there;
//! - `prev_kv`: the key's value just before the event, when history has it.

use std::collections::BTreeMap;

use etcd_proto::mvccpb::event::EventType;
use etcd_proto::mvccpb::Event;
use etcd_server::watch::{KeyRange, Pulled, WatchSpec, Watcher};

/// An event as the checkers compare it.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    key: Vec<u8>,
    put: bool,
    value: Vec<u8>,
}

fn ev(event: &Event) -> Ev {
    let kv = event.kv.clone().unwrap_or_default();
    Ev { key: kv.key, put: event.r#type == EventType::Put as i32, value: kv.value }
}

/// Every revision's events, as the members applied them.
#[derive(Default)]
pub struct Reference {
    revisions: BTreeMap<i64, Vec<Ev>>,
    /// Per key, its value after each revision that changed it (`None`: deleted).
    by_key: BTreeMap<Vec<u8>, BTreeMap<i64, Option<Vec<u8>>>>,
}

impl Reference {
    /// A member applied `revision` with these events.
    pub fn record(&mut self, member: u64, revision: i64, events: &[Event]) -> Result<(), String> {
        let events: Vec<Ev> = events.iter().map(ev).collect();
        if let Some(known) = self.revisions.get(&revision) {
            if *known != events {
                return Err(format!(
                    "state machine safety: revision {revision} on member {member} has events \
                     {events:?}, elsewhere {known:?}"
                ));
            }
            return Ok(());
        }
        for e in &events {
            let value = e.put.then(|| e.value.clone());
            self.by_key.entry(e.key.clone()).or_default().insert(revision, value);
        }
        self.revisions.insert(revision, events);
        Ok(())
    }

    /// The events in `range` of revisions `from..=to`, or `None` when some of
    /// those revisions are not known (so nothing can be said).
    fn expected(&self, range: &KeyRange, from: i64, to: i64) -> Option<Vec<(i64, Ev)>> {
        if from > to {
            return Some(Vec::new());
        }
        let known = self.revisions.range(from..=to).count() as i64;
        if known != to - from + 1 {
            return None;
        }
        Some(
            self.revisions
                .range(from..=to)
                .flat_map(|(r, evs)| evs.iter().map(move |e| (*r, e.clone())))
                .filter(|(_, e)| range.contains(&e.key))
                .collect(),
        )
    }

    /// The key's value just before `revision`: `None` when history does not go
    /// back that far, `Some(None)` when the key did not exist.
    fn before(&self, key: &[u8], revision: i64) -> Option<Option<Vec<u8>>> {
        let changes = self.by_key.get(key)?;
        changes.range(..revision).next_back().map(|(_, v)| v.clone())
    }
}

/// One watch client.
pub struct WatchClient {
    /// Its number.
    pub id: u64,
    range: KeyRange,
    prev_kv: bool,
    /// The member it watches through, and which run of it.
    on: Option<(u64, u64)>,
    watcher: Option<Watcher>,
    /// The next revision it expects.
    next: i64,
    /// Batches received with events.
    pub batches: u64,
}

/// What the world tells a client after a pull.
pub enum Outcome {
    /// Keep going.
    Continue,
    /// The watcher is gone (compacted or failed): make a new one.
    Restart,
}

impl WatchClient {
    /// A client of `range` from revision 1.
    pub fn new(id: u64, range: KeyRange, prev_kv: bool) -> WatchClient {
        WatchClient { id, range, prev_kv, on: None, watcher: None, next: 1, batches: 0 }
    }

    /// Where it watches now, if anywhere.
    pub fn on(&self) -> Option<(u64, u64)> {
        self.on.filter(|_| self.watcher.is_some())
    }

    /// Drops its watcher (its member went away, or the client moves).
    pub fn detach(&mut self) {
        self.watcher = None;
        self.on = None;
    }

    /// The next revision it expects.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Drops its watcher and watches again from `revision` (at most where it
    /// is): events it was already given are delivered again, and checked again.
    pub fn rewind(&mut self, revision: i64) {
        self.detach();
        self.next = revision.clamp(1, self.next);
    }

    /// Watches through `member` (run `incarnation`) from where it was.
    pub fn attach(&mut self, member: u64, incarnation: u64, watcher: Watcher) {
        self.on = Some((member, incarnation));
        self.watcher = Some(watcher);
    }

    /// What a new watcher for this client asks for.
    pub fn spec(&self) -> WatchSpec {
        WatchSpec {
            range: self.range.clone(),
            start_revision: self.next,
            no_put: false,
            no_delete: false,
            prev_kv: self.prev_kv,
        }
    }

    /// Pulls until caught up (at most `rounds` pulls) from `hub`/`kv`, checking
    /// every batch. `skip_one` drops an event of the first batch with events
    /// (the injected bug `skip-watch-event`).
    pub fn pull(
        &mut self,
        hub: &etcd_server::watch::WatchHub,
        kv: &etcd_mvcc::KvStore,
        reference: &Reference,
        skip_one: &mut bool,
    ) -> Result<Outcome, String> {
        let Some(mut watcher) = self.watcher.take() else { return Ok(Outcome::Restart) };
        let outcome = self.pull_with(&mut watcher, hub, kv, reference, skip_one);
        self.watcher = Some(watcher);
        outcome
    }

    fn pull_with(
        &mut self,
        watcher: &mut Watcher,
        hub: &etcd_server::watch::WatchHub,
        kv: &etcd_mvcc::KvStore,
        reference: &Reference,
        skip_one: &mut bool,
    ) -> Result<Outcome, String> {
        for _ in 0..16 {
            watcher.skip_quiet(hub);
            match watcher.pull(hub, kv) {
                Pulled::CaughtUp => {
                    // What a progress notification would report: everything in
                    // range up to here was delivered (the watcher may have
                    // skipped revisions the hub never flagged for it).
                    let progress = watcher.next_revision() - 1;
                    if progress >= self.next {
                        let compacted = kv.compact_revision();
                        check_batch(self, reference, progress, &[], compacted, kv)
                            .map_err(|e| format!("{e} (at a progress notification)"))?;
                        self.next = progress + 1;
                    }
                    return Ok(Outcome::Continue);
                }
                Pulled::Compacted { compact_revision } => {
                    // As etcd's clients: start again at the compaction revision.
                    self.next = compact_revision.max(self.next);
                    return Ok(Outcome::Restart);
                }
                Pulled::Failed => return Ok(Outcome::Restart),
                Pulled::Events { covered, events } => {
                    let mut events: Vec<_> = events.into_iter().map(|e| e.into_event()).collect();
                    if *skip_one && !events.is_empty() {
                        *skip_one = false;
                        events.remove(0);
                    }
                    let compacted = kv.compact_revision();
                    check_batch(self, reference, covered, &events, compacted, kv)?;
                    if !events.is_empty() {
                        self.batches += 1;
                    }
                    self.next = covered + 1;
                }
            }
        }
        Ok(Outcome::Continue)
    }
}

fn check_batch(
    client: &WatchClient,
    reference: &Reference,
    covered: i64,
    events: &[Event],
    compacted: i64,
    kv_store: &etcd_mvcc::KvStore,
) -> Result<(), String> {
    let from = client.next;
    let got: Vec<(i64, Ev)> =
        events.iter().map(|e| (e.kv.as_ref().map_or(0, |kv| kv.mod_revision), ev(e))).collect();
    if let Some(expected) = reference.expected(&client.range, from, covered) {
        // At the compaction revision the backend no longer holds deletes.
        let expected: Vec<(i64, Ev)> =
            expected.into_iter().filter(|(r, e)| e.put || *r > compacted).collect();
        if got != expected {
            let what = if got.len() < expected.len() {
                "reliable/atomic: events missing"
            } else if got.windows(2).any(|w| w[0].0 > w[1].0) {
                "ordered: revisions out of order"
            } else {
                "unique/correct: events that should not be there"
            };
            return Err(format!(
                "watch guarantees ({what}): client {} over {:?} read revisions {from}..={covered}: \
                 expected {expected:?}, delivered {got:?}",
                client.id, client.range
            ));
        }
    }
    if client.prev_kv {
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let previous = kv.mod_revision - 1;
            let Some(expected) = reference.before(&kv.key, kv.mod_revision) else { continue };
            let got = event.prev_kv.as_ref().map(|p| p.value.clone());
            // History at or before the compaction revision may be gone.
            let explained = got.is_none() && previous <= compacted;
            if got != expected && !explained {
                if crate::tracing() {
                    let at = |rev: i64| {
                        let request = etcd_proto::etcdserverpb::RangeRequest {
                            key: kv.key.clone(),
                            revision: rev,
                            ..Default::default()
                        };
                        kv_store.range(&request).map(|r| r.kvs).map_err(|e| e.to_string())
                    };
                    eprintln!(
                        "prev_kv debug: compacted {compacted} current {} at {}: {:?}; at {}: {:?}",
                        kv_store.current_revision(),
                        previous,
                        at(previous),
                        previous - 1,
                        at(previous - 1)
                    );
                }
                return Err(format!(
                    "watch guarantees (prev_kv): client {} got prev_kv {:?} for {:?} at revision \
                     {}, the value before was {:?}",
                    client.id,
                    got.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    String::from_utf8_lossy(&kv.key),
                    kv.mod_revision,
                    expected.map(|v| String::from_utf8_lossy(&v).into_owned())
                ));
            }
        }
    }
    Ok(())
}
