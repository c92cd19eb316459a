//! etcd's own end-to-end suite as the acceptance test of drop-in: the tests of
//! `scripts/etcd-e2e/ci-subset.txt` (etcd 3.4's `tests/e2e`, from Debian's
//! golang-etcd-server-dev, built in GOPATH mode, driving the real etcdctl) run
//! against this build's `etcd` and must pass wherever real etcd passes them
//! (`scripts/etcd-e2e/baseline-etcd-3.4.txt`), apart from the known failures.
//! The whole suite is `scripts/etcd-e2e.sh --baseline`.

use std::path::Path;
use std::process::Command;

const INSTALL: &str = "apt-get install golang-go golang-etcd-server-dev etcd-client";

#[test]
fn etcds_own_e2e_suite_passes_its_ci_subset() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/share/gocode/src/go.etcd.io/etcd/tests/e2e").is_dir(),
        "etcd's e2e sources are missing: {INSTALL}"
    );
    assert!(
        Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()),
        "`go` is not on PATH: {INSTALL}"
    );
    // The e2e binary and Go's cache persist between runs here.
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-e2e");
    let out = Command::new(repo.join("scripts/etcd-e2e.sh"))
        .arg(format!("--server={}", env!("CARGO_BIN_EXE_etcd")))
        .arg(format!("--list={}", repo.join("scripts/etcd-e2e/ci-subset.txt").display()))
        .arg(format!("--work={}", work.display()))
        .arg("--timeout=120")
        // The suite's goroutine-leak check after a test is timing-sensitive (it
        // once failed a test that had passed, which then passed 5 runs of 5):
        // a failure gets one more run, and shows as PASS* if that passes.
        .arg("--retries=1")
        .arg("--baseline")
        .output()
        .expect("run scripts/etcd-e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "etcd's e2e tests failed against this build (logs in {}/logs):\n{stdout}\n{}",
        work.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().find(|l| l.ends_with(" failed")).unwrap_or_default();
    assert!(summary.contains(" passed, "), "no summary line: {stdout}");
}
