use std::sync::Arc;

use crate::schema::{self, encode_rev_key};
use crate::*;

fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("db.redb");
    (d, p)
}

#[test]
fn create_then_reopen_keeps_data() {
    let (_d, p) = tmp();
    {
        let b = Backend::open(&p).unwrap();
        let w = b.begin_write().unwrap();
        set_consistent_index(&w, 42, 7).unwrap();
        meta_put(&w, "x", b"y").unwrap();
        members_put(&w, 9, b"m9").unwrap();
        members_put(&w, 3, b"m3").unwrap();
        w.key_put(&encode_rev_key(2, 0, false), b"v").unwrap();
        w.lease_put(-1, b"l").unwrap();
        w.commit(true).unwrap();
    }
    let b = Backend::open(&p).unwrap();
    let r = b.begin_read().unwrap();
    assert_eq!(consistent_index(&r).unwrap(), (42, 7));
    assert_eq!(meta_get(&r, "x").unwrap(), Some(b"y".to_vec()));
    assert_eq!(meta_get(&r, "nope").unwrap(), None);
    assert_eq!(members_list(&r).unwrap(), vec![(3, b"m3".to_vec()), (9, b"m9".to_vec())]);
    assert_eq!(r.leases_list().unwrap(), vec![(-1, b"l".to_vec())]);
    assert_eq!(r.key_get(&encode_rev_key(2, 0, false)).unwrap(), Some(b"v".to_vec()));
    assert!(b.size_bytes().unwrap() > 0);
}

#[test]
fn fresh_file_has_zero_consistent_index() {
    let (_d, p) = tmp();
    let b = Backend::open(&p).unwrap();
    let r = b.begin_read().unwrap();
    assert_eq!(consistent_index(&r).unwrap(), (0, 0));
    assert!(members_list(&r).unwrap().is_empty());
}

#[test]
fn rejects_non_redb_file() {
    let (_d, p) = tmp();
    std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
    let e = Backend::open(&p).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("db.redb"), "{msg}");
    assert!(matches!(e, StorageError::NotADatabase { .. }), "{e:?}");
}

#[test]
fn rejects_unknown_schema_version() {
    let (_d, p) = tmp();
    {
        let b = Backend::open(&p).unwrap();
        let w = b.begin_write().unwrap();
        meta_put(&w, schema::META_SCHEMA_VERSION, &99u64.to_be_bytes()).unwrap();
        w.commit(true).unwrap();
    }
    let e = Backend::open(&p).unwrap_err();
    assert!(
        matches!(e, StorageError::SchemaVersion { found: VersionFound::Version(99), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("99"));
}

#[test]
fn rejects_foreign_redb_file() {
    let (_d, p) = tmp();
    {
        let db = redb::Database::create(&p).unwrap();
        let w = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
            w.open_table(def).unwrap().insert(1, 2).unwrap();
        }
        w.commit().unwrap();
    }
    let e = Backend::open(&p).unwrap_err();
    assert!(matches!(e, StorageError::SchemaVersion { found: VersionFound::Missing, .. }), "{e:?}");
}

#[test]
fn readers_see_only_committed_state() {
    let (_d, p) = tmp();
    let b = Arc::new(Backend::open(&p).unwrap());
    let w = b.begin_write().unwrap();
    w.key_put(b"aaaaaaaaaaaaaaaaa", b"1").unwrap();
    assert_eq!(w.key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), Some(b"1".to_vec()));
    let r = b.read_committed().unwrap();
    assert_eq!(r.key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), None);
    w.commit(false).unwrap();
    assert_eq!(r.key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), None, "snapshot");
    let r2 = b.begin_read().unwrap();
    assert_eq!(r2.key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), Some(b"1".to_vec()));
    // dropped write txn discards
    let w = b.begin_write().unwrap();
    w.key_put(b"bbbbbbbbbbbbbbbbb", b"1").unwrap();
    drop(w);
    assert_eq!(b.begin_read().unwrap().key_get(b"bbbbbbbbbbbbbbbbb").unwrap(), None);
}

#[test]
fn parked_writes_wait_for_a_commit_and_carry_their_mark() {
    let (_d, p) = tmp();
    let b = Arc::new(Backend::open(&p).unwrap());
    assert_eq!(b.committed_mark(), 0);
    let mut w = b.begin_write().unwrap();
    w.key_put(b"aaaaaaaaaaaaaaaaa", b"1").unwrap();
    w.set_mark(7);
    w.park();
    assert_eq!(b.read_committed().unwrap().key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), None);
    // The next writer resumes the parked transaction, mark included.
    let w = b.begin_write().unwrap();
    assert_eq!(w.mark(), 7);
    assert_eq!(w.key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), Some(b"1".to_vec()));
    w.key_put(b"bbbbbbbbbbbbbbbbb", b"2").unwrap();
    w.park();
    // Another thread's writer waits for the turn and gets the parked writes.
    let b2 = b.clone();
    let other = std::thread::spawn(move || {
        let w = b2.begin_write().unwrap();
        w.key_get(b"bbbbbbbbbbbbbbbbb").unwrap()
    });
    assert_eq!(other.join().unwrap(), Some(b"2".to_vec()), "its drop aborted them");
    assert_eq!(b.begin_read().unwrap().key_get(b"aaaaaaaaaaaaaaaaa").unwrap(), None);
    // A plain read commits what is parked first.
    let w = b.begin_write().unwrap();
    w.key_put(b"ccccccccccccccccc", b"3").unwrap();
    w.park();
    assert_eq!(b.begin_read().unwrap().key_get(b"ccccccccccccccccc").unwrap(), Some(b"3".to_vec()));
    assert_eq!(b.committed_mark(), 0, "no mark was set");
    // The size in use keeps parked writes parked.
    let mut w = b.begin_write().unwrap();
    w.key_put(b"ddddddddddddddddd", b"4").unwrap();
    w.set_mark(9);
    w.park();
    assert!(b.size_in_use().unwrap() > 0);
    assert_eq!(b.read_committed().unwrap().key_get(b"ddddddddddddddddd").unwrap(), None);
    b.flush().unwrap();
    assert_eq!(b.committed_mark(), 9);
    assert_eq!(
        b.read_committed().unwrap().key_get(b"ddddddddddddddddd").unwrap(),
        Some(b"4".to_vec())
    );
}

#[test]
#[should_panic(expected = "a thread holding the backend's write transaction waits for it")]
fn a_read_that_commits_refuses_to_wait_for_its_own_thread() {
    let (_d, p) = tmp();
    let b = Backend::open(&p).unwrap();
    let _w = b.begin_write().unwrap();
    let _ = b.begin_read();
}

#[test]
fn key_scan_retain_and_delete() {
    let (_d, p) = tmp();
    let b = Backend::open(&p).unwrap();
    let w = b.begin_write().unwrap();
    for main in 1..=5 {
        w.key_put(&encode_rev_key(main, 0, false), &[main as u8]).unwrap();
    }
    w.key_put(&encode_rev_key(3, 1, true), b"t").unwrap();
    let mut seen = Vec::new();
    w.key_scan(&encode_rev_key(2, 0, false), Some(&encode_rev_key(4, 0, false)), &mut |k, _| {
        seen.push(schema::decode_rev_key(k).unwrap());
        true
    })
    .unwrap();
    assert_eq!(seen, vec![(2, 0, false), (3, 0, false), (3, 1, true)]);
    let (start, end) = (encode_rev_key(0, 0, false), encode_rev_key(4, 0, false));
    let mut keep_3 = |k: &[u8]| schema::decode_rev_key(k).unwrap().0 == 3;
    let first = w.key_retain_range(&start, &end, 2, &mut keep_3).unwrap();
    let resume = encode_rev_key(2, 0, false);
    assert_eq!(first, Retained { removed: 2, resume_after: Some(resume.clone()) });
    let rest = w.key_retain_range(&resume, &end, 3, &mut keep_3).unwrap();
    assert_eq!(rest, Retained { removed: 0, resume_after: None }, "3 and its tombstone kept");
    assert!(w.key_delete(&encode_rev_key(5, 0, false)).unwrap());
    assert!(!w.key_delete(&encode_rev_key(5, 0, false)).unwrap());
    assert_eq!(w.key_count().unwrap(), 3);
    let mut got = Vec::new();
    let mut keys = [encode_rev_key(1, 0, false), encode_rev_key(4, 0, false)].into_iter();
    w.key_get_each(&mut keys, &mut |v| {
        got.push(v.map(<[u8]>::to_vec));
        true
    })
    .unwrap();
    assert_eq!(got, vec![None, Some(vec![4])]);
    w.commit(false).unwrap();
}

#[test]
fn copy_to_is_a_full_logical_copy() {
    let (d, p) = tmp();
    let b = Backend::open(&p).unwrap();
    let w = b.begin_write().unwrap();
    w.key_put(&encode_rev_key(2, 0, false), b"kv").unwrap();
    set_consistent_index(&w, 5, 2).unwrap();
    members_put(&w, 1, b"m").unwrap();
    w.lease_put(8, b"l").unwrap();
    w.commit(false).unwrap();
    let dest = d.path().join("copy.redb");
    b.copy_to(&dest).unwrap();
    assert!(b.copy_to(&dest).is_err(), "refuses to overwrite");
    let c = Backend::open(&dest).unwrap();
    let r = c.begin_read().unwrap();
    assert_eq!(consistent_index(&r).unwrap(), (5, 2));
    assert_eq!(members_list(&r).unwrap(), vec![(1, b"m".to_vec())]);
    assert_eq!(r.leases_list().unwrap(), vec![(8, b"l".to_vec())]);
    assert_eq!(r.key_count().unwrap(), 1);
}

#[test]
fn second_open_of_same_file_is_refused() {
    let (_d, p) = tmp();
    let _b = Backend::open(&p).unwrap();
    let e = Backend::open(&p).unwrap_err();
    assert!(matches!(e, StorageError::AlreadyOpen { .. }), "{e:?}");
}
