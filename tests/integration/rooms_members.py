#!/usr/bin/env python3
"""Membership from the command line as processes on 127.0.0.1 (issue 17): a relay, the
admin's `ringpeer room invite` and `room members`, and members joining with short invites.

Checks: `room invite` prints a short invite of at most 200 characters; a member joins
with it through the relay alone (the genesis and key epochs come from the relay) and
reads the history written before it was added; a member added with `--no-history` reads
what follows but not what came before; a `--read` member cannot post; `room members`
lists every member of the current epoch with its access; `room invite --long` prints a
self-contained invite; `room evict` of a member added by a short invite rotates again:
it no longer reads what follows, the others do.

With the ringpeer-hostile binary: a short invite whose only relay is a liar (it serves
the real genesis but a key epoch the admin did not sign) fails with a line saying the
relay was refused; the same invite with an honest relay added reads the room.

usage: rooms_members.py RINGPEER_BINARY [HOSTILE_BINARY]
"""
import argparse
import json
import os
import subprocess
import time

from harness import Cluster, check, summary
from rooms import run


def texts_of(result):
    return [json.loads(l)["text"] for l in result.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("hostile", nargs="?")
    a = ap.parse_args()
    b = a.binary
    t_start = time.monotonic()
    with Cluster(b) as c:
        relay = None
        try:
            relay = c.start("relay", ["--listen", "127.0.0.1:0", "--shards", "1",
                                      "--admin", "off"])
            boot = f"127.0.0.1:{relay.port()}"
            d = lambda name: os.path.join(c.tmp, name)

            made = run(b, ["room", "create", "members", "--bootstrap", boot, "--json"],
                       d("admin"))
            check(made.returncode == 0, f"room create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            p = run(b, ["room", "post", room["writer_invite"], "before anyone was added",
                        "--nick", "alice"], d("alice"))
            check(p.returncode == 0, f"the first writer posts: {p.stderr.strip()!r}")

            inv = run(b, ["room", "invite", room["room"], "--json", "--timeout", "5"],
                      d("admin"))
            check(inv.returncode == 0, f"room invite exits 0: {inv.stderr.strip()!r}")
            new = json.loads(inv.stdout)
            short = new["invite"]
            check(len(short) <= 200, f"the short invite is {len(short)} characters (<= 200)")
            check(new["epoch"] == 1 and new["write"] and new["history"],
                  f"key epoch 1 grants a writer with history: {new}")
            r = run(b, ["room", "read", short, "--json", "--timeout", "5"], d("bob-read"))
            check(r.returncode == 0 and texts_of(r) == ["before anyone was added"],
                  f"the new member joins by the short invite through the relay and reads "
                  f"the history: {texts_of(r)} {r.stderr.strip()!r}")
            p = run(b, ["room", "post", short, "bob joined", "--nick", "bob", "--timeout", "5"],
                    d("bob"))
            check(p.returncode == 0, f"the new member posts: {p.stderr.strip()!r}")

            nh = run(b, ["room", "invite", room["room"], "--read", "--no-history", "--json",
                         "--timeout", "5"], d("admin"))
            check(nh.returncode == 0, f"room invite --read --no-history: {nh.stderr.strip()!r}")
            carol = json.loads(nh.stdout)["invite"]
            p = run(b, ["room", "post", room["writer_invite"], "after carol was added",
                        "--nick", "alice"], d("alice"))
            check(p.returncode == 0, f"alice posts after carol's epoch: {p.stderr.strip()!r}")
            r = run(b, ["room", "read", carol, "--json", "--timeout", "5"], d("carol-read"))
            check(r.returncode == 0 and texts_of(r) == ["after carol was added"],
                  f"the no-history member reads only what follows: {texts_of(r)} "
                  f"{r.stderr.strip()!r}")
            p = run(b, ["room", "post", carol, "may I?", "--timeout", "5"], d("carol"))
            check(p.returncode == 1 and "read-only" in p.stderr,
                  f"the read-only member cannot post: {p.stderr.strip()!r}")

            # (offline: no --listen, which `run` adds for the commands that join)
            m = subprocess.run([b, "room", "members", room["room"], "--json", "--data-dir",
                                d("admin")], capture_output=True, text=True, timeout=30)
            check(m.returncode == 0, f"room members exits 0: {m.stderr.strip()!r}")
            ms = json.loads(m.stdout)
            access = sorted(x["access"] for x in ms["members"])
            check(ms["epoch"] == 2 and access == ["read", "read", "write", "write"],
                  f"room members lists the 4 members of epoch 2 and their access: {access}")

            lg = run(b, ["room", "invite", room["room"], "--long", "--json", "--timeout", "5"],
                     d("admin"))
            check(lg.returncode == 0 and len(json.loads(lg.stdout)["invite"]) > 200,
                  f"room invite --long prints the self-contained form: {lg.stderr.strip()!r}")

            ev = run(b, ["room", "evict", short, "--json", "--timeout", "5"], d("admin"))
            check(ev.returncode == 0 and json.loads(ev.stdout)["epoch"] == 4,
                  f"room evict of the member added by invite: key epoch 4: "
                  f"{ev.stderr.strip()!r}")
            p = run(b, ["room", "post", room["writer_invite"], "after bob left", "--nick",
                        "alice"], d("alice"))
            check(p.returncode == 0, f"alice posts after the eviction: {p.stderr.strip()!r}")
            r = run(b, ["room", "read", short, "--json", "--timeout", "5"], d("bob-read"))
            check("after bob left" not in texts_of(r),
                  f"the evicted member does not read what follows: {texts_of(r)}")
            r = run(b, ["room", "read", carol, "--json", "--timeout", "5"], d("carol-read"))
            check(r.returncode == 0 and texts_of(r)[-1:] == ["after bob left"],
                  f"the member that stays reads on: {texts_of(r)} {r.stderr.strip()!r}")
            if a.hostile:
                liar = subprocess.Popen([a.hostile, "liar", "--target", "127.0.0.1:1",
                                         "--invite", room["writer_invite"], "--seconds", "30"],
                                        stdout=subprocess.PIPE, text=True)
                try:
                    liar_addr = liar.stdout.readline().split()[1]
                    li = run(b, ["room", "invite", room["room"], "--bootstrap", liar_addr,
                                 "--json", "--timeout", "5"], d("admin"))
                    check(li.returncode == 0, f"an invite naming the liar: {li.stderr.strip()!r}")
                    lied = json.loads(li.stdout)["invite"]
                    r = run(b, ["room", "read", lied, "--timeout", "4"], d("dave-liar"))
                    check(r.returncode == 1 and "refused the relay" in r.stderr,
                          f"a join through a relay serving a forged epoch is refused: "
                          f"{r.stderr.strip()!r}")
                    r = run(b, ["room", "read", lied, "--json", "--timeout", "5",
                                "--bootstrap", boot], d("dave-honest"))
                    check(r.returncode == 0 and "after bob left" in texts_of(r),
                          f"the same invite with an honest relay reads the room: "
                          f"{texts_of(r)} {r.stderr.strip()!r}")
                finally:
                    liar.kill()
                    liar.wait()
        except Exception:
            if relay is not None:
                print(relay.read_log())
            raise
    print(f"rooms_members: {time.monotonic() - t_start:.1f} s", flush=True)
    summary()


if __name__ == "__main__":
    main()
