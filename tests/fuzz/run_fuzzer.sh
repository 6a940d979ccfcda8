#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEED_DIR SECONDS [generate]: a bounded libFuzzer run over a scratch
# copy of the seed corpus (new inputs land in the scratch dir, not in git). Fails on any
# crash. With `generate`, SEED_DIR holds raw captured datagrams: the fuzzer writes seeds
# made from its own node's traffic (RINGPEER_FUZZ_WRITE_SEEDS) plus SEED_DIR's datagrams
# in its input format (RINGPEER_FUZZ_RAW_SEEDS), and runs over those. A crash leaves its input in
# tests/fuzz/crash-* (git-ignored) and prints the command that replays it.
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=$3 mode=${4:-}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/corpus" "$scratch/generated"
dirs=("$scratch/corpus")
if [ "$mode" = generate ]; then
  RINGPEER_FUZZ_WRITE_SEEDS="$scratch/generated" RINGPEER_FUZZ_RAW_SEEDS="$seeds" \
    "$fuzzer" 2>&1 | tail -n 1
  dirs+=("$scratch/generated")
elif [ -d "$seeds" ]; then
  dirs+=("$seeds")
fi
artifacts="$(cd "$(dirname "$0")" && pwd)/"
status=0
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts" "${dirs[@]}" > "$scratch/log" 2>&1 || status=$?
tail -n 15 "$scratch/log"
if [ "$status" -ne 0 ]; then
  grep -m1 -o "Test unit written to .*" "$scratch/log" || true
  echo "replay: $fuzzer CRASH_FILE"
fi
exit "$status"
