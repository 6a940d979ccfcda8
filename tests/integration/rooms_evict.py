#!/usr/bin/env python3
"""Eviction end to end as processes on 127.0.0.1 (issue 5): a relay, the admin's
`ringpeer room evict`, and two writers (each its own member key, `room create --writers 2`)
plus a reader.

Checks: `room evict INVITE` rotates to key epoch 1 and prints re-issued invites for the
writer and the reader that stay; the evicted writer's post is not acknowledged and is not
seen by the others (a live follower, and a full read); the evicted writer cannot read a
message posted after the rotation, but still reads what came before; the writer that
stays posts with its re-issued invite and it, and the reader, read that message; a
second eviction of the same member is refused with a clear line.

usage: rooms_evict.py RINGPEER_BINARY [--shards N]
"""
import argparse
import json
import os
import signal
import time

from harness import Cluster, check, summary, wait_for
from rooms import Follower, run


def texts_of(result):
    return [json.loads(l)["text"] for l in result.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shards", default="2")
    a = ap.parse_args()
    b = a.binary
    followers = []
    t_start = time.monotonic()
    with Cluster(b) as c:
        relay = None
        try:
            relay = c.start("relay", ["--listen", "127.0.0.1:0", "--shards", a.shards,
                                      "--admin", "off"])
            boot = f"127.0.0.1:{relay.port()}"
            d = lambda name: os.path.join(c.tmp, name)

            made = run(b, ["room", "create", "evict-me", "--bootstrap", boot, "--writers", "2",
                           "--json"], d("admin"))
            check(made.returncode == 0, f"room create --writers 2 exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            alice, reader = room["writer_invite"], room["reader_invite"]
            check(len(room["more_writer_invites"]) == 1, "create prints a second writer invite")
            bob = room["more_writer_invites"][0]
            check(len({alice, bob, reader}) == 3, "three distinct invites")

            p = run(b, ["room", "post", alice, "before the rotation", "--nick", "alice"],
                    d("alice"))
            check(p.returncode == 0, f"alice posts before the rotation: {p.stderr.strip()!r}")
            p = run(b, ["room", "post", bob, "bob was here", "--nick", "bob"], d("bob"))
            check(p.returncode == 0, f"bob posts before the rotation: {p.stderr.strip()!r}")

            t0 = time.monotonic()
            ev = run(b, ["room", "evict", alice, "--json", "--timeout", "5"], d("admin"))
            took = time.monotonic() - t0
            check(ev.returncode == 0, f"room evict exits 0 ({took:.1f} s): "
                                      f"{ev.stderr.strip()!r}")
            out = json.loads(ev.stdout)
            check(out["epoch"] == 1 and out["room"] == room["room"],
                  f"the rotation is key epoch 1 of the room: {out['epoch']}")
            inv = {i["write"]: i["invite"] for i in out["invites"]}
            check(len(out["invites"]) == 2 and True in inv and False in inv,
                  "re-issued invites: one writer (bob), one reader")
            bob2, reader2 = inv[True], inv[False]
            check(bob2 != bob and reader2 != reader, "the re-issued invites are new")
            with open(room["admin_key"]) as f:
                admin_file = f.read()
            check(out["evicted"] in admin_file and alice not in admin_file and
                  bob2 in admin_file, "the admin key file now lists bob's new invite, "
                                      "and alice as evicted")

            # Bob's re-issued invite, live, from before alice tries to post.
            fb = Follower(b, bob2, d("bob-follow/dir"))
            followers.append(fb)
            # Alice's updates come under the old key, before the rotation point: the
            # follower holds them until the rotation head names them, and prints them then.
            check(wait_for(lambda: fb.texts() == ["before the rotation", "bob was here"],
                           timeout=10),
                  f"a follower with bob's re-issued invite prints the history: {fb.texts()}")

            t0 = time.monotonic()
            ap_ = run(b, ["room", "post", alice, "from the evicted", "--nick", "alice",
                          "--timeout", "3"], d("alice"))
            took = time.monotonic() - t0
            check(ap_.returncode == 1 and took < 8,
                  f"the evicted writer's post is refused or never acked ({took:.1f} s): "
                  f"{ap_.stderr.strip()!r}")

            p = run(b, ["room", "post", bob2, "after the rotation", "--nick", "bob"], d("bob"))
            check(p.returncode == 0, f"bob posts with the re-issued invite: {p.stderr.strip()!r}")
            check(wait_for(lambda: "after the rotation" in fb.texts(), timeout=5),
                  "bob's follower sees the post-rotation message live")
            # The rotation's message arrived after alice's attempt: had the relay taken it,
            # the follower would hold it by now.
            check(fb.texts() == ["before the rotation", "bob was here", "after the rotation"],
                  f"bob's follower never saw the evicted writer's post: {fb.texts()}")

            rb = run(b, ["room", "read", bob2, "--json"], d("bob-read"))
            tb = texts_of(rb)
            check(rb.returncode == 0 and tb == ["before the rotation", "bob was here",
                                                "after the rotation"],
                  f"bob reads the whole room, without the evicted post: {tb}")
            rr = run(b, ["room", "read", reader2, "--json"], d("reader-read"))
            check(rr.returncode == 0 and texts_of(rr) == tb,
                  f"the reader's re-issued invite reads the same: {texts_of(rr)}")
            # The old reader invite names the same member key: once the relay hands it the
            # new epoch it reads on too (eviction is per member, not per invite text).
            ro = run(b, ["room", "read", reader, "--json"], d("reader-old"))
            check(ro.returncode == 0 and "after the rotation" in texts_of(ro),
                  f"the reader's old invite learns the new epoch from the relay: {texts_of(ro)}")

            ra = run(b, ["room", "read", alice, "--json"], d("alice-read"))
            ta = texts_of(ra)
            check(ra.returncode == 0 and "after the rotation" not in ta and
                  "before the rotation" in ta,
                  f"the evicted writer reads the history before the rotation but nothing "
                  f"after it: {ta} {ra.stderr.strip()!r}")

            again = run(b, ["room", "evict", alice], d("admin"))
            check(again.returncode == 1 and "already evicted" in again.stderr and
                  again.stderr.count("\n") == 1,
                  f"evicting the same member again: one clear line: {again.stderr.strip()!r}")
            check(fb.stop(signal.SIGTERM) == 0, "bob's follower exits 0 on SIGTERM")
        except Exception:
            if relay is not None:
                print(relay.read_log())
            raise
        finally:
            for f in followers:
                f.stop(signal.SIGKILL)
    print(f"rooms_evict: {time.monotonic() - t_start:.1f} s", flush=True)
    summary()


if __name__ == "__main__":
    main()
