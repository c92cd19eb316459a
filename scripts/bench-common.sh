# Shared by the bench-*-vs-etcd.sh scripts (sourced, not run): building, running a
# workload with `bench`, and printing the ratio table.
# shellcheck shell=bash

# The binary compared against: real etcd unless ETCD names another (an older
# build of this server, say, to measure a change before and after).
ETCD=${ETCD:-/usr/bin/etcd}
[ -x "$ETCD" ] || { echo "real etcd not found: sudo apt-get install etcd-server" >&2; exit 1; }
echo "building release binaries..." >&2
cargo build --release --bin etcd --bin bench >&2
BENCH=./target/release/bench
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A result

# median <numbers...>: the median (the middle one of an odd count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {print a / b}'; }

# cpu_ticks <pidfile>: user + system CPU time so far of the processes listed.
cpu_ticks() {
  local pid total=0
  while read -r pid; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done <"$1"
  echo $total
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# peak_rss_kb <pidfile>: the summed peak RSS of the processes listed.
peak_rss_kb() {
  local pid total=0
  while read -r pid; do total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status"))); done <"$1"
  echo $total
}

# measure <pidfile> <label> <requests> <endpoints> <bench args...>: runs one
# workload and prints "req/s p50-ms p99-ms server-cpu-us-per-request" (the CPU of
# the processes in <pidfile>); failed requests are reported on stderr.
measure() {
  local pids=$1 label=$2 n=$3 ep=$4 out before after; shift 4
  echo "  $label..." >&2
  before=$(cpu_ticks "$pids")
  out=$("$BENCH" --endpoints="$ep" "$@" 2>/dev/null)
  after=$(cpu_ticks "$pids")
  if grep -q "Error distribution" <<<"$out"; then
    echo "  $label: $(grep -A1 'Error distribution' <<<"$out" | tail -1 | xargs)" >&2
  fi
  awk -v cpu=$(((after - before) * TICK_US)) -v n="$n" '
    /Requests\/sec/ {rps = $2}
    /^ *50% in/ {p50 = $3 * 1000}
    /^ *99% in/ {p99 = $3 * 1000}
    END {printf "%s %.3f %.3f %.1f\n", rps, p50, p99, cpu / n}' <<<"$out"
}

# field <server> <key> <column>: the median over ${ROUNDS} rounds of one column of
# ${result[<server>/<key>/<round>]}.
field() {
  local values=() r
  for r in $(seq "$ROUNDS"); do
    values+=("$(awk -v c="$3" '{print $c}' <<<"${result[$1/$2/$r]}")")
  done
  median "${values[@]}"
}

# p50_us <bench args...>: the p50 in µs of one of bench's floor measures.
p50_us() { "$BENCH" "$@" 2>/dev/null | awk '/^ *50% in/ {printf "%.0f", $3 * 1000000}'; }

# markdown_table <what> [round-trips]: the medians of every entry of ${workloads[@]}
# ("name|requests|bench args") as a Markdown table, ours against etcd, then peak RSS
# and a single client's write floor on this disk (one fsync plus <round-trips>
# loopback round trips: 1 for one member, 2 for a cluster, whose leader waits for a
# follower's fsync) set against put-1-client's p50; <what> heads it ("Single
# member", "3 members").
markdown_table() {
  local w name o e oc ec orss erss fsync_us rtt_us rtt_same_us floor_us floor_same_us ours_us etcd_us trips=${2:-1}
  fsync_us=$(p50_us fsync --dir "$WORK" --total 1000)
  # Both placements of the round trip's ends: where the scheduler puts them
  # alternates between the two from run to run on some machines.
  rtt_us=$(p50_us loopback --cores=apart --total 20000)
  rtt_same_us=$(p50_us loopback --cores=same --total 20000)
  floor_us=$((fsync_us + trips * rtt_us))
  floor_same_us=$((fsync_us + trips * rtt_same_us))
  echo "$1, $(date -u +%Y-%m-%d), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo);"
  echo "median of $ROUNDS alternated rounds; real etcd $("$ETCD" --version | awk '/etcd Version/ {print $3}'); the load generator shares the cores."
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
  echo "A single client's write floor here: fsync p50 ${fsync_us} µs (\`bench fsync\`: 4 KiB append + fdatasync)"
  echo "+ ${trips} x loopback round trip p50 ${rtt_us} µs across two cores (\`bench loopback --cores=apart\`) = ${floor_us} µs;"
  echo "with both ends on one core (${rtt_same_us} µs, \`--cores=same\`) = ${floor_same_us} µs."
  if [[ " ${workloads[*]} " == *"put-1-client|"* ]]; then
    ours_us=$(awk -v ms="$(field ours put-1-client 2)" 'BEGIN {printf "%.0f", ms * 1000}')
    etcd_us=$(awk -v ms="$(field etcd put-1-client 2)" 'BEGIN {printf "%.0f", ms * 1000}')
    printf 'put-1-client p50: ours %s µs (%.2fx the floor, %.2fx the one-core floor), etcd %s µs (%.2fx, %.2fx).\n' \
      "$ours_us" "$(ratio "$ours_us" "$floor_us")" "$(ratio "$ours_us" "$floor_same_us")" \
      "$etcd_us" "$(ratio "$etcd_us" "$floor_us")" "$(ratio "$etcd_us" "$floor_same_us")"
  fi
}
