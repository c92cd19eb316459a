#!/usr/bin/env bash
# Fault harness: availability of a 3-member cluster of this server and of real etcd
# (Debian's /usr/bin/etcd, 3.4, run with --pre-vote) under the same seeded fault
# schedule, with a linearizability check of every run's history.
#
# usage: scripts/fault-harness.sh [--seed=1-5] [--duration=60s]
#          [--faults=kill,pause-leader,pause-follower,partition] [--server=ours|etcd|both]
#        scripts/fault-harness.sh --smoke        # 10 s, kill only, both servers
#        scripts/fault-harness.sh --summarize DIR...   # ratios over earlier runs
#        scripts/fault-harness.sh --check history.jsonl  # re-check a history
#        scripts/fault-harness.sh --reanalyze DIR...  # recompute figures from histories
#        scripts/fault-harness.sh --test         # the checker's unit tests
#
# Needs root (members run under their own uids so iptables can cut one off), iptables,
# Go and Debian's golang-etcd-server-dev (clientv3, built offline in GOPATH mode).
# Runs land in target/fault-harness/<time>/ (printed); not part of .ci/run.
# FH_OURS_BIN=path measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "$(id -u)" != 0 ]; then echo "fault-harness: run as root (iptables, member uids)" >&2; exit 2; fi
for t in go iptables; do
  command -v $t >/dev/null || { echo "fault-harness: needs $t (apt-get install golang-go iptables)" >&2; exit 2; }
done
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || {
  echo "fault-harness: needs Debian's golang-etcd-server-dev (clientv3 sources)" >&2; exit 2; }

# Build the harness in GOPATH mode against Debian's Go sources only: a temporary
# GOPATH holds the harness package, /usr/share/gocode is the second GOPATH entry.
OUT=$REPO/target/fault-harness
mkdir -p "$OUT"
GP=$(mktemp -d)
CHAIN=FHS$$
cleanup() {
  rm -rf "$GP"
  # the harness removes its iptables chain itself; this covers a harness killed hard
  if iptables -w -S OUTPUT 2>/dev/null | grep -q -- "-j $CHAIN\$"; then
    iptables -w -D OUTPUT -j "$CHAIN" || true
    iptables -w -F "$CHAIN" || true; iptables -w -F "$CHAIN-P" || true
    iptables -w -X "$CHAIN" || true; iptables -w -X "$CHAIN-P" || true
  fi
}
trap cleanup EXIT
mkdir -p "$GP/src/fault-harness"
cp scripts/fault-harness/*.go "$GP/src/fault-harness/"
export GOPATH=$GP:/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
if [ "${1:-}" = --test ]; then
  (cd "$GP/src/fault-harness" && go test -count=1 .)
  exit
fi
go build -o "$OUT/fault-harness" fault-harness

args=("$@")
if [ "${1:-}" = --smoke ]; then
  args=(--duration=10s --faults=kill --seed=1 --server=both "${@:2}")
fi
if [ "${1:-}" = --check ]; then exec "$OUT/fault-harness" --check "$2"; fi
if [ "${1:-}" = --reanalyze ]; then exec "$OUT/fault-harness" --reanalyze "${@:2}"; fi
if [ "${1:-}" = --summarize ]; then
  exec "$OUT/fault-harness" --summarize "${@:2}"
fi
# FH_OURS_BIN: a server binary built earlier (measure a fixed build while the tree
# changes); otherwise this tree's release build.
OURS_BIN=${FH_OURS_BIN:-$REPO/target/release/etcd}
if [ -z "${FH_OURS_BIN:-}" ] && [[ " ${args[*]} " != *" --server=etcd "* ]]; then
  cargo build --release --bin etcd
fi
"$OUT/fault-harness" --chain="$CHAIN" --ours-bin="$OURS_BIN" "${args[@]}"
