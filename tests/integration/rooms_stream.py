#!/usr/bin/env python3
"""A long stream piped into `ringpeer room post -` (issue 16): the relay asks the poster to
slow down (default 100 updates/s per member), the client library waits and paces itself,
and every line arrives, in order, as its own message; the command exits 0.

Also: a relay with `--room-publish-rate` lets a member go faster (the setting is the
relay's), and with the relay gone the post fails within its timeout with one clear line.

usage: rooms_stream.py RINGPEER_BINARY [--lines N]
"""
import argparse
import json
import os
import signal
import time

from harness import Cluster, check, summary, wait_for
from rooms import Follower, run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--lines", type=int, default=2000)
    a = ap.parse_args()
    b = a.binary
    n = a.lines
    with Cluster(b) as c:
        relay = c.start("relay", ["--listen", "127.0.0.1:0", "--admin", "off"])
        try:
            boot = f"127.0.0.1:{relay.port()}"
            d = lambda name: os.path.join(c.tmp, name)
            made = run(b, ["room", "create", "stream", "--bootstrap", boot, "--json"], d("admin"))
            check(made.returncode == 0, f"room create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            w, r = room["writer_invite"], room["reader_invite"]

            follower = Follower(b, r, d("follower/dir"))
            # It joins while the poster does; the room keeps the last 1000 messages in its
            # state and the first 1000 lines take over 8 s at the default rate, so it
            # prints every line whichever of the two joins first.
            lines = "".join(f"line {i:05d} of the log\n" for i in range(n))
            t0 = time.monotonic()
            p = run(b, ["room", "post", w, "-", "--nick", "logger", "--timeout", "20"],
                    d("poster"), stdin=lines, timeout=300)
            took = time.monotonic() - t0
            check(p.returncode == 0,
                  f"{n} lines piped into `room post -` exit 0 in {took:.1f} s "
                  f"({n / took:.0f} lines/s; relay default 100/s per member): "
                  f"{p.stderr.strip()[-300:]!r}")
            want = [f"line {i:05d} of the log" for i in range(n)]
            seen = lambda: [t for t in follower.texts() if t.startswith("line ")]
            wait_for(lambda: len(seen()) >= n, timeout=30)
            follower.stop(signal.SIGTERM)
            check(seen() == want, f"a follower printed all {n} lines, each its own message, in "
                                  f"order ({len(seen())} printed)")
            rd = run(b, ["room", "read", r, "--json"], d("reader"), timeout=120)
            texts = [json.loads(l)["text"] for l in rd.stdout.splitlines() if l.startswith("{")]
            # The chat state keeps the last 1000 messages: compare what it keeps.
            keep = want[-1000:]
            check(texts == keep,
                  f"a late reader sees the last {len(keep)} of {n} lines, each its own message, "
                  f"in order ({len(texts)} read; first {texts[:1]}, last {texts[-1:]})")
        except Exception:
            print(relay.read_log())
            raise

    # A relay that allows more: its members go faster.
    with Cluster(b) as c:
        relay = c.start("relay", ["--listen", "127.0.0.1:0", "--admin", "off",
                                  "--room-publish-rate", "1000"])
        boot = f"127.0.0.1:{relay.port()}"
        d = lambda name: os.path.join(c.tmp, name)
        room = json.loads(run(b, ["room", "create", "fast", "--bootstrap", boot, "--json"],
                              d("admin")).stdout)
        m = 500
        lines = "".join(f"fast {i}\n" for i in range(m))
        t0 = time.monotonic()
        p = run(b, ["room", "post", room["writer_invite"], "-"], d("poster"), stdin=lines,
                timeout=120)
        took = time.monotonic() - t0
        check(p.returncode == 0, f"with --room-publish-rate 1000, {m} lines in {took:.1f} s")
        relay.stop()
        p = run(b, ["room", "post", room["writer_invite"], "-", "--timeout", "3"], d("poster"),
                stdin="nobody hears this\n", timeout=60)
        check(p.returncode == 1 and p.stderr.count("\n") == 1,
              f"relay gone: exit 1 with one line: {p.stderr.strip()!r}")
    summary()


if __name__ == "__main__":
    main()
