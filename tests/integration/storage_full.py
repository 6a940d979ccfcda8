#!/usr/bin/env python3
"""A relay whose disk fills up, then frees (issue 11, item 1), on 127.0.0.1.

The relay's data directory is a small tmpfs this test mounts (root only; exit 77 with a
message where mounting is not allowed). A second node is its overlay peer, so that /readyz
has live peers and answers 200 while the store is fine.

Checks:
 1. messages posted before the disk is full are acked; /readyz answers 200;
 2. the tmpfs is filled with a filler file; posts are then refused acks (`room post` exits
    1), and within a few seconds:
    - the relay logged the failure once, naming the store's path and the error,
    - /readyz answers 503 and its body names the room storage,
    - `ringpeer status` shows the storage FAILING, `/metrics` counts failed commits and
      shows ringpeer_storage_failing 1;
 3. the filler is removed: without a restart, a new post is acked, /readyz answers 200
    again, the log says the store is writable again, ringpeer_storage_failing is 0;
 4. the relay is SIGKILLed and restarted on the same data directory: a fresh reader reads
    every message that was ever acked (nothing acked was lost).

usage: storage_full.py RINGPEER_BINARY
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from harness import Cluster, Node, check, free_tcp_port, summary, wait_for
from rooms import run

SKIP = 77
TMPFS_BYTES = 4 << 20
DETECT_S = 10.0


def http(addr, path):
    """(status, body) of GET http://addr/path."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


def metric(addr, name):
    """Sum of a metric's samples."""
    _, body = http(addr, "/metrics")
    total = 0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def fill(path):
    """Writes a filler file until the filesystem refuses (ENOSPC); returns its size."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512):  # big chunks, then the last partial pages
            for _ in range(2048):
                try:
                    n = os.write(fd, b"\0" * size)
                except OSError:
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    b = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        print("skipped: mounting a tmpfs needs root")
        return SKIP
    with Cluster(b) as c:
        mnt = os.path.join(c.tmp, "small")
        os.makedirs(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700",
                            "tmpfs", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"skipped: cannot mount a tmpfs ({r.stderr.strip()})")
            return SKIP
        try:
            return scenario(b, c, mnt)
        finally:
            for n in c.nodes:
                n.stop(signal.SIGKILL)
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def scenario(b, c, mnt):
    d = lambda name: os.path.join(c.tmp, name)
    peer = c.start("peer", ["--listen", "127.0.0.1:0", "--shards", "1", "--admin", "off"])
    boot_peer = f"127.0.0.1:{peer.port()}"
    admin = f"127.0.0.1:{free_tcp_port()}"
    data = os.path.join(mnt, "relay")

    def start_relay(port):
        listen = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 3.0
        while True:
            # Its log stays outside the data directory: that is on the tmpfs the test fills.
            relay = Node(b, data, ["--listen", listen, "--shards", "1", "--admin", admin,
                                   "--bootstrap", boot_peer, "--log-format", "json"],
                         log_path=d("relay.log"))
            c.nodes.append(relay)
            try:
                return relay, relay.port()
            except RuntimeError:
                relay.stop(signal.SIGKILL)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    relay, port = start_relay(0)
    boot = f"127.0.0.1:{port}"
    check(wait_for(lambda: http(admin, "/readyz")[0] == 200, 15.0),
          "/readyz answers 200 with a peer and a writable store")
    made = run(b, ["room", "create", "full", "--bootstrap", boot, "--json"], d("admin"))
    check(made.returncode == 0, f"room create: {made.stderr.strip()!r}")
    room = json.loads(made.stdout)
    writer, reader = room["writer_invite"], room["reader_invite"]
    acked = []
    before = [f"before {i}" for i in range(5)]
    p = run(b, ["room", "post", writer, "-", "--nick", "w"], d("w"),
            stdin="".join(t + "\n" for t in before))
    check(p.returncode == 0, f"5 messages acked before the disk fills: {p.stderr.strip()!r}")
    acked += before

    filler = os.path.join(mnt, "filler")
    size = fill(filler)
    st = os.statvfs(mnt)
    print(f"info: filler {size} bytes; {st.f_bavail * st.f_frsize} bytes left on the tmpfs")
    # LMDB may still find free pages inside its file for a commit or two: post until one
    # is refused (each post waits 3 s for its ack).
    refused = None
    pad = "x" * 120
    for i in range(30):
        text = f"during {i} {pad}"
        p = run(b, ["room", "post", writer, text, "--nick", "w", "--timeout", "3"], d("w"))
        if p.returncode == 0:
            acked.append(text)
        else:
            refused = text
            print(f"info: post {i} refused: {p.stderr.strip()!r}")
            break
    check(refused is not None and "acknowledged" in p.stderr, f"with the disk full a post is refused an ack "
                               f"({len(acked) - len(before)} acked first from free pages)")

    def failing_seen():
        code, body = http(admin, "/readyz")
        return code == 503 and "room storage" in body and body
    body = wait_for(failing_seen, DETECT_S)
    if not body:
        print("info: relay log tail:\n" + "\n".join(relay.read_log().splitlines()[-15:]))
        print("info: readyz: " + repr(http(admin, "/readyz")))
        print("info: storage metrics: " + "; ".join(
            l for l in http(admin, "/metrics")[1].splitlines() if "storage" in l and
            not l.startswith("#")))
    check(bool(body), f"/readyz fails with the reason: {str(body).strip()!r}")
    log = relay.read_log()
    errs = [json.loads(l) for l in log.splitlines()
            if l.startswith("{") and "room storage cannot write" in l]
    check(len(errs) == 1, f"the failure is logged once ({len(errs)} lines)")
    e = errs[0] if errs else {}
    check(mnt in str(e.get("error", "")) and ("full" in str(e.get("error", "")) or
                                               "space" in str(e.get("error", ""))),
          f"the log line names the path and the error: {e.get('error')!r}")
    status = subprocess.run([b, "status", "--data-dir", data], capture_output=True,
                            text=True, timeout=5).stdout
    line = next((l for l in status.splitlines() if l.startswith("storage")), "")
    check("FAILING" in line, f"ringpeer status shows it: {line!r}")
    sj = relay.status() or {}
    check(sj.get("storage", {}).get("ok") is False and sj["storage"].get("error"),
          f"status --json: {sj.get('storage')}")
    fails = metric(admin, "ringpeer_storage_commit_failures_total")
    check(fails > 0 and metric(admin, "ringpeer_storage_failing") == 1,
          f"/metrics counts {fails} failed commits and ringpeer_storage_failing is 1")

    # Space comes back: no restart.
    os.unlink(filler)
    t0 = time.monotonic()
    p = run(b, ["room", "post", writer, "after 0", "--nick", "w", "--timeout", "15"], d("w"))
    check(p.returncode == 0, f"after space is freed a post is acked without a restart "
                             f"({time.monotonic() - t0:.1f} s): {p.stderr.strip()!r}")
    acked.append("after 0")
    check(wait_for(lambda: http(admin, "/readyz")[0] == 200, DETECT_S),
          "/readyz answers 200 again")
    check(wait_for(lambda: "room storage writable again" in relay.read_log(), DETECT_S),
          "the recovery is logged")
    check(metric(admin, "ringpeer_storage_failing") == 0, "ringpeer_storage_failing is 0")
    commits = metric(admin, "ringpeer_storage_commits_total")
    check(commits > 0, f"/metrics counts {commits} durable batches (the writer thread's)")
    check(relay.proc.poll() is None, "the relay ran throughout (no restart)")

    # Nothing acked was lost: SIGKILL, restart, a fresh reader.
    relay.stop(signal.SIGKILL)
    relay, port2 = start_relay(port)
    check(port2 == port, "relay restarted on the same data directory and port")
    rd = run(b, ["room", "read", reader, "--json"], d("fresh-reader"))
    got = [json.loads(l)["text"] for l in rd.stdout.splitlines() if l.startswith("{")]
    missing = [t[:12] for t in acked if t not in got]
    check(rd.returncode == 0 and not missing,
          f"every acked message survives ({len(acked)} acked, {len(got)} read, missing "
          f"{missing}): {rd.stderr.strip()!r}")
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
