#!/usr/bin/env bash
# Runs the same `bench` workloads against this server and real etcd (Debian's
# etcd-server) on this machine: a fresh single member of each per round, the two
# alternated (who goes first swaps every round), and prints the medians over the
# rounds as a Markdown table: throughput, p50 and p99 latency, the server's CPU
# time per request (user + system, from /proc; the load generator shares the
# cores, so this is the honest ratio) and peak RSS, with the ratios ours / etcd,
# plus the disk's fsync latency, the floor of a single client's write.
#
# usage: scripts/bench-vs-etcd.sh [total-requests] [rounds]   (default 20000 3)
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

rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/$1.pid")/status"; }

# cpu_ticks <name>: the server's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$WORK/$1.pid")/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Requests of each workload, as `bench` is told.
workloads=(
  "put-1-client|$((TOTAL / 10))|--clients=1 --conns=1 put --key-size=8 --val-size=256 --total=$((TOTAL / 10))"
  "put-64-clients|$TOTAL|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
  "range-linearizable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=l --total=$TOTAL"
  "range-serializable-64|$TOTAL|--clients=64 --conns=8 range foo --consistency=s --total=$TOTAL"
  # The same puts while 10,000 watchers (100 streams x 100) wait on keys nobody writes.
  "put-64-10k-idle-watchers|$TOTAL|--clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=$TOTAL"
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

# measure <server> <name> <requests> <endpoint> <bench args...>: prints
# "req/s p50-ms p99-ms cpu-us-per-request".
measure() {
  local server=$1 name=$2 n=$3 ep=$4 out before after; shift 4
  echo "  $server $name..." >&2
  before=$(cpu_ticks "$server")
  out=$("$BENCH" --endpoints="$ep" "$@" 2>/dev/null)
  after=$(cpu_ticks "$server")
  if grep -q "Error distribution" <<<"$out"; then
    echo "  $server $name: $(grep -A1 'Error distribution' <<<"$out" | tail -1 | xargs)" >&2
  fi
  awk -v cpu=$(((after - before) * TICK_US)) -v n="$n" '
    /Requests\/sec/ {rps = $2}
    /^ *50% in/ {p50 = $3 * 1000}
    /^ *99% in/ {p99 = $3 * 1000}
    END {printf "%s %.2f %.2f %.1f\n", rps, p50, p99, cpu / n}' <<<"$out"
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
    result[$server/$name/$round]=$("${runner[@]}" "$server" "$name" "$n" "127.0.0.1:$cport" $args)
  done
  result[$server/rss/$round]=$(rss_kb "$server")
  kill "$(cat "$WORK/$server.pid")"; wait "$(cat "$WORK/$server.pid")" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="ours etcd"; else order="etcd ours"; fi
  for server in $order; do run_server "$server" "$round"; done
done

# field <server> <name> <column>: the median over the rounds of one column.
field() {
  local values=() r
  for r in $(seq "$ROUNDS"); do
    values+=("$(awk -v c="$3" '{print $c}' <<<"${result[$1/$2/$r]}")")
  done
  median "${values[@]}"
}

fsync_us=$(cd "$WORK" && dd if=/dev/zero of=fsync.test bs=4k count=200 oflag=dsync 2>&1 |
  awk '/copied/ {for (i=1;i<=NF;i++) if ($i ~ /^s,?$/) t=$(i-1); print int(t / 200 * 1000000)}')

table=target/bench-vs-etcd.md
mkdir -p target
{
  echo "Single member, $(date -u +%Y-%m-%d), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo);"
  echo "median of $ROUNDS alternated rounds; real etcd $("$ETCD" --version | awk '/etcd Version/ {print $3}'); bench with the load generator on the same cores."
  echo
  echo "| workload | ours req/s | etcd req/s | ratio | p50 ms ours / etcd | p99 ms ours / etcd | CPU µs/req ours / etcd | CPU ratio |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for w in "${workloads[@]}"; do
    name=${w%%|*}
    o=$(field ours "$name" 1); e=$(field etcd "$name" 1)
    oc=$(field ours "$name" 4); ec=$(field etcd "$name" 4)
    printf '| %s | %.0f | %.0f | %.2f | %s / %s | %s / %s | %s / %s | %.2f |\n' "$name" "$o" "$e" \
      "$(ratio "$o" "$e")" "$(field ours "$name" 2)" "$(field etcd "$name" 2)" \
      "$(field ours "$name" 3)" "$(field etcd "$name" 3)" "$oc" "$ec" "$(ratio "$oc" "$ec")"
  done
  orss=$(field ours rss 1); erss=$(field etcd rss 1)
  printf '| peak RSS (MB) | %.0f | %.0f | %.2f | | | | |\n' "$((orss / 1024))" "$((erss / 1024))" \
    "$(ratio "$orss" "$erss")"
  echo
  echo "Disk fsync latency (4 KiB dsync write): ${fsync_us} µs, the floor of one client's write."
} | tee "$table"
echo "(written to $table)" >&2
