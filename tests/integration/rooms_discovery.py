#!/usr/bin/env python3
"""Rooms found through the DHT (issue 5, item 2): relays and members announce the rooms
they serve as provider records under the room id, and look up each room's providers.

Three relays form one overlay on 127.0.0.1 (r2 joins through r1, r3 through r2). The
room's invites name an address where nothing listens, so the only way between the two
halves of the room is what the DHT says:
  - alice posts through r1 (`--bootstrap r1`): r1 serves the room and announces it;
  - bob follows through r3 (`--bootstrap r3`): r3 serves the room from bob's join, finds
    r1 among the room's providers, and connects to it; bob gets alice's messages, the
    history and the live ones, and alice's client, which looks up providers too, gets
    bob's;
  - `ringpeer providers ROOM_ID` on r2 (which never served the room) lists r1 and r3.

usage: rooms_discovery.py RINGPEER_BINARY
"""
import argparse
import json
import os
import signal
import time

from harness import Cluster, check, summary, wait_for
from rooms import Follower, run

NOWHERE = "127.0.0.1:9"  # the discard port: nothing answers there


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    a = ap.parse_args()
    b = a.binary
    followers = []
    with Cluster(b) as c:
        try:
            r1 = c.start("r1", ["--listen", "127.0.0.1:0", "--admin", "off"])
            p1 = r1.port()
            r2 = c.start("r2", ["--listen", "127.0.0.1:0", "--admin", "off",
                                "--bootstrap", f"127.0.0.1:{p1}"])
            p2 = r2.port()
            r3 = c.start("r3", ["--listen", "127.0.0.1:0", "--admin", "off",
                                "--bootstrap", f"127.0.0.1:{p2}"])
            p3 = r3.port()
            relays = [r1, r2, r3]

            def overlay_formed():
                sts = [r.status() for r in relays]
                return all(s is not None and s["live_peers"] >= 2 for s in sts)
            check(wait_for(overlay_formed, 15), "the three relays see each other")

            d = lambda name: os.path.join(c.tmp, name)
            made = run(b, ["room", "create", "found", "--bootstrap", NOWHERE, "--json"],
                       d("admin"))
            check(made.returncode == 0, f"room create: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            w, r = room["writer_invite"], room["reader_invite"]
            room_id = room["room"]

            t0 = time.monotonic()
            p = run(b, ["room", "post", w, "hello via r1", "--nick", "alice",
                        "--bootstrap", f"127.0.0.1:{p1}"], d("alice"))
            check(p.returncode == 0, f"alice's post is acked by r1 ({time.monotonic() - t0:.1f} s):"
                                     f" {p.stderr.strip()!r}")

            bob = Follower(b, r, d("bob/dir"), extra=["--bootstrap", f"127.0.0.1:{p3}"])
            followers.append(bob)
            t0 = time.monotonic()
            got = wait_for(lambda: "hello via r1" in bob.texts(), 20)
            check(got, f"bob, joined through r3 only, gets alice's message from r1 "
                       f"({time.monotonic() - t0:.1f} s): {bob.texts()}")

            # Live, both ways: alice's client (r1's side) and bob's (r3's side).
            alice = Follower(b, r, d("alice-reader/dir"),
                             extra=["--bootstrap", f"127.0.0.1:{p1}"])
            followers.append(alice)
            check(wait_for(lambda: "hello via r1" in alice.texts(), 15), "alice's follower is up")
            p = run(b, ["room", "post", w, "bob's side speaks", "--nick", "bob",
                        "--bootstrap", f"127.0.0.1:{p3}"], d("bob-writer"))
            check(p.returncode == 0, f"a post through r3 is acked: {p.stderr.strip()!r}")
            check(wait_for(lambda: "bob's side speaks" in alice.texts(), 15),
                  f"it reaches alice's follower on r1's side: {alice.texts()}")
            p = run(b, ["room", "post", w, "live from r1", "--nick", "alice",
                        "--bootstrap", f"127.0.0.1:{p1}"], d("alice"))
            check(p.returncode == 0, "a second post through r1 is acked")
            check(wait_for(lambda: "live from r1" in bob.texts(), 15),
                  f"and a live one reaches bob on r3's side: {bob.texts()}")

            # The DHT's view: the providers of the room id, asked from r2.
            def providers():
                out = r2.run_cli(["providers", room_id, "--json"])
                if out is None:
                    return None
                ports = {int(pv["address"].rsplit(":", 1)[1]) for pv in out.get("providers", [])}
                return ports if {p1, p3} <= ports else None
            ports = wait_for(providers, 15, 0.5)
            check(ports, f"r2 finds r1 and r3 as providers of the room ({ports})")
        except Exception:
            for n in c.nodes:
                print(n.read_log()[-3000:])
            raise
        finally:
            for f in followers:
                f.stop(signal.SIGKILL)
    summary()


if __name__ == "__main__":
    main()
