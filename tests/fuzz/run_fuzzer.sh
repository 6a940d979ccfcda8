#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEED_DIR SECONDS: a bounded libFuzzer run over a scratch copy of the
# seed corpus (new inputs land in the scratch dir, not in git). Fails on any crash.
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$scratch" "$seeds" 2>&1 | tail -n 15
