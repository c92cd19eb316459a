#!/usr/bin/env bash
# Runs the same `bench` workloads against a 3-member cluster of this server and a
# 3-member cluster of real etcd (Debian's etcd-server), one after the other on this
# machine, and prints throughput ratios (ours / etcd). Clients spread over all
# members; linearizable reads go through ReadIndex on every member.
#
# usage: scripts/bench-cluster-vs-etcd.sh [total-requests]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-20000}
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
  "put-64-clients|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "range-linearizable-64|--clients=64 --conns=8 range foo --consistency=l --total=$TOTAL"
  "range-serializable-64|--clients=64 --conns=8 range foo --consistency=s --total=$TOTAL"
)

for flavor in ours etcd; do
  bin=./target/release/etcd; [ $flavor = etcd ] && bin=$ETCD
  base=$((24000 + RANDOM % 20000))
  echo "starting a 3-member $flavor cluster on 127.0.0.1:$((base + 1))-$((base + 3))" >&2
  start_cluster $flavor $bin $base
  eps="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
  for w in "${workloads[@]}"; do
    name=${w%%|*}; args=${w#*|}
    # shellcheck disable=SC2086
    result[$flavor/$name]=$(run "$flavor $name" "$eps" $args)
  done
  kill $(cat "$WORK/$flavor.pids") 2>/dev/null || true
  wait 2>/dev/null || true
done

print_table
