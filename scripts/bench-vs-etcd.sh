#!/usr/bin/env bash
# Runs the same `bench` workloads against this server and real etcd (Debian's
# etcd-server) on this machine: a fresh single member of each per round, the two
# alternated (who goes first swaps every round), and prints the medians over the
# rounds as a Markdown table: throughput, p50 and p99 latency, the server's CPU
# time per request (user + system, from /proc; the load generator shares the
# cores, so this is the honest ratio) and peak RSS, with the ratios ours / etcd,
# plus a single client's write floor on this machine (fsync + loopback round trip, each
# timed by `bench`) set against put-1-client's p50.
#
# usage: [ONLY=put] [ETCD=binary] scripts/bench-vs-etcd.sh [total-requests] [rounds]   (default 20000 3)
# The table is also written to target/bench-vs-etcd.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-20000}
ROUNDS=${2:-3}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

start() { # name binary client-port peer-port
  local name=$1 bin=$2 cport=$3 pport=$4
  rm -rf "${WORK:?}/$name"
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

# Requests of each workload, as `bench` is told.
workloads=(
  "put-1-client|$((TOTAL / 10))|--clients=1 --conns=1 put --key-size=8 --val-size=256 --total=$((TOTAL / 10))"
  "put-16-clients|$TOTAL|--clients=16 --conns=4 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "put-64-clients|$TOTAL|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "txn-put-16|$TOTAL|--clients=16 --conns=4 txn-put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "range-linearizable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=l --total=$TOTAL"
  "range-serializable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=s --total=$TOTAL"
  # 1,000 watchers (each its own stream, over 8 connections) on one key, puts one at
  # a time: events delivered per second, and CPU per event.
  "watch-fanout-1000|$((TOTAL / 20 * 1000))|--clients=1000 --conns=8 watch-latency --total=$((TOTAL / 20)) --put-rate=100000"
  "lease-keepalive-30|$TOTAL|--clients=30 --conns=3 lease-keepalive --total=$TOTAL"
  # The same puts while 10,000 watchers (100 streams x 100) wait on keys nobody writes.
  "put-64-10k-idle-watchers|$TOTAL|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
)

# ONLY=<substring> keeps the workloads whose name contains it.
if [ -n "${ONLY:-}" ]; then
  kept=(); for w in "${workloads[@]}"; do [[ ${w%%|*} == *"$ONLY"* ]] && kept+=("$w"); done
  workloads=("${kept[@]}")
fi

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

run_server() { # server round
  local server=$1 round=$2 bin=./target/release/etcd w name n args cport pport
  [ "$server" = etcd ] && bin=$ETCD
  cport=$((23790 + RANDOM % 1000)); pport=$((cport + 1000))
  echo "round $round: $server on 127.0.0.1:$cport" >&2
  start "$server" "$bin" "$cport" "$pport"
  for w in "${workloads[@]}"; do
    IFS='|' read -r name n args <<<"$w"
    local runner=(measure)
    [[ $name == *idle-watchers ]] && runner=(with_idle_watchers "127.0.0.1:$cport" measure)
    # shellcheck disable=SC2086
    result[$server/$name/$round]=$("${runner[@]}" "$WORK/$server.pid" "$server $name" "$n" \
      "127.0.0.1:$cport" $args)
  done
  result[$server/rss/$round]=$(peak_rss_kb "$WORK/$server.pid")
  kill "$(cat "$WORK/$server.pid")"; wait "$(cat "$WORK/$server.pid")" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="ours etcd"; else order="etcd ours"; fi
  for server in $order; do run_server "$server" "$round"; done
done

table=target/bench-vs-etcd.md
mkdir -p target
markdown_table "Single member" | tee "$table"
echo "(written to $table)" >&2
