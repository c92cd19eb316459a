#!/usr/bin/env bash
# Runs the same `bench` workloads against this server and real etcd (Debian's
# etcd-server) on this machine, one after the other, and prints throughput ratios
# (ours / etcd) plus the disk's fsync latency, the floor of a single client's write.
#
# usage: scripts/bench-vs-etcd.sh [total-requests]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-20000}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

start() { # name binary client-port peer-port
  local name=$1 bin=$2 cport=$3 pport=$4
  "$bin" --name "$name" --data-dir "$WORK/$name" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "$name=http://127.0.0.1:$pport" >"$WORK/$name.log" 2>&1 &
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 100); do
    grep -q "ready to serve client requests" "$WORK/$name.log" && return 0
    sleep 0.1
  done
  echo "$name did not start; see its log:" >&2; cat "$WORK/$name.log" >&2; exit 1
}

rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/$1.pid")/status"; }

workloads=(
  "put-1-client|--clients=1 --conns=1 put --key-size=8 --val-size=256 --total=$((TOTAL / 10))"
  "put-64-clients|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "range-linearizable-64|--clients=64 --conns=8 range foo --consistency=l --total=$TOTAL"
  "range-serializable-64|--clients=64 --conns=8 range foo --consistency=s --total=$TOTAL"
  # The same puts while 10,000 watchers (100 streams x 100) wait on keys nobody writes.
  "put-64-10k-idle-watchers|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
)

# with_idle_watchers <endpoint> <command...>: runs the command while 10,000 idle
# watchers are open on the endpoint.
with_idle_watchers() {
  local ep=$1; shift
  "$BENCH" --endpoints="$ep" --conns=4 idle-watchers --streams=100 --watch-per-stream=100 \
    2>"$WORK/watchers.log" &
  local pid=$!
  for _ in $(seq 300); do
    grep -q "idle watchers open" "$WORK/watchers.log" && break
    sleep 0.1
  done
  "$@"
  kill $pid; wait $pid 2>/dev/null || true
}

for server in ours etcd; do
  bin=./target/release/etcd; [ $server = etcd ] && bin=$ETCD
  cport=$((23790 + RANDOM % 1000)); pport=$((cport + 1000))
  echo "starting $server on 127.0.0.1:$cport" >&2
  start $server $bin $cport $pport
  for w in "${workloads[@]}"; do
    name=${w%%|*}; args=${w#*|}
    runner=()
    [[ $name == *idle-watchers ]] && runner=(with_idle_watchers "127.0.0.1:$cport")
    # shellcheck disable=SC2086
    result[$server/$name]=$("${runner[@]}" run "$server $name" "127.0.0.1:$cport" $args)
  done
  result[$server/rss]=$(rss_kb $server)
  kill "$(cat "$WORK/$server.pid")"; wait "$(cat "$WORK/$server.pid")" 2>/dev/null || true
done

fsync_us=$(cd "$WORK" && dd if=/dev/zero of=fsync.test bs=4k count=200 oflag=dsync 2>&1 |
  awk '/copied/ {for (i=1;i<=NF;i++) if ($i ~ /^s,?$/) t=$(i-1); print int(t / 200 * 1000000)}')

print_table
printf '%-24s %12s %12s %8.2f\n' "peak RSS (kB)" "${result[ours/rss]}" "${result[etcd/rss]}" \
  "$(ratio "${result[ours/rss]}" "${result[etcd/rss]}")"
echo "disk fsync latency (4 KiB dsync write): ${fsync_us} us = floor for one client's write"
