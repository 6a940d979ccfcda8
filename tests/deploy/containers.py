#!/usr/bin/env python3
"""ringpeer in Docker containers, built from the release binary the test command built.

Engine: the running one if `docker info` answers (left running); otherwise the test starts
`dockerd` itself, with no iptables rules, no IP forwarding and no default bridge (the
containers only talk on the network the test makes, and to ports published on
127.0.0.1), and stops it at the end, restoring the host's FORWARD policies, IP
forwarding and bridge netfilter sysctls if anything changed them. Exit 77 (skipped) only
where no engine can run (no docker package, not root, dockerd does not start).

Image: deploy/make-base.sh makes `debian:12-slim` locally if the engine lacks it (kept:
it is the base every later run reuses), then deploy/Dockerfile's runtime stage is built
with RINGPEER_BINARY=prebuilt from a context holding the stripped release binary.

Checks, on a user-defined network with three containers (boot; n2 and n3 join it by
name):
  - every node lists the other two as verified peers; /readyz is 200 in each, and so is
    `ringpeer ready` (the image's health check; the image has no curl); Docker reports
    boot healthy;
  - /metrics has ringpeer_build_info, and `ringpeer --version` in the image names it;
  - transports: boot runs io_uring under deploy/seccomp-io_uring.json, n2 recvmmsg under
    deploy/seccomp-no-io_uring.json, n3 (Docker's default profile) is reported;
  - n3 started with --cpus 1 runs one shard (the cgroup CPU quota), boot one per CPU;
  - a room created against boot carries a message from a client in n2 to one in n3;
  - `docker stop` ends n2 within its grace period with exit code 0, and n2 restarted
    keeps its node id (its volume) and is verified by the others again;
  - deploy/docker-compose.yml, brought up with this image and free 127.0.0.1 ports,
    forms the same three-node network.
With RINGPEER_DOCKER_FULL_BUILD=1 it also runs the full multi-stage build from the
repository root (minutes) and checks `--version` in that image.

Every container, network, volume and image it made is removed at the end.

usage: containers.py RINGPEER_BINARY REPO_ROOT
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import check, summary, wait_for  # noqa: E402

SKIP = 77
TAG = f"rpt{os.getpid()}"


def docker_client():
    """The client matching Debian's engine: docker.io's own /usr/bin/docker first (a newer
    client elsewhere on PATH may lack the BuildKit it needs for `docker build`)."""
    if os.environ.get("RINGPEER_DOCKER"):
        return os.environ["RINGPEER_DOCKER"]
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    return shutil.which("docker")


DOCKER = docker_client()


def sh(args, timeout=120, check_rc=False, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out


def docker(*args, timeout=120, check_rc=False, **kw):
    return sh([DOCKER] + list(args), timeout=timeout, check_rc=check_rc, **kw)


def engine_answers():
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


class HostState:
    """The host settings dockerd may change: FORWARD policies, IP forwarding, bridge
    netfilter. Recorded before the test's dockerd starts, restored after it stops."""

    SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
               "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
               "net/bridge/bridge-nf-call-arptables"]

    def __init__(self):
        self.sysctls = {}
        for k in self.SYSCTLS:
            try:
                with open("/proc/sys/" + k) as f:
                    self.sysctls[k] = f.read().strip()
            except OSError:
                pass  # br_netfilter not loaded: nothing to restore (see restore())
        self.policies = {tool: self.policy(tool) for tool in ("iptables", "ip6tables")}

    @staticmethod
    def policy(tool):
        if not shutil.which(tool):
            return None
        out = sh([tool, "-S", "FORWARD"], timeout=20)
        for line in out.stdout.splitlines():
            if line.startswith("-P FORWARD "):
                return line.split()[2]
        return None

    def restore(self):
        changed = []
        for tool, before in self.policies.items():
            now = self.policy(tool)
            if before and now and now != before:
                sh([tool, "-P", "FORWARD", before], timeout=20)
                changed.append(f"{tool} FORWARD {now}->{before}")
        for k in self.SYSCTLS:
            path = "/proc/sys/" + k
            if not os.path.exists(path):
                continue
            with open(path) as f:
                now = f.read().strip()
            # Bridge netfilter appearing during the run (br_netfilter loaded by dockerd)
            # defaults to 1: set it back to 0, as it was in effect before (no module).
            before = self.sysctls.get(k, "0" if "bridge" in k else None)
            if before is not None and now != before:
                with open(path, "w") as f:
                    f.write(before)
                changed.append(f"{k} {now}->{before}")
        return changed


class OwnEngine:
    """dockerd started by the test; stopped (and the host restored) by stop()."""

    def __init__(self, tmp):
        self.host = HostState()
        self.log_path = os.path.join(tmp, "dockerd.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
             "--bridge=none", "--pidfile", os.path.join(tmp, "dockerd.pid")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if engine_answers():
                return True
            time.sleep(0.25)
        return False

    def tail(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        changed = self.host.restore()
        print("dockerd stopped; host settings restored: " + (", ".join(changed) or "none changed"),
              flush=True)


class Resources:
    """Everything the test makes in the engine, removed by cleanup()."""

    def __init__(self):
        self.containers, self.networks, self.volumes, self.images = [], [], [], []
        self.compose = None  # (cwd, env) of a compose project to take down

    def cleanup(self):
        if self.compose:
            cwd, env = self.compose
            sh(["docker-compose", "-p", TAG, "down", "-v", "-t", "5"], timeout=120, cwd=cwd,
               env=env)
        if self.containers:
            docker("rm", "-f", "-v", *self.containers, timeout=120)
        for n in self.networks:
            docker("network", "rm", n, timeout=60)
        if self.volumes:
            docker("volume", "rm", "-f", *self.volumes, timeout=60)
        for i in self.images:
            docker("image", "rm", "-f", i, timeout=60)


def status(name):
    """`ringpeer status --json` inside a container, or None."""
    try:
        out = docker("exec", name, "ringpeer", "status", "--json", timeout=15)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return None


def verified_ids(st):
    return {p["id"] for p in st.get("peers", []) if p.get("verified") and p.get("live")}


def http_get(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def admin_url(name, path):
    out = docker("port", name, "7780/tcp", timeout=15)
    addr = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return f"http://{addr}{path}" if addr.startswith("127.0.0.1:") else None


def logs(name):
    out = docker("logs", "--tail", "40", name, timeout=30)
    return out.stdout + out.stderr


def wait_mesh(names, timeout):
    """Waits until every node verifies every other; returns {name: status}."""
    def all_verified():
        sts = {n: status(n) for n in names}
        if any(s is None for s in sts.values()):
            return None
        ids = {n: s["node_id"] for n, s in sts.items()}
        for n, s in sts.items():
            if not {ids[o] for o in names if o != n} <= verified_ids(s):
                return None
        return sts
    return wait_for(all_verified, timeout, interval=0.5)


def build_image(root, binary, tmp, res):
    ctx = os.path.join(tmp, "context")
    os.makedirs(ctx)
    shutil.copy(binary, os.path.join(ctx, "ringpeer"))
    sh(["strip", "--strip-debug", os.path.join(ctx, "ringpeer")], check_rc=True)
    image = f"ringpeer-test:{TAG}"
    res.images.append(image)
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    t0 = time.monotonic()
    out = docker("build", "--network", "host", "-q", "-f", os.path.join(root, "deploy/Dockerfile"),
                 "--build-arg", "RINGPEER_BINARY=prebuilt", "-t", image, ctx, timeout=600, env=env)
    check(out.returncode == 0,
          f"runtime image built from the release binary in {time.monotonic() - t0:.1f} s"
          + ("" if out.returncode == 0 else f": {out.stderr[-2000:]}"))
    size = docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip()
    print(f"image {image}: {int(size) / 1e6:.1f} MB", flush=True)
    return image


def run_node(res, image, name, net, volume, extra=(), args=()):
    res.containers.append(name)
    out = docker("run", "-d", "--name", name, "--hostname", name.split("-")[-1],
                 "--network", net, "--network-alias", name.split("-")[-1],
                 "-v", f"{volume}:/var/lib/ringpeer", "-p", "127.0.0.1::7780",
                 *extra, image, *args, timeout=60)
    check(out.returncode == 0, f"container {name} starts" +
          ("" if out.returncode == 0 else f": {out.stderr.strip()}"))


def containers_checks(root, image, res, ncpu):
    deploy = os.path.join(root, "deploy")
    net = f"{TAG}-net"
    docker("network", "create", net, check_rc=True)
    res.networks.append(net)
    vols = {n: f"{TAG}-{n}" for n in ("boot", "n2", "n3")}
    res.volumes += list(vols.values())
    names = {n: f"{TAG}-{n}" for n in ("boot", "n2", "n3")}

    run_node(res, image, names["boot"], net, vols["boot"],
             ["--security-opt", f"seccomp={deploy}/seccomp-io_uring.json"])
    run_node(res, image, names["n2"], net, vols["n2"],
             ["--security-opt", f"seccomp={deploy}/seccomp-no-io_uring.json"],
             ["--bootstrap", "boot:7700"])
    run_node(res, image, names["n3"], net, vols["n3"], ["--cpus", "1"],
             ["--bootstrap", "boot:7700"])

    all_names = list(names.values())
    sts = wait_mesh(all_names, 60)
    if not sts:
        for n in all_names:
            print(f"--- {n}\n{logs(n)}", flush=True)
    check(sts is not None, "every node lists the other two as verified, live peers")
    ids = {n: s["node_id"] for n, s in sts.items()}

    for n in all_names:
        url = admin_url(n, "/readyz")
        code = wait_for(lambda: url and http_get(url)[0] == 200, 30, interval=0.5)
        check(code, f"{n}: /readyz is 200 (through 127.0.0.1)")

    for n in all_names:
        r = docker("exec", n, "ringpeer", "ready", timeout=15)
        check(r.returncode == 0 and r.stdout.startswith("ready"),
              f"{n}: `ringpeer ready` (the image's health check) exits 0: {r.stdout.strip()!r}")
    nocurl = docker("exec", names["boot"], "sh", "-c", "command -v curl", timeout=15)
    check(nocurl.returncode != 0, "the image has no curl")

    # The build, three ways: --version in the image, status, /metrics.
    v = docker("run", "--rm", "--network", "none", "--entrypoint", "ringpeer", image, "--version")
    check(v.returncode == 0 and v.stdout.startswith("ringpeer ") and "protocol " in v.stdout,
          f"`ringpeer --version` in the image: {v.stdout.strip()!r}")
    version = v.stdout.split()[1]
    b = sts[names["boot"]].get("build", {})
    check(b.get("version") == version, f"status shows the build ({b})")
    code, body = http_get(admin_url(names["boot"], "/metrics"))
    check(code == 200 and f'ringpeer_build_info{{version="{version}"' in body,
          "/metrics has ringpeer_build_info with the version")

    t = {n: s["transport"] for n, s in sts.items()}
    check(t[names["boot"]] == "io_uring",
          f"boot runs io_uring under seccomp-io_uring.json ({t[names['boot']]})")
    check(t[names["n2"]] == "recvmmsg",
          f"n2 runs recvmmsg under seccomp-no-io_uring.json ({t[names['n2']]})")
    n2_log = logs(names["n2"])
    check("io_uring unavailable" in n2_log, "n2 logs why it fell back to recvmmsg")
    check(t[names["n3"]] in ("io_uring", "recvmmsg"),
          f"n3 under the engine's default seccomp profile runs {t[names['n3']]}")

    sh3 = sts[names["n3"]]["shards"]
    check(sh3 == 1, f"n3 (--cpus 1) runs 1 shard ({sh3}; the engine has {ncpu} CPUs)")
    # boot has no CPU limit: one shard per CPU of its affinity mask (what nproc counts).
    nproc = docker("exec", names["boot"], "nproc", timeout=15).stdout.strip()
    shb = sts[names["boot"]]["shards"]
    check(str(shb) == nproc, f"boot (no CPU limit) runs one shard per CPU ({shb}, nproc {nproc})")

    # A room created against boot, a message from a client in n2 to one in n3.
    made = docker("exec", names["n3"], "ringpeer", "room", "create", "lobby", "--json",
                  "--bootstrap", "boot:7700", "--data-dir", "/var/lib/ringpeer/admin-client",
                  timeout=60)
    check(made.returncode == 0, f"room create against boot exits 0: {made.stderr.strip()[-300:]!r}")
    room = json.loads(made.stdout)
    post = docker("exec", names["n2"], "ringpeer", "room", "post", room["writer_invite"],
                  "hello across containers", "--nick", "alice",
                  "--data-dir", "/var/lib/ringpeer/alice", timeout=60)
    check(post.returncode == 0, f"a client in n2 posts: {post.stderr.strip()[-300:]!r}")

    def read_in_n3():
        r = docker("exec", names["n3"], "ringpeer", "room", "read", room["reader_invite"],
                   "--json", "--data-dir", "/var/lib/ringpeer/bob", timeout=60)
        texts = [json.loads(l).get("text") for l in r.stdout.splitlines() if l.startswith("{")]
        return "hello across containers" in texts
    check(wait_for(read_in_n3, 30, interval=1), "a client in n3 reads the message")

    # docker stop: SIGTERM, the node stops within the grace period and exits 0.
    grace = 10
    t0 = time.monotonic()
    docker("stop", "-t", str(grace), names["n2"], timeout=60, check_rc=True)
    took = time.monotonic() - t0
    rc = docker("inspect", "-f", "{{.State.ExitCode}}", names["n2"]).stdout.strip()
    check(rc == "0" and took < grace,
          f"docker stop ends n2 in {took:.1f} s (grace {grace} s) with exit code {rc}")
    check("stopped" in logs(names["n2"]), "n2 logged its clean stop")

    docker("start", names["n2"], check_rc=True)
    st2 = wait_for(lambda: status(names["n2"]), 30, interval=0.5)
    check(st2 is not None and st2["node_id"] == ids[names["n2"]],
          "n2 restarted keeps its node id (the key on its volume)")
    check(wait_mesh(all_names, 60) is not None, "after the restart all three verify each other again")

    def healthy():
        return docker("inspect", "-f", "{{.State.Health.Status}}", names["boot"]).stdout.strip() \
            == "healthy"
    check(wait_for(healthy, 40, interval=1), "Docker reports boot healthy (HEALTHCHECK)")


def compose_checks(root, image, res):
    deploy = os.path.join(root, "deploy")
    env = dict(os.environ, RINGPEER_IMAGE=image, RINGPEER_UDP_PUBLISH="127.0.0.1:",
               RINGPEER_ADMIN_PUBLISH_1="127.0.0.1:", RINGPEER_ADMIN_PUBLISH_2="127.0.0.1:",
               RINGPEER_ADMIN_PUBLISH_3="127.0.0.1:",
               DOCKER_HOST=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    res.compose = (deploy, env)
    # Run from deploy/: Compose 1.x reads the seccomp file relative to the working directory.
    up = sh(["docker-compose", "-p", TAG, "up", "-d", "--no-build"], timeout=180, cwd=deploy,
            env=env)
    check(up.returncode == 0, "docker-compose up (deploy/docker-compose.yml)" +
          ("" if up.returncode == 0 else f": {up.stderr[-1500:]}"))
    names = []
    for svc in ("node1", "node2", "node3"):
        out = sh(["docker-compose", "-p", TAG, "ps", "-q", svc], timeout=60, cwd=deploy, env=env)
        cid = out.stdout.strip()
        name = docker("inspect", "-f", "{{.Name}}", cid).stdout.strip().lstrip("/")
        names.append(name)
    sts = wait_mesh(names, 60)
    if not sts:
        for n in names:
            print(f"--- {n}\n{logs(n)}", flush=True)
    check(sts is not None, "compose: every node lists the other two as verified, live peers")
    for n in names:
        url = admin_url(n, "/readyz")
        check(wait_for(lambda: url and http_get(url)[0] == 200, 30, interval=0.5),
              f"compose: {n} /readyz is 200")
    t = sts[names[0]]["transport"]
    check(t == "io_uring", f"compose: node1 runs io_uring under the compose file's profile ({t})")


def full_build(root, res):
    image = f"ringpeer-full:{TAG}"
    res.images.append(image)
    commit = sh(["git", "-C", root, "rev-parse", "--short=12", "HEAD"]).stdout.strip()
    t0 = time.monotonic()
    out = docker("build", "--network", "host", "-q", "-f", os.path.join(root, "deploy/Dockerfile"),
                 "--build-arg", f"GIT_COMMIT={commit}", "-t", image, root, timeout=3600,
                 env=dict(os.environ, DOCKER_BUILDKIT="1"))
    check(out.returncode == 0, f"full multi-stage build in {time.monotonic() - t0:.0f} s" +
          ("" if out.returncode == 0 else f": {out.stderr[-2000:]}"))
    v = docker("run", "--rm", "--network", "none", "--entrypoint", "ringpeer", image, "--version")
    check(v.returncode == 0 and commit in v.stdout, f"full image: {v.stdout.strip()!r}")


def main():
    binary, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not DOCKER or not shutil.which("dockerd"):
        print("SKIP: no docker client or dockerd (apt-get install docker.io)", flush=True)
        return SKIP
    tmp = tempfile.mkdtemp(prefix="ringpeer-containers-")
    engine = None
    res = Resources()
    try:
        if engine_answers():
            print("using the running Docker engine (left running)", flush=True)
        else:
            if os.geteuid() != 0:
                print("SKIP: no Docker engine runs and starting dockerd needs root", flush=True)
                return SKIP
            engine = OwnEngine(tmp)
            if not engine.wait():
                print("SKIP: dockerd did not start:\n" + engine.tail(), flush=True)
                return SKIP
            print("started dockerd for this test", flush=True)
        ncpu = int(docker("info", "--format", "{{.NCPU}}").stdout.strip() or "1")
        mb = sh(["bash", os.path.join(root, "deploy/make-base.sh"), "--no-pull", "debian:12-slim"]
                + (["debian:12"] if os.environ.get("RINGPEER_DOCKER_FULL_BUILD") == "1" else []),
                timeout=900, env=dict(os.environ, DOCKER=DOCKER))
        print(mb.stdout.strip(), flush=True)
        check(mb.returncode == 0, "base images present (deploy/make-base.sh)" +
              ("" if mb.returncode == 0 else f": {mb.stderr[-1500:]}"))
        # An engine that answers but cannot run a container (no privileges for namespaces
        # or cgroups, e.g. inside an unprivileged container) is a machine limit, not a bug.
        probe = docker("run", "--rm", "--network", "none", "debian:12-slim", "true", timeout=120)
        if probe.returncode != 0:
            print("SKIP: the engine cannot run a container here: " + probe.stderr.strip()[-1000:],
                  flush=True)
            return SKIP
        image = build_image(root, binary, tmp, res)
        containers_checks(root, image, res, ncpu)
        compose_checks(root, image, res)
        if os.environ.get("RINGPEER_DOCKER_FULL_BUILD") == "1":
            full_build(root, res)
        summary()
        return 0
    finally:
        try:
            res.cleanup()
            left = docker("ps", "-aq", "--filter", f"name={TAG}").stdout.split()
            if left:
                print(f"WARNING: containers left: {left}", flush=True)
        finally:
            if engine:
                engine.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
