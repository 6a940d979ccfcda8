#!/usr/bin/env bash
# ping_compare.sh BUILD_DIR [SECONDS] [ROUNDS]: the walking skeleton's load comparison.
#
# For each round and each transport (io_uring, recvmmsg), starts a one-shard
# `ringpeer serve` pinned to CPU 0 and runs `ringpeer-load ping` pinned to CPU 1 against
# it; ringpeer-load first measures the kernel baseline (a recvmmsg/sendmmsg echo pinned to
# CPU 0) in the same run. Prints each run's figures, then the medians, ending with one
# key=value line. Loopback only; every process it starts is stopped on exit.
# SERVE_FLAGS and LOAD_FLAGS (environment) add flags to every `ringpeer serve` and every
# `ringpeer-load ping`, e.g. SERVE_FLAGS="--recv-gro on" LOAD_FLAGS=--no-gso.
set -euo pipefail
build=${1:?usage: ping_compare.sh BUILD_DIR [SECONDS] [ROUNDS]}
seconds=${2:-5}
rounds=${3:-2}
node_bin=$build/node/cli/ringpeer
load_bin=$build/bench/ringpeer-load
tmp=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

declare -A rate ratio base p50 p99
for round in $(seq 1 "$rounds"); do
  for transport in io_uring recvmmsg; do
    if [ "$transport" = io_uring ]; then port=$((17700 + round * 10)); else port=$((17705 + round * 10)); fi
    rm -rf "$tmp/data"
    # shellcheck disable=SC2086 # word splitting of the extra flags is wanted
    taskset -c 0 "$node_bin" serve --shards 1 --transport "$transport" \
      --listen "127.0.0.1:$port" --data-dir "$tmp/data" --admin off ${SERVE_FLAGS:-} \
      2>"$tmp/node.log" &
    pid=$!
    for _ in $(seq 1 100); do
      "$node_bin" status --data-dir "$tmp/data" >/dev/null 2>&1 && break
      sleep 0.05
    done
    # shellcheck disable=SC2086
    if ! line=$("$load_bin" ping --target "127.0.0.1:$port" --seconds "$seconds" --cpu 1 \
                  --echo-cpu 0 ${LOAD_FLAGS:-} | tail -n 1); then
      echo "ping_compare: the load run failed; node log:" >&2
      cat "$tmp/node.log" >&2
      exit 1
    fi
    kill "$pid"
    wait "$pid" || true
    pid=""
    echo "round=$round transport=$transport $line"
    get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$line"; }
    rate[$transport]+="$(get pings_per_s) "
    ratio[$transport]+="$(get ratio) "
    base[$transport]+="$(get baseline_per_s) "
    p50[$transport]+="$(get p50_us) "
    p99[$transport]+="$(get p99_us) "
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {
  if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
u_rate=$(median "${rate[io_uring]}"); m_rate=$(median "${rate[recvmmsg]}")
u_ratio=$(median "${ratio[io_uring]}"); m_ratio=$(median "${ratio[recvmmsg]}")
echo "medians over $rounds rounds of ${seconds}s:"
echo "  io_uring: $u_rate pings/s, ${u_ratio}x of the echo baseline, p50 $(median "${p50[io_uring]}") us, p99 $(median "${p99[io_uring]}") us"
echo "  recvmmsg: $m_rate pings/s, ${m_ratio}x of the echo baseline, p50 $(median "${p50[recvmmsg]}") us, p99 $(median "${p99[recvmmsg]}") us"
echo "  echo baseline: $(median "${base[io_uring]} ${base[recvmmsg]}") requests/s"
uring_over_mmsg=$(awk -v a="$u_rate" -v b="$m_rate" 'BEGIN { printf "%.3f", a / b }')
echo "uring_pings_per_s=$u_rate uring_ratio=$u_ratio uring_p99_us=$(median "${p99[io_uring]}")" \
     "mmsg_pings_per_s=$m_rate mmsg_ratio=$m_ratio mmsg_p99_us=$(median "${p99[recvmmsg]}")" \
     "baseline_per_s=$(median "${base[io_uring]} ${base[recvmmsg]}") uring_over_mmsg=$uring_over_mmsg"
