#!/usr/bin/env bash
# Runs the same `bench` workloads against a 3-member cluster of this server and a
# 3-member cluster of real etcd (Debian's etcd-server), one after the other on this
# machine. Clients spread over all members (but a single client's puts: on the
# leader, and on a follower); linearizable reads go through ReadIndex on every member.
#
# Each round starts fresh clusters of both, alternated (who goes first swaps every
# round); the Markdown table (also in target/bench-cluster-vs-etcd.md) shows the
# medians of the rounds: throughput, p50, p99, the three servers' CPU time per
# request and their summed peak RSS.
#
# usage: [ONLY=lease] scripts/bench-cluster-vs-etcd.sh [total-requests] [rounds]   (default 20000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-20000}
ROUNDS=${2:-3}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

start_cluster() { # flavor binary base-port
  local flavor=$1 bin=$2 base=$3 ic="" i
  for i in 1 2 3; do ic="$ic${ic:+,}$flavor$i=http://127.0.0.1:$((base + 100 + i))"; done
  for i in 1 2 3; do
    "$bin" --name "$flavor$i" --data-dir "$WORK/$flavor$i" \
      --listen-client-urls "http://127.0.0.1:$((base + i))" --advertise-client-urls "http://127.0.0.1:$((base + i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 100 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 100 + i))" \
      --initial-cluster "$ic" --initial-cluster-state new >"$WORK/$flavor$i.log" 2>&1 &
    echo $! >>"$WORK/$flavor.pids"
  done
  for i in 1 2 3; do
    for _ in $(seq 150); do
      grep -q "ready to serve client requests" "$WORK/$flavor$i.log" && break
      sleep 0.1
    done
    grep -q "ready to serve client requests" "$WORK/$flavor$i.log" || {
      echo "$flavor$i did not start:" >&2; cat "$WORK/$flavor$i.log" >&2; exit 1; }
  done
}

workloads=(
  # One client: on the leader (etcd's --target-leader, as etcd's published
  # numbers are taken), then through a follower, which forwards its proposals.
  "put-1-client|$((TOTAL / 10))|--target-leader --clients=1 --conns=1 put --key-size=8 --val-size=256 --total=$((TOTAL / 10))"
  "put-1-client-follower|$((TOTAL / 10))|--target-follower --clients=1 --conns=1 put --key-size=8 --val-size=256 --total=$((TOTAL / 10))"
  "put-16-clients|$TOTAL|--clients=16 --conns=4 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "put-64-clients|$TOTAL|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "txn-put-16|$TOTAL|--clients=16 --conns=4 txn-put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "range-linearizable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=l --total=$TOTAL"
  "range-serializable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=s --total=$TOTAL"
  "lease-keepalive-30|$TOTAL|--clients=30 --conns=3 lease-keepalive --total=$TOTAL"
  # 1,000 watchers spread over the members, puts one at a time: events per second.
  "watch-fanout-1000|$((TOTAL / 20 * 1000))|--clients=1000 --conns=8 watch-latency --total=$((TOTAL / 20)) --put-rate=100000"
)

# ONLY=<substring> keeps the workloads whose name contains it.
if [ -n "${ONLY:-}" ]; then
  kept=(); for w in "${workloads[@]}"; do [[ ${w%%|*} == *"$ONLY"* ]] && kept+=("$w"); done
  workloads=("${kept[@]}")
fi
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="ours etcd"; else order="etcd ours"; fi
  for flavor in $order; do
    bin=./target/release/etcd; [ $flavor = etcd ] && bin=$ETCD
    base=$((12000 + RANDOM % 18000))  # below the ephemeral port range
    echo "round $round/$ROUNDS: a 3-member $flavor cluster on 127.0.0.1:$((base + 1))-$((base + 3))" >&2
    rm -f "$WORK/$flavor.pids"; rm -rf "$WORK/$flavor"[123]
    start_cluster $flavor $bin $base
    eps="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
    for w in "${workloads[@]}"; do
      IFS='|' read -r name n args <<<"$w"
      # shellcheck disable=SC2086
      result[$flavor/$name/$round]=$(measure "$WORK/$flavor.pids" "$flavor $name" "$n" "$eps" $args)
    done
    result[$flavor/rss/$round]=$(peak_rss_kb "$WORK/$flavor.pids")
    kill $(cat "$WORK/$flavor.pids") 2>/dev/null || true
    wait 2>/dev/null || true
  done
done
table=target/bench-cluster-vs-etcd.md
mkdir -p target
markdown_table "3 members" 2 | tee "$table"
echo "(written to $table)" >&2
