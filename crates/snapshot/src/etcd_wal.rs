//! etcd's write-ahead log (`member/wal/*.wal` of etcd 3.4/3.5): read, so a
//! stopped real etcd member's data directory can be taken over in place, and
//! written, so one of ours can be handed back to etcd ([`write_etcd_wal`]).
//!
//! Format (interface facts): segment files named `{seq:016x}-{index:016x}.wal`,
//! read in name order. Each record is framed by an 8-byte little-endian length
//! whose low 56 bits are the record's size; when the top bit is set, the low 3
//! bits of the top byte say how many padding bytes follow the record (records
//! are padded to 8 bytes). A length of 0 ends a segment (preallocated space).
//! The record is a `walpb.Record` (`type` = 1, `crc` = 2, `data` = 3); types
//! are 1 metadata (`etcdserverpb.Metadata`: node ID = 1, cluster ID = 2),
//! 2 entry (`raftpb.Entry`: type = 1, term = 2, index = 3, data = 4), 3 hard
//! state (`raftpb.HardState`: term = 1, vote = 2, commit = 3), 4 CRC (the
//! running CRC carried into a new segment), 5 snapshot (`walpb.Snapshot`:
//! index = 1, term = 2). Every record but a CRC record carries the running
//! CRC-32C (Castagnoli) of the data of all records before it and itself.
//! An entry at an index at or below the last one read replaces it and every
//! later one (a new leader overwrote an uncommitted tail).

use std::path::Path;

use prost::Message;

use crate::SnapshotError;

const METADATA: i64 = 1;
const ENTRY: i64 = 2;
const STATE: i64 = 3;
const CRC: i64 = 4;
const SNAPSHOT: i64 = 5;

/// etcd's own limit on one record.
const MAX_RECORD_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(int64, tag = "1")]
    kind: i64,
    #[prost(uint32, tag = "2")]
    crc: u32,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RaftEntry {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(uint64, tag = "2")]
    term: u64,
    #[prost(uint64, tag = "3")]
    index: u64,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RaftHardState {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    vote: u64,
    #[prost(uint64, tag = "3")]
    commit: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WalSnapshot {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(uint64, tag = "2")]
    term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Metadata {
    #[prost(uint64, tag = "1")]
    node_id: u64,
    #[prost(uint64, tag = "2")]
    cluster_id: u64,
}

/// One Raft entry of etcd's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEntry {
    /// Index.
    pub index: u64,
    /// Term.
    pub term: u64,
    /// 0 normal, 1 configuration change, 2 configuration change v2.
    pub kind: i32,
    /// The proposal.
    pub data: Vec<u8>,
}

/// What etcd's WAL holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdWal {
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The last hard state: term, vote, commit.
    pub hard_state: (u64, u64, u64),
    /// Snapshot records (index, term), in order.
    pub snapshots: Vec<(u64, u64)>,
    /// Entries, by increasing index.
    pub entries: Vec<EtcdEntry>,
}

/// Whether `dir` holds etcd's WAL (its first segment starts with an etcd frame
/// holding a metadata record).
pub fn is_etcd_wal(dir: &Path) -> bool {
    let Ok(segments) = segments(dir) else { return false };
    let Some(first) = segments.first() else { return false };
    let Ok(bytes) = std::fs::read(first) else { return false };
    let mut cursor = Frames { bytes: &bytes, at: 0 };
    matches!(cursor.next_record(), Ok(Some(r)) if r.kind == CRC || r.kind == METADATA)
}

fn segments(dir: &Path) -> Result<Vec<std::path::PathBuf>, SnapshotError> {
    let mut out: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    out.sort();
    Ok(out)
}

struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Frames<'_> {
    /// The next record; `None` at the end of the segment. An error is a frame
    /// that does not fit or does not decode.
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        let Some(head) = self.bytes.get(self.at..self.at + 8) else { return Ok(None) };
        let field = u64::from_le_bytes(head.try_into().expect("8 bytes"));
        if field == 0 {
            return Ok(None);
        }
        let len = field & !(0xff << 56);
        let pad = if field >> 63 == 1 { (field >> 56) & 0x7 } else { 0 };
        if len >= MAX_RECORD_BYTES {
            return Err(format!("a record of {len} bytes at offset {}", self.at));
        }
        let start = self.at + 8;
        let end = start + len as usize;
        let Some(body) = self.bytes.get(start..end) else {
            return Err(format!("a record at offset {} runs past the end of the file", self.at));
        };
        let record = Record::decode(body)
            .map_err(|e| format!("the record at offset {} does not decode: {e}", self.at))?;
        self.at = end + pad as usize;
        Ok(Some(record))
    }
}

/// Reads every segment of etcd's WAL in `dir`. A damaged record at the very
/// end of the last segment is a torn write and ends the log, as in etcd;
/// anywhere else it is an error.
pub fn read_etcd_wal(dir: &Path) -> Result<EtcdWal, SnapshotError> {
    let bad =
        |what: String| SnapshotError::Backend(format!("etcd WAL in {}: {what}", dir.display()));
    let files = segments(dir)?;
    if files.is_empty() {
        return Err(bad("no .wal files".into()));
    }
    let mut wal = EtcdWal::default();
    let mut metadata: Option<Vec<u8>> = None;
    let mut crc = 0u32;
    for (n, path) in files.iter().enumerate() {
        let last_file = n + 1 == files.len();
        let bytes = std::fs::read(path)?;
        let mut frames = Frames { bytes: &bytes, at: 0 };
        loop {
            let record = match frames.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) if last_file => break,
                Err(e) => return Err(bad(format!("{}: {e}", path.display()))),
            };
            if record.kind == CRC {
                if crc != 0 && record.crc != crc {
                    return Err(bad(format!("{}: CRC mismatch between segments", path.display())));
                }
                crc = record.crc;
                continue;
            }
            crc = crc32c::crc32c_append(crc, &record.data);
            if record.crc != crc {
                if last_file {
                    break;
                }
                return Err(bad(format!("{}: CRC mismatch (damaged segment)", path.display())));
            }
            let decode_err = |e: prost::DecodeError| bad(format!("{}: {e}", path.display()));
            match record.kind {
                METADATA => {
                    if metadata.as_ref().is_some_and(|m| *m != record.data) {
                        return Err(bad("segments disagree on the member's metadata".into()));
                    }
                    let m = Metadata::decode(record.data.as_slice()).map_err(decode_err)?;
                    wal.member_id = m.node_id;
                    wal.cluster_id = m.cluster_id;
                    metadata = Some(record.data);
                }
                ENTRY => {
                    let e = RaftEntry::decode(record.data.as_slice()).map_err(decode_err)?;
                    let keep = wal.entries.partition_point(|x| x.index < e.index);
                    wal.entries.truncate(keep);
                    wal.entries.push(EtcdEntry {
                        index: e.index,
                        term: e.term,
                        kind: e.kind,
                        data: e.data,
                    });
                }
                STATE => {
                    let hs = RaftHardState::decode(record.data.as_slice()).map_err(decode_err)?;
                    wal.hard_state = (hs.term, hs.vote, hs.commit);
                }
                SNAPSHOT => {
                    let s = WalSnapshot::decode(record.data.as_slice()).map_err(decode_err)?;
                    wal.snapshots.push((s.index, s.term));
                }
                other => return Err(bad(format!("unknown record type {other}"))),
            }
        }
    }
    if metadata.is_none() {
        return Err(bad("no metadata record (not etcd's WAL?)".into()));
    }
    Ok(wal)
}

/// etcd's segment size: a new segment is preallocated to this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1000 * 1000;

/// A log to write as etcd's WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdWalSpec {
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The snapshot the log starts after: (index, term).
    pub snapshot: (u64, u64),
    /// Entries after the snapshot, by increasing index from `snapshot.0 + 1`.
    pub entries: Vec<EtcdEntry>,
    /// Term, vote, commit.
    pub hard_state: (u64, u64, u64),
}

/// Writes `spec` as the first segment of etcd's WAL in `dir` (which must not
/// hold a WAL yet), laid out as etcd's own `wal.Create` and a snapshot save
/// write it: CRC, metadata, the empty snapshot, the snapshot, entries, hard
/// state; preallocated to etcd's segment size and fsynced with its directory.
pub fn write_etcd_wal(dir: &Path, spec: &EtcdWalSpec) -> Result<(), SnapshotError> {
    assert!(
        spec.entries.iter().enumerate().all(|(i, e)| e.index == spec.snapshot.0 + 1 + i as u64),
        "invariant: entries follow the snapshot without gaps"
    );
    assert!(
        spec.hard_state.2 >= spec.snapshot.0,
        "invariant: the commit index is at or past the snapshot"
    );
    std::fs::create_dir_all(dir)?;
    if !segments(dir)?.is_empty() {
        return Err(SnapshotError::Backend(format!(
            "{} already holds WAL segments; refusing to write over them",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut crc = 0u32;
    // The CRC record carries the running CRC into the segment (0 for the first).
    push_record(&mut out, CRC, crc, None);
    let mut append = |out: &mut Vec<u8>, kind: i64, data: Vec<u8>| {
        crc = crc32c::crc32c_append(crc, &data);
        push_record(out, kind, crc, Some(&data));
    };
    let mut meta = Vec::new();
    put_uint(&mut meta, 1, spec.member_id);
    put_uint(&mut meta, 2, spec.cluster_id);
    append(&mut out, METADATA, meta);
    for (index, term) in [(0, 0), spec.snapshot] {
        let mut snap = Vec::new();
        put_uint(&mut snap, 1, index);
        put_uint(&mut snap, 2, term);
        append(&mut out, SNAPSHOT, snap);
    }
    for entry in &spec.entries {
        let mut e = Vec::new();
        put_uint(&mut e, 1, entry.kind as u64);
        put_uint(&mut e, 2, entry.term);
        put_uint(&mut e, 3, entry.index);
        if !entry.data.is_empty() {
            put_bytes(&mut e, 4, &entry.data);
        }
        append(&mut out, ENTRY, e);
    }
    let (term, vote, commit) = spec.hard_state;
    let mut hs = Vec::new();
    put_uint(&mut hs, 1, term);
    put_uint(&mut hs, 2, vote);
    put_uint(&mut hs, 3, commit);
    append(&mut out, STATE, hs);

    let path = dir.join(format!("{:016x}-{:016x}.wal", 0, 0));
    let mut file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut file, &out)?;
    file.set_len(SEGMENT_BYTES.max(out.len() as u64))?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// One frame: the length field (with the padding count when padded), the
/// `walpb.Record` (type and CRC always, as gogoproto writes them), padding.
fn push_record(out: &mut Vec<u8>, kind: i64, crc: u32, data: Option<&[u8]>) {
    let mut record = Vec::new();
    put_uint(&mut record, 1, kind as u64);
    put_uint(&mut record, 2, u64::from(crc));
    if let Some(data) = data {
        put_bytes(&mut record, 3, data);
    }
    let len = record.len() as u64;
    let pad = (8 - len % 8) % 8;
    let field = if pad == 0 { len } else { len | ((0x80 | pad) << 56) };
    out.extend_from_slice(&field.to_le_bytes());
    out.extend_from_slice(&record);
    out.resize(out.len() + pad as usize, 0);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field, written even when zero (proto2, as etcd's gogoproto does).
pub(crate) fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

/// A length-delimited field.
pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// Whether an entry's proposal is a v3 Put (`InternalRaftRequest.put`, field 4).
/// etcd records the backend's consistent index in the transaction of every
/// write that changes a key, and a Put always does, so a Put past the backend's
/// consistent index was not applied. Nothing else is as certain: etcd 3.4 does
/// not record the index with lease, auth or alarm changes, nor with a txn or a
/// delete that changed nothing. v2 requests (bare `etcdserverpb.Request`, a
/// method name in field 2) are not Puts.
pub fn is_put_request(entry: &EtcdEntry) -> bool {
    if entry.kind != 0 || entry.data.is_empty() {
        return false;
    }
    let Some(fields) = top_level_fields(&entry.data) else {
        // etcd applies what does not decode as a v2 request.
        return false;
    };
    let v2_method = fields.iter().any(|(num, payload)| {
        *num == 2
            && matches!(
                payload.as_deref(),
                Some(b"PUT" | b"POST" | b"DELETE" | b"QGET" | b"GET" | b"HEAD" | b"SYNC")
            )
    });
    !v2_method && fields.iter().any(|(num, payload)| *num == 4 && payload.is_some())
}

/// The top-level fields of a protobuf message: number, and the payload of
/// length-delimited ones.
fn top_level_fields(mut bytes: &[u8]) -> Option<Vec<(u64, Option<Vec<u8>>)>> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (num, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => {
                varint(&mut bytes)?;
                None
            }
            1 => {
                bytes = bytes.get(8..)?;
                None
            }
            2 => {
                let len = varint(&mut bytes)? as usize;
                let p = bytes.get(..len)?.to_vec();
                bytes = &bytes[len..];
                Some(p)
            }
            5 => {
                bytes = bytes.get(4..)?;
                None
            }
            _ => return None,
        };
        out.push((num, payload));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(data: Vec<u8>) -> EtcdEntry {
        EtcdEntry { index: 1, term: 1, kind: 0, data }
    }

    #[test]
    fn a_written_wal_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let spec = EtcdWalSpec {
            member_id: 0x8e9e05c52164694d,
            cluster_id: 0xcdf818194e3a8c32,
            snapshot: (41, 3),
            entries: vec![
                EtcdEntry { index: 42, term: 3, kind: 0, data: Vec::new() },
                EtcdEntry { index: 43, term: 4, kind: 0, data: b"abc".to_vec() },
            ],
            hard_state: (4, 0x8e9e05c52164694d, 43),
        };
        write_etcd_wal(dir.path(), &spec).unwrap();
        assert!(is_etcd_wal(dir.path()));
        let wal = read_etcd_wal(dir.path()).unwrap();
        assert_eq!((wal.member_id, wal.cluster_id), (spec.member_id, spec.cluster_id));
        assert_eq!(wal.snapshots, vec![(0, 0), (41, 3)]);
        assert_eq!(wal.entries, spec.entries);
        assert_eq!(wal.hard_state, spec.hard_state);
        let file = dir.path().join("0000000000000000-0000000000000000.wal");
        assert_eq!(std::fs::metadata(file).unwrap().len(), SEGMENT_BYTES);
        assert!(write_etcd_wal(dir.path(), &spec).is_err(), "never over an existing WAL");
    }

    #[test]
    fn frames_are_laid_out_as_etcds() {
        // The first two records of the WAL real etcdctl 3.4's snapshot restore
        // wrote (CRC record, then Metadata{NodeID, ClusterID}).
        let mut out = Vec::new();
        push_record(&mut out, CRC, 0, None);
        assert_eq!(out, [4, 0, 0, 0, 0, 0, 0, 0x84, 0x08, 0x04, 0x10, 0x00, 0, 0, 0, 0]);
        let mut meta = Vec::new();
        put_uint(&mut meta, 1, 0xb71f75320dc06a6c);
        put_uint(&mut meta, 2, 0x19bd0b8d8b73b22d);
        let crc = crc32c::crc32c_append(0, &meta);
        let mut out = Vec::new();
        push_record(&mut out, METADATA, crc, Some(&meta));
        let etcds =
            "1f0000000000008108011082f7b89f0b1a1508ecd481eea0a6dd8fb70110ade4cedbd8f1c2de1900";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, etcds);
    }

    #[test]
    fn puts_are_told_from_v2_requests_and_other_requests() {
        assert!(!is_put_request(&entry(Vec::new())));
        // InternalRaftRequest{ID: 5, V2: {...}, header: {...}}.
        let v2_wrapped = vec![0x08, 0x05, 0x12, 0x02, 0x08, 0x01, 0xa2, 0x06, 0x02, 0x08, 0x01];
        assert!(!is_put_request(&entry(v2_wrapped)));
        // A bare v2 Request{ID: 5, Method: "PUT", Path: "/0/members/1/attributes"}.
        let mut bare = vec![0x08, 0x05, 0x12, 0x03];
        bare.extend_from_slice(b"PUT");
        bare.extend_from_slice(&[0x1a, 0x03]);
        bare.extend_from_slice(b"/0/");
        assert!(!is_put_request(&entry(bare)));
        // InternalRaftRequest{header: {...}, put: {key: "k"}}.
        let put = vec![0xa2, 0x06, 0x02, 0x08, 0x01, 0x22, 0x03, 0x0a, 0x01, b'k'];
        assert!(is_put_request(&entry(put)));
        // InternalRaftRequest{header: {...}, lease_grant: {TTL: 5}} is no Put.
        let grant = vec![0xa2, 0x06, 0x02, 0x08, 0x01, 0x42, 0x02, 0x08, 0x05];
        assert!(!is_put_request(&entry(grant)));
        let conf = EtcdEntry { kind: 1, ..entry(vec![1, 2, 3]) };
        assert!(!is_put_request(&conf));
    }
}
