#!/usr/bin/env python3
"""The to-do app through two real relays (issue 18): `ringpeer serve` processes on
127.0.0.1 that have never heard of the app, and three members run by `ringpeer-todo`.

  r1, r2    relays, and a third node that serves no room (it holds provider records, so
            that the relays find each other through the DHT). The list's invites name an
            address where nothing listens, so each member reaches the room only through
            the relay it is given (--bootstrap) and the relays pass updates between them.
  alice     creates the list, adds items through r1;
  bob       sees alice's items through r2, stays (watch) until r2 serves the room,
            then ticks and removes items through r2;
  alice     sees bob's changes (through the relays), then adds 30 items with
            --checkpoint-every 20: she makes a checkpoint, which both relays fetch (their
            status counts a room with a checkpoint) while she stays;
  carol     joins late, through r2 only, after alice left: she starts from the checkpoint
            (from_checkpoint, a log shorter than the updates written) and has the same
            list and state hash as alice and bob.
  Both relays' status lists the room as an app room (reducer kind opaque), served unread.

usage: todo_relays.py RINGPEER_BINARY RINGPEER_TODO_BINARY
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
from harness import Cluster, check, summary, wait_for  # noqa: E402

NOWHERE = "127.0.0.1:9"  # the discard port: nothing answers there


def todo(binary, args, data_dir, relay_port, stdin=None, timeout=45):
    return subprocess.run(
        [binary] + args + ["--data-dir", data_dir, "--listen", "127.0.0.1:0",
                           "--bootstrap", f"127.0.0.1:{relay_port}", "--timeout", "20"],
        input=stdin, capture_output=True, text=True, timeout=timeout)


def listing(binary, invite, data_dir, relay_port):
    p = todo(binary, ["list", invite, "--json"], data_dir, relay_port)
    check(p.returncode == 0, f"list through :{relay_port} exits 0: {p.stderr.strip()!r}")
    return json.loads(p.stdout)


def room_figures(relay):
    """(rooms, app rooms, rooms holding a checkpoint) from a relay's status."""
    st = relay.status()
    if st is None:
        return (0, 0, 0)
    sc = st["shard_counters"]
    return (sum(s["rooms"] for s in sc), sum(s["rooms_by_reducer"]["app"] for s in sc),
            sum(s["rooms_checkpointed"] for s in sc))


def ctrl_c(proc, who):
    """Stops a member that stays in the room (watch, add --stay) as a user would, and checks
    that it exits 0."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    check(proc.returncode == 0, f"{who} exits 0 on Ctrl-C: {(err or '').strip()!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("todo")
    a = ap.parse_args()
    b, t = a.binary, a.todo
    t_start = time.monotonic()
    stayer = None
    watcher = None
    with Cluster(b) as c:
        try:
            # dht: a node that serves no room. With two nodes only, neither relay finds
            # the other among the room's providers: a provider lookup asks other nodes,
            # never the asker's own store, and each relay's record is stored at the other.
            dht = c.start("dht", ["--listen", "127.0.0.1:0", "--admin", "off"])
            p0 = dht.port()
            r1 = c.start("r1", ["--listen", "127.0.0.1:0", "--admin", "off",
                                "--bootstrap", f"127.0.0.1:{p0}"])
            p1 = r1.port()
            r2 = c.start("r2", ["--listen", "127.0.0.1:0", "--admin", "off",
                                "--bootstrap", f"127.0.0.1:{p1}"])
            p2 = r2.port()
            nodes = [dht, r1, r2]
            check(wait_for(lambda: all((n.status() or {}).get("live_peers", 0) >= 2
                                       for n in nodes), 15),
                  "the relays and the DHT node see each other")
            d = lambda name: os.path.join(c.tmp, name)

            made = subprocess.run([t, "create", "groceries", "--bootstrap", NOWHERE,
                                   "--writers", "3", "--json"],
                                  capture_output=True, text=True, timeout=30)
            check(made.returncode == 0, f"create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            alice, bob, carol = room["writer_invites"]

            # alice adds through r1.
            p = todo(t, ["add", alice, "milk", "bread", "eggs"], d("alice"), p1)
            check(p.returncode == 0, f"alice adds 3 items through r1: {p.stderr.strip()!r}")
            check(room_figures(r1)[:2] == (1, 1) or
                  wait_for(lambda: room_figures(r1)[:2] == (1, 1), 5),
                  f"r1's status shows one room, an app room: {room_figures(r1)}")

            # bob, through r2, sees them (once r2, which serves the room from bob's join,
            # has found r1 among the room's providers), ticks one and removes one.
            t0 = time.monotonic()
            seen = []
            def bob_sees_alice():
                seen[:] = [i["text"] for i in listing(t, bob, d("bob"), p2)["items"]]
                return seen == ["milk", "bread", "eggs"]
            check(wait_for(bob_sees_alice, 30, interval=0.5),
                  f"bob, through r2, sees alice's items ({time.monotonic() - t0:.1f} s): {seen}")
            # r2 serves the room once it has proved bob's address (a probe, then bob's
            # next join, 0.8 s later): a short `list` can end first, having found r1 among
            # the room's providers, so bob stays in the room (`watch`) until r2 serves it.
            watcher = subprocess.Popen(
                [t, "watch", bob, "--for", "60", "--data-dir", d("bob"),
                 "--listen", "127.0.0.1:0", "--bootstrap", f"127.0.0.1:{p2}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            check(wait_for(lambda: room_figures(r2)[:2] == (1, 1), 30, interval=0.2),
                  f"r2, which bob joins through, serves the room as an app room "
                  f"({time.monotonic() - t0:.1f} s): {room_figures(r2)}")
            ctrl_c(watcher, "bob's watch")
            watcher = None
            p = todo(t, ["done", bob, "2"], d("bob"), p2)
            check(p.returncode == 0, f"bob ticks item 2 through r2: {p.stderr.strip()!r}")
            p = todo(t, ["remove", bob, "3"], d("bob"), p2)
            check(p.returncode == 0, f"bob removes item 3 through r2: {p.stderr.strip()!r}")
            p = todo(t, ["done", bob, "7"], d("bob"), p2)
            check(p.returncode == 1 and "no item #7" in p.stderr,
                  f"ticking an item that is not there is an error: {p.stderr.strip()!r}")

            # alice sees bob's changes through r1, once the relays have passed them on.
            def alice_sees_bob():
                g = listing(t, alice, d("alice"), p1)
                return [(i["number"], i["done"]) for i in g["items"]] == [(1, False), (2, True)]
            check(wait_for(alice_sees_bob, 20, interval=0.5),
                  "alice, through r1, sees bob's tick and removal")

            # alice adds 30 items and makes a checkpoint; she stays until both relays
            # hold it (they fetch every new checkpoint), then leaves.
            items_path = d("items.txt")
            with open(items_path, "w") as f:
                f.write("".join(f"item {i}\n" for i in range(30)))
            with open(items_path) as items:
                stayer = subprocess.Popen(
                    [t, "add", alice, "-", "--checkpoint-every", "20", "--stay", "60",
                     "--data-dir", d("alice"), "--listen", "127.0.0.1:0",
                     "--bootstrap", f"127.0.0.1:{p1}"],
                    stdin=items, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            both = wait_for(lambda: room_figures(r1)[2] == 1 and room_figures(r2)[2] == 1, 40,
                            interval=0.2)
            check(both, f"both relays fetched alice's checkpoint of the app room "
                        f"({time.monotonic() - t0:.1f} s; r1 {room_figures(r1)}, "
                        f"r2 {room_figures(r2)})")
            ctrl_c(stayer, "alice's add")
            stayer = None
            want = ["milk", "bread"] + [f"item {i}" for i in range(30)]
            a_list = listing(t, alice, d("alice"), p1)
            check([i["text"] for i in a_list["items"]] == want,
                  f"alice has 32 items ({len(a_list['items'])})")

            # carol joins late through r2 alone (alice is gone): from the checkpoint.
            written = 3 + 2 + 30  # updates in the room
            def carol_caught_up():
                g = listing(t, carol, d("carol"), p2)
                return g if [i["text"] for i in g["items"]] == want else None
            c_list = wait_for(carol_caught_up, 20, interval=0.5)
            check(c_list is not None, "carol, joining late through r2, has alice's 32 items")
            check(c_list["from_checkpoint"],
                  "carol started from the checkpoint (served by a relay that cannot read it)")
            check(c_list["log_size"] < written,
                  f"carol's log holds only what followed the checkpoint "
                  f"({c_list['log_size']} of {written} updates)")
            check(c_list["restored"] == 0, "carol had no cache")
            check(c_list["state_hash"] == a_list["state_hash"],
                  "carol's state hash is alice's")
            b_list = listing(t, bob, d("bob"), p2)
            check(b_list["state_hash"] == a_list["state_hash"] and
                  [i["text"] for i in b_list["items"]] == want,
                  "bob, through r2, has the same list and state hash")
            # carol writes too, and bob sees it.
            p = todo(t, ["done", carol, "5"], d("carol"), p2)
            check(p.returncode == 0, f"carol ticks item 5: {p.stderr.strip()!r}")
            def bob_sees_carol():
                g = listing(t, bob, d("bob"), p2)
                return any(i["number"] == 5 and i["done"] for i in g["items"])
            check(wait_for(bob_sees_carol, 20, interval=0.5), "bob sees carol's tick")
            check(room_figures(dht)[0] == 0, "the DHT node serves no room")
            for name, r in (("r1", r1), ("r2", r2)):
                rooms, app, cps = room_figures(r)
                check((rooms, app, cps) == (1, 1, 1),
                      f"{name}'s status: 1 room, an app room, with a checkpoint "
                      f"({rooms}, {app}, {cps})")
        except Exception:
            for r in c.nodes:
                print(r.read_log())
            raise
        finally:
            for p in (stayer, watcher):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    print(f"todo_relays: {time.monotonic() - t_start:.1f} s", flush=True)
    summary()


if __name__ == "__main__":
    main()
