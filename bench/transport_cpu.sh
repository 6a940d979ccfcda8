#!/usr/bin/env bash
# transport_cpu.sh BUILD_DIR [RATE] [SECONDS] [ROUNDS] [BEFORE_BUILD_DIR]: what each
# transport costs per answered ping at one fixed offered load (issue 14, item 4). With
# BEFORE_BUILD_DIR (a build of an older commit), its io_uring transport runs in each round
# too, as `before_io_uring`. COALESCE_US=N (default 100; 0 leaves it out) adds
# `io_uring_coalesced`: the node with --coalesce-us N, a wakeup serving several datagrams.
#
# Per round, the node runs once with io_uring and once with recvmmsg (the order alternates
# round by round), one shard on CPU 0, loaded by `ringpeer-load ping --rate RATE` on CPU 1
# (default 50,000 pings/s: below saturation, so both transports keep up and answer the same
# pings). Measured over the load, for the node process (all its threads):
#   cpu_us      task-clock per datagram received (`perf stat`, from /proc if perf is absent)
#   sys/dgram   system calls entered per datagram (perf's raw_syscalls tracepoint)
#   dgram/call  datagrams per transport system call (the shard's own count)
#   cqe/send    io_uring completions reaped per datagram sent (receives and sends each post
#               one; 1.0 means a completion per send besides the receive's)
#   csw         context switches per 1,000 datagrams (the shard sleeping between batches)
# Prints one line per run, then the medians and their ratio as one key=value line.
set -euo pipefail
build=${1:?usage: transport_cpu.sh BUILD_DIR [RATE] [SECONDS] [ROUNDS] [BEFORE_BUILD_DIR]}
rate=${2:-50000}
seconds=${3:-4}
rounds=${4:-5}
before=${5:-}
coalesce=${COALESCE_US:-100}
tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
have_perf=0
perf stat -x, -e task-clock -o /dev/null -- true 2>/dev/null && have_perf=1
ticks=$(getconf CLK_TCK)
# The loader runs SCHED_FIFO where we may (root): on a shared host it then offers the same
# smooth load whatever else runs on its CPU, so both transports see the same arrivals.
rt=""
chrt -f 10 true 2>/dev/null && rt="chrt -f 10"
node="$build/node/cli/ringpeer"

# counters DIR: "received sent syscalls completions iterations" of shard 0.
counters() {
  "$node" status --json --data-dir "$1" | python3 -c '
import json, sys
c = json.load(sys.stdin)["shard_counters"][0]
# (a build older than these counters reports 0 for them)
print(c["received"], c["sent"], c.get("transport_syscalls", 0),
      c.get("transport_completions", 0), c["loop_iterations"])'
}

# run TRANSPORT ROUND: one measured run; appends the per-run figures to $tmp/TRANSPORT.
run() {
  local transport=$1 round=$2 data="$tmp/data-$1-$2" before after line perf_pid=""
  local binary=$node kind=$1 extra=()
  if [ "$transport" = before_io_uring ]; then
    binary="$before_build/node/cli/ringpeer"
    kind=io_uring
  elif [ "$transport" = io_uring_coalesced ]; then
    kind=io_uring
    extra=(--coalesce-us "$coalesce")
  fi
  taskset -c 0 "$binary" serve --shards 1 --transport "$kind" --listen 127.0.0.1:17792 \
    --data-dir "$data" --admin off "${extra[@]}" 2>"$tmp/node.log" &
  pid=$!
  for _ in $(seq 1 100); do
    "$node" status --data-dir "$data" >/dev/null 2>&1 && break
    sleep 0.05
  done
  before=$(counters "$data")
  local cpu_before
  cpu_before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  if [ "$have_perf" = 1 ]; then
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pid" \
      -o "$tmp/perf.txt" &
    perf_pid=$!
  fi
  line=$($rt "$build/bench/ringpeer-load" ping --target 127.0.0.1:17792 --seconds "$seconds" \
           --cpu 1 --no-baseline --rate "$rate" | tail -n 1)
  local cpu_ms csw=0 sys=0
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    cpu_ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$tmp/perf.txt")
    csw=$(awk -F, '$3 == "context-switches" { print $1 }' "$tmp/perf.txt")
    sys=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$tmp/perf.txt")
  else
    cpu_ms=$(awk -v b="$cpu_before" -v t="$ticks" '{ print ($14 + $15 - b) * 1000 / t }' \
             "/proc/$pid/stat")
  fi
  after=$(counters "$data")
  kill "$pid"; wait "$pid" || true; pid=""
  local answered
  answered=$(sed -n 's/.*pings_per_s=\([^ ]*\).*/\1/p' <<<"$line")
  local p50
  p50=$(sed -n 's/^pings_per_s=[^ ]* p50_us=\([^ ]*\).*/\1/p' <<<"$line")
  read -r rb sb cb qb ib <<<"$before"
  read -r ra sa ca qa ia <<<"$after"
  awk -v t="$transport" -v r="$round" -v ms="$cpu_ms" -v csw="$csw" -v sys="$sys" \
      -v rx=$((ra - rb)) -v tx=$((sa - sb)) -v calls=$((ca - cb)) -v cq=$((qa - qb)) \
      -v it=$((ia - ib)) -v ans="$answered" -v p50="$p50" 'BEGIN {
    cpu = ms * 1000 / rx
    printf "round=%s transport=%s cpu_us=%.3f sys_per_dgram=%.3f dgram_per_call=%.2f " \
           "cqe_per_send=%.3f csw_per_k=%.1f batch=%.2f answered_per_s=%s p50_us=%s\n",
           r, t, cpu, sys / rx, (calls > 0 ? rx / calls : 0), (cq > 0 ? (cq - rx) / tx : 0),
           csw * 1000 / rx, rx / it, ans, p50
  }' | tee -a "$tmp/$transport"
}

echo "transport_cpu: rate=$rate/s seconds=$seconds rounds=$rounds perf=$have_perf" \
  "loader=${rt:-normal}"
before_build=$before
kinds="io_uring recvmmsg"
[ "$coalesce" != 0 ] && kinds="$kinds io_uring_coalesced"
[ -n "$before_build" ] && kinds="$kinds before_io_uring"
for round in $(seq 1 "$rounds"); do
  # Each round starts with the next kind: every kind runs first, second and third alike.
  order=$(tr ' ' '\n' <<<"$kinds" | awk -v r="$round" '{ a[NR] = $0 } END {
    for (i = 0; i < NR; i++) printf "%s ", a[(r - 1 + i) % NR + 1] }')
  for transport in $order; do run "$transport" "$round"; done
done

# median FILE KEY: the median of KEY=value over the lines of FILE.
median() {
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
u=$(median "$tmp/io_uring" cpu_us); m=$(median "$tmp/recvmmsg" cpu_us)
echo "rate=$rate rounds=$rounds uring_cpu_us=$u mmsg_cpu_us=$m" \
  "uring_over_mmsg=$(awk -v a="$u" -v b="$m" 'BEGIN { printf "%.3f", a / b }')" \
  "uring_sys_per_dgram=$(median "$tmp/io_uring" sys_per_dgram)" \
  "mmsg_sys_per_dgram=$(median "$tmp/recvmmsg" sys_per_dgram)" \
  "uring_cqe_per_send=$(median "$tmp/io_uring" cqe_per_send)" \
  "uring_p50_us=$(median "$tmp/io_uring" p50_us) mmsg_p50_us=$(median "$tmp/recvmmsg" p50_us)" \
  "uring_batch=$(median "$tmp/io_uring" batch) mmsg_batch=$(median "$tmp/recvmmsg" batch)" \
  $( [ "$coalesce" != 0 ] && c=$(median "$tmp/io_uring_coalesced" cpu_us) &&
     echo "coalesced_cpu_us=$c coalesced_over_mmsg=$(awk -v a="$c" -v b="$m" \
       'BEGIN { printf "%.3f", a / b }')" ) \
  $( [ -n "$before_build" ] && b=$(median "$tmp/before_io_uring" cpu_us) &&
     echo "before_uring_cpu_us=$b before_over_mmsg=$(awk -v a="$b" -v c="$m" \
       'BEGIN { printf "%.3f", a / c }')" )
