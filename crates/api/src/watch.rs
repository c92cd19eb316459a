//! The Watch service: one bidirectional stream carries many watchers.
//!
//! Each stream has one bounded outbound queue (`watch_queue.rs`). Control responses (created,
//! canceled, progress) are sent by the task reading the client's requests; each
//! watcher is its own task that pulls revisions from the [`WatchHub`] and sends its
//! events. Since a watcher's "created" response is queued before its task starts, no
//! event of a watcher can overtake its creation. A client that stops reading fills
//! the queue and stalls only its own stream's watchers; they resume from their
//! revision, so nothing is lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_daemon::{Caller, EtcdServer};
use etcd_proto::etcdserverpb::watch_create_request::FilterType;
use etcd_proto::etcdserverpb::watch_request::RequestUnion;
use etcd_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use etcd_server::watch::{KeyRange, Poke, Pulled, WatchHub, WatchSpec, Watcher};
use prost::Message;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::watch_codec::Outbound;
use crate::watch_queue;

/// How often a deferred progress request wakes the stream's watchers again.
const PROGRESS_RECHECK: std::time::Duration = std::time::Duration::from_millis(10);
/// The watch ID of responses that belong to no watcher (clientv3's InvalidWatchID).
const INVALID_WATCH_ID: i64 = -1;

/// Serves one watch stream whose requests arrive on `inbound`; its responses
/// come out of the returned channel. Shared by the gRPC and JSON gateway routes.
pub(crate) fn open(
    server: Arc<EtcdServer>,
    caller: Caller,
    inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
) -> watch_queue::Receiver<Outbound> {
    let (tx, rx) = watch_queue::queue();
    let stream = WatchStream {
        server,
        caller,
        tx,
        watchers: BTreeMap::new(),
        next_id: 0,
        delivered: Arc::new(Delivered::default()),
        progress_pending: None,
    };
    tokio::spawn(stream.run(inbound));
    rx
}

/// The server side of one Watch stream.
struct WatchStream {
    server: Arc<EtcdServer>,
    /// Who opened the stream: every create is checked with these credentials.
    caller: Caller,
    tx: watch_queue::Sender<Outbound>,
    watchers: BTreeMap<i64, WatcherHandle>,
    next_id: i64,
    /// Pinged by watchers whenever they delivered more, for a deferred progress.
    delivered: Arc<Delivered>,
    /// The revision of a progress request not answered yet.
    progress_pending: Option<i64>,
}

/// How watchers tell their stream they delivered more, which only a pending
/// progress request waits for: without one, a delivery costs no wake-up
/// (that `Notify` per event was about 3% of a fan-out's CPU).
#[derive(Default)]
struct Delivered {
    notify: Notify,
    /// A progress request waits. Set before the stream checks the watchers'
    /// delivered revisions and read after a watcher moved its own, both
    /// sequentially consistent, so one of the two sees the other.
    wanted: AtomicBool,
}

/// A watcher task as its stream sees it.
struct WatcherHandle {
    task: JoinHandle<()>,
    /// Every event of a revision at or below this was handed to the stream.
    delivered_through: Arc<AtomicI64>,
    /// Wakes the watcher when idle so it catches up with revisions that did
    /// not concern it (it otherwise sleeps until an event does).
    poke: Poke,
}

impl WatchStream {
    async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send,
    ) {
        let mut ended_cleanly = false;
        loop {
            let delivered = self.delivered.clone();
            let request = tokio::select! {
                request = inbound.next() => request,
                () = delivered.notify.notified(), if self.progress_pending.is_some() => {
                    if !self.answer_progress().await {
                        break;
                    }
                    continue;
                }
                // An idle watcher may have gone back to sleep just before the
                // hub announced the revision the request waits for.
                () = tokio::time::sleep(PROGRESS_RECHECK), if self.progress_pending.is_some() => {
                    self.poke_watchers();
                    if !self.answer_progress().await {
                        break;
                    }
                    continue;
                }
            };
            let request = match request {
                Some(Ok(request)) => request,
                Some(Err(_)) => break,
                None => {
                    ended_cleanly = true;
                    break;
                }
            };
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.progress_pending = Some(self.server.watch_hub().revision());
                    self.delivered.wanted.store(true, Ordering::SeqCst);
                    self.poke_watchers();
                    self.answer_progress().await
                }
                None => true,
            };
            if !sent {
                break;
            }
            self.watchers.retain(|_, watcher| !watcher.task.is_finished());
        }
        if ended_cleanly {
            // As etcd: a client that only closed its sending side keeps receiving
            // its watchers' events until it goes away.
            self.tx.closed().await;
        }
        for watcher in self.watchers.values() {
            watcher.task.abort();
        }
    }

    fn poke_watchers(&self) {
        for watcher in self.watchers.values() {
            watcher.poke.poke();
        }
    }

    /// Answers the pending progress request at revision `R` once every watcher
    /// of the stream has handed over all its events up to `R`, as etcd 3.5.13+
    /// does (only synced watchers), so a client that receives the progress
    /// notification has seen everything at or below its revision on this
    /// stream: Kubernetes' consistent reads from its watch cache rely on that.
    /// Until then it stays pending, re-checked whenever a watcher delivers
    /// (where etcd drops the request and the client asks again). False when the
    /// client is gone.
    async fn answer_progress(&mut self) -> bool {
        let Some(revision) = self.progress_pending else { return true };
        let synced = self.watchers.values().all(|w| {
            w.task.is_finished() || w.delivered_through.load(Ordering::SeqCst) >= revision
        });
        if !synced {
            return true;
        }
        self.progress_pending = None;
        self.delivered.wanted.store(false, Ordering::SeqCst);
        let header = Some(self.server.header(revision));
        let progress = WatchResponse { header, watch_id: INVALID_WATCH_ID, ..Default::default() };
        self.tx.send(Outbound::Response(progress)).await.is_ok()
    }

    /// etcd's `isWatchPermitted`: read permission on the watched range with
    /// the stream's credentials. A from-key watch (`range_end` "\0") is
    /// checked as its key alone, as etcd does (it turns the end into an empty
    /// one first). The refusal is the text of etcd's gRPC error, as etcd puts
    /// it in `cancel_reason`.
    async fn permitted(&self, create: &WatchCreateRequest) -> Result<(), String> {
        let range_end: &[u8] = if create.range_end == [0] { &[] } else { &create.range_end };
        let checked = match self.server.credentials(&self.caller).await {
            Ok(info) => self.server.check_read(&info, &create.key, range_end),
            Err(err) => Err(err),
        };
        checked.map_err(|err| {
            let status = crate::status::to_status(&err);
            // Anything but these three is reported as a denial, as etcd does.
            let status = match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::Unauthenticated => status,
                _ => crate::status::to_status(&etcd_server::ServerError::Auth(
                    etcd_auth::AuthError::PermissionDenied,
                )),
            };
            format!("rpc error: code = {:?} desc = {}", status.code(), status.message())
        })
    }

    async fn create(&mut self, mut create: WatchCreateRequest) -> bool {
        let hub_revision = self.server.watch_hub().revision();
        let header = Some(self.server.header(hub_revision));
        if create.key.is_empty() {
            create.key = vec![0];
        }
        if let Err(reason) = self.permitted(&create).await {
            let refused = WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            };
            return self.tx.send(Outbound::Response(refused)).await.is_ok();
        }
        let range = match create.range_end.as_slice() {
            [] => KeyRange::Single(create.key),
            [0] => KeyRange::From(create.key),
            end => KeyRange::Between(create.key, end.to_vec()),
        };
        let refused = |reason: &str| WatchResponse {
            header,
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if let KeyRange::Between(start, end) = &range {
            if start >= end {
                let refused = Outbound::Response(refused("mvcc: watcher range is empty"));
                return self.tx.send(refused).await.is_ok();
            }
        }
        let id = if create.watch_id == 0 {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watchers.contains_key(&create.watch_id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream";
            return self.tx.send(Outbound::Response(refused(reason))).await.is_ok();
        } else {
            create.watch_id
        };
        let created = WatchResponse { header, watch_id: id, created: true, ..Default::default() };
        if self.tx.send(Outbound::Response(created)).await.is_err() {
            return false;
        }
        let start =
            if create.start_revision == 0 { hub_revision + 1 } else { create.start_revision };
        let spec = WatchSpec {
            range,
            start_revision: start,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
        };
        let watcher = WatcherTask {
            id,
            core: Watcher::new(self.server.watch_hub(), spec),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            delivered: Arc::new(AtomicI64::new(start - 1)),
        };
        let delivered_through = watcher.delivered.clone();
        let poke = watcher.core.interest().poke();
        let sink = Sink { tx: self.tx.clone(), delivered: self.delivered.clone() };
        let task = tokio::spawn(watcher.run(self.server.clone(), sink));
        self.watchers.insert(id, WatcherHandle { task, delivered_through, poke });
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(watcher) = self.watchers.remove(&id) else { return true };
        watcher.task.abort();
        let header = Some(self.server.header(self.server.watch_hub().revision()));
        let canceled = WatchResponse { header, watch_id: id, canceled: true, ..Default::default() };
        self.tx.send(Outbound::Response(canceled)).await.is_ok()
    }
}

/// One watcher's task: its core (what it watches, where it is) and how its
/// responses are shaped and sent.
struct WatcherTask {
    id: i64,
    core: Watcher,
    fragment: bool,
    progress_notify: bool,
    /// Shared with the stream: the core's `next_revision - 1` once handed over.
    delivered: Arc<AtomicI64>,
}

/// Where a watcher's responses go, and whom it tells that it delivered more.
struct Sink {
    tx: watch_queue::Sender<Outbound>,
    delivered: Arc<Delivered>,
}

impl WatcherTask {
    /// Publishes that everything below `next_revision` was handed to the stream.
    fn mark_delivered(&self, sink: &Sink) {
        let through = self.core.next_revision() - 1;
        let before = self.delivered.swap(through, Ordering::SeqCst);
        debug_assert!(before <= through, "a watcher's delivered revision only grows");
        if before != through && sink.delivered.wanted.load(Ordering::SeqCst) {
            sink.delivered.notify.notify_one();
        }
    }

    /// Delivers events from `next_revision` on. Until it has read up to the
    /// revision published when it registered, the watcher reads every revision;
    /// after that it is caught up and skips what was never flagged for it.
    async fn run(mut self, server: Arc<EtcdServer>, sink: Sink) {
        let tx = &sink.tx;
        let hub: &WatchHub = server.watch_hub();
        let interval = server.config().watch_progress_notify_interval;
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut sent_since_progress = false;
        let mut progress_due = false;
        loop {
            self.core.skip_quiet(hub);
            self.mark_delivered(&sink);
            let (covered, events) = match self.core.pull(hub, server.kv()) {
                Pulled::CaughtUp => {
                    // Everything up to `next_revision - 1` was delivered.
                    if progress_due {
                        progress_due = false;
                        if !sent_since_progress {
                            let header = Some(server.header(self.core.next_revision() - 1));
                            let note =
                                WatchResponse { header, watch_id: self.id, ..Default::default() };
                            if tx.send(Outbound::Response(note)).await.is_err() {
                                return;
                            }
                        }
                        sent_since_progress = false;
                    }
                    tokio::select! {
                        () = self.core.interest().flagged() => {}
                        _ = progress.tick(), if self.progress_notify => progress_due = true,
                    }
                    continue;
                }
                Pulled::Compacted { compact_revision } => {
                    let compacted = WatchResponse {
                        header: Some(server.header(hub.revision())),
                        watch_id: self.id,
                        canceled: true,
                        compact_revision,
                        ..Default::default()
                    };
                    let _ = tx.send(Outbound::Response(compacted)).await;
                    return;
                }
                Pulled::Failed => return,
                Pulled::Events { covered, events } => (covered, events),
            };
            if events.is_empty() {
                continue;
            }
            sent_since_progress = true;
            let header = server.header(covered);
            if !self.fragment {
                let events = Outbound::Events { header, watch_id: self.id, events };
                if tx.send(events).await.is_err() {
                    return;
                }
                continue;
            }
            let response = Outbound::Events { header, watch_id: self.id, events }.into_response();
            let limit = server.config().max_request_bytes;
            for part in fragments(response, limit) {
                if tx.send(Outbound::Response(part)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Splits a response whose encoding exceeds `limit` bytes into several, all but the
/// last marked `fragment` (for watchers that asked for fragmentation, and never
/// below one event per response), as etcd does.
fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let mut parts = Vec::new();
    let template = WatchResponse { events: Vec::new(), fragment: true, ..response.clone() };
    let mut current = template.clone();
    for event in response.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop().expect("just pushed");
            parts.push(std::mem::replace(&mut current, template.clone()));
            current.events.push(overflow);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::event::EventType;
    use etcd_proto::mvccpb::{Event, KeyValue};

    fn event(key: &str, value_bytes: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'v'; value_bytes],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn large_responses_fragment_only_when_asked_and_keep_every_event_in_order() {
        let events: Vec<Event> = (0..10).map(|i| event(&format!("k{i}"), 100)).collect();
        let response = WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
        assert_eq!(fragments(response.clone(), 100_000).len(), 1);
        let parts = fragments(response, 300);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().expect("last").fragment);
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(rejoined, events);
    }
}
