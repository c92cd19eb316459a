# Shared by the bench-*-vs-etcd.sh scripts (sourced, not run): building, running a
# workload with `bench`, and printing the ratio table.
# shellcheck shell=bash

ETCD=/usr/bin/etcd
[ -x "$ETCD" ] || { echo "real etcd not found: sudo apt-get install etcd-server" >&2; exit 1; }
echo "building release binaries..." >&2
cargo build --release --bin etcd --bin bench >&2
BENCH=./target/release/bench
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A result

# run <label> <endpoints> <bench args...>: prints the requests per second; failed
# requests are reported on stderr.
run() {
  local label=$1 ep=$2 out; shift 2
  echo "  $label..." >&2
  out=$("$BENCH" --endpoints="$ep" "$@" 2>/dev/null)
  if grep -q "Error distribution" <<<"$out"; then
    echo "  $label: $(grep -A1 'Error distribution' <<<"$out" | tail -1 | xargs)" >&2
  fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

# median <numbers...>: the median (the middle one of an odd count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {print a / b}'; }

# print_table: one row per entry of ${workloads[@]} from ${result[ours/...]} and
# ${result[etcd/...]}.
print_table() {
  local w name o e
  printf '\n%-24s %12s %12s %8s\n' workload "ours req/s" "etcd req/s" ratio
  for w in "${workloads[@]}"; do
    name=${w%%|*}
    o=${result[ours/$name]}; e=${result[etcd/$name]}
    printf '%-24s %12.0f %12.0f %8.2f\n' "$name" "$o" "$e" "$(ratio "$o" "$e")"
  done
}
