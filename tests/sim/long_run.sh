#!/usr/bin/env bash
# long_run.sh BUILD_DIR [SEEDS] [SECONDS] [NODES] [ROOMS] [JOBS]: the room simulator's long
# run (issue 13): SEEDS seeds (default 20) of SECONDS simulated seconds of posts and faults
# (default 600) with NODES whole nodes (60) and ROOMS rooms (10), JOBS runs at a time (2),
# then the same seeds' first few with each planted bug (ringpeer-sim-planted, if built).
# Prints one line per run, then the totals, and ends with one key=value line. Exit 1 when a
# checker failed on a seed, or a planted bug went unnoticed. SIM_FLAGS adds flags to every
# run (for instance SIM_FLAGS="--writer-ms 5").
set -euo pipefail
build=${1:?usage: long_run.sh BUILD_DIR [SEEDS] [SECONDS] [NODES] [ROOMS] [JOBS]}
seeds=${2:-20}
seconds=${3:-600}
nodes=${4:-60}
rooms=${5:-10}
jobs=${6:-2}
sim="$build/tests/sim/ringpeer-sim"
planted="$build/tests/sim/ringpeer-sim-planted"
[ -x "$sim" ] || { echo "long_run.sh: $sim not built (ninja -C $build ringpeer-sim)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

run() {  # run SEED [PLANTED_BUG]: one simulation, its output in $tmp
  local seed=$1 bug=${2:-}
  if [ -n "$bug" ]; then
    "$planted" --no-dht --rooms "$rooms" --nodes "$nodes" --seconds "$seconds" --seed "$seed" \
      --planted "$bug" ${SIM_FLAGS:-} > "$tmp/$bug.$seed" 2>&1 || true
  else
    "$sim" --no-dht --rooms "$rooms" --nodes "$nodes" --seconds "$seconds" --seed "$seed" \
      ${SIM_FLAGS:-} > "$tmp/plain.$seed" 2>&1 || true
  fi
}
export -f run
export sim planted tmp rooms nodes seconds SIM_FLAGS

seq 1 "$seeds" | xargs -P "$jobs" -I{} bash -c 'run {}'

failed=0 converged=0 acked_lost=0 forged=0 evicted=0 crashes=0 partitions=0 disk=0 steps=0
for s in $(seq 1 "$seeds"); do
  kv=$(tail -n 1 "$tmp/plain.$s")
  fail=$(grep -m1 '^FAILED' "$tmp/plain.$s" || true)
  get() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<< "$kv"; }
  printf 'seed %2d: converged=%s acked_lost=%s forged_accepted=%s evicted_writes_accepted=%s crashes=%s partitions=%s disk_faults=%s%s\n' \
    "$s" "$(get converged)" "$(get acked_lost)" "$(get forged_accepted)" \
    "$(get evicted_writes_accepted)" "$(get crashes)" "$(get partitions)" "$(get disk_faults)" \
    "${fail:+  $fail}"
  [ -n "$fail" ] && failed=$((failed + 1))
  converged=$((converged + $(get converged)))
  acked_lost=$((acked_lost + $(get acked_lost)))
  forged=$((forged + $(get forged_accepted)))
  evicted=$((evicted + $(get evicted_writes_accepted)))
  crashes=$((crashes + $(get crashes)))
  partitions=$((partitions + $(get partitions)))
  disk=$((disk + $(get disk_faults)))
  steps=$((steps + $(get steps)))
done

# Planted bugs: each must make a checker fail; the first seed that catches it is reported.
caught_all=1
planted_kv=""
if [ -x "$planted" ]; then
  for bug in ack-early old-key skip-signature; do
    found=0
    for s in $(seq 1 "$seeds"); do
      run "$s" "$bug"
      if line=$(grep -m1 '^FAILED' "$tmp/$bug.$s"); then
        echo "planted $bug: caught on seed $s: $line"
        found=$s
        break
      fi
    done
    [ "$found" = 0 ] && { echo "planted $bug: NOT caught in $seeds seeds"; caught_all=0; }
    planted_kv+=" planted_${bug//-/_}_seed=$found"
  done
else
  echo "planted bugs: $planted not built (release builds build it)"
fi
wall=$(( $(date +%s) - start ))
all_converged=0  # converged=1: every seed's rooms converged
[ "$converged" = "$seeds" ] && all_converged=1
echo "seeds=$seeds seconds=$seconds nodes=$nodes rooms=$rooms failed_seeds=$failed" \
     "converged_seeds=$converged converged=$all_converged acked_lost=$acked_lost forged_accepted=$forged" \
     "evicted_writes_accepted=$evicted crashes=$crashes partitions=$partitions" \
     "disk_faults=$disk steps=$steps${planted_kv} wall_s=$wall"
[ "$failed" = 0 ] && [ "$caught_all" = 1 ]
