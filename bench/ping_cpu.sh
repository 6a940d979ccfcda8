#!/usr/bin/env bash
# ping_cpu.sh BUILD_DIR [SECONDS] [ROUNDS]: CPU time the serving process spends per
# answered ping, for the kernel echo baseline and the node on each transport.
#
# Throughput on this shared 2-core host swings with whatever else runs; CPU time per
# request (utime + stime of the server process, from /proc, over the measured window)
# moves much less, because time the server spends descheduled is not counted. Server on
# CPU 0, ringpeer-load on CPU 1, loopback only. Ends with one key=value line (medians).
set -euo pipefail
build=${1:?usage: ping_cpu.sh BUILD_DIR [SECONDS] [ROUNDS]}
seconds=${2:-3}
rounds=${3:-3}
tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure NAME PORT: load the server `pid` listens on; prints "cpu_us_per_ping pings_per_s".
measure() {
  local before after line pings
  before=$(cpu_ticks "$pid")
  line=$("$build/bench/ringpeer-load" ping --target "127.0.0.1:$2" --seconds "$seconds" \
           --cpu 1 --no-baseline | tail -n 1)
  after=$(cpu_ticks "$pid")
  pings=$(sed -n 's/.*pings_per_s=\([^ ]*\).*/\1/p' <<<"$line")
  # The loader's window is seconds + 0.5 s warm-up; the server's CPU covers both.
  awk -v b="$before" -v a="$after" -v t="$ticks" -v p="$pings" -v s="$seconds" \
    'BEGIN { printf "%.3f %s\n", (a - b) / t * 1e6 / (p * (s + 0.5)), p }'
}

declare -A cpu
for round in $(seq 1 "$rounds"); do
  taskset -c 0 "$build/bench/ringpeer-udp-echo" --listen 127.0.0.1:17790 --seconds 60 \
    >"$tmp/echo.out" &
  pid=$!
  sleep 0.2
  read -r us rate < <(measure echo 17790)
  kill "$pid"; wait "$pid" || true; pid=""
  echo "round=$round server=echo cpu_us_per_ping=$us pings_per_s=$rate"
  cpu[echo]+="$us "
  for transport in io_uring recvmmsg; do
    rm -rf "$tmp/data"
    taskset -c 0 "$build/node/cli/ringpeer" serve --shards 1 --transport "$transport" \
      --listen 127.0.0.1:17791 --data-dir "$tmp/data" --admin off 2>"$tmp/node.log" &
    pid=$!
    for _ in $(seq 1 100); do
      "$build/node/cli/ringpeer" status --data-dir "$tmp/data" >/dev/null 2>&1 && break
      sleep 0.05
    done
    read -r us rate < <(measure "$transport" 17791)
    kill "$pid"; wait "$pid" || true; pid=""
    echo "round=$round server=$transport cpu_us_per_ping=$us pings_per_s=$rate"
    cpu[$transport]+="$us "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {
  if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
e=$(median "${cpu[echo]}"); u=$(median "${cpu[io_uring]}"); m=$(median "${cpu[recvmmsg]}")
echo "echo_cpu_us=$e uring_cpu_us=$u mmsg_cpu_us=$m uring_over_echo=$(awk -v a="$u" -v b="$e" \
  'BEGIN{printf "%.3f", a/b}') mmsg_over_echo=$(awk -v a="$m" -v b="$e" 'BEGIN{printf "%.3f", a/b}')" \
  "uring_over_mmsg=$(awk -v a="$u" -v b="$m" 'BEGIN{printf "%.3f", a/b}')"
