#!/usr/bin/env python3
"""Rooms end to end as separate processes on 127.0.0.1: a relay (`ringpeer serve`, LMDB
room store) and clients (`ringpeer room post|read`, each an embedded one-shard node with
its own data directory).

Checks: a message posted by one client is read by another; a client joining late sees
the full history; a follower killed with SIGKILL and restarted after 100 more messages
catches up on all of them; a read-only invite cannot post; with no relay, post fails
within its timeout with one clear line.

usage: rooms.py RINGPEER_BINARY [--shards N]
"""
import argparse
import json
import os
import signal
import subprocess
import time

from harness import Cluster, check, summary, wait_for


def run(binary, args, data_dir, stdin=None, timeout=30):
    listen = [] if args[:2] == ["room", "create"] else ["--listen", "127.0.0.1:0"]
    return subprocess.run([binary] + args + ["--data-dir", data_dir] + listen,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


class Follower:
    """`ringpeer room read --follow --json`, its output collected in a file."""

    def __init__(self, binary, invite, data_dir, extra=()):
        os.makedirs(os.path.dirname(data_dir), exist_ok=True)
        self.out_path = data_dir + ".out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "room", "read", invite, "--follow", "--json", "--data-dir", data_dir,
             "--listen", "127.0.0.1:0"] + list(extra),
            stdout=self.out, stderr=subprocess.STDOUT)

    def texts(self):
        with open(self.out_path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return [json.loads(l)["text"] for l in lines if l.startswith("{")]

    def stop(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.close()
        return rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shards", default="2")
    a = ap.parse_args()
    b = a.binary
    followers = []
    with Cluster(b) as c:
        try:
            relay = c.start("relay", ["--listen", "127.0.0.1:0", "--shards", a.shards,
                                      "--admin", "off"])
            boot = f"127.0.0.1:{relay.port()}"
            d = lambda name: os.path.join(c.tmp, name)

            made = run(b, ["room", "create", "lobby", "--bootstrap", boot, "--json"], d("admin"))
            check(made.returncode == 0, f"room create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            mode = os.stat(room["admin_key"]).st_mode & 0o777
            check(mode == 0o600, f"admin key file is mode 0600 ({oct(mode)})")
            w, r = room["writer_invite"], room["reader_invite"]
            check(w.startswith("ringpeer:1:") and r.startswith("ringpeer:1:") and w != r,
                  "create prints a writer and a reader invite")

            # One client posts, another reads.
            p = run(b, ["room", "post", w, "hello from alice", "--nick", "alice"], d("alice"))
            check(p.returncode == 0, f"post exits 0 once a relay acked: {p.stderr.strip()!r}")
            rd = run(b, ["room", "read", r], d("bob"))
            check(rd.returncode == 0 and "alice: hello from alice" in rd.stdout,
                  f"another client reads it: {rd.stdout.strip()!r} {rd.stderr.strip()!r}")

            # A late joiner sees the full history.
            for i in range(3):
                p = run(b, ["room", "post", w, f"early {i}", "--nick", "alice"], d("alice"))
                check(p.returncode == 0, f"post {i} acked")
            late = run(b, ["room", "read", r, "--json"], d("carol"))
            texts = [json.loads(l)["text"] for l in late.stdout.splitlines()]
            check(texts == ["hello from alice", "early 0", "early 1", "early 2"],
                  f"a late joiner sees the full history in order: {texts}")

            # A follower sees the history, is killed, misses 100 messages, comes back.
            f1 = Follower(b, r, d("dave/dir"))
            followers.append(f1)
            check(wait_for(lambda: len(f1.texts()) >= 4, timeout=10),
                  f"a follower prints the history: {f1.texts()}")
            check(f1.stop(signal.SIGKILL) == -signal.SIGKILL, "follower killed with SIGKILL")
            lines = "".join(f"msg {i}\n" for i in range(100))
            t0 = time.monotonic()
            p = run(b, ["room", "post", w, "-", "--nick", "alice"], d("alice"), stdin=lines)
            check(p.returncode == 0,
                  f"100 messages posted and acked ({time.monotonic() - t0:.2f} s): "
                  f"{p.stderr.strip()!r}")
            f2 = Follower(b, r, d("dave/dir"))
            followers.append(f2)
            want = [f"msg {i}" for i in range(100)]
            got = wait_for(lambda: [t for t in f2.texts() if t.startswith("msg ")] == want,
                           timeout=15)
            check(got, f"the restarted follower caught up on all 100 "
                       f"({len([t for t in f2.texts() if t.startswith('msg ')])} seen)")
            rc = f2.stop(signal.SIGTERM)
            check(rc == 0, f"follower exits 0 on SIGTERM ({rc})")
            full = run(b, ["room", "read", r, "--json"], d("dave/dir"))
            texts = [json.loads(l)["text"] for l in full.stdout.splitlines()]
            check(len(texts) == 104 and texts[-1] == "msg 99",
                  f"read after restart has all 104 messages ({len(texts)})")

            # The client's cache: a room joined before reopens from the data directory
            # (only what happened since comes over the network), and members that hold
            # the same updates report the same state hash.
            cached = run(b, ["room", "info", r, "--json"], d("dave/dir"))
            check(cached.returncode == 0, f"room info exits 0: {cached.stderr.strip()!r}")
            ci = json.loads(cached.stdout)
            fresh = run(b, ["room", "info", r, "--json"], d("gina"))
            fi = json.loads(fresh.stdout)
            check(ci["from_cache"] >= 104 and ci["log_size"] == fi["log_size"],
                  f"a returning client reopens the room from its cache ({ci['from_cache']} of "
                  f"{ci['log_size']} updates from the cache)")
            check(fi["from_cache"] == 0, f"a new client has no cache ({fi['from_cache']})")
            check(ci["state_hash"] == fi["state_hash"] and len(ci["state_hash"]) == 64,
                  f"both report the same state hash ({ci['state_hash'][:16]})")

            # Errors a person can act on.
            ro = run(b, ["room", "post", r, "nope"], d("erin"))
            check(ro.returncode == 1 and "read-only" in ro.stderr,
                  f"a reader invite cannot post: {ro.stderr.strip()!r}")
            lonely = run(b, ["room", "create", "alone", "--bootstrap", "127.0.0.1:9", "--json"],
                         d("admin"))
            inv = json.loads(lonely.stdout)["writer_invite"]
            t0 = time.monotonic()
            nr = run(b, ["room", "post", inv, "anyone?", "--timeout", "2"], d("frank"))
            took = time.monotonic() - t0
            check(nr.returncode == 1 and "no relay answered" in nr.stderr and took < 6 and
                  nr.stderr.count("\n") == 1,
                  f"no relay: one clear line within the timeout ({took:.1f} s): "
                  f"{nr.stderr.strip()!r}")
            bad = run(b, ["room", "read", "ringpeer:1:abcd"], d("frank"))
            check(bad.returncode == 1 and "invite:" in bad.stderr,
                  f"a bad invite is named: {bad.stderr.strip()!r}")
        except Exception:
            print(relay.read_log())
            raise
        finally:
            for f in followers:
                f.stop(signal.SIGKILL)
    summary()


if __name__ == "__main__":
    main()
