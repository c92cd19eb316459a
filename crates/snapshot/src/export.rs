//! Our backend seen as etcd's buckets: one consistent read transaction walked
//! in bbolt's order (buckets by name, keys by bytes) and handed to a
//! [`BucketSink`] — a bbolt file writer for `Maintenance.Snapshot`, a hash for
//! `Maintenance.Hash` and `snapshot status`. Nothing is collected in memory but
//! the small buckets; the `key` bucket streams from the table.

use etcd_server::alarms::Alarms;
use etcd_storage::schema::{self, AuthTable};
use etcd_storage::ReadTables;
use prost::Message;

use crate::layout;
use crate::SnapshotError;

/// Receives etcd's buckets in bbolt's order: `bucket` once per bucket (every
/// bucket etcd creates, empty ones too), then that bucket's entries in
/// ascending key order.
pub trait BucketSink {
    /// Starts bucket `name`; the previous bucket is complete.
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError>;
    /// One entry of the current bucket.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError>;
}

/// What the export saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries over all buckets.
    pub entries: u64,
    /// The highest main revision in the `key` bucket (0 when empty).
    pub revision: i64,
    /// The consistent index written to `meta`.
    pub consistent_index: u64,
}

/// Walks `txn` as etcd's buckets into `sink`. `cluster_version` goes to the
/// `cluster` bucket (etcd stores the version the cluster runs at).
pub fn export(
    txn: &impl ReadTables,
    cluster_version: &str,
    sink: &mut dyn BucketSink,
) -> Result<ExportSummary, SnapshotError> {
    let mut summary = ExportSummary::default();
    let mut sink = Counted { inner: sink, entries: 0 };
    let sink = &mut sink;

    sink.bucket(layout::ALARM)?;
    let alarms = Alarms::load(txn).map_err(SnapshotError::Backend)?;
    let mut alarm_keys: Vec<Vec<u8>> = alarms.list(0).iter().map(|a| a.encode_to_vec()).collect();
    alarm_keys.sort();
    for k in &alarm_keys {
        sink.put(k, b"")?;
    }

    for (name, table) in [
        (layout::AUTH, AuthTable::Meta),
        (layout::AUTH_ROLES, AuthTable::Roles),
        (layout::AUTH_USERS, AuthTable::Users),
    ] {
        sink.bucket(name)?;
        // Stored under etcd's keys and encodings already (byte-ordered table).
        for (k, v) in txn.auth_list(table)? {
            sink.put(&k, &v)?;
        }
    }

    sink.bucket(layout::CLUSTER)?;
    sink.put(layout::CLUSTER_VERSION_KEY.as_bytes(), cluster_version.as_bytes())?;

    sink.bucket(layout::KEY)?;
    let mut failed = None;
    let mut last_key: Option<Vec<u8>> = None;
    txn.key_scan(&[], None, &mut |k, v| {
        debug_assert!(last_key.as_deref().is_none_or(|last| last < k), "key table out of order");
        if let Some((main, _, _)) = schema::decode_rev_key(k) {
            summary.revision = summary.revision.max(main);
        }
        if let Err(e) = sink.put(k, v) {
            failed = Some(e);
            return false;
        }
        if cfg!(debug_assertions) {
            last_key = Some(k.to_vec());
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }

    sink.bucket(layout::LEASE)?;
    let mut leases = Vec::new();
    for (id, row) in txn.leases_list()? {
        let (id_in_row, ttl, remaining) = etcd_lease::decode_lease_with_remaining(&row)
            .ok_or_else(|| SnapshotError::Backend(format!("lease {id:x} has an unreadable row")))?;
        debug_assert_eq!(id, id_in_row, "lease row under another ID");
        leases.push((layout::lease_key(id), layout::lease_value(id, ttl, remaining)));
    }
    leases.sort();
    for (k, v) in &leases {
        sink.put(k, v)?;
    }

    sink.bucket(layout::MEMBERS)?;
    let members = etcd_server::membership::load(txn).map_err(SnapshotError::Backend)?;
    let mut rows: Vec<(String, String)> =
        members.iter().map(|m| (layout::member_key(m.id), layout::member_json(m))).collect();
    rows.sort();
    for (k, v) in &rows {
        sink.put(k.as_bytes(), v.as_bytes())?;
    }

    sink.bucket(layout::MEMBERS_REMOVED)?;
    let mut removed: Vec<String> =
        txn.members_removed_list()?.into_iter().map(layout::member_key).collect();
    removed.sort(); // bbolt's order is the hex text's, not the IDs'
    for k in &removed {
        sink.put(k.as_bytes(), layout::REMOVED.as_bytes())?;
    }

    sink.bucket(layout::META)?;
    let (index, term) = etcd_storage::consistent_index(txn)?;
    summary.consistent_index = index;
    let finished = txn.meta_get(schema::META_FINISHED_COMPACT_REV)?;
    // A data dir from before compactions were batched has no scheduled revision:
    // its compactions finished in the transaction that scheduled them.
    let scheduled = txn.meta_get(schema::META_SCHEDULED_COMPACT_REV)?.or_else(|| finished.clone());
    // Sorted by name: consistent_index, finishedCompactRev, scheduledCompactRev, term.
    sink.put(layout::META_CONSISTENT_INDEX.as_bytes(), &index.to_be_bytes())?;
    if let Some(rev) = &finished {
        sink.put(layout::META_FINISHED_COMPACT_REV.as_bytes(), rev)?;
    }
    if let Some(rev) = &scheduled {
        // Newer than the finished one while batches are left: whoever opens the
        // file (etcd or this server) resumes them.
        sink.put(layout::META_SCHEDULED_COMPACT_REV.as_bytes(), rev)?;
    }
    sink.put(layout::META_TERM.as_bytes(), &term.to_be_bytes())?;
    summary.entries = sink.entries;
    Ok(summary)
}

/// Counts the entries passed on.
struct Counted<'a> {
    inner: &'a mut dyn BucketSink,
    entries: u64,
}

impl BucketSink for Counted<'_> {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.inner.bucket(name)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.entries += 1;
        self.inner.put(key, value)
    }
}
