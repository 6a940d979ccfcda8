#!/usr/bin/env python3
"""Clean restarts: a node stopped with SIGTERM releases its port before its process exits,
so the same node started again at once binds it, 20 times in a row, with no bind retry
allowed (--bind-retry-ms 0). A peer keeps pinging it throughout, so receives are in flight
in the kernel when each stop comes. Then the retry: while another socket holds the port, a
node started with a retry window waits and binds once the port is freed; with no window it
fails at once with one clear line.

usage: restart.py RINGPEER_BINARY [--transport io_uring|recvmmsg] [--rounds N]
"""
import argparse
import os
import socket
import subprocess
import sys
import time

from harness import Cluster, check, summary, wait_for


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--transport", default="io_uring")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    with Cluster(a.binary) as c:
        port = free_port()
        args = ["--listen", f"127.0.0.1:{port}", "--shards", "2", "--admin", "off",
                "--transport", a.transport, "--bind-retry-ms", "0"]
        target = c.start("target", args)
        st = target.wait_ready()
        check(st["transport"] == a.transport, f"target runs on {a.transport}")
        peer = c.start("peer", ["--listen", "127.0.0.1:0", "--admin", "off",
                                "--bootstrap", f"127.0.0.1:{port}"])
        peer.wait_ready()
        ok_rounds = 0
        worst = 0.0
        failures = []
        for r in range(a.rounds):
            rc, took = target.stop()
            worst = max(worst, took)
            if rc != 0:
                failures.append(f"round {r}: exit {rc}")
                break
            # Started again at once: no wait, no retry window.
            target = c.start(f"target", args)
            try:
                st = target.wait_ready(timeout=10)
            except RuntimeError as e:
                failures.append(f"round {r}: {str(e).strip()[-300:]}")
                break
            if st["listen"][0] != f"127.0.0.1:{port}":
                failures.append(f"round {r}: listens on {st['listen']}")
                break
            ok_rounds += 1
        check(not failures and ok_rounds == a.rounds,
              f"{ok_rounds}/{a.rounds} immediate restarts bound the port "
              f"(slowest stop {worst:.2f} s) {failures}")

        # The restarted node still works: the peer verifies it again.
        def peer_sees_target():
            s = peer.status()
            return s and any(p["verified"] and p["address"] == f"127.0.0.1:{port}"
                             for p in s["peers"])
        check(wait_for(peer_sees_target, 15), "the peer verifies the restarted node")
        rc, _ = target.stop()
        check(rc == 0, "the last stop exits 0")

        # Retry window: the port is held by a plain socket, freed 0.5 s after the start.
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", port))
        t0 = time.monotonic()
        waiting = c.start("waiting", ["--listen", f"127.0.0.1:{port}", "--admin", "off",
                                      "--transport", a.transport, "--bind-retry-ms", "4000"])
        time.sleep(0.5)  # the interval under test: the port stays busy this long
        holder.close()
        st = waiting.wait_ready(timeout=10)
        check(st["listen"][0] == f"127.0.0.1:{port}" and time.monotonic() - t0 >= 0.5,
              "a node started while the port was busy waited and bound it once it was free")
        waiting.stop()

        # No window: a busy port is one clear line at once.
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", port))
        try:
            out = subprocess.run([a.binary, "serve", "--data-dir", os.path.join(c.tmp, "busy"),
                                  "--listen", f"127.0.0.1:{port}", "--admin", "off",
                                  "--bind-retry-ms", "300"],
                                 capture_output=True, text=True, timeout=10)
        finally:
            holder.close()
        check(out.returncode == 1 and "in use" in out.stderr and
              "still in use after" in out.stderr and out.stderr.count("\n") == 1,
              f"a port that stays busy is one clear line after the window: {out.stderr.strip()!r}")
    summary()


if __name__ == "__main__":
    sys.exit(main())
