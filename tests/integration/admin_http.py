#!/usr/bin/env python3
"""The admin HTTP endpoint, logs and configuration of a real `ringpeer serve`.

Goal: what an operator relies on holds. /metrics is text that the Prometheus client
library's parser accepts, and its counters move when traffic flows (pings between two
nodes; garbage datagrams show up as drops by reason); /healthz answers; /readyz fails on a
node with no peers and passes once it has a live, verified one; /status is the status
JSON. JSON logs are one object per line and report the peer gained. --print-config shows
flag, environment and config-file values with their sources and reads back as a config
file. Bad admin values are usage errors; an admin port in use is one clear line.
Lookups and rooms are on /metrics too: a `ringpeer lookup` moves the lookup counters and
the duration histogram, and a room post through the node (as the room's relay) moves the
accepted room updates, and only those.

Method: two nodes on 127.0.0.1 with --admin 127.0.0.1:0 (the chosen port is read from the
JSON log line "admin http listening"); the first is also the relay of a room made with
`ringpeer room create` and posted to with `ringpeer room post`. Every wait polls a
condition with a deadline.

usage: admin_http.py RINGPEER_BINARY [--shards N]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from harness import Cluster, check, summary, wait_for

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # A python3 that is not Debian's (e.g. pyenv) does not see Debian's packages.
    sys.path.append("/usr/lib/python3/dist-packages")
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("FAIL: python3-prometheus-client is not installed (tools/setup.sh installs it)")
    sys.exit(1)


def admin_address(node, timeout=10.0):
    def find():
        for line in node.read_log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "admin http listening":
                return rec["addr"]
        return None
    addr = wait_for(find, timeout, interval=0.05)
    if not addr:
        raise RuntimeError("no admin address in the log:\n" + node.read_log())
    return addr


def get(addr, path, timeout=5.0):
    """Returns (status code, body text)."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(addr):
    """Parses /metrics with prometheus_client; returns {(name, labels): value}."""
    code, text = get(addr, "/metrics")
    if code != 200:
        raise RuntimeError(f"/metrics answered {code}")
    samples = {}
    families = set()
    for fam in text_string_to_metric_families(text):
        families.add((fam.name, fam.type))
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def total(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and want <= set(l))


def lookup_figures(samples):
    """(started, succeeded, failed, histogram count, histogram sum) from a scrape."""
    return (total(samples, "ringpeer_lookups_total", result="started"),
            total(samples, "ringpeer_lookups_total", result="succeeded"),
            total(samples, "ringpeer_lookups_total", result="failed"),
            total(samples, "ringpeer_lookup_duration_seconds_count"),
            total(samples, "ringpeer_lookup_duration_seconds_sum"))


def histogram_consistent(samples, name):
    """Cumulative buckets never fall, and the +Inf bucket is the count."""
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                     if n == name + "_bucket")
    counts = [v for _, v in buckets]
    return (len(buckets) >= 2 and buckets[-1][0] == float("inf") and
            counts == sorted(counts) and counts[-1] == total(samples, name + "_count"))


def check_lookups(binary, node, addr):
    """A `ringpeer lookup` on `node` is counted started and succeeded, and timed."""
    # Joining runs refresh lookups of the node's own; wait until none is in flight and
    # the figures hold still over two scrapes, so that what follows is the CLI's lookup.
    last = {}

    def settled():
        _, s = scrape(addr)
        v = lookup_figures(s)
        done = v[0] == v[1] + v[2] == v[3] and last.get("v") == v
        last["v"] = v
        return s if done else None
    base = wait_for(settled, timeout=15.0, interval=0.2)
    check(bool(base), f"lookups settle: each one started is counted done once ({last.get('v')})")
    b = lookup_figures(base)
    check(b[0] >= 1, f"the lookups a join runs (refreshes) are counted too ({b})")
    out = subprocess.run([binary, "lookup", "admin-http metrics key", "--data-dir",
                          node.data_dir, "--json"], capture_output=True, text=True, timeout=45)
    answer = json.loads(out.stdout) if out.returncode == 0 else {}
    check(len(answer.get("closest", [])) >= 1,
          f"ringpeer lookup finds the other node: {out.stdout.strip()!r} {out.stderr.strip()!r}")

    seen = {}

    def counted():
        _, s = scrape(addr)
        v = seen["v"] = lookup_figures(s)
        grew = v[0] > b[0] and v[1] > b[1] and v[3] > b[3] and v[4] > b[4]
        return s if grew and v[0] == v[1] + v[2] == v[3] else None
    after = wait_for(counted, timeout=5.0, interval=0.1)
    check(bool(after), f"the lookup is counted: started, succeeded, histogram count and sum "
                       f"grow, and started = succeeded + failed = count ({b} -> {seen['v']})")
    a = seen["v"]
    check(histogram_consistent(after, "ringpeer_lookup_duration_seconds"),
          "the duration histogram's buckets are cumulative and end at the count")
    le30 = sum(v for (n, l), v in after.items()
               if n == "ringpeer_lookup_duration_seconds_bucket" and float(dict(l)["le"]) == 30)
    check(le30 == a[3], f"every lookup on loopback finished within 30 s ({le30} of {a[3]})")


def room_cli(binary, args, data_dir, timeout=30):
    listen = [] if args[:2] == ["room", "create"] else ["--listen", "127.0.0.1:0"]
    return subprocess.run([binary] + args + ["--data-dir", data_dir] + listen,
                          capture_output=True, text=True, timeout=timeout)


def check_rooms(binary, tmp, addr, port):
    """A room made offline, then posted to through the node: the node starts relaying it
    (the writer's join brings its genesis) and counts the post as one accepted update."""
    def figures():
        _, s = scrape(addr)
        return (total(s, "ringpeer_rooms"),
                total(s, "ringpeer_room_updates_total", result="accepted"),
                total(s, "ringpeer_room_updates_total", result="rejected"))
    b = figures()
    check(b == (0, 0, 0), f"no rooms or room updates before any room exists ({b})")
    made = room_cli(binary, ["room", "create", "metrics", "--bootstrap", f"127.0.0.1:{port}",
                             "--json"], os.path.join(tmp, "room-admin"))
    check(made.returncode == 0, f"room create: {made.stderr.strip()!r}")
    writer = json.loads(made.stdout)["writer_invite"]
    writer_dir = os.path.join(tmp, "room-writer")
    post = room_cli(binary, ["room", "post", writer, "first", "--nick", "m"], writer_dir)
    check(post.returncode == 0, f"room post acked by the node: {post.stderr.strip()!r}")
    # The node acks an update once it has accepted it; the room count is published each
    # tick (50 ms): poll for the figures with a deadline. A writer's first post also
    # carries its chat `join` (its nick), so it may be more than one update.
    seen = {}

    def relaying():
        v = seen["v"] = figures()
        return v if v[0] == 1 and v[1] >= 1 and v[2] == 0 else None
    first = wait_for(relaying, timeout=5.0, interval=0.1)
    check(bool(first), f"the node relays the room and counts the post's updates as "
                       f"accepted, none rejected ({b} -> {seen['v']})")
    post = room_cli(binary, ["room", "post", writer, "second", "--nick", "m"], writer_dir)
    check(post.returncode == 0, f"second room post acked: {post.stderr.strip()!r}")
    want = (1, first[1] + 1, 0)
    check(wait_for(lambda: figures() == want, timeout=5.0, interval=0.1),
          f"one more post is exactly one more accepted update ({first} -> {figures()}, "
          f"want {want})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shards", default="1")
    a = ap.parse_args()
    common = ["--listen", "127.0.0.1:0", "--shards", a.shards, "--admin", "127.0.0.1:0",
              "--log-format", "json"]
    with Cluster(a.binary) as c:
        first = c.start("n1", common)
        port = first.port()
        a1 = admin_address(first)

        code, body = get(a1, "/healthz")
        check(code == 200 and body.strip() == "ok", "/healthz answers 200 ok")
        code, body = get(a1, "/readyz")
        check(code == 503 and body.startswith("not ready"),
              f"/readyz fails on a node with no peers ({code} {body.strip()!r})")

        families, before = scrape(a1)
        names = {n for n, _ in families}
        for want, kind in [("ringpeer_datagrams_received", "counter"),
                           ("ringpeer_datagrams_sent", "counter"),
                           ("ringpeer_datagrams_dropped", "counter"),
                           ("ringpeer_mailbox_depth", "gauge"),
                           ("ringpeer_mailbox_dropped", "counter"),
                           ("ringpeer_peers", "gauge"),
                           ("ringpeer_storage_bytes", "gauge"),
                           ("ringpeer_lookups", "counter"),
                           ("ringpeer_lookup_duration_seconds", "histogram"),
                           ("ringpeer_rooms", "gauge"),
                           ("ringpeer_room_updates", "counter")]:
            check((want, kind) in families, f"/metrics has {want} ({kind})")
        check(total(before, "ringpeer_shards") == int(a.shards), "ringpeer_shards is right")
        check(total(before, "ringpeer_storage_bytes") > 0, "storage bytes count the node key")
        check(total(before, "ringpeer_peers", state="live") == 0, "no live peers yet")

        second = c.start("n2", common + ["--bootstrap", f"127.0.0.1:{port}"])
        a2 = admin_address(second)
        # 30 s: about a second on an idle machine; a CI run on two cores shared with two
        # 10,000-node simulations and a build once needed more than 10.
        ready = wait_for(lambda: get(a1, "/readyz")[0] == 200 and get(a2, "/readyz")[0] == 200,
                         timeout=30.0)
        check(ready, "/readyz passes on both nodes once they have a peer")

        garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            garbage.sendto(b"not a ringpeer datagram, just bytes", ("127.0.0.1", port))
        garbage.close()

        def moved():
            _, after = scrape(a1)
            ok = (total(after, "ringpeer_datagrams_received_total") >
                  total(before, "ringpeer_datagrams_received_total") and
                  total(after, "ringpeer_datagrams_sent_total") >
                  total(before, "ringpeer_datagrams_sent_total") and
                  total(after, "ringpeer_peers", state="live") >= 1 and
                  total(after, "ringpeer_datagrams_dropped_total", reason="bad_magic") >= 20)
            return after if ok else None
        after = wait_for(moved, timeout=10.0, interval=0.2)
        check(bool(after), "counters move: received, sent, live peers, drops by reason")
        check(total(after or {}, "ringpeer_routing_table_entries") >= 1 and
              total(after or {}, "ringpeer_overlay_peers_verified_total") >= 1,
              "overlay figures: routing-table entries and verified peers")

        check_lookups(a.binary, first, a1)
        check_rooms(a.binary, c.tmp, a1, port)

        code, body = get(a1, "/status")
        st = json.loads(body)
        st2 = second.status()
        check(code == 200 and any(p["id"] == st2["node_id"] and p["live"] for p in st["peers"]),
              "/status is the status JSON and lists the peer")
        pool = st.get("room_log_pool", {})
        # 16 GiB of address space by default; 0 where the kernel refuses it (overcommit
        # off, a ulimit -v): then every block is a counted fallback to the heap.
        check(pool.get("space_bytes") in (16 << 30, 0) and "blocks_taken" in pool and
              (pool.get("space_bytes") == 0 or pool.get("fallbacks") == 0),
              f"/status shows the room log pool, 16 GiB reserved by default: {pool}")

        def gained():
            for line in first.read_log().splitlines():
                rec = json.loads(line)  # every line must be JSON
                if rec.get("msg") == "peer gained" and rec.get("peer") == st2["node_id"]:
                    return True
            return False
        check(wait_for(gained, timeout=5.0), "JSON log: one object per line, peer gained")
        drop_line = wait_for(lambda: [l for l in first.read_log().splitlines()
                                      if '"datagrams dropped"' in l], timeout=15.0)
        check(bool(drop_line) and json.loads(drop_line[0]).get("bad_magic", 0) >= 20,
              "drops are reported as one aggregated log line")

        # Configuration: flag > env > file > default, shown by --print-config.
        conf = os.path.join(c.tmp, "ringpeer.conf")
        with open(conf, "w") as f:
            f.write("# test\nrate-limit = 123\npeers-max = 64\nbootstrap = 10.0.0.1:7700\n"
                    "steering = off\n")
        env = dict(os.environ, RINGPEER_PEERS_MAX="99")
        out = subprocess.run([a.binary, "serve", "--config", conf, "--steering", "on",
                              "--gso", "off", "--recv-gro", "on", "--print-config"],
                             capture_output=True,
                             text=True, env=env, timeout=5)
        lines = {l.split("=")[0].strip(): l for l in out.stdout.splitlines()
                 if not l.startswith("#")}
        check(out.returncode == 0 and "rate-limit = 123" in lines["rate-limit"] and
              f"config {conf}:2" in lines["rate-limit"], "print-config: value from the file")
        check("peers-max = 99" in lines["peers-max"] and "env RINGPEER_PEERS_MAX" in
              lines["peers-max"], "print-config: the environment beats the file")
        check("steering = on" in lines["steering"] and "# flag" in lines["steering"],
              "print-config: a flag beats the file")
        check("gso = off" in lines["gso"] and "# flag" in lines["gso"],
              "print-config: --gso off")
        check("recv-gro = on" in lines["recv-gro"] and "# flag" in lines["recv-gro"],
              "print-config: --recv-gro on")
        check("admin = 127.0.0.1:7780" in lines["admin"] and "# default" in lines["admin"],
              "print-config: admin defaults to loopback")
        again = os.path.join(c.tmp, "printed.conf")
        with open(again, "w") as f:
            f.write(out.stdout)
        out2 = subprocess.run([a.binary, "serve", "--config", again, "--print-config"],
                              capture_output=True, text=True, timeout=5)
        strip = lambda t: [l.split("#")[0].strip() for l in t.splitlines() if l.split("#")[0]]
        check(out2.returncode == 0 and strip(out2.stdout) == strip(out.stdout),
              "print-config output reads back as a config file with the same values")

        def usage_error(args, says):
            """`ringpeer serve ARGS` exits 2 (a usage error) and its stderr says `says`."""
            bad = subprocess.run([a.binary, "serve", *args], capture_output=True, text=True,
                                 timeout=5)
            return bad.returncode == 2 and says in bad.stderr

        check(usage_error(["--admin", "nowhere"], "--admin"), "bad --admin is a usage error")
        check(usage_error(["--gso", "maybe", "--print-config"], "--gso: 'maybe' is not on or off"),
              "bad --gso is a usage error")
        check(usage_error(["--recv-gro", "yes", "--print-config"],
                          "--recv-gro: 'yes' is not on or off"),
              "bad --recv-gro is a usage error")
        out = subprocess.run([a.binary, "serve", "--room-log-space", "2G", "--print-config"],
                             capture_output=True, text=True, timeout=5)
        check(out.returncode == 0 and any(l.startswith("room-log-space = 2147483648") and
                                          "# flag" in l for l in out.stdout.splitlines()),
              "print-config: --room-log-space 2G")
        check(usage_error(["--room-log-space", "4K", "--print-config"], "less than 1M"),
              "--room-log-space below 1M is a usage error")
        check(usage_error(["--room-log-space", "lots", "--print-config"],
                          "--room-log-space: 'lots' is not a size"),
              "bad --room-log-space is a usage error")
        check(usage_error(["--config", os.path.join(c.tmp, "none.conf")], "cannot open"),
              "missing config file")
        busy = subprocess.run([a.binary, "serve", "--data-dir", os.path.join(c.tmp, "n3"),
                               "--listen", "127.0.0.1:0", "--admin", a1],
                              capture_output=True, text=True, timeout=10)
        check(busy.returncode == 1 and "in use" in busy.stderr and
              busy.stderr.count("\n") == 1,
              f"admin port in use is one clear line: {busy.stderr.strip()!r}")
        rc, secs = second.stop()
        check(rc == 0, f"SIGTERM with the admin server running exits 0 ({secs:.2f} s)")
    print("admin_http: all checks passed")
    summary()


if __name__ == "__main__":
    sys.exit(main())
