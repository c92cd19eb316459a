//! Puts that learn a key's old lease from the caller (and so never read the
//! previous value) must change the store exactly as puts that read it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use etcd_proto::etcdserverpb::request_op::Request;
use etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use etcd_proto::mvccpb::Event;

use super::*;
use crate::{LeaseChange, Leases};

/// Leases 1..=3 exist; which key is attached to which is followed from the
/// batch's lease changes, as the lessor does.
#[derive(Default)]
struct Attached(RefCell<BTreeMap<Vec<u8>, i64>>);

impl Leases for Attached {
    fn exists(&self, id: i64) -> bool {
        (1..=3).contains(&id)
    }
    fn lease_of(&self, key: &[u8]) -> Option<i64> {
        Some(self.0.borrow().get(key).copied().unwrap_or(0))
    }
}

impl Attached {
    fn follow(&self, changes: &[LeaseChange]) {
        let mut map = self.0.borrow_mut();
        for change in changes {
            assert_eq!(map.get(&change.key).copied().unwrap_or(0), change.old_lease);
            map.remove(&change.key);
            if change.new_lease != 0 {
                map.insert(change.key.clone(), change.new_lease);
            }
        }
    }
}

fn without_prev(events: Vec<(i64, Vec<Event>)>) -> Vec<(i64, Vec<Event>)> {
    events
        .into_iter()
        .map(|(rev, evs)| (rev, evs.into_iter().map(|e| Event { prev_kv: None, ..e }).collect()))
        .collect()
}

#[test]
fn puts_knowing_the_old_lease_change_the_store_as_puts_reading_it() {
    let reading = open();
    let knowing = open();
    let attached = Attached::default();
    let exists = |id: i64| (1..=3).contains(&id);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut below = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..400 {
        let mut a = reading.store.begin_batch(&reading.backend).unwrap();
        let mut b = knowing.store.begin_batch(&knowing.backend).unwrap();
        for _ in 0..1 + below(3) {
            let key = vec![b'a' + below(5) as u8];
            let put = PutRequest {
                key: key.clone(),
                value: format!("v{step}").into_bytes(),
                lease: below(4) as i64,
                ..Default::default()
            };
            match below(6) {
                0..=2 => assert_eq!(a.put(&put, &exists).ok(), b.put(&put, &attached).ok()),
                3 => {
                    let delete = DeleteRangeRequest { key, ..Default::default() };
                    assert_eq!(a.delete_range(&delete).ok(), b.delete_range(&delete).ok());
                }
                _ => {
                    let other = PutRequest { key: b"z".to_vec(), lease: 2, ..Default::default() };
                    let txn = TxnRequest {
                        success: [put, other]
                            .into_iter()
                            .map(|p| RequestOp { request: Some(Request::RequestPut(p)) })
                            .collect(),
                        ..Default::default()
                    };
                    assert_eq!(a.txn(&txn, &exists).ok(), b.txn(&txn, &attached).ok());
                }
            }
            let changes = a.take_lease_changes();
            assert_eq!(changes, b.take_lease_changes(), "step {step}");
            attached.follow(&changes);
        }
        let (from_reads, from_index) =
            (a.commit(false).unwrap().events, b.commit(false).unwrap().events);
        let puts_read = from_index
            .iter()
            .flat_map(|(_, evs)| evs)
            .any(|e| e.r#type == 0 && e.prev_kv.is_some());
        assert!(!puts_read, "a put that knew its old lease read the previous value");
        assert_eq!(without_prev(from_reads), without_prev(from_index), "step {step}");
    }
}
