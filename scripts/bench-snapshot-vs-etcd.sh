#!/usr/bin/env bash
# Snapshot save and restore, ours against real etcd (Debian's etcd 3.4) on this
# machine: each server is loaded with KEYS puts of 1 KiB values (distinct keys),
# then `etcdctl snapshot save` is timed (and the server's peak RSS read before and
# after), then the file is restored by each side's own tool (our etcdutl, real
# etcdctl) under /usr/bin/time. Prints one line per server per round and the
# ratios ours/etcd of the medians.
#
#   scripts/bench-snapshot-vs-etcd.sh [KEYS] [ROUNDS]     # default 250000 keys, 3 rounds
#   (1 GiB of values: KEYS=1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-250000}
rounds=${2:-3}
cargo build --release --quiet
ours=$PWD/target/release/etcd
etcdutl=$PWD/target/release/etcdutl
bench=$PWD/target/release/bench
work=$(mktemp -d /tmp/bench-snapshot.XXXXXX)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
export ETCDCTL_API=3

hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

run() { # server-kind round
  local kind=$1 dir=$work/$1-$2 port=23$((RANDOM % 80 + 10))0
  local bin=$ours; [ "$kind" = etcd ] && bin=/usr/bin/etcd
  mkdir -p "$dir"
  "$bin" --name m --data-dir "$dir/data" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "m=http://127.0.0.1:$((port + 1))" --quota-backend-bytes=8589934592 \
    >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  "$bench" --endpoints "127.0.0.1:$port" --clients 64 --conns 8 put --key-size 16 --val-size 1024 \
    --total "$keys" --key-space-size "$keys" --sequential-keys >/dev/null
  local before; before=$(hwm_kb "$pid")
  local t0; t0=$(date +%s.%N)
  etcdctl --endpoints "127.0.0.1:$port" snapshot save "$dir/snap.db" >/dev/null 2>&1
  local t1; t1=$(date +%s.%N)
  local after; after=$(hwm_kb "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local size; size=$(stat -c %s "$dir/snap.db")
  local restore_cmd=("$etcdutl" snapshot restore "$dir/snap.db" --data-dir "$dir/restored")
  [ "$kind" = etcd ] && restore_cmd=(etcdctl snapshot restore "$dir/snap.db" --data-dir "$dir/restored")
  /usr/bin/time -f "%e %M" -o "$dir/restore.time" "${restore_cmd[@]}" >/dev/null 2>&1
  read -r rsecs rkb <"$dir/restore.time"
  printf '%s round %s: snapshot %s bytes; save %.2f s, server peak RSS %s -> %s MB; restore %.2f s, peak RSS %s MB\n' \
    "$kind" "$2" "$size" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" $((before / 1024)) $((after / 1024)) "$rsecs" $((rkb / 1024))
  echo "$kind $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}') $(( (after - before) / 1024 )) $rsecs $((rkb / 1024))" >>"$work/results"
  rm -rf "$dir"
}

for r in $(seq "$rounds"); do run ours "$r"; run etcd "$r"; done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
for col in 2 3 4 5; do
  o=$(awk -v c=$col '$1 == "ours" {print $c}' "$work/results" | median)
  e=$(awk -v c=$col '$1 == "etcd" {print $c}' "$work/results" | median)
  name=$(echo "save_seconds server_rss_growth_mb restore_seconds restore_peak_rss_mb" | cut -d' ' -f$((col - 1)))
  echo "$name: ours $o, etcd $e, ours/etcd $(awk -v o="$o" -v e="$e" 'BEGIN {printf "%.2f", o / (e + 0.0001)}')"
done
