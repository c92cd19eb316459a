//! Segmented write-ahead log for a Raft node.
//!
//! The WAL is the node's source of truth: Raft log entries, the Raft hard state and snapshot
//! markers are appended to it and fsynced ([`Wal::sync`]) before a write is acknowledged. It
//! knows nothing of Raft libraries or protobuf: entries carry opaque byte payloads.
//!
//! # On-disk format
//!
//! A WAL is a directory of *segments* named `{seq:016x}-{first_index:016x}.wal`. `seq` starts
//! at 0 and increments by one per segment; `first_index` is the index of the first entry
//! expected in the segment (last appended index + 1 when the segment was cut; 0 for the
//! segment made by [`Wal::create`]). Files named `<segment name>.tmp` are segments that were
//! being initialised during a crash; they are never replayed and are deleted by [`Wal::open`].
//!
//! A segment is a sequence of records, followed by zero bytes up to the end of the file:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | type: u8 | payload
//! ```
//!
//! `len` counts the type byte plus the payload and must be in `1..=`[`MAX_RECORD_BYTES`]; `crc`
//! is the CRC32C (Castagnoli) of the type byte plus the payload. Payloads are little-endian
//! fixed-width integers and byte strings prefixed by a `u32 LE` length, and must be consumed
//! exactly:
//!
//! | type | record          | payload                                                          |
//! |------|-----------------|------------------------------------------------------------------|
//! | 1    | metadata        | `bytes` (given to [`Wal::create`])                                |
//! | 2    | entry           | `index u64, term u64, entry_type u8, data bytes, context bytes`  |
//! | 3    | hard state      | `term u64, vote u64, commit u64`                                 |
//! | 4    | snapshot marker | `index u64, term u64, conf_state bytes`                          |
//!
//! Every segment begins with a metadata record (identical in all segments), followed by the
//! current snapshot marker (if any) and the current hard state (if any) at the time the segment
//! was cut, so any suffix of segments replays on its own once older ones are released. A new
//! segment is cut when the current one exceeds the segment size limit ([`SEGMENT_BYTES_MAX`]
//! by default, see [`Wal::set_segment_bytes_max`]): the current segment is flushed and fsynced,
//! the new one is written under its `.tmp` name, preallocated, fsynced, renamed into place, and
//! the directory is fsynced.
//!
//! ## Preallocation
//!
//! Every segment is created preallocated to the segment size limit: disk blocks are allocated
//! with `fallocate` (no zeros are written; the unwritten space reads as zeros) and the file size
//! is set to the limit, so that appends overwrite allocated space and the `fdatasync` after
//! them need not journal a file-size change. Records are therefore written at the *logical end*
//! of the segment, the end of its last record, not at the end of the file; the bytes after it
//! are zero. A segment may still grow past the limit (the write that crosses it lands in the
//! current segment before the cut), and on a filesystem without `fallocate` segments are not
//! preallocated at all; both layouts are read the same way. Segments keep their unused zero
//! tail after a cut.
//!
//! # Replay and recovery
//!
//! Segments are replayed in `seq` order; the numbers must be contiguous. A later entry with an
//! index `<=` the last replayed entry's index overwrites it and discards everything after it
//! (Raft log conflict resolution). A snapshot marker discards entries at or below its index.
//! The newest hard state and snapshot marker win. Replayed entries must be contiguous and start
//! right after the snapshot marker's index (when there is one).
//!
//! Bytes after the last valid record of a segment that are **all zero** are preallocated space
//! (the normal end of every segment): they are neither a torn tail nor corruption, in any
//! segment, and are left alone. Otherwise, a damaged or incomplete record in the **last**
//! segment is a torn tail, as left by a crash during an append, when no valid record follows it
//! anywhere, or when one of the 512-byte sectors it occupies holds only zeros (a crash flushed
//! the writes since the last fsync out of order, and that sector never reached the disk; what
//! follows was not fsynced either, since a segment is fsynced before the next is cut; etcd's
//! torn-entry rule): the segment is truncated to the end of the last valid record, preallocated again to
//! its former size (so the torn bytes now read as zeros) and fsynced; [`Replay::torn_bytes`]
//! counts the bytes from the end of the last valid record to the last non-zero byte. (If that
//! leaves the last segment without even its metadata record and an older segment exists, the
//! empty last segment is removed.) Any other damage — in a non-last segment, or bytes changed
//! rather than missing with a valid record after them — is [`Error::Corrupt`]: records are never silently dropped from the middle of
//! the log. The log then continues at the logical end of the last segment.
//!
//! # Retention
//!
//! [`Wal::release_to`] deletes the oldest segments while the *next* segment's `first_index` is
//! `<=` the release index, never the last segment, and never past the newest saved snapshot
//! marker.

use std::path::{Path, PathBuf};

pub mod fs;
mod record;
mod segment;

pub use fs::{Fs, OsFs, SegmentFile};

pub use record::MAX_RECORD_BYTES;
pub use segment::SegmentInfo;

use record::Record;

/// Default size after which a new segment is cut.
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// Buffered bytes beyond which `append` writes to the file (without fsync).
const FLUSH_THRESHOLD: usize = 1 << 20;

/// A Raft log entry; `data` and `context` are opaque to the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub entry_type: u8,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// An entry to append, borrowed from wherever it lives (Raft's own entries),
/// so appending copies its bytes once, into the WAL's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub index: u64,
    pub term: u64,
    pub entry_type: u8,
    pub data: &'a [u8],
    pub context: &'a [u8],
}

impl Entry {
    /// This entry, borrowed.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            index: self.index,
            term: self.term,
            entry_type: self.entry_type,
            data: &self.data,
            context: &self.context,
        }
    }
}

impl EntryRef<'_> {
    /// This entry, owned.
    pub fn to_entry(&self) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            entry_type: self.entry_type,
            data: self.data.to_vec(),
            context: self.context.to_vec(),
        }
    }
}

/// The Raft hard state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Records that a snapshot at `index`/`term` is durable; `conf_state` is opaque to the WAL.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
    pub conf_state: Vec<u8>,
}

/// What [`Wal::open`] recovered.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Replay {
    /// The bytes given to [`Wal::create`].
    pub metadata: Vec<u8>,
    /// The newest snapshot marker found.
    pub snapshot: Option<SnapshotMarker>,
    /// The newest hard state found.
    pub hard_state: Option<HardState>,
    /// Entries after the snapshot marker (all entries if there is none), contiguous, after
    /// conflict resolution.
    pub entries: Vec<Entry>,
    /// Bytes cut off the last segment as a torn tail (0 if none): from the end of the last valid
    /// record to the last non-zero byte; the zero-filled preallocated space after them is not
    /// counted. For the caller to log.
    pub torn_bytes: u64,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("wal: I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal: failed to {op} {path}: {source}; check the disk and its permissions")]
    IoPath {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wal: record at offset {offset} in {segment} {reason}")]
    Corrupt { segment: PathBuf, offset: u64, reason: String },
    #[error(
        "wal: {0} already contains WAL segments; open it with Wal::open instead, or move the \
         directory away if this member must start from scratch"
    )]
    AlreadyExists(PathBuf),
    #[error(
        "wal: no WAL segments found in {0}; check the data directory path, or create a new \
         WAL if this member is new"
    )]
    NotFound(PathBuf),
    #[error(
        "wal: record of {size} bytes exceeds the maximum record size of {max} bytes; split \
         the request into smaller ones"
    )]
    TooLarge { size: usize, max: usize },
    #[error(
        "wal: an earlier write or fsync to {0} failed, so the state of its tail is unknown; \
         the WAL refuses further writes: restart the member (opening the WAL repairs the tail)"
    )]
    Failed(PathBuf),
}

impl From<record::TooLarge> for Error {
    fn from(e: record::TooLarge) -> Self {
        Error::TooLarge { size: e.0, max: MAX_RECORD_BYTES }
    }
}

const ADVICE: &str = "restore this member from a snapshot or remove it from the cluster and \
                      re-add it";

/// Accumulates records across segments during [`Wal::open`].
#[derive(Default)]
struct ReplayState {
    metadata: Option<Vec<u8>>,
    snapshot: Option<(SnapshotMarker, PathBuf, u64)>,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    /// Where entries first jumped forward past `last + 1`.
    gap: Option<(PathBuf, u64, String)>,
}

impl ReplayState {
    fn apply(&mut self, rec: Record, path: &Path, offset: u64) -> Result<()> {
        let corrupt =
            |reason: String| Error::Corrupt { segment: path.to_path_buf(), offset, reason };
        match rec {
            Record::Metadata(m) => {
                if offset != 0 {
                    return Err(corrupt(format!(
                        "is a metadata record in the middle of a segment; {ADVICE}"
                    )));
                }
                match &self.metadata {
                    Some(prev) if *prev != m => {
                        return Err(corrupt(format!(
                            "holds metadata that differs from the earlier segments: the \
                             directory mixes segments of different logs; {ADVICE}"
                        )))
                    }
                    _ => self.metadata = Some(m),
                }
            }
            Record::Entry(e) => {
                if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
                    if e.index <= last.index {
                        let keep = e.index.saturating_sub(first.index) as usize;
                        self.entries.truncate(keep);
                    } else if e.index > last.index + 1 {
                        if self.gap.is_none() {
                            let reason = format!(
                                "holds entry {} but the previous entry is {}",
                                e.index, last.index
                            );
                            self.gap = Some((path.to_path_buf(), offset, reason));
                        }
                        self.entries.clear();
                    }
                }
                self.entries.push(e);
            }
            Record::HardState(hs) => self.hard_state = Some(hs),
            Record::Snapshot(s) => {
                self.entries.retain(|e| e.index > s.index);
                self.snapshot = Some((s, path.to_path_buf(), offset));
            }
        }
        Ok(())
    }

    fn finish(mut self, dir: &Path) -> Result<Replay> {
        let metadata = self.metadata.ok_or_else(|| Error::NotFound(dir.to_path_buf()))?;
        if let Some((s, ..)) = &self.snapshot {
            self.entries.retain(|e| e.index > s.index);
        }
        if let Some(first) = self.entries.first() {
            match (&self.snapshot, self.gap) {
                (Some((s, path, offset)), _) if first.index != s.index + 1 => {
                    return Err(Error::Corrupt {
                        segment: path.clone(),
                        offset: *offset,
                        reason: format!(
                            "is a snapshot marker at index {} but the entries after it start \
                             at index {}: entries are missing; {ADVICE}",
                            s.index, first.index
                        ),
                    });
                }
                (None, Some((segment, offset, reason))) => {
                    return Err(Error::Corrupt {
                        segment,
                        offset,
                        reason: format!("{reason}: entries are missing; {ADVICE}"),
                    });
                }
                _ => {}
            }
        }
        Ok(Replay {
            metadata,
            snapshot: self.snapshot.map(|(s, ..)| s),
            hard_state: self.hard_state,
            entries: self.entries,
            torn_bytes: 0,
        })
    }
}

/// An open write-ahead log, positioned for appends at the logical end of its last segment.
#[derive(Debug)]
pub struct Wal<F: Fs = OsFs> {
    fs: F,
    dir: PathBuf,
    metadata: Vec<u8>,
    /// All segments, oldest first; the last one is `file`.
    segments: Vec<SegmentInfo>,
    file: F::File,
    /// Logical end of the data in `file`: the end of its last record, where the next write goes
    /// (excluding `buf`). The file itself is usually longer: zero-filled preallocated space.
    file_len: u64,
    /// Encoded records not yet written to `file`.
    buf: Vec<u8>,
    /// Bytes were written to `file` since the last fsync.
    unsynced: bool,
    /// `--unsafe-no-fsync`: [`Wal::sync`] writes but does not fsync.
    no_fsync: bool,
    last_index: u64,
    snapshot: Option<SnapshotMarker>,
    hard_state: Option<HardState>,
    segment_bytes_max: u64,
    failed: bool,
}

impl Wal<OsFs> {
    /// Creates a new WAL in `dir` (created if missing; error if it already contains WAL
    /// segments), with segments of [`SEGMENT_BYTES_MAX`].
    pub fn create(dir: &Path, metadata: &[u8]) -> Result<Wal> {
        Self::create_with_segment_bytes_max(dir, metadata, SEGMENT_BYTES_MAX)
    }

    /// Like [`Wal::create`], but cuts segments after `segment_bytes_max` bytes (see
    /// [`Wal::set_segment_bytes_max`]) and preallocates the first segment to that size too.
    pub fn create_with_segment_bytes_max(
        dir: &Path,
        metadata: &[u8],
        segment_bytes_max: u64,
    ) -> Result<Wal> {
        Wal::create_on(OsFs, dir, metadata, segment_bytes_max)
    }

    /// Opens an existing WAL, replays it, repairs a torn tail, and returns it ready for
    /// appends.
    pub fn open(dir: &Path) -> Result<(Wal, Replay)> {
        Wal::open_on(OsFs, dir)
    }

    /// Whether `dir` holds at least one WAL segment (see [`Wal::exists_on`]).
    pub fn exists(dir: &Path) -> Result<bool> {
        Wal::exists_on(&OsFs, dir)
    }
}

impl<F: Fs> Wal<F> {
    /// [`Wal::create_with_segment_bytes_max`] on the files of `fs`.
    pub fn create_on(fs: F, dir: &Path, metadata: &[u8], segment_bytes_max: u64) -> Result<Wal<F>> {
        let created = !fs.exists(dir);
        fs.create_dir_all(dir).map_err(segment::io_err("create directory", dir))?;
        if Self::exists_on(&fs, dir)? {
            return Err(Error::AlreadyExists(dir.to_path_buf()));
        }
        segment::remove_tmp_files(&fs, dir)?;
        let mut header = Vec::new();
        record::encode_metadata(&mut header, metadata)?;
        let (file, info) = segment::create(&fs, dir, 0, 0, &header, segment_bytes_max)?;
        if created {
            if let Some(parent) = dir.parent() {
                segment::sync_dir(&fs, parent)?;
            }
        }
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            metadata: metadata.to_vec(),
            segments: vec![info],
            file,
            file_len: header.len() as u64,
            buf: Vec::new(),
            unsynced: false,
            no_fsync: false,
            last_index: 0,
            snapshot: None,
            hard_state: None,
            segment_bytes_max,
            failed: false,
        })
    }

    /// [`Wal::open`] on the files of `fs`.
    pub fn open_on(fs: F, dir: &Path) -> Result<(Wal<F>, Replay)> {
        let mut segments = segment::list(&fs, dir)?;
        if segments.is_empty() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        for pair in segments.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                return Err(Error::Corrupt {
                    segment: pair[1].path.clone(),
                    offset: 0,
                    reason: format!(
                        "starts segment number {} but the previous segment is number {}: \
                         segments are missing from the middle of the log, refusing to start; \
                         {ADVICE}",
                        pair[1].seq, pair[0].seq
                    ),
                });
            }
        }
        segment::remove_tmp_files(&fs, dir)?;

        let mut state = ReplayState::default();
        let mut lens = Vec::with_capacity(segments.len());
        let mut torn_bytes = 0u64;
        let n = segments.len();
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == n;
            let data = fs.read(&seg.path).map_err(segment::io_err("read", &seg.path))?;
            let scanned = segment::scan(&seg.path, &data, is_last)?;
            match scanned.records.first() {
                Some((_, Record::Metadata(_))) => {}
                Some((offset, _)) => {
                    return Err(Error::Corrupt {
                        segment: seg.path.clone(),
                        offset: *offset,
                        reason: format!(
                            "is the first record of the segment but not a metadata record; \
                             {ADVICE}"
                        ),
                    })
                }
                // A crash can leave the newest segment without its header only if the disk
                // lost the fsynced temp file; the older segments still hold everything.
                None if is_last && i > 0 => {}
                None => {
                    return Err(Error::Corrupt {
                        segment: seg.path.clone(),
                        offset: 0,
                        reason: format!(
                            "is missing: the segment has no metadata record, refusing to \
                             start; {ADVICE}"
                        ),
                    })
                }
            }
            // Repair only once the segment is known to be ours: a file of another format
            // fails the metadata check above and is left untouched.
            if scanned.torn {
                torn_bytes = (scanned.garbage_end - scanned.valid_end) as u64;
                // A segment left without any record is removed below instead.
                if scanned.valid_end > 0 {
                    segment::repair_torn_tail(
                        &fs,
                        &seg.path,
                        scanned.valid_end as u64,
                        data.len() as u64,
                    )?;
                }
            }
            for (offset, rec) in scanned.records {
                state.apply(rec, &seg.path, offset)?;
            }
            lens.push(scanned.valid_end as u64);
        }
        if lens.last() == Some(&0) {
            let empty = segments.pop().expect("at least two segments");
            lens.pop();
            fs.remove(&empty.path)
                .map_err(segment::io_err("remove empty torn segment", &empty.path))?;
            segment::sync_dir(&fs, dir)?;
        }

        let mut replay = state.finish(dir)?;
        replay.torn_bytes = torn_bytes;
        let last = segments.last().expect("at least one segment");
        let file = segment::open_write(&fs, &last.path)?;
        let last_index = replay
            .entries
            .last()
            .map(|e| e.index)
            .or(replay.snapshot.as_ref().map(|s| s.index))
            .unwrap_or(0);
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            metadata: replay.metadata.clone(),
            file,
            file_len: *lens.last().expect("at least one segment"),
            segments,
            buf: Vec::new(),
            unsynced: false,
            no_fsync: false,
            last_index,
            snapshot: replay.snapshot.clone(),
            hard_state: replay.hard_state,
            segment_bytes_max: SEGMENT_BYTES_MAX,
            failed: false,
        };
        Ok((wal, replay))
    }

    /// Whether `dir` holds at least one WAL segment on `fs`: false only when `dir` does not
    /// exist or holds none. A directory that cannot be read is an error, not "no WAL": a
    /// member that took it for one would start over as a new member on top of its data (the
    /// simulator found it with a read error at restart).
    pub fn exists_on(fs: &F, dir: &Path) -> Result<bool> {
        if !fs.exists(dir) {
            return Ok(false);
        }
        Ok(!segment::list(fs, dir)?.is_empty())
    }

    /// Appends entries and then (if given) the hard state. Buffered: not durable until
    /// [`Wal::sync`].
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        self.append_refs(entries.iter().map(Entry::as_ref), hard_state)
    }

    /// [`Wal::append`] of borrowed entries.
    pub fn append_refs<'e>(
        &mut self,
        entries: impl IntoIterator<Item = EntryRef<'e>>,
        hard_state: Option<&HardState>,
    ) -> Result<()> {
        self.check_ok()?;
        let start = self.buf.len();
        let mut last = None;
        let encoded = entries
            .into_iter()
            .try_for_each(|e| {
                last = Some(e.index);
                record::encode_entry(&mut self.buf, &e)
            })
            .and_then(|()| match hard_state {
                Some(hs) => record::encode_hard_state(&mut self.buf, hs),
                None => Ok(()),
            });
        if let Err(e) = encoded {
            self.buf.truncate(start);
            return Err(e.into());
        }
        if let Some(last) = last {
            self.last_index = last;
        }
        if let Some(hs) = hard_state {
            self.hard_state = Some(*hs);
        }
        self.after_write()
    }

    /// Appends a snapshot marker (not durable until [`Wal::sync`]).
    pub fn save_snapshot(&mut self, marker: &SnapshotMarker) -> Result<()> {
        self.check_ok()?;
        record::encode_snapshot(&mut self.buf, marker)?;
        self.last_index = self.last_index.max(marker.index);
        self.snapshot = Some(marker.clone());
        self.after_write()
    }

    /// Turns fsync off (`--unsafe-no-fsync`, etcd's flag for tests and
    /// throwaway clusters): [`Wal::sync`] still writes to the file, so a
    /// killed process loses nothing, but a crash of the machine can.
    pub fn set_unsafe_no_fsync(&mut self, on: bool) {
        self.no_fsync = on;
    }

    /// Writes everything buffered and fsyncs (fdatasync) the current segment.
    pub fn sync(&mut self) -> Result<()> {
        self.check_ok()?;
        self.flush()?;
        if self.unsynced && self.no_fsync {
            self.unsynced = false;
        }
        if self.unsynced {
            let path = &self.segments.last().expect("current segment").path;
            if let Err(e) = self.file.sync_data() {
                self.failed = true;
                return Err(segment::io_err("fsync segment", path)(e));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Deletes the oldest segments while the next segment's `first_index <= index`, so only
    /// segments whose entries are all below `index` go. The current (last) segment is never
    /// deleted, and `index` is capped at the newest saved snapshot marker's index (nothing is
    /// deleted before a marker was saved), so what remains always replays on its own. Syncs
    /// first, so the marker is durable before anything it covers is deleted.
    pub fn release_to(&mut self, index: u64) -> Result<()> {
        self.sync()?;
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        let limit = index.min(snap.index);
        let mut n = 0;
        while n + 1 < self.segments.len() && self.segments[n + 1].first_index <= limit {
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        // Oldest first, so a crash part-way leaves a contiguous suffix.
        for seg in self.segments.drain(..n) {
            self.fs.remove(&seg.path).map_err(segment::io_err("remove segment", &seg.path))?;
        }
        segment::sync_dir(&self.fs, &self.dir)
    }

    /// Sets the size after which a new segment is cut (default [`SEGMENT_BYTES_MAX`]), which
    /// is also the size segments cut from now on are preallocated to. The current segment keeps
    /// its size.
    pub fn set_segment_bytes_max(&mut self, bytes: u64) {
        self.segment_bytes_max = bytes;
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the last appended entry (or of the snapshot marker, if newer).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The segments currently making up the log, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    fn check_ok(&self) -> Result<()> {
        if self.failed {
            let path = &self.segments.last().expect("current segment").path;
            return Err(Error::Failed(path.clone()));
        }
        Ok(())
    }

    fn after_write(&mut self) -> Result<()> {
        if self.file_len + self.buf.len() as u64 > self.segment_bytes_max {
            self.cut()
        } else if self.buf.len() >= FLUSH_THRESHOLD {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Writes the buffer to the current segment (no fsync). A failure poisons the WAL: the
    /// file may now end in a partial record, so appending after it would corrupt the middle.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Positioned writes at the logical end, not appends: the file is preallocated past it.
        if let Err(e) = self.file.write_all_at(&self.buf, self.file_len) {
            self.failed = true;
            let path = &self.segments.last().expect("current segment").path;
            return Err(segment::io_err("write segment", path)(e));
        }
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Makes the current segment durable and starts a new one.
    fn cut(&mut self) -> Result<()> {
        self.sync()?;
        let mut header = Vec::new();
        record::encode_metadata(&mut header, &self.metadata)?;
        if let Some(s) = &self.snapshot {
            record::encode_snapshot(&mut header, s)?;
        }
        if let Some(hs) = &self.hard_state {
            record::encode_hard_state(&mut header, hs)?;
        }
        let seq = self.segments.last().expect("current segment").seq + 1;
        let created = segment::create(
            &self.fs,
            &self.dir,
            seq,
            self.last_index + 1,
            &header,
            self.segment_bytes_max,
        );
        match created {
            Ok((file, info)) => {
                self.file = file;
                self.file_len = header.len() as u64;
                self.segments.push(info);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}
