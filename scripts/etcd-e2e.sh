#!/usr/bin/env bash
# etcd's own end-to-end suite (tests/e2e of etcd 3.4, Debian's golang-etcd-server-dev)
# against a server binary: ours by default, or real etcd for the baseline.
#
#   scripts/etcd-e2e.sh                       # ours (target/release/etcd, built if missing)
#   scripts/etcd-e2e.sh --server=etcd         # real etcd 3.4 (/usr/bin/etcd)
#   scripts/etcd-e2e.sh --server=PATH --run='^TestCtlV3Put'   # a binary, some tests
#   scripts/etcd-e2e.sh --list=FILE           # the tests named in FILE, one per line
#   scripts/etcd-e2e.sh --baseline            # fail only on tests the baseline passes and we fail,
#                                             # apart from scripts/etcd-e2e/known-failures.txt
#   scripts/etcd-e2e.sh --retries=1           # run a failed test once more (PASS* if it passes then)
#
# The test binary is built from the Debian package's Go sources in GOPATH mode (every
# dependency is a Debian -dev package; nothing is fetched). Each test runs in its own
# process with a per-test timeout; the servers it started are killed by PID after it
# (the bin dir's `etcd` is a wrapper that records each server's PID). The suite drives
# the real etcdctl 3.4 (/usr/bin/etcdctl) as bin/etcdctl.
#
# Left out (scripts/etcd-e2e/excluded.txt says why): the v2 API tests, the grpc-proxy
# and gateway subcommands, and the release-upgrade tests.
#
# Output: a table (test, result, seconds) and the line "N passed, M failed"; logs of
# each test under the work dir (--work, default /tmp/etcd-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

server=ours
run_regex='.*'
list_file=""
timeout_s=180
work=/tmp/etcd-e2e
compare=0
retries=0
known_file=scripts/etcd-e2e/known-failures.txt
for arg in "$@"; do
  case "$arg" in
    --server=*) server=${arg#--server=} ;;
    --run=*) run_regex=${arg#--run=} ;;
    --list=*) list_file=${arg#--list=} ;;
    --timeout=*) timeout_s=${arg#--timeout=} ;;
    --work=*) work=${arg#--work=} ;;
    --baseline) compare=1 ;;
    --retries=*) retries=${arg#--retries=} ;;
    --known=*) known_file=${arg#--known=} ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "etcd-e2e: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

SRC=/usr/share/gocode/src/go.etcd.io/etcd
E2E_SRC=$SRC/tests/e2e
CERTS=$SRC/integration/fixtures
BASELINE=$REPO/scripts/etcd-e2e/baseline-etcd-3.4.txt
EXCLUDED=$REPO/scripts/etcd-e2e/excluded.txt
if [ ! -d "$E2E_SRC" ] || ! command -v go >/dev/null; then
  echo "etcd-e2e: needs Debian's golang-etcd-server-dev and golang-go:" >&2
  echo "  apt-get install -y golang-etcd-server-dev golang-go etcd-client" >&2
  exit 2
fi
if [ ! -x /usr/bin/etcdctl ]; then
  echo "etcd-e2e: needs the real etcdctl 3.4: apt-get install -y etcd-client" >&2
  exit 2
fi

case "$server" in
  ours)
    if [ ! -x target/release/etcd ]; then
      echo "etcd-e2e: building our server (cargo build --release --bin etcd)" >&2
      cargo build --release --bin etcd >&2
    fi
    server_bin=$REPO/target/release/etcd ;;
  etcd) server_bin=/usr/bin/etcd ;;
  *) server_bin=$(realpath "$server") ;;
esac
[ -x "$server_bin" ] || { echo "etcd-e2e: $server_bin is not an executable" >&2; exit 2; }

mkdir -p "$work/bin" "$work/logs" "$work/cache"
test_bin=$work/e2e.test
if [ ! -x "$test_bin" ]; then
  echo "etcd-e2e: building etcd's e2e test binary (GOPATH mode, about 30 s)" >&2
  (cd "$E2E_SRC" && GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= \
    GOTOOLCHAIN=local GOCACHE="$work/cache" go test -c -o "$test_bin" .) >&2
fi

pids=$work/server.pids
cat > "$work/bin/etcd" <<WRAP
#!/bin/sh
echo \$\$ >> "$pids"
exec "$server_bin" "\$@"
WRAP
chmod +x "$work/bin/etcd"
ln -sf /usr/bin/etcdctl "$work/bin/etcdctl"

kill_leftovers() {
  [ -f "$pids" ] || return 0
  while read -r pid; do
    # Only a process still running our server binary (a PID may have been reused).
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$server_bin" ]; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done < "$pids"
  rm -f "$pids"
}
trap 'kill_leftovers' EXIT

if [ -n "$list_file" ]; then
  tests=$(grep -v '^\s*#' "$list_file" | awk 'NF {print $1}')
else
  tests=$("$test_bin" -test.list "$run_regex" | grep '^Test')
fi
excluded_re=$(grep -v '^\s*#' "$EXCLUDED" | awk 'NF {print $1}' | paste -sd'|')
tests=$(echo "$tests" | grep -Ev "^(${excluded_re})$" || true)
total=$(echo "$tests" | grep -c . || true)
echo "etcd-e2e: $total tests against $server_bin (timeout ${timeout_s}s each)" >&2

passed=0; failed=0; n=0
results=$work/results.txt
: > "$results"
printf '%-60s %-6s %s\n' TEST RESULT SECONDS
# run_one <test> <log>: runs one test in its own session (so a timeout kills the
# test and whatever it spawned in its group); sets rc.
run_one() {
  rc=0
  (cd "$E2E_SRC" && exec setsid timeout -s KILL "$timeout_s" "$test_bin" -test.run "^${1}\$" \
    -test.v -bin-dir="$work/bin" -cert-dir="$CERTS") > "$2" 2>&1 || rc=$?
  kill_leftovers
}
for t in $tests; do
  n=$((n + 1))
  start=$(date +%s)
  log=$work/logs/$t.log
  run_one "$t" "$log"
  # --retries=N: a failed test runs again, up to N more times; a pass on a retry
  # shows as PASS* (the suite's goroutine-leak check is timing-sensitive).
  tries=0
  while [ "$tries" -lt "$retries" ] && ! { [ "$rc" = 0 ] && grep -q '^--- PASS' "$log"; }; do
    tries=$((tries + 1))
    mv "$log" "$log.try$tries"
    run_one "$t" "$log"
  done
  secs=$(( $(date +%s) - start ))
  if [ "$rc" = 0 ] && grep -q '^--- PASS' "$log"; then
    result=PASS; passed=$((passed + 1))
    [ "$tries" -gt 0 ] && result='PASS*'
  else
    result=FAIL; failed=$((failed + 1))
    [ "$rc" = 137 ] && result=TIMEOUT
  fi
  printf '%-60s %-6s %s\n' "$t" "$result" "$secs"
  echo "$t $result" >> "$results"
  echo "etcd-e2e: [$n/$total] $t $result (${secs}s)" >&2
done
echo "$passed passed, $failed failed"
if [ "$compare" = 1 ]; then
  names() { grep -v '^\s*#' "$1" | awk 'NF {print $1}'; }
  ran=$(awk '{print $1}' "$results")
  failed_here=$(awk '$2 !~ /^PASS/ {print $1}' "$results")
  known=$( [ -f "$known_file" ] && names "$known_file" || true)
  # Baseline passes, failed here, not a known failure: regressions.
  regressions=$(echo "$failed_here" | grep -Fx -f <(names "$BASELINE") | grep -Fxv -f <(echo "${known:-#}") || true)
  fixed=$(echo "$known" | grep -Fx -f <(echo "$ran") | grep -Fxv -f <(echo "${failed_here:-#}") || true)
  if [ -n "$fixed" ]; then
    echo "known failures that passed (remove them from $known_file):"
    echo "$fixed" | sed 's/^/  /'
  fi
  if [ -n "$regressions" ]; then
    echo "passed by real etcd here, failed against $server_bin:"
    echo "$regressions" | sed 's/^/  /'
    exit 1
  fi
  echo "every test real etcd passes here passed, apart from the known failures"
  exit 0
fi
[ "$failed" = 0 ]
