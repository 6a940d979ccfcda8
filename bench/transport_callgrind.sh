#!/usr/bin/env bash
# transport_callgrind.sh BUILD_DIR: user-space instructions per echoed datagram of each
# transport (issue 14, item 4), counted by callgrind.
#
# Runs ring_test's echo harness (TransportThroughput.DISABLED_EchoRate: one thread, a peer
# socket with 512 datagrams in flight, Poll(0) loops) under valgrind --tool=callgrind for
# each transport at two totals, and divides the difference in instructions by the
# difference in echoes, so set-up costs cancel. Counts only user space inside the
# transport's calls (our code, liburing or the libc wrappers); the kernel's share is in
# transport_cpu.sh.
# (The node itself cannot run under valgrind with io_uring: valgrind holds its big lock
# across io_uring_enter, so the shard's blocking wait starves the other threads.)
set -euo pipefail
build=${1:?usage: transport_callgrind.sh BUILD_DIR}
command -v valgrind >/dev/null || { echo "transport_callgrind: valgrind not installed" >&2; exit 1; }
small=2000
large=12000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions are counted only inside the Transport interface's calls (and what they
# call: liburing, the libc wrappers): the harness's own peer socket work is left out.
toggles=()
for kind in UringTransport MmsgTransport; do
  for f in Poll ReleaseReceived SendBuffer CommitSend Flush; do
    toggles+=("--toggle-collect=*ring::$kind::$f(*")
  done
done

# instructions CASE TOTAL: callgrind's total Ir for one run of the harness.
instructions() {
  RINGPEER_ECHO_ONLY="$1" RINGPEER_ECHO_TOTAL="$2" \
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "${toggles[@]}" \
    "$build/ring/ring_test" --gtest_also_run_disabled_tests \
    --gtest_filter='TransportThroughput.DISABLED_EchoRate' >"$tmp/run.log" 2>&1 ||
    { cat "$tmp/run.log" >&2; exit 1; }
  sed -n 's/.*I *refs: *//p' "$tmp/run.log" | tr -d ','
}

declare -A per_echo
for c in "io_uring fixed files" "recvmmsg"; do
  a=$(instructions "$c" "$small")
  b=$(instructions "$c" "$large")
  per_echo[$c]=$(( (b - a) / (large - small) ))
  echo "transport=\"$c\" ir_small=$a ir_large=$b ir_per_echo=${per_echo[$c]}"
done
u=${per_echo["io_uring fixed files"]}
m=${per_echo["recvmmsg"]}
echo "uring_ir_per_echo=$u mmsg_ir_per_echo=$m uring_over_mmsg=$(awk -v a="$u" -v b="$m" \
  'BEGIN { printf "%.3f", a / b }')"
