#!/usr/bin/env bash
# bench put and range with auth on (simple tokens; a user whose role has a prefix
# permission), ours against real etcd (Debian's /usr/bin/etcd), single member, 3 rounds;
# also the mean time of one Authenticate (bcrypt at the default cost 10) over the gateway.
# usage: scripts/bench-auth-vs-etcd.sh   (needs etcdctl, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin etcd --bin bench >&2
BENCH=./target/release/bench; W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf $W' EXIT
for round in 1 2 3; do
for server in ours etcd; do
  bin=./target/release/etcd; [ $server = etcd ] && bin=/usr/bin/etcd
  rm -rf $W/d; $bin --name b --data-dir $W/d --listen-client-urls http://127.0.0.1:24990 --advertise-client-urls http://127.0.0.1:24990 \
    --listen-peer-urls http://127.0.0.1:24991 --initial-advertise-peer-urls http://127.0.0.1:24991 --initial-cluster b=http://127.0.0.1:24991 >$W/log 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "ready to serve" $W/log && break; sleep 0.1; done
  E="etcdctl --endpoints=127.0.0.1:24990"
  $E user add root:rootpw >/dev/null; $E user grant-role root root >/dev/null
  $E user add bench:benchpw >/dev/null; $E role add bench >/dev/null
  # bench's put keys are big-endian numbers: prefix 00 00 00 00 covers them all.
  curl -s -X POST http://127.0.0.1:24990/v3/auth/role/grant -d '{"name":"bench","perm":{"permType":"READWRITE","key":"AAAAAA==","range_end":"AAAAAQ=="}}' >/dev/null
  $E role grant-permission bench read foo >/dev/null
  $E user grant-role bench bench >/dev/null; $E auth enable >/dev/null
  put=$($BENCH --endpoints=127.0.0.1:24990 --user=bench:benchpw --clients=64 --conns=8 put --key-size=8 --val-size=256 --key-space-size=100000 --total=20000 2>/dev/null | tee -a $W/bench.out | awk '/Requests\/sec/ {print $2}')
  put1=$($BENCH --endpoints=127.0.0.1:24990 --user=bench:benchpw --clients=1 --conns=1 put --key-size=8 --val-size=256 --total=2000 2>/dev/null | tee -a $W/bench.out | awk '/Requests\/sec/ {print $2}')
  range=$($BENCH --endpoints=127.0.0.1:24990 --user=bench:benchpw --clients=64 --conns=8 range foo --consistency=l --total=20000 2>/dev/null | tee -a $W/bench.out | awk '/Requests\/sec/ {print $2}')
  t0=$(date +%s.%N)
  for i in $(seq 20); do curl -s -X POST http://127.0.0.1:24990/v3/auth/authenticate -d '{"name":"bench","password":"benchpw"}' >/dev/null; done
  t1=$(date +%s.%N)
  auth_ms=$(echo "($t1 - $t0) * 1000 / 20" | bc -l)
  printf "round=%s server=%s put64=%s put1=%s range64=%s authenticate_ms=%.1f\n" $round $server "$put" "$put1" "$range" "$auth_ms"
  # sanity: an unauthenticated put is refused
  $E put x 1 >/dev/null 2>&1 && echo "UNAUTHENTICATED PUT ACCEPTED" >&2 || true
  grep -A2 "Error distribution" $W/bench.out >&2 || true; rm -f $W/bench.out
  kill $pid; wait $pid 2>/dev/null || true
done; done
