#!/usr/bin/env python3
"""Room admission on an open relay (issue 11, item 4), on 127.0.0.0/8.

A relay with a small room table (--rooms-max 40, one shard). `ringpeer-hostile squat`
makes fresh rooms (a new admin key and genesis each: they cost nothing) and sends a
RoomJoin carrying each genesis from its own 127.0.x.y addresses, which answer the relay's
probes (proved sources, the strongest stranger).

Checks:
 1. one stranger source trying 1,000 rooms gets at most --rooms-per-source (16) served;
 2. three real rooms are created and written (5 posts each, all acked);
 3. 60 stranger sources trying 1,000 rooms between them fill the table with never-written
    rooms; the relay drops those first (counted), never a written room;
 4. while the squatting goes on, a new real room is created, written and read back, and
    every message of the three earlier rooms is still there (fresh readers);
 5. /metrics counts the refusals and drops, and the log says so in one aggregated line.

usage: admission.py RINGPEER_BINARY RINGPEER_HOSTILE_BINARY
"""
import argparse
import json
import os
import re
import subprocess
import urllib.request

from harness import Cluster, check, free_tcp_port, summary, wait_for
from rooms import run

PER_SOURCE = 16
ROOMS_MAX = 40


def admission_metrics(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=3) as r:
        body = r.read().decode()
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r'^ringpeer_room_admission_total\{outcome="(\w+)"\} (\d+)', body,
                        re.M)}


def squat(hostile, boot, rooms, sources, seconds):
    r = subprocess.run([hostile, "squat", "--target", boot, "--rooms", str(rooms),
                        "--sources", str(sources), "--seconds", str(seconds)],
                       capture_output=True, text=True, timeout=seconds + 60)
    print("info: squat: " + r.stdout.strip())
    m = re.search(r"served=(\d+)", r.stdout)
    return int(m.group(1)) if r.returncode == 0 and m else None


class Real:
    def __init__(self, b, d, boot, name):
        made = run(b, ["room", "create", name, "--bootstrap", boot, "--json"], d(name))
        check(made.returncode == 0, f"real room {name} created: {made.stderr.strip()!r}")
        self.room = json.loads(made.stdout)
        self.b, self.d, self.name = b, d, name
        self.texts = [f"{name} {i}" for i in range(5)]
        p = run(b, ["room", "post", self.room["writer_invite"], "-", "--nick", "r"],
                d(name + "-w"), stdin="".join(t + "\n" for t in self.texts))
        check(p.returncode == 0, f"5 posts to {name} acked: {p.stderr.strip()!r}")

    def read(self, tag):
        rd = run(self.b, ["room", "read", self.room["reader_invite"], "--json"],
                 self.d(f"{self.name}-{tag}"))
        return [json.loads(l)["text"] for l in rd.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("hostile")
    a = ap.parse_args()
    b = a.binary
    with Cluster(b) as c:
        d = lambda name: os.path.join(c.tmp, name)
        admin = f"127.0.0.1:{free_tcp_port()}"
        relay = c.start("relay", ["--listen", "127.0.0.1:0", "--shards", "1", "--admin", admin,
                                  "--rooms-max", str(ROOMS_MAX), "--rooms-per-source",
                                  str(PER_SOURCE), "--log-format", "json"])
        boot = f"127.0.0.1:{relay.port()}"

        served = squat(a.hostile, boot, 1000, 1, 8)
        check(served is not None and 1 <= served <= PER_SOURCE,
              f"one stranger source asking for 1000 rooms is served {served} "
              f"(at most {PER_SOURCE} per hour)")
        reals = [Real(b, d, boot, f"real{i}") for i in range(3)]

        # Many sources: the table fills with never-written rooms, which go first.
        sq = subprocess.Popen([a.hostile, "squat", "--target", boot, "--rooms", "1000",
                               "--sources", "60", "--seconds", "25"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            full = wait_for(lambda: admission_metrics(admin).get("dropped_unwritten", 0) > 0,
                            20.0, interval=0.3)
            check(bool(full), "60 stranger sources fill the table and never-written rooms are "
                              "dropped for new ones")
            late = Real(b, d, boot, "late")
            got = late.read("reader")
            check(got == late.texts, f"a real room created during the squat works: "
                                     f"{len(got)} of 5 read back")
        finally:
            out, _ = sq.communicate(timeout=60)
            print("info: squat (60 sources): " + out.strip())
        for r in reals:
            got = r.read("after")
            check(got == r.texts, f"{r.name}: every acked message still there "
                                  f"({len(got)} of 5)")
        m = admission_metrics(admin)
        print("info: admission: " + json.dumps(m))
        check(m.get("refused_rate", 0) > 0 and m.get("dropped_unwritten", 0) > 0 and
              m.get("opened", 0) > 0, "/metrics counts refusals by rate and dropped rooms")
        check(wait_for(lambda: "room admission refused or evicted rooms" in relay.read_log(),
                       15.0, interval=0.5),
              "the log reports admission in an aggregated line")
    summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
