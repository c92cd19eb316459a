//! The outbound side of one watch stream. It owns the stream's watchers and
//! serves them when the client's connection asks for the next response: it is
//! the response body's `Stream`, polled by the task of the HTTP/2 stream. A
//! flag from the hub wakes that task directly and names the watcher it
//! concerns, so an event costs no task wake-up per watcher and no queue
//! between a watcher and its stream (together about a fifth of a fan-out's
//! profile before; the CPU per event fell by less, 8%, as the outlet's own
//! bookkeeping took part of it).
//!
//! Requests reach it through a small bounded channel of [`Control`]s, in the
//! order the client sent them. A stream answers a watcher's creation before any
//! of its events because both come out of here in that order. A client that
//! stops reading stops being polled: its watchers stay where they are and
//! resume from their revision when it reads again, so nothing is lost and no
//! other stream waits for it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use etcd_daemon::EtcdServer;
use etcd_proto::etcdserverpb::watch_create_request::FilterType;
use etcd_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use etcd_server::watch::{KeyRange, Pulled, WatchSpec, Watcher};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use crate::watch::{fragments, refusal, INVALID_WATCH_ID};
use crate::watch_codec::Outbound;

/// Requests queued before the task reading them waits for the client to read.
const CONTROL_QUEUED_MAX: usize = 64;
/// Watchers served in one poll without producing anything before the stream
/// lets its task's other work run.
const SERVED_PER_POLL_MAX: usize = 64;

/// What the client asked, in its order.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send this response as it is (a refused creation).
    Respond(WatchResponse),
    /// Create a watcher (permitted, its range checked) on `range`; its
    /// responses carry the header of `hub_revision`.
    Create { create: WatchCreateRequest, range: KeyRange, hub_revision: i64 },
    /// Cancel a watcher.
    Cancel(i64),
    /// Answer once every watcher delivered everything up to this revision.
    Progress(i64),
    /// The client's requests failed: end the stream.
    End,
}

/// One watcher of the stream.
struct StreamWatcher {
    id: i64,
    core: Watcher,
    fragment: bool,
    progress_notify: bool,
    /// It sent events since the last progress tick.
    sent_since_progress: bool,
    /// A progress tick came: notify once caught up, if nothing was sent.
    progress_due: bool,
    /// In the outlet's queue of watchers to serve.
    queued: bool,
    /// Names this watcher's slot to the outlet and wakes the outlet's task.
    waker: Waker,
}

/// What happened since the outlet last looked (the slots of the watchers whose
/// flag came, and whether requests came), and the waker of the task polling it.
#[derive(Default)]
struct Woken {
    /// Something was noted since the outlet last took the notes: the outlet
    /// looks at this alone (no lock) on every poll, and the task is woken
    /// once per take, however many watchers are flagged meanwhile.
    pending: AtomicBool,
    state: Mutex<WokenState>,
}

#[derive(Default)]
struct WokenState {
    slots: Vec<usize>,
    requests: bool,
    waker: Option<Waker>,
}

impl Woken {
    fn wake(&self, note: impl FnOnce(&mut WokenState)) {
        let waker = {
            let mut state = self.state.lock().expect("watch outlet lock");
            note(&mut state);
            // Set under the lock, as the outlet clears it: a note made after
            // the outlet took the notes finds it clear and wakes the task.
            match self.pending.swap(true, Ordering::AcqRel) {
                true => None,
                false => state.waker.clone(),
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The waker a watcher leaves with the hub.
struct WatcherWaker {
    slot: usize,
    woken: Arc<Woken>,
}

impl Wake for WatcherWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.wake(|state| state.slots.push(self.slot));
    }
}

/// The request task's end of the outlet's requests.
pub(crate) struct Requests {
    tx: mpsc::Sender<Control>,
    woken: Arc<Woken>,
}

/// The outlet is gone (the client left).
pub(crate) struct Gone;

impl Requests {
    /// Hands `control` to the outlet, first waiting while
    /// [`CONTROL_QUEUED_MAX`] are waiting for it.
    pub(crate) async fn send(&self, control: Control) -> Result<(), Gone> {
        self.tx.send(control).await.map_err(|_| Gone)?;
        self.woken.wake(|state| state.requests = true);
        Ok(())
    }
}

/// An outlet and the end its requests are sent from.
pub(crate) fn outlet(server: Arc<EtcdServer>) -> (Requests, Outlet) {
    let (tx, control) = mpsc::channel(CONTROL_QUEUED_MAX);
    let woken = Arc::new(Woken::default());
    let outlet = Outlet {
        server,
        control,
        requests_waiting: false,
        ended: false,
        watchers: Vec::new(),
        free: Vec::new(),
        slots: HashMap::new(),
        next_id: 0,
        woken: woken.clone(),
        registered: None,
        queue: VecDeque::new(),
        output: VecDeque::new(),
        progress_pending: None,
        ticker: None,
    };
    (Requests { tx, woken }, outlet)
}

/// The responses of one watch stream.
pub(crate) struct Outlet {
    server: Arc<EtcdServer>,
    control: mpsc::Receiver<Control>,
    /// Requests were sent since the outlet last found none waiting.
    requests_waiting: bool,
    ended: bool,
    /// The watchers by slot (a watcher's waker names its slot).
    watchers: Vec<Option<StreamWatcher>>,
    /// Empty slots.
    free: Vec<usize>,
    /// The slot of each watch ID.
    slots: HashMap<i64, usize>,
    next_id: i64,
    woken: Arc<Woken>,
    /// The waker last left in `woken` (the polling task's; it does not change).
    registered: Option<Waker>,
    /// The slots of the watchers to serve, each once (`queued`), in turn.
    queue: VecDeque<usize>,
    /// Responses made and not yet taken; served watchers add to it only once
    /// it is empty, so it holds one watcher's read at most (plus the answers
    /// to the requests taken with it).
    output: VecDeque<Outbound>,
    /// The revision of a progress request not answered yet.
    progress_pending: Option<i64>,
    /// Progress notifications, for watchers that asked (one clock per stream,
    /// as etcd's).
    ticker: Option<tokio::time::Interval>,
}

impl Outlet {
    /// Takes what the client asked; true if there was anything.
    /// Only looks when told some were sent: the channel is not polled for
    /// every event.
    fn take_requests(&mut self) -> bool {
        let mut took = false;
        while self.requests_waiting && self.output.is_empty() {
            match self.control.try_recv() {
                Ok(control) => {
                    took = true;
                    self.apply(control);
                }
                // Disconnected: the client sent its last request; its watchers
                // go on, as etcd's do, until it leaves.
                Err(mpsc::error::TryRecvError::Empty | mpsc::error::TryRecvError::Disconnected) => {
                    self.requests_waiting = false
                }
            }
        }
        took
    }

    fn apply(&mut self, control: Control) {
        match control {
            Control::Respond(response) => self.output.push_back(Outbound::Response(response)),
            Control::Create { create, range, hub_revision } => {
                self.create(create, range, hub_revision)
            }
            Control::Cancel(id) => {
                if let Some(slot) = self.slots.get(&id).copied() {
                    self.remove(slot);
                    let header = Some(self.server.header(self.server.watch_hub().revision()));
                    let canceled = WatchResponse {
                        header,
                        watch_id: id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.output.push_back(Outbound::Response(canceled));
                }
            }
            Control::Progress(revision) => {
                // Every watcher reads up to the hub's revision at least, even
                // one whose flag has not come yet.
                self.progress_pending = Some(revision);
                for slot in 0..self.watchers.len() {
                    self.enqueue(slot);
                }
            }
            Control::End => self.ended = true,
        }
    }

    fn create(&mut self, create: WatchCreateRequest, range: KeyRange, hub_revision: i64) {
        let header = self.server.header(hub_revision);
        let id = if create.watch_id == 0 {
            while self.slots.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.slots.contains_key(&create.watch_id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream";
            self.output.push_back(Outbound::Response(refusal(header, reason)));
            return;
        } else {
            create.watch_id
        };
        let created = WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        self.output.push_back(Outbound::Response(created));
        let start =
            if create.start_revision == 0 { hub_revision + 1 } else { create.start_revision };
        let spec = WatchSpec {
            range,
            start_revision: start,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
        };
        if create.progress_notify && self.ticker.is_none() {
            let interval = self.server.config().watch_progress_notify_interval;
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            self.ticker = Some(ticker);
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.watchers.push(None);
            self.watchers.len() - 1
        });
        let waker = Waker::from(Arc::new(WatcherWaker { slot, woken: self.woken.clone() }));
        let watcher = StreamWatcher {
            id,
            core: Watcher::new(self.server.watch_hub(), spec),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            sent_since_progress: false,
            progress_due: false,
            queued: false,
            waker,
        };
        debug_assert!(self.watchers[slot].is_none(), "a free slot is empty");
        self.watchers[slot] = Some(watcher);
        self.slots.insert(id, slot);
        // It reads from its start revision at once.
        self.enqueue(slot);
    }

    /// Drops the watcher in `slot` (which unregisters it from the hub). A
    /// waker it left behind may still name the slot: serving the slot's next
    /// watcher once more is harmless.
    fn remove(&mut self, slot: usize) {
        let watcher = self.watchers[slot].take().expect("removing a watcher in its slot");
        self.slots.remove(&watcher.id);
        self.free.push(slot);
    }

    fn enqueue(&mut self, slot: usize) {
        if let Some(Some(watcher)) = self.watchers.get_mut(slot) {
            if !watcher.queued {
                watcher.queued = true;
                self.queue.push_back(slot);
            }
        }
    }

    /// Queues the watchers flagged since the last look, notes whether
    /// requests came, and leaves `waker` for what comes next.
    fn take_woken(&mut self, waker: &Waker) {
        if !self.registered.as_ref().is_some_and(|kept| kept.will_wake(waker)) {
            self.woken.state.lock().expect("watch outlet lock").waker = Some(waker.clone());
            self.registered = Some(waker.clone());
        }
        if !self.woken.pending.load(Ordering::Acquire) {
            return;
        }
        let slots = {
            let mut state = self.woken.state.lock().expect("watch outlet lock");
            self.woken.pending.store(false, Ordering::Release);
            self.requests_waiting |= std::mem::take(&mut state.requests);
            std::mem::take(&mut state.slots)
        };
        for slot in slots {
            self.enqueue(slot);
        }
    }

    /// Marks a progress notification due for every watcher that asked, at each
    /// tick of the stream's clock.
    fn tick(&mut self, cx: &mut Context<'_>) {
        let Some(ticker) = &mut self.ticker else { return };
        let mut ticked = false;
        while ticker.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if !ticked {
            return;
        }
        for slot in 0..self.watchers.len() {
            if let Some(watcher) = &mut self.watchers[slot] {
                if watcher.progress_notify {
                    watcher.progress_due = true;
                    self.enqueue(slot);
                }
            }
        }
    }

    /// Serves one watcher: one read from where it is, its responses queued.
    fn serve(&mut self, slot: usize) {
        // Borrowed, not cloned: every stream counting on the one server handle
        // for every event would share a contended cache line.
        let server = &*self.server;
        let hub = server.watch_hub();
        let Some(Some(watcher)) = self.watchers.get_mut(slot) else { return };
        watcher.queued = false;
        let id = watcher.id;
        // Take its flag before reading and leave its waker with the hub: a
        // revision flagged from here on queues it again. (A poll that takes a
        // flag leaves no waker: the second one does.)
        let mut flag_cx = Context::from_waker(&watcher.waker);
        while watcher.core.interest().poll_flagged(&mut flag_cx).is_ready() {}
        watcher.core.skip_quiet(hub);
        match watcher.core.pull(hub, server.kv()) {
            Pulled::CaughtUp => {
                // Everything up to `next_revision - 1` was delivered.
                if std::mem::take(&mut watcher.progress_due) {
                    if !watcher.sent_since_progress {
                        let header = Some(server.header(watcher.core.next_revision() - 1));
                        let note = WatchResponse { header, watch_id: id, ..Default::default() };
                        self.output.push_back(Outbound::Response(note));
                    }
                    watcher.sent_since_progress = false;
                }
            }
            Pulled::Compacted { compact_revision } => {
                let compacted = WatchResponse {
                    header: Some(server.header(hub.revision())),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                };
                self.output.push_back(Outbound::Response(compacted));
                self.remove(slot);
            }
            // The store failed and the member is going down: this watcher
            // delivers nothing more.
            Pulled::Failed => self.remove(slot),
            Pulled::Events { covered, events } => {
                if !events.is_empty() {
                    watcher.sent_since_progress = true;
                    let header = server.header(covered);
                    let events = Outbound::Events { header, watch_id: id, events };
                    if watcher.fragment {
                        let limit = server.config().max_request_bytes;
                        let parts = fragments(events.into_response(), limit);
                        self.output.extend(parts.into_iter().map(Outbound::Response));
                    } else {
                        self.output.push_back(events);
                    }
                }
                // It may have more to read.
                self.enqueue(slot);
            }
        }
    }

    /// Answers the pending progress request at revision `R` once every watcher
    /// of the stream has handed over all its events up to `R`, as etcd 3.5.13+
    /// does (only synced watchers), so a client that receives the progress
    /// notification has seen everything at or below its revision on this
    /// stream: Kubernetes' consistent reads from its watch cache rely on that.
    /// Until then it stays pending (where etcd drops the request and the client
    /// asks again). True if it was answered.
    fn answer_progress(&mut self) -> bool {
        let Some(revision) = self.progress_pending else { return false };
        if !self.watchers.iter().flatten().all(|w| w.core.next_revision() > revision) {
            return false;
        }
        self.progress_pending = None;
        let header = Some(self.server.header(revision));
        let progress = WatchResponse { header, watch_id: INVALID_WATCH_ID, ..Default::default() };
        self.output.push_back(Outbound::Response(progress));
        true
    }
}

impl Stream for Outlet {
    type Item = Outbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        let this = &mut *self;
        let mut served = 0;
        this.take_woken(cx.waker());
        loop {
            if let Some(next) = this.output.pop_front() {
                return Poll::Ready(Some(next));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.take_requests() {
                continue;
            }
            this.tick(cx);
            if this.queue.is_empty() {
                this.take_woken(cx.waker());
                if this.requests_waiting {
                    continue;
                }
            }
            if let Some(slot) = this.queue.pop_front() {
                if served == SERVED_PER_POLL_MAX {
                    this.queue.push_front(slot);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                served += 1;
                this.serve(slot);
                continue;
            }
            if this.answer_progress() {
                continue;
            }
            return Poll::Pending;
        }
    }
}
