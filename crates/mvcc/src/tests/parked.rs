//! Batches that park their write transaction instead of committing it
//! (`recent.rs`): readers see the parked revisions, readers that scan the
//! backend commit them first, and a crash loses only what the WAL replays.

use etcd_proto::etcdserverpb::PutRequest;
use etcd_storage::ReadTables;

use super::*;

/// Rows of the `key` table a read transaction on the last commit sees.
fn committed_rows(e: &Env) -> u64 {
    e.backend.read_committed().unwrap().key_count().unwrap()
}

#[test]
fn a_batch_parks_and_readers_see_its_revisions() {
    let e = open();
    e.put("a", "1");
    e.put("b", "1");
    e.put("a", "2");
    // Nothing is committed, and every reader sees everything published.
    assert_eq!(committed_rows(&e), 0);
    assert_eq!(e.store.current_revision(), 4);
    assert_eq!(e.get("a").unwrap(), kv("a", "2", 2, 4, 2));
    assert_eq!(e.get_at("a", 2).unwrap(), kv("a", "1", 2, 2, 1));
    let (encoded, rev) = e.store.range_encoded(&rr("a", "c")).unwrap();
    assert_eq!(rev, 4);
    let (decoded, _) = e.store.range_with_rev(&rr("a", "c")).unwrap();
    use prost::Message as _;
    assert_eq!(encoded, decoded.encode_to_vec());
    assert_eq!(keys(&decoded.kvs), ["a", "b"]);
    let chunk = e.store.range_chunk(b"a", b"c", 4, 10, false).unwrap();
    assert_eq!(chunk.kvs, decoded.kvs);
    assert_eq!(committed_rows(&e), 0, "readers of planned revisions commit nothing");
}

#[test]
fn a_commit_covers_the_parked_revisions_and_readers_move_to_the_backend() {
    let e = open();
    e.put("a", "1");
    e.put("a", "2");
    e.backend.flush().unwrap();
    assert_eq!(committed_rows(&e), 2);
    assert_eq!(e.backend.committed_mark(), 3);
    // The next batch drops what the commit covered from memory.
    e.put("b", "1");
    use prost::Message as _;
    let b_encoded = kv("b", "1", 4, 4, 1).encoded_len();
    assert_eq!(e.store.read_shared().recent.bytes(), b_encoded, "only b's is held");
    assert_eq!(e.get("a").unwrap(), kv("a", "2", 2, 3, 2));
    assert_eq!(e.get("b").unwrap(), kv("b", "1", 4, 4, 1));
    // A durable batch commits everything.
    let mut b = e.store.begin_batch(&e.backend).unwrap();
    b.put(&PutRequest { key: "c".into(), ..Default::default() }, &|_| true).unwrap();
    assert!(b.commit(true).unwrap().committed);
    assert_eq!(committed_rows(&e), 4);
    assert_eq!(e.store.read_shared().recent.bytes(), 0);
}

#[test]
fn scans_of_the_backend_commit_parked_revisions_first() {
    let e = open();
    e.put("a", "1");
    e.put("b", "1");
    let events = e.store.events_range(2, 3).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(committed_rows(&e), 2);
    e.put("c", "1");
    let hash = e.store.hash_kv(0).unwrap();
    assert_eq!(hash.hash_revision, 4);
    assert_eq!(committed_rows(&e), 3);
    // The same history committed batch by batch hashes the same.
    let f = open();
    for k in ["a", "b", "c"] {
        f.put(k, "1");
        f.backend.flush().unwrap();
    }
    assert_eq!(f.store.hash_kv(0).unwrap().hash, hash.hash);
}

#[test]
fn a_crash_loses_the_parked_batches_a_clean_stop_keeps_them() {
    let e = open();
    e.put("a", "1");
    e.backend.flush().unwrap();
    e.put("a", "2");
    let Env { dir, backend, store } = e;
    drop(store);
    drop(backend); // no flush: as a kill -9 leaves it
    let backend = Arc::new(Backend::open(&path_of(&dir)).unwrap());
    let store = KvStore::open(backend.clone()).unwrap();
    let e = Env { dir, backend, store };
    assert_eq!(e.store.current_revision(), 2);
    assert_eq!(e.get("a").unwrap(), kv("a", "1", 2, 2, 1));
    e.put("a", "3");
    let e = e.reopen();
    assert_eq!(e.get("a").unwrap(), kv("a", "3", 2, 3, 2));
}

#[test]
fn a_batch_that_changed_nothing_leaves_the_parked_writes_parked() {
    let e = open();
    e.put("a", "1");
    {
        let mut b = e.store.begin_batch(&e.backend).unwrap();
        let bad = PutRequest { key: "a".into(), lease: 9, ..Default::default() };
        assert!(b.put(&bad, &|_| false).is_err());
    }
    assert_eq!(e.get("a").unwrap(), kv("a", "1", 2, 2, 1));
    e.backend.flush().unwrap();
    assert_eq!(committed_rows(&e), 1);
}

#[test]
fn a_dropped_batch_that_resumed_parked_writes_goes_back_to_the_last_commit() {
    let e = open();
    e.put("a", "1");
    e.backend.flush().unwrap();
    e.put("a", "2");
    e.put("b", "1");
    {
        let mut b = e.store.begin_batch(&e.backend).unwrap();
        b.put(&PutRequest { key: "c".into(), ..Default::default() }, &|_| true).unwrap();
    }
    // A storage failure's path: the parked batches go with it, and the store
    // is consistent with the backend again (no revision indexed but not stored).
    assert_eq!(e.store.current_revision(), 2);
    assert_eq!(e.get("a").unwrap(), kv("a", "1", 2, 2, 1));
    assert_eq!(e.get("b"), None);
    assert_eq!(e.store.read_shared().recent.bytes(), 0);
    assert_eq!(e.put("b", "2"), 3);
    assert_eq!(e.get("b").unwrap(), kv("b", "2", 3, 3, 1));
}

#[test]
fn parking_stops_at_the_memory_limit() {
    let e = open();
    let big = vec![7u8; 1024 * 1024 - 64];
    for i in 0..6 {
        let req =
            PutRequest { key: format!("k{i}").into(), value: big.clone(), ..Default::default() };
        let mut b = e.store.begin_batch(&e.backend).unwrap();
        b.put(&req, &|_| true).unwrap();
        let finished = b.commit(false).unwrap();
        // 4 MiB of encodings are held at most: the fifth megabyte commits.
        assert_eq!(finished.committed, i == 4, "put {i}");
        assert!(e.store.read_shared().recent.bytes() <= crate::recent::PARK_LIMIT_BYTES);
    }
    assert_eq!(e.store.range(&rr("k", "l")).unwrap().kvs.len(), 6);
}
