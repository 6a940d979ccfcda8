#!/usr/bin/env bash
# The two set-up commands of the README (fresh Debian 12, root or sudo):
#
#   tools/setup.sh serve [FLAGS...]   install packages, build, run `ringpeer serve FLAGS`
#   tools/setup.sh test               install packages, build, run every test:
#                                       release build: unit + integration tests (ctest),
#                                         and the container test (tests/deploy: starts
#                                         dockerd if none runs, and stops it again)
#                                       ASan+UBSan build (clang): unit tests, simulators,
#                                         hostile-input integration tests, the fuzzers
#                                       TSan build (clang): the mailbox stress tests
#
# Environment: JOBS (default 2), RINGPEER_FUZZ_SECONDS (default 30 per fuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}

PACKAGES=(build-essential cmake ninja-build pkg-config python3 git
          liburing-dev libsodium-dev libabsl-dev libflatbuffers-dev flatbuffers-compiler
          libgtest-dev libgmock-dev libbenchmark-dev liblmdb-dev
          clang-14 libclang-rt-14-dev iproute2 nftables tmux
          libcpp-httplib-dev curl python3-prometheus-client
          docker-compose yamllint docker.io debootstrap)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# configure DIR [cmake args...]: configure once, then reuse the build directory.
configure() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
}

# Line tables only (-g1): backtraces, perf and sanitizer reports keep file:line, and the
# builds take a third less time than with full -g (swarm_test.cc: 17.4 s -> 11.3 s).
# A debugger session that needs locals: configure with -DCMAKE_BUILD_TYPE=Debug.
build_release() {
  configure build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
  timed "release build" cmake --build build/release -j "$JOBS"
}

# timed NAME COMMAND...: runs COMMAND and says how long it took (CI logs show where the
# minutes go).
timed() {
  local name=$1 start=$SECONDS rc=0
  shift
  "$@" || rc=$?
  echo "time: $name $((SECONDS - start)) s"
  return $rc
}

passed=0
failed=0
failures=()
# stage NAME COMMAND...: runs one test stage and tallies it.
stage() {
  local name=$1
  shift
  echo
  echo "=== $name"
  if timed "$name" "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

run_tests() {
  build_release
  stage "release: unit and integration tests" \
    ctest --test-dir build/release -j "$JOBS" --output-on-failure

  local cc=(-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14)
  # The sanitizer builds: -O1 with line tables (the usual ASan setting; compiles faster).
  # The ASan stage runs the unit tests, the simulators, the fuzzers and the integration
  # tests that feed a node hostile or unusual input; the end-to-end tests labelled
  # release_only (formation, chat, containers, namespaces: the same code paths, many more
  # seconds) run in the release stage only.
  local sflags=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
                -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG")
  configure build/asan "${cc[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${sflags[@]}" \
    -DRINGPEER_SANITIZE=address,undefined -DRINGPEER_FUZZ=ON -DRINGPEER_BENCH=OFF \
    -DRINGPEER_FUZZ_SECONDS="${RINGPEER_FUZZ_SECONDS:-30}"
  timed "asan build" cmake --build build/asan -j "$JOBS"
  stage "asan+ubsan: unit, hostile-input integration and fuzz tests" \
    env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan -j "$JOBS" -LE release_only --output-on-failure

  configure build/tsan "${cc[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${sflags[@]}" \
    -DRINGPEER_SANITIZE=thread -DRINGPEER_BENCH=OFF
  timed "tsan build" cmake --build build/tsan -j "$JOBS" --target shard_test store_writer_test block_pool_test
  stage "tsan: mailbox stress, the room store's writer thread, the block pool" \
    ctest --test-dir build/tsan -L tsan --output-on-failure

  echo
  echo "time: total $SECONDS s"
  if ((failed)); then
    echo "failed stages: ${failures[*]}"
  fi
  echo "$passed passed, $failed failed"
  ((failed == 0))
}

case "${1:-}" in
  serve)
    shift
    install_packages
    build_release
    exec build/release/node/cli/ringpeer serve "$@"
    ;;
  test)
    install_packages
    run_tests
    ;;
  *)
    echo "usage: tools/setup.sh serve [ringpeer serve flags...] | tools/setup.sh test" >&2
    exit 2
    ;;
esac
