//! Snapshot files as `etcdctl snapshot save` writes them: a backend file, then
//! (when its length is a multiple of 512 bytes plus 32) the SHA-256 of
//! everything before it. The backend is etcd's bbolt file, or, for files saved
//! from this server before it spoke etcd's format, our redb file.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use etcd_bbolt::{Reader, Writer};
use etcd_storage::{Backend, ReadTables};
use sha2::{Digest, Sha256};

use crate::export::{export, BucketSink, ExportSummary};
use crate::hash::StatusHash;
use crate::import::{ImportSummary, Importer};
use crate::SnapshotError;

/// Length of the SHA-256 trailer.
pub const TRAILER_LEN: u64 = 32;

/// Which backend a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// etcd's bbolt file.
    Etcd,
    /// This server's redb file (snapshots saved by earlier versions).
    Redb,
}

/// An opened snapshot file, its trailer checked.
#[derive(Debug)]
pub struct SnapshotFile {
    /// The file.
    pub file: File,
    /// Bytes of the backend (the trailer excluded).
    pub db_len: u64,
    /// Whether the file ends with a SHA-256 trailer.
    pub has_hash: bool,
    /// The backend's format.
    pub format: Format,
}

/// Whether a file of `len` bytes ends with a SHA-256 trailer (etcd's rule: a
/// backend is a whole number of 512-byte blocks, a trailer adds 32 bytes).
pub fn has_trailer(len: u64) -> bool {
    len % 512 == TRAILER_LEN
}

/// Opens a snapshot file: checks its SHA-256 trailer as `etcdutl snapshot
/// restore` does (a missing trailer is refused unless `skip_hash_check`; a
/// wrong one always, unless `skip_hash_check`), calling `progress(done, total)`
/// while hashing, and tells the format from the first page.
pub fn open_snapshot(
    path: &Path,
    skip_hash_check: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SnapshotFile, SnapshotError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let has_hash = has_trailer(len);
    if !has_hash && !skip_hash_check {
        return Err(SnapshotError::Backend(
            "snapshot missing hash but --skip-hash-check=false (a file copied from a data \
             directory has no hash: restore it with --skip-hash-check)"
                .into(),
        ));
    }
    let db_len = if has_hash { len - TRAILER_LEN } else { len };
    if has_hash && !skip_hash_check {
        let mut expected = [0u8; TRAILER_LEN as usize];
        file.read_exact_at(&mut expected, db_len)?;
        let actual = sha256_prefix(&file, db_len, progress)?;
        if actual != expected {
            return Err(SnapshotError::Backend(format!(
                "expected sha256 {}, got {}: the snapshot is damaged (or was changed after it was \
                 saved); take a new one, or restore with --skip-hash-check to accept it as it is",
                go_bytes(&expected),
                go_bytes(&actual)
            )));
        }
    }
    let format = detect_format(&file, db_len)?;
    Ok(SnapshotFile { file, db_len, has_hash, format })
}

/// Go's `%v` of a byte slice (`[1 2 3]`), as etcd prints the hashes.
fn go_bytes(bytes: &[u8]) -> String {
    let items: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!("[{}]", items.join(" "))
}

fn sha256_prefix(
    file: &File,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<[u8; 32], SnapshotError> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], done)?;
        hash.update(&buf[..n]);
        done += n as u64;
        progress(done, len);
    }
    Ok(hash.finalize().into())
}

/// Which backend `file` (of `len` bytes) holds: bbolt's meta page has its magic
/// right after the 16-byte page header; redb's file starts with its own.
pub fn detect_format(file: &File, len: u64) -> Result<Format, SnapshotError> {
    const BBOLT_MAGIC: u32 = 0xED0C_DAED;
    const REDB_MAGIC: &[u8] = b"redb";
    let mut head = [0u8; 20];
    if len < head.len() as u64 {
        return Err(SnapshotError::Backend(format!(
            "the snapshot is {len} bytes: too short to be a backend (truncated?)"
        )));
    }
    file.read_exact_at(&mut head, 0)?;
    if u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) == BBOLT_MAGIC {
        Ok(Format::Etcd)
    } else if &head[..REDB_MAGIC.len()] == REDB_MAGIC {
        Ok(Format::Redb)
    } else {
        Err(SnapshotError::Backend(
            "the file is neither an etcd snapshot (bbolt) nor one of this server's (redb): \
             was it written by `etcdctl snapshot save`?"
                .into(),
        ))
    }
}

/// Opens the bbolt backend of a snapshot (its trailer left out).
pub fn bbolt_reader(snapshot: &SnapshotFile) -> Result<Reader, SnapshotError> {
    Ok(Reader::from_file(snapshot.file.try_clone()?, snapshot.db_len)?)
}

/// Feeds every bucket and entry of an etcd file to `sink`, in bbolt's order.
pub fn walk(reader: &Reader, sink: &mut dyn BucketSink) -> Result<(), SnapshotError> {
    // Both callbacks feed the one sink, never at the same time.
    let sink = std::cell::RefCell::new(sink);
    reader.walk::<SnapshotError>(
        &mut |name| sink.borrow_mut().bucket(&String::from_utf8_lossy(name)),
        &mut |key, value| sink.borrow_mut().put(key, value),
    )
}

/// Imports an etcd file into `backend` (a fresh one), committing as it goes.
pub fn import_etcd(reader: &Reader, backend: &Backend) -> Result<ImportSummary, SnapshotError> {
    let mut importer = Importer::new(backend)?;
    walk(reader, &mut importer)?;
    importer.finish()
}

/// What `etcdctl snapshot status` reports of an etcd file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C of every bucket name, key and value.
    pub hash: u32,
    /// The main revision of the last key in `key`.
    pub revision: i64,
    /// Entries over all buckets.
    pub total_key: u64,
    /// The database's size (bbolt's `tx.Size()`: the pages in use).
    pub total_size: u64,
}

/// `snapshot status` of an etcd file.
pub fn status(reader: &Reader) -> Result<Status, SnapshotError> {
    let mut hash = StatusHash::default();
    walk(reader, &mut hash)?;
    Ok(Status {
        hash: hash.hash(),
        revision: hash.revision,
        total_key: hash.total_keys,
        total_size: reader.page_count() * u64::from(reader.page_size()),
    })
}

/// A [`BucketSink`] writing an etcd (bbolt) file.
pub struct BoltSink<W: Write + Seek> {
    writer: Writer<W>,
}

impl<W: Write + Seek> BoltSink<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Result<Self, SnapshotError> {
        Ok(BoltSink { writer: Writer::new(out)? })
    }

    /// Completes the file; returns the output and the file's length.
    pub fn finish(self) -> Result<(W, u64), SnapshotError> {
        Ok(self.writer.finish()?)
    }
}

impl<W: Write + Seek> BucketSink for BoltSink<W> {
    fn bucket(&mut self, name: &str) -> Result<(), SnapshotError> {
        Ok(self.writer.bucket(name.as_bytes())?)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        Ok(self.writer.put(key, value)?)
    }
}

/// Writes our backend, as of `txn`, as etcd's file to `out` (no trailer).
pub fn write_etcd<W: Write + Seek>(
    txn: &impl ReadTables,
    cluster_version: &str,
    out: W,
) -> Result<(ExportSummary, W, u64), SnapshotError> {
    let mut sink = BoltSink::new(out)?;
    let summary = export(txn, cluster_version, &mut sink)?;
    let (out, len) = sink.finish()?;
    Ok((summary, out, len))
}

/// Appends the SHA-256 trailer to a file holding `len` bytes of backend.
pub fn append_trailer(file: &mut File, len: u64) -> Result<(), SnapshotError> {
    let digest = sha256_prefix(file, len, &mut |_, _| {})?;
    file.seek(std::io::SeekFrom::Start(len))?;
    file.write_all(&digest)?;
    file.set_len(len + TRAILER_LEN)?;
    Ok(())
}

/// Copies the first `len` bytes of `from` to a new file at `to`.
pub fn copy_prefix(from: &File, len: u64, to: &Path) -> Result<(), SnapshotError> {
    let mut out = File::create(to)?;
    let mut reader = from.try_clone()?;
    reader.seek(std::io::SeekFrom::Start(0))?;
    let copied = std::io::copy(&mut reader.take(len), &mut out)?;
    if copied != len {
        return Err(SnapshotError::Backend(format!(
            "the snapshot ended after {copied} of {len} bytes"
        )));
    }
    out.sync_all()?;
    Ok(())
}
