//! Corrupt and truncated files: the reader must answer Ok or Err, never
//! panic, loop or allocate beyond the file. A few thousand mutations of
//! files from the writer, from etcd and from Go's bbolt.

mod common;

use std::fs::File;

use common::{overwrite, read_all, testdata, write_to, Content, Rng};
use etcd_bbolt::{Error, Reader};

/// FNV-1a 64, to re-seal a mutated meta page so the mutation gets past the
/// checksum.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn reseal_meta(bytes: &mut [u8], offset: usize) {
    let m = offset + 16;
    if m + 64 <= bytes.len() {
        let sum = fnv1a64(&bytes[m..m + 56]);
        bytes[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
    }
}

struct Outcome {
    opened: usize,
    walked: usize,
    failed: usize,
}

/// Opens `bytes` (the first `len` bytes being the bbolt file) and uses every
/// reading entry point; counts what happened.
fn exercise(file: &mut File, bytes: &[u8], len: u64, out: &mut Outcome) {
    overwrite(file, bytes);
    let r = match Reader::from_file(file.try_clone().unwrap(), len) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            out.failed += 1;
            return;
        }
    };
    out.opened += 1;
    match read_all(&r) {
        Ok(_) => out.walked += 1,
        Err(e) => assert!(matches!(e, Error::Corrupt(_) | Error::Io(_))),
    }
    let _ = r.check();
    let _ = r.free_pages();
    if let Ok(names) = r.buckets() {
        for name in names.iter().take(4) {
            let _ = r.scan_bucket::<Error>(name, &mut |_, _| Ok(()));
        }
    }
    let _ = r.scan_bucket::<Error>(b"key", &mut |_, _| Ok(()));
}

fn page_size_of(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize
}

fn mutate(rng: &mut Rng, base: &[u8], file: &mut File, rounds: usize) -> Outcome {
    let mut out = Outcome { opened: 0, walked: 0, failed: 0 };
    let ps = page_size_of(base);
    let pages = base.len() / ps;
    let interesting = |rng: &mut Rng| -> u64 {
        match rng.below(8) {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => u64::MAX,
            4 => u64::from(u32::MAX),
            5 => 0xFFFF,
            6 => pages as u64 + rng.below(4),
            _ => rng.next(),
        }
    };
    for _ in 0..rounds {
        let mut bytes = base.to_vec();
        let mut len = bytes.len() as u64;
        match rng.below(7) {
            // A bit anywhere.
            0 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            // Random bytes in a page header and its first elements.
            1 | 2 => {
                let page = rng.below(pages as u64) as usize;
                for _ in 0..1 + rng.below(3) {
                    let at = page * ps + rng.below(96.min(ps as u64)) as usize;
                    bytes[at] = rng.next() as u8;
                }
            }
            // An interesting 2/4/8-byte value at an aligned field of a page.
            3 => {
                let page = rng.below(pages as u64) as usize;
                let width = [2usize, 4, 8][rng.below(3) as usize];
                let at = page * ps + (rng.below(96 / width as u64) as usize) * width;
                let v = interesting(rng).to_le_bytes();
                bytes[at..at + width].copy_from_slice(&v[..width]);
            }
            // A meta field changed and the checksum recomputed.
            4 => {
                let meta = rng.below(2) as usize * ps;
                let field = [8usize, 16, 24, 32, 40, 48][rng.below(6) as usize];
                let at = meta + 16 + field;
                let v = interesting(rng).to_le_bytes();
                let width = if field == 8 { 4 } else { 8 };
                bytes[at..at + width].copy_from_slice(&v[..width]);
                reseal_meta(&mut bytes, meta);
                if rng.chance(2) {
                    // Same change in both metas.
                    let other = ps - meta;
                    let at = other + 16 + field;
                    bytes[at..at + width].copy_from_slice(&v[..width]);
                    reseal_meta(&mut bytes, other);
                }
            }
            // Truncated file.
            5 => {
                let cut = rng.below(bytes.len() as u64) as usize;
                bytes.truncate(cut);
                len = if rng.chance(2) { cut as u64 } else { base.len() as u64 };
            }
            // The length says more than the file holds.
            _ => len += 1 + rng.below(3 * ps as u64),
        }
        exercise(file, &bytes, len, &mut out);
    }
    out
}

fn writer_base() -> Vec<u8> {
    let mut rng = Rng::new(99);
    let mut content: Content =
        vec![(b"a".to_vec(), vec![(b"k".to_vec(), b"v".to_vec())]), (b"empty".to_vec(), vec![])];
    let key =
        (0u32..2500).map(|i| (i.to_be_bytes().to_vec(), rng.bytes((i % 7) as usize))).collect();
    content.push((b"key".to_vec(), key));
    let large = (0u8..4).map(|i| (vec![b'l', i], rng.bytes(700 * usize::from(i)))).collect();
    content.push((b"large".to_vec(), large));
    let (file, len) = write_to(tempfile::tempfile().unwrap(), &content, 512);
    let mut bytes = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).unwrap();
    bytes
}

fn run(name: &str, base: Vec<u8>, seed: u64, rounds: usize) {
    let mut file = tempfile::tempfile().unwrap();
    // The untouched file reads.
    let mut out = Outcome { opened: 0, walked: 0, failed: 0 };
    exercise(&mut file, &base, base.len() as u64, &mut out);
    assert_eq!(out.walked, 1, "{name}: the unmodified file must read");

    // Cut at every page boundary and around it.
    let ps = page_size_of(&base);
    for page in 0..base.len() / ps {
        for delta in [0usize, 1, 15, 16, 80] {
            let cut = page * ps + delta;
            exercise(&mut file, &base[..cut.min(base.len())], cut as u64, &mut out);
        }
    }

    let mut rng = Rng::new(seed);
    let out = mutate(&mut rng, &base, &mut file, rounds);
    eprintln!(
        "{name}: {rounds} mutations: {} refused at open, {} opened, {} read whole",
        out.failed, out.opened, out.walked
    );
    assert!(out.failed > 0 && out.opened > 0);
}

#[test]
fn mutated_writer_file() {
    run("writer", writer_base(), 1, 1500);
}

#[test]
fn mutated_etcd_snapshot() {
    let mut base = std::fs::read(testdata("etcd34.snap.db")).unwrap();
    base.truncate(base.len() - 32);
    run("etcd", base, 2, 1500);
}

#[test]
fn mutated_go_bbolt_file() {
    run("go", std::fs::read(testdata("gen.db")).unwrap(), 3, 1500);
}

#[test]
fn garbage_and_tiny_files() {
    let mut file = tempfile::tempfile().unwrap();
    let mut out = Outcome { opened: 0, walked: 0, failed: 0 };
    let mut rng = Rng::new(4);
    for len in [0usize, 1, 16, 79, 80, 81, 4095, 4096, 8192, 16384] {
        exercise(&mut file, &vec![0u8; len], len as u64, &mut out);
        let junk = rng.bytes(len);
        exercise(&mut file, &junk, len as u64, &mut out);
    }
    assert_eq!(out.opened, 0);
    overwrite(&mut file, b"");
    let err = Reader::from_file(file, 0).unwrap_err().to_string();
    assert!(err.contains("no valid meta page"), "{err}");
}

#[test]
fn meta_fallback_as_bbolt_does() {
    // Go's file: page 0 has txid 28, page 1 txid 27; 512-byte pages.
    let base = std::fs::read(testdata("gen.db")).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    let open = |file: &mut File, bytes: &[u8]| {
        overwrite(file, bytes);
        Reader::from_file(file.try_clone().unwrap(), bytes.len() as u64)
    };
    assert_eq!(open(&mut file, &base).unwrap().txid(), 28);

    // A torn write of the newer meta: the older one is used.
    let mut bytes = base.clone();
    bytes[16 + 60] ^= 0xFF;
    let r = open(&mut file, &bytes).unwrap();
    assert_eq!((r.txid(), r.page_size()), (27, 512));
    // bbolt reuses a page only after the transaction that freed it is
    // followed by another, so the previous commit's tree is intact: it is the
    // state before the last transaction (which deleted bucket "gone").
    let before = read_all(&r).unwrap();
    let names: Vec<&[u8]> = before.iter().map(|(n, _)| &n[..]).collect();
    assert_eq!(names, [&b"big"[..], b"blobs", b"empty", b"gone", b"inline", b"single"]);
    assert_eq!(before[3].1.len(), 100);
    r.check().unwrap();

    // Page 1 broken: page 0 is used.
    let mut bytes = base.clone();
    bytes[512 + 16] ^= 0xFF;
    assert_eq!(open(&mut file, &bytes).unwrap().txid(), 28);

    // Both broken: an error naming both.
    bytes[16] ^= 0xFF;
    let err = open(&mut file, &bytes).unwrap_err().to_string();
    assert!(err.contains("no valid meta page: page 0: magic") && err.contains("page 1:"), "{err}");

    // A meta whose high-water mark is past the end of the file.
    let mut bytes = base.clone();
    let hwm = 16 + 40;
    for meta in [0, 512] {
        bytes[meta + hwm..meta + hwm + 8].copy_from_slice(&10_000u64.to_le_bytes());
        reseal_meta(&mut bytes, meta);
    }
    let err = open(&mut file, &bytes).unwrap_err().to_string();
    assert!(err.contains("past the end of the file"), "{err}");
}
