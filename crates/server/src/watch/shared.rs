//! Events as watchers share them. A revision's events are kept once in the hub
//! and every watcher that selects one refers to it instead of copying its key
//! and value; the bytes of an event as delivered without `prev_kv` (what most
//! watchers get) are encoded once, by the first watcher that sends it, and
//! copied as they are by every other (a fan-out of 1,000 watchers on one key
//! encodes each event once, not 1,000 times).

use std::sync::{Arc, OnceLock};

use etcd_proto::mvccpb::Event;
use prost::Message;

/// The events of one revision, with their encodings made on first use.
#[derive(Debug)]
pub struct Published {
    events: Vec<Event>,
    /// `events[i]` encoded as an `Event` message without its `prev_kv`; the
    /// cells themselves made only once a watcher needs one, so publishing a
    /// revision nobody watches allocates nothing more.
    encoded: OnceLock<Box<[OnceLock<Vec<u8>>]>>,
}

impl Published {
    /// Shares `events` (one revision's, in order).
    pub fn new(events: Vec<Event>) -> Published {
        Published { events, encoded: OnceLock::new() }
    }

    /// The events, as applied (each with its `prev_kv` when the store had one).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The encoding of event `index` without `prev_kv`.
    fn encoded(&self, index: usize) -> &[u8] {
        let cells =
            self.encoded.get_or_init(|| self.events.iter().map(|_| OnceLock::new()).collect());
        cells[index].get_or_init(|| without_prev_kv(&self.events[index]).encode_to_vec())
    }
}

fn without_prev_kv(event: &Event) -> Event {
    Event { r#type: event.r#type, kv: event.kv.clone(), prev_kv: None }
}

/// One event a watcher selected, as it delivers it.
#[derive(Debug, Clone)]
pub enum Selected {
    /// The hub's event, delivered without `prev_kv`.
    Shared {
        /// The revision's events.
        events: Arc<Published>,
        /// Which of them.
        index: usize,
    },
    /// An event shaped for this watcher alone (with the `prev_kv` it asked for).
    Shaped(Event),
}

impl Selected {
    /// The event as a message of its own.
    pub fn into_event(self) -> Event {
        match self {
            Selected::Shared { events, index } => without_prev_kv(&events.events[index]),
            Selected::Shaped(event) => event,
        }
    }

    /// Appends the event, encoded as an `Event` message, to `buf`; a shared
    /// one's bytes are the hub's (encoded once).
    pub fn encode_message(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            Selected::Shared { events, index } => buf.put_slice(events.encoded(*index)),
            Selected::Shaped(event) => event.encode_raw(buf),
        }
    }

    /// The length of what [`encode_message`](Selected::encode_message) appends.
    pub fn message_len(&self) -> usize {
        match self {
            Selected::Shared { events, index } => events.encoded(*index).len(),
            Selected::Shaped(event) => event.encoded_len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::mvccpb::event::EventType;
    use etcd_proto::mvccpb::KeyValue;

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: revision,
            version: revision - 1,
            lease: 0,
        }
    }

    #[test]
    fn a_shared_event_encodes_as_the_event_without_prev_kv_and_only_once() {
        let events = Arc::new(Published::new(vec![
            Event { r#type: EventType::Put as i32, kv: Some(kv("a", "1", 5)), prev_kv: None },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv("b", "", 5)),
                prev_kv: Some(kv("b", "old", 4)),
            },
        ]));
        for index in 0..2 {
            let selected = Selected::Shared { events: events.clone(), index };
            let mut bytes = Vec::new();
            selected.encode_message(&mut bytes);
            let expected = selected.clone().into_event();
            assert!(expected.prev_kv.is_none());
            assert_eq!(bytes, expected.encode_to_vec());
            assert_eq!(selected.message_len(), bytes.len());
            // The second watcher gets the very bytes the first one encoded.
            let first = events.encoded(index).as_ptr();
            assert_eq!(events.encoded(index).as_ptr(), first);
        }
        let shaped = Selected::Shaped(events.events()[1].clone());
        let mut bytes = Vec::new();
        shaped.encode_message(&mut bytes);
        assert_eq!(bytes, events.events()[1].encode_to_vec(), "a shaped event keeps its prev_kv");
        assert_eq!(shaped.message_len(), bytes.len());
    }
}
