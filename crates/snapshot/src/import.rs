//! etcd's buckets into our backend: the inverse of [`crate::export`]. An
//! [`Importer`] is a [`BucketSink`] over a fresh backend, fed from an etcd file
//! (`etcdutl snapshot restore`, a takeover) bucket by bucket. It checks every
//! row as it goes and commits every [`BATCH_BYTES`] of rows, so memory stays
//! bounded whatever the file's size; the consistent index is written last, with
//! the final commit, and callers remove the backend of a failed import (until
//! then it is a partial copy with consistent index 0, never served).

use etcd_proto::etcdrs::Member;
use etcd_proto::etcdserverpb::AlarmMember;
use etcd_proto::mvccpb::KeyValue;
use etcd_server::alarms::Alarms;
use etcd_storage::schema::{self, AuthTable};
use etcd_storage::{Backend, WriteTxn};
use prost::Message;

use crate::export::BucketSink;
use crate::layout;
use crate::SnapshotError;

/// What an import found in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    /// Entries over all buckets.
    pub entries: u64,
    /// Rows of the `key` bucket (revisions, tombstones included).
    pub revisions: u64,
    /// The highest main revision in `key` (0 when empty).
    pub revision: i64,
    /// `meta`'s consistent index (0 when absent).
    pub consistent_index: u64,
    /// `meta`'s term (etcd 3.5 writes it; 0 when absent).
    pub term: u64,
    /// The last finished compaction.
    pub compact_revision: Option<i64>,
    /// A compaction the file scheduled but had not finished (`scheduledCompactRev`
    /// above `finishedCompactRev`): etcd finishes it when it opens the file, and
    /// so must whoever opens ours.
    pub unfinished_compaction: Option<i64>,
    /// Members of the `members` bucket.
    pub members: Vec<Member>,
    /// IDs in `members_removed`.
    pub removed_members: Vec<u64>,
    /// Leases.
    pub leases: u64,
    /// Users in `authUsers`.
    pub users: u64,
    /// The `cluster` bucket's version, when present.
    pub cluster_version: Option<String>,
    /// Buckets this server has no use for, skipped.
    pub skipped_buckets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Alarm,
    Auth(AuthTable),
    Cluster,
    Key,
    Lease,
    Members,
    MembersRemoved,
    Meta,
    Skipped,
}

/// Bytes of rows written between commits.
pub const BATCH_BYTES: usize = 64 << 20;

/// Writes etcd's buckets into a fresh backend; [`Importer::finish`] commits the rest.
pub struct Importer<'b> {
    backend: &'b Backend,
    /// Always `Some` between calls (taken only to commit a full batch).
    txn: Option<WriteTxn>,
    pending_bytes: usize,
    batch_bytes: usize,
    bucket: Option<Bucket>,
    last_bucket: Option<String>,
    alarms: Vec<AlarmMember>,
    scheduled_compaction: Option<i64>,
    saw_key_bucket: bool,
    saw_meta_bucket: bool,
    summary: ImportSummary,
}

impl<'b> Importer<'b> {
    /// An importer into `backend`, which should be fresh.
    pub fn new(backend: &'b Backend) -> Result<Importer<'b>, SnapshotError> {
        Ok(Importer {
            backend,
            txn: Some(backend.begin_write()?),
            pending_bytes: 0,
            batch_bytes: BATCH_BYTES,
            bucket: None,
            last_bucket: None,
            alarms: Vec::new(),
            scheduled_compaction: None,
            saw_key_bucket: false,
            saw_meta_bucket: false,
            summary: ImportSummary::default(),
        })
    }

    /// Commits every `bytes` of rows instead of every [`BATCH_BYTES`].
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    fn txn(&self) -> &WriteTxn {
        self.txn.as_ref().expect("a write transaction is open")
    }

    /// Commits what was written once a batch is full (not durably: only the
    /// final commit must be, and a crash before it leaves a backend callers
    /// discard).
    fn written(&mut self, bytes: usize) -> Result<(), SnapshotError> {
        self.pending_bytes += bytes;
        if self.pending_bytes >= self.batch_bytes {
            // redb runs one write transaction at a time: the next one can
            // begin only once this one has committed.
            let full = self.txn.take().expect("a write transaction is open");
            full.commit(false)?;
            self.txn = Some(self.backend.begin_write()?);
            self.pending_bytes = 0;
        }
        Ok(())
    }

    /// Writes what is known only at the end (alarms, the consistent index) and
    /// says what was imported. A file without etcd's `key` and `meta` buckets is
    /// not an etcd backend and is refused.
    pub fn finish(mut self) -> Result<ImportSummary, SnapshotError> {
        if !self.saw_key_bucket || !self.saw_meta_bucket {
            return Err(SnapshotError::Backend(
                "the file has no `key` or no `meta` bucket: it is not an etcd backend".into(),
            ));
        }
        Alarms::store(self.txn(), &self.alarms).map_err(SnapshotError::Backend)?;
        etcd_storage::set_consistent_index(
            self.txn(),
            self.summary.consistent_index,
            self.summary.term,
        )?;
        let finished = self.summary.compact_revision.unwrap_or(0);
        self.summary.unfinished_compaction = self.scheduled_compaction.filter(|&s| s > finished);
        self.txn.take().expect("a write transaction is open").commit(true)?;
        Ok(self.summary)
    }

    fn corrupt(&self, what: String) -> SnapshotError {
        let bucket = self.last_bucket.as_deref().unwrap_or("?");
        SnapshotError::Backend(format!("bucket {bucket}: {what}"))
    }

    fn put_key(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let Some((main, sub, tombstone)) = schema::decode_rev_key(key) else {
            return Err(self.corrupt(format!("{key:02x?} is not a revision key")));
        };
        let kv = KeyValue::decode(value).map_err(|e| {
            self.corrupt(format!("the value at revision {main}.{sub} does not decode: {e}"))
        })?;
        if !tombstone && kv.mod_revision != main {
            return Err(self.corrupt(format!(
                "the value at revision {main}.{sub} says it was modified at {}",
                kv.mod_revision
            )));
        }
        assert!(main >= self.summary.revision, "bbolt walks keys in byte order");
        self.summary.revision = main;
        self.summary.revisions += 1;
        self.txn().key_put(key, value)?;
        Ok(())
    }

    fn put_meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let be_u64 = |v: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(v.try_into().ok()?)) };
        let rev = |v: &[u8]| schema::decode_rev_key(v).map(|(main, _, _)| main);
        match key {
            k if k == layout::META_CONSISTENT_INDEX.as_bytes() => {
                self.summary.consistent_index = be_u64(value)
                    .ok_or_else(|| self.corrupt("consistent_index is not 8 bytes".into()))?;
            }
            k if k == layout::META_TERM.as_bytes() => {
                self.summary.term =
                    be_u64(value).ok_or_else(|| self.corrupt("term is not 8 bytes".into()))?;
            }
            k if k == layout::META_FINISHED_COMPACT_REV.as_bytes() => {
                let main = rev(value)
                    .ok_or_else(|| self.corrupt("finishedCompactRev is not a revision".into()))?;
                self.summary.compact_revision = Some(main);
                self.txn().meta_put(schema::META_FINISHED_COMPACT_REV, value)?;
            }
            k if k == layout::META_SCHEDULED_COMPACT_REV.as_bytes() => {
                let main = rev(value)
                    .ok_or_else(|| self.corrupt("scheduledCompactRev is not a revision".into()))?;
                self.scheduled_compaction = Some(main);
            }
            // Later etcd versions keep more here (storage version, Raft's
            // configuration); none of it is state this server restores.
            _ => {}
        }
        Ok(())
    }
}

impl BucketSink for Importer<'_> {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        let bucket = match name {
            layout::ALARM => Bucket::Alarm,
            layout::AUTH => Bucket::Auth(AuthTable::Meta),
            layout::AUTH_ROLES => Bucket::Auth(AuthTable::Roles),
            layout::AUTH_USERS => Bucket::Auth(AuthTable::Users),
            layout::CLUSTER => Bucket::Cluster,
            layout::KEY => Bucket::Key,
            layout::LEASE => Bucket::Lease,
            layout::MEMBERS => Bucket::Members,
            layout::MEMBERS_REMOVED => Bucket::MembersRemoved,
            layout::META => Bucket::Meta,
            other => {
                self.summary.skipped_buckets.push(other.to_string());
                Bucket::Skipped
            }
        };
        self.saw_key_bucket |= bucket == Bucket::Key;
        self.saw_meta_bucket |= bucket == Bucket::Meta;
        self.bucket = Some(bucket);
        self.last_bucket = Some(name.to_string());
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let Some(bucket) = self.bucket else {
            return Err(SnapshotError::Backend("an entry outside every bucket".into()));
        };
        self.summary.entries += 1;
        match bucket {
            Bucket::Alarm => {
                let alarm = AlarmMember::decode(key)
                    .map_err(|e| self.corrupt(format!("an alarm does not decode: {e}")))?;
                self.alarms.push(alarm);
            }
            Bucket::Auth(table) => {
                self.summary.users += u64::from(table == AuthTable::Users);
                self.txn().auth_put(table, key, value)?;
            }
            Bucket::Cluster => {
                if key == layout::CLUSTER_VERSION_KEY.as_bytes() {
                    self.summary.cluster_version = Some(String::from_utf8_lossy(value).into());
                }
            }
            Bucket::Key => self.put_key(key, value)?,
            Bucket::Lease => {
                let lease = layout::parse_lease(value)
                    .map_err(|e| self.corrupt(format!("a lease does not decode: {e}")))?;
                if key != layout::lease_key(lease.id) {
                    return Err(
                        self.corrupt(format!("lease {:x} is stored under another ID", lease.id))
                    );
                }
                let row = if lease.remaining_ttl > 0 {
                    etcd_lease::encode_lease_with_remaining(
                        lease.id,
                        lease.ttl,
                        lease.remaining_ttl,
                    )
                    .to_vec()
                } else {
                    etcd_lease::encode_lease(lease.id, lease.ttl).to_vec()
                };
                self.txn().lease_put(lease.id, &row)?;
                self.summary.leases += 1;
            }
            Bucket::Members => {
                let member = layout::parse_member_json(value)
                    .map_err(|e| self.corrupt(format!("a member does not decode: {e}")))?;
                if key != layout::member_key(member.id).as_bytes() {
                    return Err(
                        self.corrupt(format!("member {:x} is stored under another ID", member.id))
                    );
                }
                etcd_server::membership::save(self.txn(), std::slice::from_ref(&member))
                    .map_err(SnapshotError::Backend)?;
                self.summary.members.push(member);
            }
            Bucket::MembersRemoved => {
                let id = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| u64::from_str_radix(k, 16).ok())
                    .ok_or_else(|| self.corrupt(format!("{key:02x?} is not a member ID")))?;
                if value != layout::REMOVED.as_bytes() {
                    return Err(self.corrupt(format!(
                        "removed member {id:x} is marked {:?}, not {:?}",
                        String::from_utf8_lossy(value),
                        layout::REMOVED
                    )));
                }
                self.txn().members_removed_put(id)?;
                self.summary.removed_members.push(id);
            }
            Bucket::Meta => self.put_meta(key, value)?,
            Bucket::Skipped => {}
        }
        self.written(key.len() + value.len())
    }
}
