//! Segment files: naming, listing, atomic creation and scanning.

use std::path::{Path, PathBuf};

use crate::fs::{Fs, SegmentFile};

use crate::record::{self, Decoded, Record};
use crate::{Error, Result};

/// Suffix of a segment being initialised; such files are never replayed and are removed on open.
const TMP_SUFFIX: &str = ".tmp";

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number; contiguous across the segments of a WAL.
    pub seq: u64,
    /// Index of the first entry expected in the segment (last appended index + 1 at cut time).
    pub first_index: u64,
    /// Full path of the file.
    pub path: PathBuf,
}

pub(crate) fn file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses `{seq:016x}-{first_index:016x}.wal`; anything else is not a segment.
pub(crate) fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    let hex16 = |s: &str| {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((hex16(seq)?, hex16(first)?))
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::IoPath { op, path, source }
}

/// Lists the segments in `dir` sorted by sequence number. Non-segment files are ignored.
pub(crate) fn list(fs: &impl Fs, dir: &Path) -> Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for (name, path) in fs.list(dir).map_err(io_err("read directory", dir))? {
        if let Some((seq, first_index)) = parse_name(&name) {
            out.push(SegmentInfo { seq, first_index, path });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Removes half-initialised segments left by a crash during [`create`].
pub(crate) fn remove_tmp_files(fs: &impl Fs, dir: &Path) -> Result<()> {
    for (name, path) in fs.list(dir).map_err(io_err("read directory", dir))? {
        let is_tmp = name.strip_suffix(TMP_SUFFIX).and_then(parse_name).is_some();
        if is_tmp {
            fs.remove(&path).map_err(io_err("remove leftover temp segment", &path))?;
        }
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(fs: &impl Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(io_err("fsync directory", dir))
}

/// Creates segment `seq` holding `header` (already-framed records) and preallocated to
/// `prealloc` bytes (see [`SegmentFile::preallocate`]): writes and preallocates a temp file, fsyncs it, renames
/// it into place and fsyncs the directory, so a segment under its final name is always fully
/// initialised. Returns the file opened for writing; the caller writes from `header.len()` on.
pub(crate) fn create<F: Fs>(
    fs: &F,
    dir: &Path,
    seq: u64,
    first_index: u64,
    header: &[u8],
    prealloc: u64,
) -> Result<(F::File, SegmentInfo)> {
    let name = file_name(seq, first_index);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    {
        let f = fs.create(&tmp).map_err(io_err("create temp segment", &tmp))?;
        f.write_all_at(header, 0).map_err(io_err("write temp segment", &tmp))?;
        f.preallocate(prealloc).map_err(io_err("preallocate segment", &tmp))?;
        f.sync_all().map_err(io_err("fsync temp segment", &tmp))?;
    }
    fs.rename(&tmp, &path).map_err(io_err("rename temp segment into", &path))?;
    sync_dir(fs, dir)?;
    let file = open_write(fs, &path)?;
    Ok((file, SegmentInfo { seq, first_index, path }))
}

/// Opens a segment for writing, at the logical end of its data (the caller's offset).
pub(crate) fn open_write<F: Fs>(fs: &F, path: &Path) -> Result<F::File> {
    fs.open_write(path).map_err(io_err("open segment for writing", path))
}

/// A block of zeros to compare against: slice equality is a `memcmp`, far faster than a
/// byte-by-byte loop over a 64 MiB preallocated tail.
const ZEROS: [u8; 4096] = [0; 4096];

/// True if every byte of `b` is zero.
pub(crate) fn is_all_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(ZEROS.len());
    blocks.all(|blk| blk == ZEROS) && blocks.remainder().iter().all(|&x| x == 0)
}

/// Length of `b` without its trailing zero bytes (the offset just past its last non-zero byte).
fn trim_zeros_end(b: &[u8]) -> usize {
    let mut end = b.len();
    while end >= ZEROS.len() && b[end - ZEROS.len()..end] == ZEROS {
        end -= ZEROS.len();
    }
    b[..end].iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

/// The records of one segment.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// `(offset, record)` for every valid record, in file order.
    pub records: Vec<(u64, Record)>,
    /// Offset just past the last valid record: the logical end of the segment's data.
    pub valid_end: usize,
    /// True if bytes after `valid_end` form a torn tail that must be truncated away.
    pub torn: bool,
    /// When `torn`, offset just past the last non-zero byte of the segment: the torn bytes are
    /// `valid_end..garbage_end`, and only zero-filled (preallocated) space follows them.
    /// Equal to `valid_end` otherwise.
    pub garbage_end: usize,
}

const ADVICE: &str = "restore this member from a snapshot or remove it from the cluster and \
                      re-add it";

/// Decodes every record of a segment. Bytes after the last valid record that are all zero are
/// preallocated space, in any segment: the segment simply ends there. Otherwise, in the last
/// segment a damaged or incomplete record is a torn tail (`torn = true`) when no valid record
/// follows it anywhere, or when a sector of it is missing (all zero: a crash flushed later
/// sectors but not that one); any other damage is [`Error::Corrupt`].
pub(crate) fn scan(path: &Path, data: &[u8], is_last: bool) -> Result<Scanned> {
    let mut records = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let reason = match record::decode(&data[off..]) {
            Decoded::Valid { record, len } => {
                records.push((off as u64, record));
                off += len;
                continue;
            }
            // Checked before building the error text: this is every segment's normal end.
            _ if is_all_zero(&data[off..]) => break,
            Decoded::Incomplete(r) => r.to_string(),
            Decoded::Bad(r) => r,
        };
        let corrupt = |reason: String| Error::Corrupt {
            segment: path.to_path_buf(),
            offset: off as u64,
            reason,
        };
        if !is_last {
            return Err(corrupt(format!(
                "{reason} in a segment that is not the newest one: the log is corrupted in \
                 the middle, refusing to start; {ADVICE}"
            )));
        }
        // Not all zero, so a non-zero byte exists at or after `off`. A valid record starts with
        // a non-zero length, so none can start after the last non-zero byte: search only up to
        // it, not through the whole preallocated tail.
        let garbage_end = trim_zeros_end(data);
        if is_torn_write(data, off, garbage_end) {
            // A sector of this record never reached the disk while later ones did (a crash
            // with writes since the last fsync flushed out of order): the log ends here, and
            // what follows was never fsynced either (a segment is fsynced before the next
            // one is cut, and every fsync covers all earlier writes). etcd's torn-entry rule.
            return Ok(Scanned { records, valid_end: off, torn: true, garbage_end });
        }
        if let Some(next) = (off + 1..garbage_end).find(|&o| record::is_valid_record(&data[o..])) {
            return Err(corrupt(format!(
                "{reason} and is followed by a valid record at offset {next}: the log is \
                 corrupted in the middle, refusing to start; {ADVICE}"
            )));
        }
        return Ok(Scanned { records, valid_end: off, torn: true, garbage_end });
    }
    Ok(Scanned { records, valid_end: off, torn: false, garbage_end: off })
}

/// Sector size assumed for torn writes: a crash leaves each sector of a write whole, old or new.
const SECTOR_BYTES: usize = 512;

/// Whether the damaged record at `off` was torn by a crash: a sector it occupies holds only
/// zeros in the record's part of it (preallocated space the write never reached). Its extent is
/// its header, and its body too when the length field is plausible, up to `garbage_end` (the
/// segment's last non-zero byte). Damage without such a
/// sector (bytes changed, not missing) is corruption.
fn is_torn_write(data: &[u8], off: usize, garbage_end: usize) -> bool {
    let len = data
        .get(off..off + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .filter(|&len| len > 0 && len <= record::MAX_RECORD_BYTES)
        .unwrap_or(0);
    // Only up to the last non-zero byte: the preallocated space after it is no evidence (a
    // length field changed to a large value would reach into it).
    let end = (off + record::HEADER_LEN + len).min(garbage_end);
    let mut start = off;
    while start < end {
        let sector_end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        if is_all_zero(&data[start..sector_end]) {
            return true;
        }
        start = sector_end;
    }
    false
}

/// Repairs a torn segment: truncates it to `valid_end` bytes, preallocates it again to
/// `prealloc` bytes (its size before the repair) so later appends stay within allocated space,
/// and fsyncs it. The bytes after `valid_end` then read as zeros.
pub(crate) fn repair_torn_tail(
    fs: &impl Fs,
    path: &Path,
    valid_end: u64,
    prealloc: u64,
) -> Result<()> {
    let f = fs.open_write(path).map_err(io_err("open segment to repair its torn tail", path))?;
    f.set_len(valid_end).map_err(io_err("truncate torn tail of segment", path))?;
    f.preallocate(prealloc).map_err(io_err("preallocate segment", path))?;
    f.sync_all().map_err(io_err("fsync repaired segment", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_helpers() {
        for len in [0, 1, 7, 4095, 4096, 4097, 3 * 4096 + 5] {
            let mut b = vec![0u8; len];
            assert!(is_all_zero(&b), "len {len}");
            assert_eq!(trim_zeros_end(&b), 0, "len {len}");
            for pos in [0, len / 2, len.saturating_sub(1)] {
                if pos < len {
                    b[pos] = 9;
                    assert!(!is_all_zero(&b), "len {len} pos {pos}");
                    assert_eq!(trim_zeros_end(&b), pos + 1, "len {len} pos {pos}");
                    b[pos] = 0;
                }
            }
        }
        let mut b = vec![0u8; 5 * 4096];
        b[3] = 1;
        b[4096] = 1;
        assert_eq!(trim_zeros_end(&b), 4097);
    }

    #[test]
    fn names_roundtrip() {
        let n = file_name(2, 0x51);
        assert_eq!(n, "0000000000000002-0000000000000051.wal");
        assert_eq!(parse_name(&n), Some((2, 0x51)));
        assert_eq!(parse_name("0000000000000002-0000000000000051.wal.tmp"), None);
        assert_eq!(parse_name("2-51.wal"), None);
        assert_eq!(parse_name("000000000000000g-0000000000000051.wal"), None);
        assert_eq!(parse_name("+000000000000002-0000000000000051.wal"), None);
    }
}
