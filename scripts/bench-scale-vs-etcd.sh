#!/usr/bin/env bash
# Memory and time at scale, ours against real etcd (Debian's etcd 3.4) on this
# machine: a single member of each is loaded with KEYS distinct keys of VALUE
# bytes, then, per server and round:
#   - RSS after loading, and the data dir's size;
#   - restart: stop (SIGTERM), start again, seconds until it answers a
#     linearizable get, and RSS once it does;
#   - a full `etcdctl get "" --prefix` of every key on the freshly restarted
#     member: the server's peak RSS during it (VmHWM, reset through
#     /proc/<pid>/clear_refs just before) and how long it took;
#   - ours only: the same read as one RangeStream (`bench range --stream`), on
#     another fresh restart, and its peak RSS.
# Rounds alternate who goes first; the medians and the ratios ours / etcd are
# printed as a Markdown table (also in target/bench-scale-vs-etcd.md).
#
#   scripts/bench-scale-vs-etcd.sh [KEYS] [VALUE_BYTES] [ROUNDS]   # default 100000 256 3
#   scripts/bench-scale-vs-etcd.sh 1000000 1024 3                  # 1M keys of 1 KiB
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-100000}
value_bytes=${2:-256}
rounds=${3:-3}
ETCD=${ETCD:-/usr/bin/etcd}
echo "building release binaries..." >&2
cargo build --release --bin etcd --bin bench >&2
ours=$PWD/target/release/etcd
bench=$PWD/target/release/bench
work=$(mktemp -d /tmp/bench-scale.XXXXXX)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
export ETCDCTL_API=3
declare -A result

kb() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }

start() { # binary dir port -> pid in $pid, seconds to ready in $ready_s
  local bin=$1 dir=$2 port=$3 t0
  t0=$(date +%s.%N)
  "$bin" --name m --data-dir "$dir/data" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "m=http://127.0.0.1:$((port + 1))" --quota-backend-bytes=8589934592 \
    >>"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do
    etcdctl --endpoints "127.0.0.1:$port" --command-timeout=1s get ready-probe >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "the server exited; see $dir/log" >&2; cat "$dir/log" >&2; exit 1; }
    sleep 0.05
  done
  ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

run() { # kind round
  local kind=$1 round=$2 dir=$work/$1-$2 port=$((24000 + RANDOM % 900)) bin=$ours
  [ "$kind" = etcd ] && bin=$ETCD
  mkdir -p "$dir"
  echo "round $round: $kind, loading $keys keys of $value_bytes bytes..." >&2
  start "$bin" "$dir" "$port"
  "$bench" --endpoints "127.0.0.1:$port" --clients 64 --conns 8 put --key-size 16 \
    --val-size "$value_bytes" --total "$keys" --key-space-size "$keys" --sequential-keys \
    >/dev/null 2>"$dir/bench.log"
  local loaded_rss; loaded_rss=$(kb "$pid" VmRSS)
  stop
  local disk; disk=$(du -sk "$dir/data" | cut -f1)
  echo "  restarting..." >&2
  start "$bin" "$dir" "$port"
  local restart_s=$ready_s restart_rss; sleep 1; restart_rss=$(kb "$pid" VmRSS)
  echo "  reading every key..." >&2
  echo 5 >"/proc/$pid/clear_refs" # the peak RSS starts again from here
  local t0; t0=$(date +%s.%N)
  etcdctl --endpoints "127.0.0.1:$port" --command-timeout=600s get "" --prefix >/dev/null
  local range_s; range_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
  local got; got=$(etcdctl --endpoints "127.0.0.1:$port" --command-timeout=600s get "" --prefix \
    --keys-only -w json | grep -o '"count":[0-9]*' | cut -d: -f2)
  [ "$got" = "$keys" ] || echo "  warning: $got keys counted, $keys expected" >&2
  local range_peak; range_peak=$(kb "$pid" VmHWM)
  stop
  local stream_peak=0
  if [ "$kind" = ours ]; then
    echo "  reading every key as a RangeStream..." >&2
    start "$bin" "$dir" "$port"
    echo 5 >"/proc/$pid/clear_refs"
    "$bench" --endpoints "127.0.0.1:$port" range '\0' '\0' --stream --total 1 >/dev/null
    stream_peak=$(kb "$pid" VmHWM)
    stop
  fi
  result[$kind/$round]="$((loaded_rss / 1024)) $((disk / 1024)) $restart_s $((restart_rss / 1024)) $range_s $((range_peak / 1024)) $((stream_peak / 1024))"
  echo "  $kind: ${result[$kind/$round]}" >&2
  rm -rf "$dir"
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="ours etcd"; else order="etcd ours"; fi
  for kind in $order; do run "$kind" "$round"; done
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
col() { # kind column
  local values=() r
  for r in $(seq "$rounds"); do values+=("$(awk -v c="$2" '{print $c}' <<<"${result[$1/$r]}")"); done
  median "${values[@]}"
}
table=target/bench-scale-vs-etcd.md
mkdir -p target
{
  echo "$keys keys of $value_bytes B, single member, $(date -u +%Y-%m-%d), $(nproc) cores;"
  echo "median of $rounds alternated rounds; real etcd $("$ETCD" --version | awk '/etcd Version/ {print $3}')."
  echo
  echo "| measure | ours | etcd | ratio |"
  echo "| --- | ---: | ---: | ---: |"
  i=1
  for name in "RSS after loading (MB)" "data dir (MB)" "restart to ready (s)" "RSS after restart (MB)" \
    "full get --prefix (s)" "peak RSS in full get --prefix (MB)"; do
    o=$(col ours $i); e=$(col etcd $i)
    printf '| %s | %s | %s | %.2f |\n' "$name" "$o" "$e" "$(awk -v a="$o" -v b="$e" 'BEGIN {print a / b}')"
    i=$((i + 1))
  done
  echo "| peak RSS in a RangeStream of every key (MB) | $(col ours 7) | (none in 3.4) | |"
} | tee "$table"
echo "(written to $table)" >&2
