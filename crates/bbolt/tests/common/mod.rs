//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use etcd_bbolt::{Error, Reader, Writer};

/// Buckets in order, each with its entries in order.
pub type Content = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

/// SplitMix64: a small seeded generator, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Writes `content` with `page_size` pages into `file` (from offset 0).
pub fn write_to(file: File, content: &Content, page_size: u32) -> (File, u64) {
    let mut w = Writer::with_page_size(file, page_size).expect("writer");
    for (name, entries) in content {
        w.bucket(name).expect("bucket");
        for (k, v) in entries {
            w.put(k, v).expect("put");
        }
    }
    w.finish().expect("finish")
}

/// Writes `content` to a new anonymous file and opens it with the reader.
pub fn round_trip(content: &Content, page_size: u32) -> Reader {
    let (file, len) = write_to(tempfile::tempfile().unwrap(), content, page_size);
    assert_eq!(len % u64::from(page_size), 0);
    assert_eq!(file.metadata().unwrap().len(), len);
    let r = Reader::from_file(file, len).expect("open written file");
    assert_eq!(r.page_size(), page_size);
    assert_eq!(r.len(), len);
    r
}

/// Everything the reader's walk reports.
pub fn read_all(r: &Reader) -> Result<Content, Error> {
    let mut out: Content = Vec::new();
    let cell = std::cell::RefCell::new(&mut out);
    r.walk::<Error>(
        &mut |name| {
            cell.borrow_mut().push((name.to_vec(), Vec::new()));
            Ok(())
        },
        &mut |k, v| {
            let mut c = cell.borrow_mut();
            c.last_mut().unwrap().1.push((k.to_vec(), v.to_vec()));
            Ok(())
        },
    )?;
    Ok(out)
}

/// Asserts the reader holds exactly `content`, through walk, buckets,
/// scan_bucket and check.
pub fn assert_content(r: &Reader, content: &Content) {
    let got = read_all(r).expect("walk");
    assert_eq!(got.len(), content.len(), "bucket count");
    for ((gn, ge), (en, ee)) in got.iter().zip(content) {
        assert_eq!(gn, en, "bucket name");
        assert_eq!(ge.len(), ee.len(), "entries of bucket {:?}", String::from_utf8_lossy(en));
        for (i, (g, e)) in ge.iter().zip(ee).enumerate() {
            assert!(g == e, "bucket {:?} entry {i} differs", String::from_utf8_lossy(en));
        }
    }
    let names: Vec<Vec<u8>> = content.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(r.buckets().expect("buckets"), names);
    for (name, entries) in content {
        let mut n = 0usize;
        let found = r
            .scan_bucket::<Error>(name, &mut |k, v| {
                assert_eq!((k, v), (&entries[n].0[..], &entries[n].1[..]));
                n += 1;
                Ok(())
            })
            .expect("scan");
        assert!(found);
        assert_eq!(n, entries.len());
    }
    let report = r.check().expect("check");
    assert_eq!(report.buckets, content.len() as u64);
    assert_eq!(report.keys, content.iter().map(|(_, e)| e.len() as u64).sum::<u64>());
}

/// Random content: up to `max_buckets` buckets, sizes drawn to hit inline
/// buckets, multi-level trees and overflow values.
pub fn random_content(rng: &mut Rng, max_buckets: u64, page_size: u32) -> Content {
    let nb = rng.below(max_buckets + 1);
    let mut names: Vec<Vec<u8>> = (0..nb)
        .map(|_| {
            let len = 1 + rng.below(12) as usize;
            rng.bytes(len)
        })
        .collect();
    names.sort();
    names.dedup();
    let ps = page_size as usize;
    names
        .into_iter()
        .map(|name| {
            let n = match rng.below(4) {
                0 => rng.below(4),
                1 => rng.below(40),
                2 => rng.below(400),
                _ => rng.below(3000),
            };
            let mut keys: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = if rng.chance(50) {
                        1 + rng.below(2 * ps as u64) as usize
                    } else {
                        1 + rng.below(24) as usize
                    };
                    rng.bytes(len)
                })
                .collect();
            keys.sort();
            keys.dedup();
            let entries = keys
                .into_iter()
                .map(|k| {
                    let len = match rng.below(30) {
                        0 => rng.below(3 * ps as u64) as usize,
                        1 => ps - 16 - 16 - k.len().min(ps - 32),
                        2 => 0,
                        _ => rng.below(40) as usize,
                    };
                    let v = rng.bytes(len);
                    (k, v)
                })
                .collect();
            (name, entries)
        })
        .collect()
}

/// Copies `bytes` into `file` (replacing its content).
pub fn overwrite(file: &mut File, bytes: &[u8]) {
    file.set_len(0).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(bytes).unwrap();
}
