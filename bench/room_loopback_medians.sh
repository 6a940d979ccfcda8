#!/usr/bin/env bash
# room_loopback_medians.sh BUILD_DIR [RUNS] [UPDATES]: issue 15's relay figures on a noisy
# machine. Runs ringpeer-bench-room-loopback RUNS times (default 5) for each transport,
# interleaved (io_uring, recvmmsg, io_uring, ...), pinned to CPUs 0-1 when there are two,
# and prints each run's last line, then the median of every figure per transport, then
# one key=value line: the io_uring medians, and recvmmsg's relay_overhead beside them.
set -euo pipefail
build=${1:?usage: room_loopback_medians.sh BUILD_DIR [RUNS] [UPDATES]}
runs=${2:-5}
updates=${3:-20000}
bench="$build/bench/ringpeer-bench-room-loopback"
[ -x "$bench" ] || bench="$build/ringpeer-bench-room-loopback"
[ -x "$bench" ] || { echo "room_loopback_medians.sh: ringpeer-bench-room-loopback not built in $build" >&2; exit 2; }
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin=(taskset -c 0,1); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$runs"); do
  for t in uring recvmmsg; do
    if [ "$t" = recvmmsg ]; then export RP_BENCH_TRANSPORT=recvmmsg; else unset RP_BENCH_TRANSPORT; fi
    line=$("${pin[@]}" "$bench" --updates "$updates" 2>/dev/null | tail -n 1)
    case "$line" in *relay_overhead=*) ;; *) echo "run $i ($t) failed" >&2; exit 1 ;; esac
    echo "$t run $i: $line"
    echo "$line" >> "$tmp/$t"
  done
done
median() {  # median FILE KEY
  tr ' ' '\n' < "$1" | sed -n "s/^$2=//p" | sort -g |
    awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}
keys=$(tail -n 1 "$tmp/uring" | tr ' ' '\n' | sed 's/=.*//')
out=""
for t in uring recvmmsg; do
  line=""
  for k in $keys; do line="$line $k=$(median "$tmp/$t" "$k")"; done
  echo "median of $runs ($t):$line"
  [ "$t" = uring ] && out="runs=$runs updates=$updates$line"
done
echo "$out mmsg_relay_overhead=$(median "$tmp/recvmmsg" relay_overhead)"
