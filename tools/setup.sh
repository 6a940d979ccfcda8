#!/usr/bin/env bash
# The two set-up commands of the README (fresh Debian 12, root or sudo):
#
#   tools/setup.sh serve [FLAGS...]   install packages, build, run `ringpeer serve FLAGS`
#   tools/setup.sh test               install packages, build, run every test:
#                                       release build: unit + integration tests (ctest),
#                                         and the container test (tests/deploy: starts
#                                         dockerd if none runs, and stops it again)
#                                       ASan+UBSan build (clang): the same, plus the fuzzers
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

build_release() {
  configure build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build build/release -j "$JOBS"
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
  if "$@"; then
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
  configure build/asan "${cc[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DRINGPEER_SANITIZE=address,undefined -DRINGPEER_FUZZ=ON -DRINGPEER_BENCH=OFF \
    -DRINGPEER_FUZZ_SECONDS="${RINGPEER_FUZZ_SECONDS:-30}"
  cmake --build build/asan -j "$JOBS"
  stage "asan+ubsan: unit, integration and fuzz tests" \
    env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan -j "$JOBS" --output-on-failure

  configure build/tsan "${cc[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DRINGPEER_SANITIZE=thread -DRINGPEER_BENCH=OFF
  cmake --build build/tsan -j "$JOBS" --target shard_test
  stage "tsan: mailbox stress" \
    ctest --test-dir build/tsan -L tsan --output-on-failure

  echo
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
