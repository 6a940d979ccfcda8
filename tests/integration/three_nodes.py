#!/usr/bin/env python3
"""Three nodes on 127.0.0.1, the second and third bootstrapped from the first: within 5 s
each lists the other two as live, verified peers with their correct node ids. Then the
CLI's error paths: a port in use, a bad flag, an unwritable data directory, SIGTERM exit
within 2 s.

usage: three_nodes.py RINGPEER_BINARY [--shards N] [--transport KIND] [--steering on|off]
"""
import argparse
import os
import subprocess
import sys
import time

from harness import Cluster, check, summary, wait_for


def peers_ok(nodes):
    statuses = [n.status() for n in nodes]
    if any(s is None for s in statuses):
        return False
    ids = [s["node_id"] for s in statuses]
    for i, s in enumerate(statuses):
        live = {p["id"] for p in s["peers"] if p["verified"] and p["live"]}
        want = {ids[j] for j in range(len(nodes)) if j != i}
        if not want <= live:
            return False
    return statuses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shards", default="1")
    ap.add_argument("--transport", default="auto")
    ap.add_argument("--steering", default="on")
    a = ap.parse_args()
    common = ["--listen", "127.0.0.1:0", "--shards", a.shards, "--transport", a.transport,
              "--steering", a.steering]
    with Cluster(a.binary) as c:
        first = c.start("n1", common)
        port = first.port()
        boot = ["--bootstrap", f"127.0.0.1:{port}"]
        second = c.start("n2", common + boot)
        third = c.start("n3", common + boot)
        second.wait_ready()
        third.wait_ready()
        t0 = time.monotonic()
        statuses = wait_for(lambda: peers_ok([first, second, third]), timeout=5.0)
        took = time.monotonic() - t0
        check(bool(statuses), f"all three list the other two as live, verified peers "
                              f"({took:.2f} s, shards={a.shards}, transport={a.transport}, "
                              f"steering={a.steering})")
        for s in statuses:
            check(s["shards"] == int(a.shards), "status reports the shard count")
            addrs = {p["address"] for p in s["peers"] if p["verified"]}
            check(all(x.startswith("127.0.0.1:") for x in addrs), "peer addresses are loopback")
        if int(a.shards) > 1 and a.steering == "off":
            moved = sum(sc["mailbox_in"] for s in statuses for sc in s["shard_counters"])
            print(f"info: {moved} datagrams crossed a mailbox")

        # Text status for people.
        text = subprocess.run([a.binary, "status", "--data-dir", first.data_dir],
                              capture_output=True, text=True, timeout=5)
        check(text.returncode == 0 and "verified" in text.stdout and
              statuses[0]["node_id"] in text.stdout, "text status shows id and verified peers")

        # A port in use: one clear line, non-zero exit.
        dup = subprocess.run([a.binary, "serve", "--data-dir", os.path.join(c.tmp, "dup"),
                              "--listen", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=10)
        check(dup.returncode != 0 and "in use" in dup.stderr and dup.stderr.count("\n") == 1,
              f"port in use is one clear line: {dup.stderr.strip()!r}")

        # A bad flag.
        bad = subprocess.run([a.binary, "serve", "--no-such-flag"], capture_output=True,
                             text=True, timeout=5)
        check(bad.returncode == 2 and "unknown flag --no-such-flag" in bad.stderr,
              f"bad flag is a usage error: {bad.stderr.strip()!r}")

        # An unwritable data directory (a regular file stands in: root can write anywhere).
        blocker = os.path.join(c.tmp, "blocker")
        open(blocker, "w").close()
        unw = subprocess.run([a.binary, "serve", "--data-dir", blocker, "--port", "0"],
                             capture_output=True, text=True, timeout=5)
        check(unw.returncode == 1 and "not a directory" in unw.stderr,
              f"unusable data dir is a clear error: {unw.stderr.strip()!r}")

        # Status against a directory with no node.
        none = subprocess.run([a.binary, "status", "--data-dir", os.path.join(c.tmp, "nothing")],
                              capture_output=True, text=True, timeout=5)
        check(none.returncode == 1 and "no ringpeer node is running" in none.stderr,
              "status without a node says so")

        # io_uring unavailable (simulated): auto falls back with one line; io_uring is an error.
        env = {"RINGPEER_TEST_DISABLE_IO_URING": "1"}
        fb = c.start("fallback", ["--listen", "127.0.0.1:0", "--admin", "off"], env=env)
        st = fb.wait_ready()
        log = fb.read_log()
        check(st["transport"] == "recvmmsg" and log.count("io_uring unavailable") == 1,
              "without io_uring the node says so once and runs on recvmmsg")
        fb.stop()
        strict = subprocess.run([a.binary, "serve", "--data-dir", os.path.join(c.tmp, "strict"),
                                 "--listen", "127.0.0.1:0", "--transport", "io_uring",
                                 "--admin", "off"],
                                capture_output=True, text=True, timeout=10,
                                env=dict(os.environ, **env))
        check(strict.returncode == 1 and "io_uring" in strict.stderr and
              strict.stderr.strip().count("\n") == 0,
              f"--transport io_uring without io_uring is one clear error: {strict.stderr.strip()!r}")

        # SIGTERM: clean exit within 2 s, control socket removed.
        rc, secs = third.stop()
        check(rc == 0 and secs < 2.0, f"SIGTERM exits 0 in {secs:.2f} s")
        check(not os.path.exists(os.path.join(third.data_dir, "control.sock")),
              "control socket removed on exit")
    summary()


if __name__ == "__main__":
    sys.exit(main())
