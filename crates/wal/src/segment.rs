//! Segment files: naming, listing, atomic creation and scanning.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let ent = ent.map_err(io_err("read directory", dir))?;
        let name = ent.file_name();
        if let Some((seq, first_index)) = name.to_str().and_then(parse_name) {
            out.push(SegmentInfo { seq, first_index, path: ent.path() });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Removes half-initialised segments left by a crash during [`create`].
pub(crate) fn remove_tmp_files(dir: &Path) -> Result<()> {
    for ent in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let ent = ent.map_err(io_err("read directory", dir))?;
        let name = ent.file_name();
        let is_tmp =
            name.to_str().and_then(|n| n.strip_suffix(TMP_SUFFIX)).and_then(parse_name).is_some();
        if is_tmp {
            fs::remove_file(ent.path())
                .map_err(io_err("remove leftover temp segment", &ent.path()))?;
        }
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Creates segment `seq` holding `header` (already-framed records): writes a temp file, fsyncs
/// it, renames it into place and fsyncs the directory. Returns the file opened for appending.
pub(crate) fn create(
    dir: &Path,
    seq: u64,
    first_index: u64,
    header: &[u8],
) -> Result<(File, SegmentInfo)> {
    let name = file_name(seq, first_index);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create temp segment", &tmp))?;
        f.write_all(header).map_err(io_err("write temp segment", &tmp))?;
        f.sync_all().map_err(io_err("fsync temp segment", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err("rename temp segment into", &path))?;
    sync_dir(dir)?;
    let file = open_append(&path)?;
    Ok((file, SegmentInfo { seq, first_index, path }))
}

pub(crate) fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new().append(true).open(path).map_err(io_err("open segment for appending", path))
}

/// The records of one segment.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// `(offset, record)` for every valid record, in file order.
    pub records: Vec<(u64, Record)>,
    /// Offset just past the last valid record.
    pub valid_end: usize,
    /// True if bytes after `valid_end` form a torn tail that must be truncated away.
    pub torn: bool,
}

const ADVICE: &str = "restore this member from a snapshot or remove it from the cluster and \
                      re-add it";

/// Decodes every record of a segment. In the last segment a damaged or incomplete record with
/// no valid record anywhere after it is a torn tail (`torn = true`); any other damage is
/// [`Error::Corrupt`].
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
        if let Some(next) = (off + 1..data.len()).find(|&o| record::is_valid_record(&data[o..])) {
            return Err(corrupt(format!(
                "{reason} and is followed by a valid record at offset {next}: the log is \
                 corrupted in the middle, refusing to start; {ADVICE}"
            )));
        }
        return Ok(Scanned { records, valid_end: off, torn: true });
    }
    Ok(Scanned { records, valid_end: off, torn: false })
}

/// Truncates a torn segment to `len` bytes and fsyncs it.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment to repair its torn tail", path))?;
    f.set_len(len).map_err(io_err("truncate torn tail of segment", path))?;
    f.sync_all().map_err(io_err("fsync repaired segment", path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
