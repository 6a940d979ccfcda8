#!/usr/bin/env bash
# deploy/check.sh [RINGPEER_BINARY]: validates everything in deploy/ that can be checked
# without a container engine or a cluster. Images, containers and Compose are exercised by
# tests/deploy/containers.py (ctest deploy_containers).
#
#   yamllint               the compose file and the Kubernetes manifests
#   docker-compose config  the compose file, as Compose itself reads it (seccomp file too)
#   kubernetes-models      each Kubernetes document against the Kubernetes API schemas
#   dockerfile-utils       Dockerfile syntax and instruction arguments
#   python3 json           the seccomp profiles' structure and their io_uring syscalls
#   diff                   the two .dockerignore files (classic builder and BuildKit)
#   systemd-analyze        the systemd unit
#   ringpeer --config      the example config file, through --print-config
#
# The npm tools install into deploy/check/node_modules from package-lock.json (npm ci).
# A stage whose tool is missing is reported as skipped, never as passed.
set -uo pipefail
BIN=${1:-}
[ -n "$BIN" ] && BIN=$(realpath "$BIN")
cd "$(dirname "$0")"
passed=0
failed=0
skipped=0

stage() {
  local name=$1
  shift
  if "$@"; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name"
    failed=$((failed + 1))
  fi
}
skip() {
  echo "skipped: $1"
  skipped=$((skipped + 1))
}

if command -v yamllint >/dev/null; then
  stage "yamllint" yamllint -s -d '{extends: default, rules: {line-length: {max: 100},
    document-start: disable, truthy: {check-keys: false}}}' docker-compose.yml k8s/
else
  skip "yamllint not installed (apt-get install yamllint)"
fi

if command -v docker-compose >/dev/null; then
  stage "docker-compose config" docker-compose -f docker-compose.yml config -q
else
  skip "docker-compose not installed (apt-get install docker-compose)"
fi

npm_tools() {
  [ -x check/node_modules/.bin/dockerfile-utils ] && return 0
  command -v npm >/dev/null || return 1
  (cd check && timeout 300 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}
if command -v node >/dev/null && npm_tools; then
  stage "kubernetes manifests against the Kubernetes schemas" \
    node check/validate-k8s.mjs k8s/*.yaml
  stage "Dockerfile syntax (dockerfile-utils)" check/node_modules/.bin/dockerfile-utils lint Dockerfile
else
  skip "node/npm not available: Kubernetes schema and Dockerfile checks not run"
fi

seccomp_ok() {
  python3 - <<'PY'
import json, sys
p = json.load(open("seccomp-io_uring.json"))
assert p["defaultAction"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"), "not an allow-list"
allowed = set()
for rule in p["syscalls"]:
    assert rule["action"].startswith("SCMP_ACT_"), rule
    if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule:
        allowed |= set(rule["names"])
need = {"io_uring_setup", "io_uring_enter", "io_uring_register", "recvmmsg", "sendmmsg",
        "socket", "bind", "signalfd4", "clone3", "futex", "execve"}
missing = need - allowed
assert not missing, f"missing {missing}"
assert not ({"mount", "ptrace", "kexec_load", "bpf", "init_module"} & allowed), "too wide"
PY
}
stage "seccomp profile: allow-list with io_uring" seccomp_ok

# seccomp-no-io_uring.json (the recvmmsg fallback under test) must be the same allow-list
# with only the three io_uring calls taken out and denied.
seccomp_no_uring_ok() {
  python3 - <<'PY'
import json
uring = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
def allowed(p):
    out = set()
    for rule in p["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            out |= {(n, json.dumps(rule.get("args"))) for n in rule["names"]}
    return out
a = json.load(open("seccomp-io_uring.json"))
b = json.load(open("seccomp-no-io_uring.json"))
assert a["defaultAction"] == b["defaultAction"], "default actions differ"
diff = allowed(a) ^ allowed(b)
assert {n for n, _ in diff} == uring, f"profiles differ in more than io_uring: {diff}"
denied = set()
for rule in b["syscalls"]:
    if rule["action"] == "SCMP_ACT_ERRNO":
        denied |= set(rule["names"])
assert uring <= denied, "io_uring calls not denied"
PY
}
stage "seccomp profile without io_uring: the same allow-list less io_uring" seccomp_no_uring_ok

# The classic builder reads ../.dockerignore, BuildKit Dockerfile.dockerignore: the same.
ignores_same() {
  diff <(grep -v '^#' Dockerfile.dockerignore) <(grep -v '^#' ../.dockerignore)
}
stage "Dockerfile.dockerignore and .dockerignore list the same paths" ignores_same

if command -v systemd-analyze >/dev/null; then
  unit_ok() {
    local dir bin
    dir=$(mktemp -d)
    bin=${BIN:-/bin/true}
    sed "s#/usr/local/bin/ringpeer#$bin#" systemd/ringpeer.service >"$dir/ringpeer.service"
    local out
    out=$(systemd-analyze verify "$dir/ringpeer.service" 2>&1)
    rm -rf "$dir"
    # Warnings about the host (e.g. no running systemd in a container) are not the unit's.
    if echo "$out" | grep -v -e "Failed to connect" -e "^$" | grep -q .; then
      echo "$out"
      return 1
    fi
  }
  stage "systemd unit (systemd-analyze verify)" unit_ok
else
  skip "systemd-analyze not available"
fi

if [ -n "$BIN" ] && command -v readelf >/dev/null && command -v dpkg >/dev/null; then
  # Every shared library the binary links directly must come from a package the runtime
  # stage installs, or from the base image (libc6, libstdc++6, libgcc-s1).
  runtime_libs_ok() {
    local runtime missing=0 lib path pkg needed
    runtime=$(sed -n '/^FROM debian:12-slim/,$p' Dockerfile | tr -s ' \\' '\n' | grep -E '^lib')
    needed=$(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
    [ -n "$needed" ] || { echo "  no NEEDED entries read from $BIN"; return 1; }
    for lib in $needed; do
      path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
      [ -n "$path" ] || { echo "  $lib: not found on this machine"; missing=1; continue; }
      # Merged /usr: dpkg may know the file under /lib or under /usr/lib, linked or not.
      pkg=""
      for cand in "$path" "$(readlink -f "$path")" "${path/#\/lib\//\/usr\/lib\/}" \
                  "$(dirname "$path")/$(basename "$(readlink -f "$path")")"; do
        pkg=$(dpkg -S "$cand" 2>/dev/null | head -1 | cut -d: -f1)
        [ -n "$pkg" ] && break
      done
      case "$pkg" in
        libc6 | libstdc++6 | libgcc-s1) continue ;;
      esac
      if ! grep -qx "$pkg" <<<"$runtime"; then
        echo "  $lib comes from $pkg, which the runtime stage does not install"
        missing=1
      fi
    done
    return $missing
  }
  stage "runtime image installs every library the binary needs" runtime_libs_ok
else
  skip "no ringpeer binary (or readelf/dpkg): runtime libraries not checked"
fi

if [ -n "$BIN" ]; then
  config_ok() {
    local out
    out=$("$BIN" serve --config systemd/ringpeer.conf --print-config) || return 1
    echo "$out" | grep -q "^log-format = json" && echo "$out" | grep -q "systemd/ringpeer.conf"
  }
  stage "example config file reads (ringpeer serve --print-config)" config_ok
else
  skip "no ringpeer binary given: example config not checked"
fi

echo "deploy: $passed passed, $failed failed, $skipped skipped"
echo "$passed passed, $failed failed"
((failed == 0))
