#!/usr/bin/env python3
"""Rooms and the relay, as processes on 127.0.0.1 (issue 5):

1. Nothing a relay acknowledged is lost: N messages posted (`room post` exits 0 only once
   the relay acked each after its durable commit), the relay SIGKILLed, started again on
   the same data directory and port, and a fresh reader gets all N from it, in order.
2. Three clients live: three `ringpeer chat` processes (one writer invite each) on the
   restarted relay; every line one types appears at the other two within 1 s, measured
   per message from the write to its stdin to the line on the others' stdout.

usage: rooms_relay.py RINGPEER_BINARY [--shards N] [--messages N]
"""
import argparse
import json
import os
import queue
import signal
import subprocess
import threading
import time

from harness import Cluster, check, summary, wait_for
from rooms import run

LATENCY_MAX_S = 1.0


def start_relay(c, shards, port):
    """Starts (or restarts) the relay on `port` (0: any). A SIGKILLed node's port may stay
    bound for a moment: retry for up to ~3 s while the start fails."""
    listen = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 3.0
    while True:
        relay = c.start("relay", ["--listen", listen, "--shards", shards, "--admin", "off"])
        try:
            return relay, relay.port()
        except RuntimeError:
            relay.stop(signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class Chat:
    """`ringpeer chat INVITE`: lines go to its stdin; its stdout lines are timestamped as
    they arrive (a reader thread), its stderr tells when it has joined."""

    def __init__(self, binary, invite, data_dir, nick):
        self.proc = subprocess.Popen(
            [binary, "chat", invite, "--nick", nick, "--data-dir", data_dir,
             "--listen", "127.0.0.1:0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        self.lines = queue.Queue()  # (monotonic time, line)
        self.err = []
        self.connected = threading.Event()
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._errs, daemon=True).start()

    def _out(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def _errs(self):
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))
            if line.startswith("-- connected"):
                self.connected.set()

    def send(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return time.monotonic()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # Ctrl-D: leaves the room and exits
            except OSError:
                pass
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shards", default="2")
    ap.add_argument("--messages", type=int, default=200)
    a = ap.parse_args()
    b = a.binary
    chats = []
    t_start = time.monotonic()
    with Cluster(b) as c:
        relay = None
        try:
            relay, port = start_relay(c, a.shards, 0)
            boot = f"127.0.0.1:{port}"
            d = lambda name: os.path.join(c.tmp, name)
            made = run(b, ["room", "create", "durable", "--bootstrap", boot, "--writers", "3",
                           "--json"], d("admin"))
            check(made.returncode == 0, f"room create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            writers = [room["writer_invite"]] + room["more_writer_invites"]
            reader = room["reader_invite"]

            # 1. Acked means durable: SIGKILL the relay right after the last ack.
            n = a.messages
            want = [f"durable {i}" for i in range(n)]
            t0 = time.monotonic()
            p = run(b, ["room", "post", writers[0], "-", "--nick", "alice"], d("alice"),
                    stdin="".join(t + "\n" for t in want))
            check(p.returncode == 0, f"{n} messages posted, each acked by the relay "
                                     f"({time.monotonic() - t0:.2f} s): {p.stderr.strip()!r}")
            rc, _ = relay.stop(signal.SIGKILL)
            check(rc == -signal.SIGKILL, "relay killed with SIGKILL right after the last ack")
            t0 = time.monotonic()
            relay, port2 = start_relay(c, a.shards, port)
            check(port2 == port, f"relay restarted on the same data dir and port "
                                 f"({time.monotonic() - t0:.2f} s)")
            rd = run(b, ["room", "read", reader, "--json"], d("fresh-reader"))
            got = [json.loads(l)["text"] for l in rd.stdout.splitlines() if l.startswith("{")]
            check(rd.returncode == 0 and got == want,
                  f"a fresh reader gets all {n} acked messages from the restarted relay, in "
                  f"order ({len(got)} read): {rd.stderr.strip()!r}")

            # 2. Three live clients.
            chats = [Chat(b, writers[k], d(f"chat{k}"), f"c{k}") for k in range(3)]
            for k, ch in enumerate(chats):
                check(ch.connected.wait(timeout=15),
                      f"chat {k} joined the room: {ch.err}")
            for ch in chats:  # the history lines (none are chat lines from c0..c2 yet)
                while not ch.lines.empty():
                    ch.lines.get_nowait()
            rounds = 5
            sent = {}  # text -> (sender index, time written)
            for i in range(rounds):
                for k, ch in enumerate(chats):
                    text = f"live {k}-{i}"
                    sent[text] = (k, ch.send(text))
                    time.sleep(0.03)
            seen = [dict() for _ in chats]  # per chat: text -> time its line arrived
            deadline = time.monotonic() + LATENCY_MAX_S + 2.0
            expected = 2 * len(sent)
            # Every queued line of every chat per pass: a chat's history lines may still be
            # queued behind the live ones (its reader thread timestamps each on arrival).
            while sum(len(s) for s in seen) < expected and time.monotonic() < deadline:
                for k, ch in enumerate(chats):
                    while True:
                        try:
                            t, line = ch.lines.get_nowait()
                        except queue.Empty:
                            break
                        text = line.split(": ", 1)[1] if ": " in line else line
                        if text in sent:
                            seen[k][text] = t
                time.sleep(0.01)
            worst = 0.0
            for text, (k, t_sent) in sorted(sent.items()):
                for j in range(3):
                    if j == k:
                        continue
                    if text not in seen[j]:  # for the record: what that chat did print
                        print(f"c{j} printed {sorted(seen[j])}; stderr {chats[j].err}",
                              flush=True)
                    check(text in seen[j], f"'{text}' from c{k} appears at c{j}")
                    lat = seen[j][text] - t_sent
                    worst = max(worst, lat)
                    check(lat < LATENCY_MAX_S,
                          f"'{text}' from c{k} at c{j} within {LATENCY_MAX_S} s ({lat * 1000:.0f} ms)")
            print(f"live: {len(sent)} messages x 2 receivers, worst {worst * 1000:.0f} ms",
                  flush=True)
            for k, ch in enumerate(chats):
                rc = ch.stop()
                check(rc == 0, f"chat {k} exits 0 on end of input ({rc})")
        except Exception:
            if relay is not None:
                print(relay.read_log())
            raise
        finally:
            for ch in chats:
                if ch.proc.poll() is None:
                    ch.proc.kill()
                    ch.proc.wait()
    print(f"rooms_relay: {time.monotonic() - t_start:.1f} s", flush=True)
    summary()


if __name__ == "__main__":
    main()
