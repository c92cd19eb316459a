//! Hashes over etcd's buckets, as etcd computes them: CRC-32C (Castagnoli) of
//! every bucket name followed by that bucket's keys and values.

use crate::export::BucketSink;
use crate::layout;
use crate::SnapshotError;

/// etcd's `Maintenance.Hash` (`backend.Hash` with mvcc's default ignores: the
/// consistent index and term, which differ between members holding the same data).
#[derive(Debug, Default)]
pub struct BackendHash {
    crc: u32,
    in_meta: bool,
}

impl BackendHash {
    /// The hash so far.
    pub fn finish(&self) -> u32 {
        self.crc
    }
}

impl BucketSink for BackendHash {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.crc = crc32c::crc32c_append(self.crc, name.as_bytes());
        self.in_meta = name == layout::META;
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let ignored = self.in_meta
            && (key == layout::META_CONSISTENT_INDEX.as_bytes()
                || key == layout::META_TERM.as_bytes());
        if !ignored {
            self.crc = crc32c::crc32c_append(self.crc, key);
            self.crc = crc32c::crc32c_append(self.crc, value);
        }
        Ok(())
    }
}

/// What `etcdctl snapshot status` reports of a file: the CRC-32C of every
/// bucket name, key and value (nothing ignored), the last main revision seen
/// in `key`, and the number of entries over all buckets.
#[derive(Debug, Default)]
pub struct StatusHash {
    crc: u32,
    in_key: bool,
    /// The last `key` bucket revision seen.
    pub revision: i64,
    /// Entries over all buckets.
    pub total_keys: u64,
}

impl StatusHash {
    /// The hash so far.
    pub fn hash(&self) -> u32 {
        self.crc
    }
}

impl BucketSink for StatusHash {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        self.crc = crc32c::crc32c_append(self.crc, name.as_bytes());
        self.in_key = name == layout::KEY;
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.crc = crc32c::crc32c_append(self.crc, key);
        self.crc = crc32c::crc32c_append(self.crc, value);
        if self.in_key && key.len() >= 8 {
            // etcd reads the main revision of every key (bytesToRev).
            self.revision = i64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
        }
        self.total_keys += 1;
        Ok(())
    }
}
