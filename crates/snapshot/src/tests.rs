//! Export to etcd's file and import back: every bucket survives the round trip,
//! `snapshot status` hashes what the file holds, and damaged rows are refused.

use etcd_proto::etcdrs::Member;
use etcd_proto::etcdserverpb::{AlarmMember, AlarmType};
use etcd_proto::mvccpb::KeyValue;
use etcd_storage::schema::{self, AuthTable};
use etcd_storage::Backend;
use prost::Message;

use crate::export::{export, BucketSink};
use crate::file;
use crate::hash::StatusHash;
use crate::import::Importer;
use crate::SnapshotError;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Collects every bucket and entry.
#[derive(Debug, Default, PartialEq)]
struct Listing(Vec<(String, Entries)>);

impl BucketSink for Listing {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.0.push((name.to_string(), Vec::new()));
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.0.last_mut().expect("a bucket").1.push((key.to_vec(), value.to_vec()));
        Ok(())
    }
}

fn kv(key: &str, create: i64, modified: i64, version: i64, lease: i64) -> Vec<u8> {
    KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        value: format!("value of {key} at {modified}").into(),
        lease,
    }
    .encode_to_vec()
}

/// A backend with something in every bucket.
fn populated(dir: &std::path::Path) -> Backend {
    let backend = Backend::open(&dir.join("a.db")).expect("open");
    let txn = backend.begin_write().expect("txn");
    for rev in 2..500i64 {
        let key = format!("key/{:03}", rev % 37);
        txn.key_put(&schema::encode_rev_key(rev, 0, false), &kv(&key, 2, rev, rev, 0)).unwrap();
    }
    let tombstone = KeyValue { key: b"key/001".to_vec(), ..Default::default() }.encode_to_vec();
    txn.key_put(&schema::encode_rev_key(500, 0, true), &tombstone).unwrap();
    txn.key_put(&schema::encode_rev_key(501, 0, false), &kv("leased", 501, 501, 1, 7)).unwrap();
    txn.lease_put(7, &etcd_lease::encode_lease(7, 60)).unwrap();
    txn.lease_put(9, &etcd_lease::encode_lease_with_remaining(9, 600, 42)).unwrap();
    txn.auth_put(AuthTable::Meta, b"authEnabled", &[1]).unwrap();
    txn.auth_put(AuthTable::Meta, b"authRevision", &5u64.to_be_bytes()).unwrap();
    txn.auth_put(AuthTable::Users, b"root", b"user bytes").unwrap();
    txn.auth_put(AuthTable::Roles, b"root", b"role bytes").unwrap();
    let member = Member {
        id: 0x1234,
        name: "m1".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        client_urls: vec!["http://127.0.0.1:2379".into()],
        is_learner: false,
    };
    etcd_server::membership::save(&txn, &[member]).unwrap();
    txn.members_removed_put(0xabcdef).unwrap();
    txn.members_removed_put(0x99).unwrap();
    etcd_server::alarms::Alarms::store(
        &txn,
        &[AlarmMember { member_id: 0x1234, alarm: AlarmType::Nospace as i32 }],
    )
    .unwrap();
    txn.meta_put(schema::META_FINISHED_COMPACT_REV, &schema::encode_rev_key(100, 0, false))
        .unwrap();
    etcd_storage::set_consistent_index(&txn, 777, 3).unwrap();
    txn.commit(true).unwrap();
    backend
}

fn listing(backend: &Backend) -> Listing {
    let txn = backend.begin_read().unwrap();
    let mut out = Listing::default();
    export(&txn, "3.5.0", &mut out).unwrap();
    out
}

#[test]
fn an_etcd_file_round_trips_every_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let original = populated(dir.path());
    let path = dir.path().join("etcd.db");
    let (summary, _, len) = {
        let txn = original.begin_read().unwrap();
        file::write_etcd(&txn, "3.5.0", std::fs::File::create(&path).unwrap()).unwrap()
    };
    assert_eq!(summary.revision, 501);
    assert_eq!(summary.consistent_index, 777);
    assert_eq!(len, std::fs::metadata(&path).unwrap().len());

    let reader = etcd_bbolt::Reader::open(&path).unwrap();
    let mut in_file = Listing::default();
    file::walk(&reader, &mut in_file).unwrap();
    let expected = listing(&original);
    assert_eq!(in_file, expected, "the file holds exactly the export");
    let names: Vec<&str> = in_file.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, crate::layout::BUCKETS);

    let status = file::status(&reader).unwrap();
    let mut hash = StatusHash::default();
    export(&original.begin_read().unwrap(), "3.5.0", &mut hash).unwrap();
    assert_eq!(
        (status.hash, status.revision, status.total_key),
        (hash.hash(), 501, hash.total_keys)
    );

    let copy = Backend::open(&dir.path().join("b.db")).unwrap();
    let imported = file::import_etcd(&reader, &copy).unwrap();
    assert_eq!(imported.revision, 501);
    assert_eq!((imported.consistent_index, imported.term), (777, 3));
    assert_eq!(imported.compact_revision, Some(100));
    assert_eq!(imported.unfinished_compaction, None);
    assert_eq!(imported.leases, 2);
    assert_eq!(imported.members.len(), 1);
    assert_eq!(imported.removed_members, vec![0x99, 0xabcdef]);
    assert_eq!(listing(&copy), expected, "the import restores every bucket");
}

#[test]
fn an_import_larger_than_a_batch_commits_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let original = populated(dir.path());
    let path = dir.path().join("etcd.db");
    file::write_etcd(
        &original.begin_read().unwrap(),
        "3.5.0",
        std::fs::File::create(&path).unwrap(),
    )
    .unwrap();
    let reader = etcd_bbolt::Reader::open(&path).unwrap();
    let copy = Backend::open(&dir.path().join("b.db")).unwrap();
    // About 500 rows of ~60 bytes: a commit every few rows.
    let mut importer = Importer::new(&copy).unwrap().with_batch_bytes(300);
    file::walk(&reader, &mut importer).unwrap();
    importer.finish().unwrap();
    assert_eq!(listing(&copy), listing(&original));
}

/// The error an import into a fresh backend gives for one row of `bucket`
/// (one importer at a time: each holds the backend's write transaction).
fn refused(bucket: &str, key: &[u8], value: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&dir.path().join("c.db")).unwrap();
    let mut importer = Importer::new(&backend).unwrap();
    importer.bucket(bucket).unwrap();
    importer.put(key, value).unwrap_err().to_string()
}

#[test]
fn damaged_rows_and_foreign_files_are_refused() {
    let err = refused("key", b"not a revision", b"");
    assert!(err.contains("is not a revision key"), "{err}");
    let wrong = kv("k", 2, 3, 1, 0);
    let err = refused("key", &schema::encode_rev_key(2, 0, false), &wrong);
    assert!(err.contains("says it was modified at 3"), "{err}");
    let err = refused("lease", &7u64.to_be_bytes(), b"\xff\xff");
    assert!(err.contains("lease does not decode"), "{err}");
    let err = refused("meta", b"consistent_index", b"short");
    assert!(err.contains("consistent_index is not 8 bytes"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&dir.path().join("c.db")).unwrap();
    let mut importer = Importer::new(&backend).unwrap();
    importer.bucket("users").unwrap();
    importer.put(b"a", b"b").unwrap();
    let err = importer.finish().unwrap_err();
    assert!(err.to_string().contains("not an etcd backend"), "{err}");
}

#[test]
fn a_scheduled_compaction_is_reported_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&dir.path().join("d.db")).unwrap();
    let mut importer = Importer::new(&backend).unwrap();
    importer.bucket("key").unwrap();
    importer.put(&schema::encode_rev_key(2, 0, false), &kv("k", 2, 2, 1, 0)).unwrap();
    importer.bucket("meta").unwrap();
    importer.put(b"finishedCompactRev", &schema::encode_rev_key(1, 0, false)).unwrap();
    importer.put(b"scheduledCompactRev", &schema::encode_rev_key(2, 0, false)).unwrap();
    let summary = importer.finish().unwrap();
    assert_eq!(summary.compact_revision, Some(1));
    assert_eq!(summary.unfinished_compaction, Some(2));
}
