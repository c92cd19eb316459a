//! Files from the writer, checked by Go's bbolt itself (testdata/check/main.go):
//! `tx.Check()` must report nothing and the listing must be exactly what was
//! written; then bbolt writes a transaction into the file and checks again.
//!
//! Needs Go and Debian's bbolt source: `apt-get install golang-go
//! golang-github-coreos-bbolt-dev`. Without them these tests fail.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{random_content, read_all, testdata, write_to, Content, Rng};
use etcd_bbolt::{Reader, DEFAULT_PAGE_SIZE, MAX_KEY_SIZE};

const GOCODE: &str = "/usr/share/gocode/src";
/// bbolt and what it imports, as GOPATH packages.
const GO_PACKAGES: [&str; 2] = ["go.etcd.io/bbolt", "golang.org/x/sys"];
const INSTALL: &str = "install golang-go and golang-github-coreos-bbolt-dev \
                       (apt-get install golang-go golang-github-coreos-bbolt-dev)";

/// Builds the checker once (GOPATH mode, against Debian's bbolt source).
fn checker() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        match Command::new("go").arg("version").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!("`go` is not on PATH: {INSTALL} to run the bbolt interop tests"),
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-bbolt-go");
        let gopath = dir.join("gopath");
        for pkg in GO_PACKAGES {
            let src = Path::new(GOCODE).join(pkg);
            assert!(src.is_dir(), "{} is missing: {INSTALL}", src.display());
            let link = gopath.join("src").join(pkg);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&src, &link).unwrap();
        }
        let bin = dir.join("check");
        let mut cmd = Command::new("go");
        cmd.arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(testdata("check/main.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "");
        if std::env::var_os("GOCACHE").is_none()
            && std::env::var_os("HOME").is_none()
            && std::env::var_os("XDG_CACHE_HOME").is_none()
        {
            cmd.env("GOCACHE", dir.join("gocache"));
        }
        let out = cmd.output().expect("run go build");
        assert!(
            out.status.success(),
            "go build of testdata/check failed ({INSTALL}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// Runs the checker; returns its stdout, failing on a non-zero exit.
fn run_checker(args: &[&str], path: &Path) -> String {
    let out = Command::new(checker()).args(args).arg(path).output().expect("run checker");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "bbolt checker failed on {}:\n{}{}",
        path.display(),
        stdout.lines().take(20).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(2 * b.len()), |mut s, c| {
        let _ = write!(s, "{c:02x}");
        s
    })
}

/// The listing the checker prints for `content`, after its check lines.
fn listing(content: &Content) -> String {
    let mut s = String::new();
    for (name, entries) in content {
        let _ = writeln!(s, "bucket {}", hex(name));
        for (k, v) in entries {
            let _ = writeln!(s, "key {} {}", hex(k), hex(v));
        }
    }
    s
}

fn assert_same_listing(got: &str, want: &str, what: &str) {
    if got != want {
        let (g, w): (Vec<_>, Vec<_>) = (got.lines().collect(), want.lines().collect());
        let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
        fn cut<'a>(s: Option<&&'a str>) -> &'a str {
            s.map(|s| &s[..s.len().min(200)]).unwrap_or("<end>")
        }
        panic!(
            "{what}: Go's listing differs at line {i} ({} vs {} lines):\n  go:   {}\n  want: {}",
            g.len(),
            w.len(),
            cut(g.get(i)),
            cut(w.get(i))
        );
    }
}

/// Writes `content`, has Go's bbolt check and list it; returns the file.
fn go_check(content: &Content, page_size: u32, what: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    write_to(file.reopen().unwrap(), content, page_size);
    let out = run_checker(&[], file.path());
    let header = format!("pagesize {page_size}\ncheck ok\n");
    assert!(out.starts_with(&header), "{what}: {}", &out[..out.len().min(500)]);
    assert_same_listing(&out[header.len()..], &listing(content), what);
    file
}

/// A revision key as etcd's `key` bucket has them.
fn rev_key(main: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k
}

fn etcd_like_content() -> Content {
    let mut rng = Rng::new(7);
    let kv = |k: &str, v: &[u8]| (k.as_bytes().to_vec(), v.to_vec());
    let keys = (2u64..50_002)
        .map(|rev| {
            let len = match rev % 1000 {
                0 => 10 * 1024,
                500 => 100 * 1024,
                _ => 40 + (rev % 90) as usize,
            };
            (rev_key(rev), rng.bytes(len))
        })
        .collect();
    let leases = (0u64..10)
        .map(|i| ((0x694d_0000_0000 + i).to_be_bytes().to_vec(), rng.bytes(12)))
        .collect();
    vec![
        (b"alarm".to_vec(), vec![]),
        (b"auth".to_vec(), vec![kv("authRevision", &1u64.to_be_bytes())]),
        (b"authRoles".to_vec(), vec![]),
        (b"authUsers".to_vec(), vec![]),
        (b"cluster".to_vec(), vec![kv("clusterVersion", b"3.4.0")]),
        (b"key".to_vec(), keys),
        (b"lease".to_vec(), leases),
        (
            b"members".to_vec(),
            vec![kv("8e9e05c52164694d", br#"{"id":1,"peerURLs":["http://127.0.0.1:2380"]}"#)],
        ),
        (b"members_removed".to_vec(), vec![]),
        (
            b"meta".to_vec(),
            vec![
                kv("consistent_index", &50_001u64.to_be_bytes()),
                kv("finishedCompactRev", &rev_key(100)),
                kv("scheduledCompactRev", &rev_key(100)),
            ],
        ),
        // Printable keys, so the checker can put one in the middle.
        (
            b"x-strings".to_vec(),
            (0..20_000)
                .map(|i| (format!("s/{i:06}").into_bytes(), format!("v{i}").into_bytes()))
                .collect(),
        ),
    ]
}

#[test]
fn etcd_like_file_passes_bbolt_check_and_takes_a_write() {
    let content = etcd_like_content();
    let file = go_check(&content, DEFAULT_PAGE_SIZE, "etcd-like");

    // bbolt opens it read-write, commits a put, checks again: once at the
    // end of the 50,000-key bucket, once in the middle of a full leaf.
    let mut step1 = content.clone();
    step1[5].1.push((b"zzz-new".to_vec(), b"value".to_vec()));
    let mut after = step1.clone();
    after[10].1.insert(10_001, (b"s/010000a".to_vec(), b"mid".to_vec()));
    for (args, want) in [
        (["-put", "key", "zzz-new", "value"], &step1),
        (["-put", "x-strings", "s/010000a", "mid"], &after),
    ] {
        let out = run_checker(&args, file.path());
        let header = format!("pagesize {DEFAULT_PAGE_SIZE}\ncheck ok\ncheck after put ok\n");
        assert!(out.starts_with(&header), "{out:.300}");
        assert_same_listing(&out[header.len()..], &listing(want), &format!("after {args:?}"));
    }

    // The file bbolt wrote to reads back here too: a later txid, pages
    // freed into a stored freelist.
    let r = Reader::open(file.path()).unwrap();
    assert_eq!(r.txid(), 3);
    assert_eq!(read_all(&r).unwrap(), after);
    let report = r.check().unwrap();
    assert!(report.freelist_stored && report.free_pages > 0, "{report:?}");
}

#[test]
fn edge_cases_pass_bbolt_check() {
    go_check(&Vec::new(), DEFAULT_PAGE_SIZE, "no buckets");
    let empties: Content = (0u8..5).map(|i| (vec![b'b', i], vec![])).collect();
    go_check(&empties, DEFAULT_PAGE_SIZE, "empty buckets");
    let mut rng = Rng::new(11);
    let big_keys = (0u8..6)
        .map(|i| {
            let mut k = vec![i; MAX_KEY_SIZE - usize::from(i)];
            k[0] = i;
            (k, rng.bytes(usize::from(i) * 3000))
        })
        .collect();
    let values = [0usize, 1, 4064, 4065, 4096, 40960, 1 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| (vec![b'v', i as u8], rng.bytes(n)))
        .collect();
    let content = vec![
        (b"big-keys".to_vec(), big_keys),
        (b"one".to_vec(), vec![(b"k".to_vec(), b"v".to_vec())]),
        (b"values".to_vec(), values),
    ];
    for ps in [512, 4096, 65536] {
        go_check(&content, ps, &format!("edge cases, page size {ps}"));
    }
}

#[test]
fn random_files_pass_bbolt_check() {
    let mut rng = Rng::new(0x60);
    for i in 0..12 {
        let ps = [512, 1024, 4096, 16384][i % 4];
        let content = random_content(&mut rng, 5, ps);
        go_check(&content, ps, &format!("random file {i}, page size {ps}"));
    }
}
