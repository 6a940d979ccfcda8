#!/usr/bin/env python3
"""A relay cannot be made to flood an address that never proved it receives (issue 11,
item 3), on 127.0.0.0/8.

A relay serves a room with a log of 150 messages. `ringpeer-hostile reflect` then sends,
from SOURCES sockets each bound to its own 127.0.x.y address, a RoomJoin, a RoomHeads
(claiming an empty log and no key epoch: the relay would send its epochs and heads) and a
RoomSync (asking for the whole log) in turn every 100 ms for 10 s, and listens 2 s more.
The silent sources never answer anything: they stand for forged source addresses, whose
owner never sent a byte. Two more sources answer the relay's pings (they receive what is
sent to them): the control that shows the relay does serve an address once it is proved.

Checks:
 1. every silent source received at most 3x the bytes it sent (over the whole 12 s);
 2. the answering sources received more than 3x what they sent (the room's log and
    epochs: the measurement can see amplification where it is allowed);
 3. the relay still works: a post is acked and a fresh reader reads the whole log.

usage: reflection.py RINGPEER_BINARY RINGPEER_HOSTILE_BINARY [--shards N]
"""
import argparse
import json
import os
import re
import subprocess

from harness import Cluster, check, summary
from rooms import run

SOURCES = 8
ANSWERING = 2
MESSAGES = 150


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("hostile")
    ap.add_argument("--shards", default="1")
    a = ap.parse_args()
    b = a.binary
    with Cluster(b) as c:
        d = lambda name: os.path.join(c.tmp, name)
        relay = c.start("relay", ["--listen", "127.0.0.1:0", "--shards", a.shards,
                                  "--admin", "off"])
        boot = f"127.0.0.1:{relay.port()}"
        made = run(b, ["room", "create", "reflect", "--bootstrap", boot, "--json"], d("admin"))
        check(made.returncode == 0, f"room create: {made.stderr.strip()!r}")
        room = json.loads(made.stdout)
        texts = [f"log {i} " + "y" * 60 for i in range(MESSAGES)]
        p = run(b, ["room", "post", room["writer_invite"], "-", "--nick", "w"], d("w"),
                stdin="".join(t + "\n" for t in texts))
        check(p.returncode == 0, f"{MESSAGES} messages acked: {p.stderr.strip()!r}")

        r = subprocess.run([a.hostile, "reflect", "--target", boot, "--room", room["room"],
                            "--sources", str(SOURCES + ANSWERING), "--answer-probes",
                            str(ANSWERING), "--seconds", "10"],
                           capture_output=True, text=True, timeout=60)
        print(r.stdout, end="")
        check(r.returncode == 0, f"ringpeer-hostile ran: {r.stderr.strip()!r}")
        rows = [dict(re.findall(r"(\w+)=(\S+)", l)) | {"kind": l.split()[2]}
                for l in r.stdout.splitlines() if l.startswith("source ")]
        silent = [x for x in rows if x["kind"] == "silent"]
        answering = [x for x in rows if x["kind"] == "answering"]
        check(len(silent) == SOURCES and all(int(x["sent"]) > 0 for x in silent),
              f"{SOURCES} silent sources sent joins, heads and syncs")
        worst = max(int(x["received"]) / int(x["sent"]) for x in silent)
        check(all(int(x["received"]) <= 3 * int(x["sent"]) for x in silent),
              f"no silent source received more than 3x what it sent (worst {worst:.2f}x; "
              f"{sum(int(x['sent']) for x in silent)} bytes sent, "
              f"{sum(int(x['received']) for x in silent)} received in all)")
        best = min(int(x["received"]) / max(1, int(x["sent"])) for x in answering)
        check(len(answering) == ANSWERING and best > 3,
              f"the sources that answer the relay's probes are served beyond 3x "
              f"(the least {best:.1f}x): the limit is the proof, not a blanket cut")

        p = run(b, ["room", "post", room["writer_invite"], "after", "--nick", "w"], d("w"))
        check(p.returncode == 0, f"the relay still acks a post: {p.stderr.strip()!r}")
        rd = run(b, ["room", "read", room["reader_invite"], "--json"], d("reader"))
        got = [json.loads(l)["text"] for l in rd.stdout.splitlines() if l.startswith("{")]
        check(rd.returncode == 0 and got == texts + ["after"],
              f"a fresh reader reads the whole log ({len(got)} of {MESSAGES + 1})")
    summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
