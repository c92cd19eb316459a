//! Helpers shared by the WAL's test files: log builders and byte-level views of segments.
#![allow(dead_code)] // each test file uses part of them

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use etcd_wal::{Entry, Error, HardState, Replay, Wal};

pub fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        entry_type: (index % 3) as u8,
        data: format!("data-{index}-{term}").into_bytes(),
        context: if index.is_multiple_of(2) { vec![index as u8; 3] } else { Vec::new() },
    }
}

pub fn hs(term: u64, commit: u64) -> HardState {
    HardState { term, vote: term % 3 + 1, commit }
}

/// Segment files of `dir`, sorted by name (= by seq).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Tiny deterministic PRNG (xorshift64*), so the tests need no extra dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Offsets just past each record of a segment's bytes, read from the length fields, up to the
/// first zero length (the start of the zero-filled preallocated space). The last one is the
/// logical end of the segment's data.
pub fn record_ends(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut off = 0;
    while off + 8 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 || off + 8 + len > data.len() {
            break;
        }
        off += 8 + len;
        ends.push(off);
    }
    ends
}

pub fn logical_len(data: &[u8]) -> usize {
    let end = record_ends(data).last().copied().unwrap_or(0);
    assert!(is_zero(&data[end..]), "bytes after the last record must be zero");
    end
}

pub fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Length of `b` up to and including its last non-zero byte.
pub fn nonzero_len(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

/// True if the filesystem under `dir` supports `fallocate` (probed on a scratch file).
pub fn fallocate_supported(dir: &Path) -> bool {
    let probe = dir.join("fallocate-probe");
    let f = fs::File::create(&probe).unwrap();
    let ok = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 16).is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}

/// Asserts that `path` is `len` bytes long with disk blocks allocated for all of them (not a
/// sparse file).
pub fn assert_preallocated(path: &Path, len: u64) {
    let m = fs::metadata(path).unwrap();
    assert_eq!(m.len(), len, "{}: file size", path.display());
    assert!(
        m.blocks() * 512 >= len,
        "{}: only {} bytes of {len} are allocated",
        path.display(),
        m.blocks() * 512
    );
}

pub fn assert_corrupt(r: Result<(Wal, Replay), Error>) -> String {
    match r {
        Err(e @ Error::Corrupt { .. }) => e.to_string(),
        Err(e) => panic!("expected Error::Corrupt, got {e:?}"),
        Ok((_, replay)) => panic!("expected Error::Corrupt, got a replay: {replay:?}"),
    }
}

/// Builds a log with `n` entries, each followed by a hard state, one sync per entry.
/// Returns the written entries and hard states.
/// `segment_bytes` sets the segment size limit (and preallocation) from the first segment on.
pub fn build_log(dir: &Path, n: u64, segment_bytes: Option<u64>) -> (Vec<Entry>, Vec<HardState>) {
    let mut wal = match segment_bytes {
        Some(b) => Wal::create_with_segment_bytes_max(dir, b"meta", b).unwrap(),
        None => Wal::create(dir, b"meta").unwrap(),
    };
    let (mut ents, mut hss) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let e = ent(i, 1 + i / 4);
        let h = hs(1 + i / 4, i.saturating_sub(1));
        wal.append(std::slice::from_ref(&e), Some(&h)).unwrap();
        wal.sync().unwrap();
        ents.push(e);
        hss.push(h);
    }
    (ents, hss)
}
