#!/usr/bin/env bash
# dht_scaling.sh BUILD_DIR [SECONDS] [PEERS]: how a node's ping and FindNode answers scale
# with its shards (issue 14, item 3).
#
# For S = 1, 2, 4, ... up to half the CPUs this process may use (its affinity mask), it
# runs `ringpeer serve --shards S` pinned to the first S of them and S `ringpeer-load
# find-node` processes, one per shard, each pinned to one of the next S CPUs with PEERS
# peers of its own (distinct source addresses): each loader joins its peers to the node's
# table, then measures pings and FindNode with the same peers. Then the kernel's UDP
# ceiling is measured the same way: S `ringpeer-udp-echo` processes on the node's CPUs,
# each driven by one `ringpeer-load ping --baseline-only` on the loaders' CPUs.
# Rates are summed over the loaders. Per S it prints the rates, the speed-up over one
# shard and the ratios to the echo and to pings; the last line is key=value figures.
# Loopback only. On a 2-CPU machine it runs S = 1 alone; it is written for many cores.
set -euo pipefail
build=${1:?usage: dht_scaling.sh BUILD_DIR [SECONDS] [PEERS]}
seconds=${2:-3}
peers=${3:-256}
bin="$build/node/cli/ringpeer"
load="$build/bench/ringpeer-load"
for f in "$bin" "$load" "$build/bench/ringpeer-udp-echo"; do
  [ -x "$f" ] || { echo "dht_scaling.sh: $f is missing (build the release tree)" >&2; exit 2; }
done
mapfile -t cpus < <(python3 -c 'import os; print("\n".join(map(str, sorted(os.sched_getaffinity(0)))))')
half=$(( ${#cpus[@]} / 2 ))
if (( half < 1 )); then
  echo "dht_scaling.sh: needs at least 2 CPUs in the affinity mask (one node, one loader)" >&2
  exit 2
fi
tmp=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# key VALUE_NAME LINE: the value of `name=` in a key=value line.
key() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
sum() { awk '{ s += $1 } END { printf "%.0f", s }'; }
list() { local IFS=,; echo "$*"; }

port=17900
declare -A ping_rate fn_rate echo_rate
shards_list=()
for ((s = 1; s <= half; s *= 2)); do
  shards_list+=("$s")
  node_cpus=$(list "${cpus[@]:0:s}")
  load_cpus=("${cpus[@]:s:s}")
  port=$((port + 1))
  data="$tmp/node$s"
  mkdir -p "$data"
  taskset -c "$node_cpus" "$bin" serve --listen "127.0.0.1:$port" --shards "$s" \
    --data-dir "$data" --admin off >"$tmp/node$s.log" 2>&1 &
  node_pid=$!
  ready=0
  for _ in $(seq 1 100); do  # at most 10 s
    if "$bin" status --data-dir "$data" --json >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
  done
  if (( ! ready )); then
    echo "dht_scaling.sh: the node with $s shards did not start:" >&2
    tail -5 "$tmp/node$s.log" >&2
    exit 1
  fi
  pids=()
  for ((k = 0; k < s; k++)); do
    "$load" find-node --target "127.0.0.1:$port" --peers "$peers" --seconds "$seconds" \
      --cpu "${load_cpus[k]}" --peer-offset $((k * peers)) >"$tmp/fn$s.$k" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "dht_scaling.sh: a loader failed:" >&2; cat "$tmp"/fn$s.* >&2; exit 1; }; done
  table=$("$bin" status --data-dir "$data" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["routing_table_size"])')
  kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
  ping_rate[$s]=$(for ((k = 0; k < s; k++)); do key pings_per_s "$(tail -n 1 "$tmp/fn$s.$k")"; done | sum)
  fn_rate[$s]=$(for ((k = 0; k < s; k++)); do key answers_per_s "$(tail -n 1 "$tmp/fn$s.$k")"; done | sum)
  # The kernel's ceiling, the same shape: one echo per node CPU, one loader each.
  pids=()
  for ((k = 0; k < s; k++)); do
    "$load" ping --baseline-only --peers "$peers" --seconds "$seconds" --cpu "${load_cpus[k]}" \
      --echo-cpu "${cpus[k]}" --peer-offset $((k * peers)) >"$tmp/echo$s.$k" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "dht_scaling.sh: an echo loader failed:" >&2; cat "$tmp"/echo$s.* >&2; exit 1; }; done
  echo_rate[$s]=$(for ((k = 0; k < s; k++)); do key baseline_per_s "$(tail -n 1 "$tmp/echo$s.$k")"; done | sum)
  awk -v s="$s" -v p="${ping_rate[$s]}" -v f="${fn_rate[$s]}" -v e="${echo_rate[$s]}" \
      -v p1="${ping_rate[1]}" -v f1="${fn_rate[1]}" -v t="$table" 'BEGIN {
    printf "shards=%d table=%d pings_per_s=%.0f find_node_per_s=%.0f echo_per_s=%.0f ", s, t, p, f, e
    printf "ping_speedup=%.2f find_node_speedup=%.2f ping_over_echo=%.3f find_node_over_ping=%.3f\n",
      p / p1, f / f1, (e > 0 ? p / e : 0), (p > 0 ? f / p : 0) }'
done
last=${shards_list[-1]}
awk -v n="$last" -v p="${ping_rate[$last]}" -v f="${fn_rate[$last]}" -v e="${echo_rate[$last]}" \
    -v p1="${ping_rate[1]}" -v f1="${fn_rate[1]}" -v e1="${echo_rate[1]}" 'BEGIN {
  printf "max_shards=%d pings_per_s_1=%.0f find_node_per_s_1=%.0f echo_per_s_1=%.0f ", n, p1, f1, e1
  printf "ping_speedup_max=%.2f find_node_speedup_max=%.2f echo_speedup_max=%.2f find_node_over_ping_1=%.3f\n",
    p / p1, f / f1, (e1 > 0 ? e / e1 : 0), (p1 > 0 ? f1 / p1 : 0) }'
