#!/usr/bin/env python3
"""Rooms across real network namespaces: a relay (`ringpeer serve`) on one host, room
members (`ringpeer room read --follow` listeners and `ringpeer room post` senders, each an
embedded node with its own data directory) on the others, one of them behind a NAT.

The network is netns_overlay.py's (imported from it): h1..h5 public, each in its own /24 of
10.77.0.0/16 on one bridge, and n1 (10.77.200.2) behind an nftables masquerade at
10.77.100.1. Every host's namespace drops a share of its incoming UDP with nftables
(`numgen random mod 100 < P`, counted), so every datagram between two hosts, and between two
processes on one host, crosses one such rule. The relay runs on h1; a member on each of
h2..h5 and n1. Every process, relay and members, also holds each datagram it sends for
50 ms (netns_overlay.DELAY_MS) before sending it: the relay with `--test-delay-ms`, the
members' embedded nodes through RINGPEER_TEST_DELAY_MS (the kernel has no netem), so room
traffic is delayed both ways, 50 ms one way per hop.

Checks, each wait bounded:
 1. five hosts, 5% loss, 50 ms delay: members on h2..h5 and n1 post concurrently (two
    rounds each, every message acked by the relay) and every follower receives every
    posted message, once; pings to the relay and to the public members' embedded nodes
    are answered no sooner than the delay (it is applied at both ends);
 2. the NAT host chats through the relay: n1's posts are acked, every public follower gets
    them, n1's follower gets every public host's messages, and a fresh one-shot reader on
    n1 reads the whole history;
 3. the relay's node is killed with SIGKILL right after a batch was acked, and restarted on
    the same data directory (retried: the UDP port can stay bound for a moment after a
    kill); with every member stopped, a fresh reader on h4 (a new data directory, no cache:
    only the relay's LMDB store can give it the log) reads every message ever acked;
 4. 10% loss on every host: the followers come back on their data directories (each
    reopens the room from its cache and syncs what it missed), members post concurrently
    again, every follower receives every acked message, and each follower's replica holds
    exactly the acked set, each once; `ringpeer room info --json` on every follower's data
    directory, run at once, reports the same state hash and log size everywhere; then fresh
    one-shot readers on the five member hosts (no cache: each syncs the whole log under 10%
    loss), run at once, print the same ordered history (`room read --json` prints the chat
    state: the room's canonical order).

Skips (exit 77, "skipped: ...") where network namespaces or nftables are not allowed.

usage: netns_rooms.py RINGPEER_BINARY
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_overlay as ov  # noqa: E402  (the network, cleanup and skip helpers)

SKIP = ov.SKIP
PORT = ov.PORT
MEMBERS = ["h2", "h3", "h4", "h5", "n1"]
ROUNDS = 2
PER_POST = 5
DELIVER_DEADLINE_S = 25.0
# A `room post` of 5 messages, five hosts at once, under 10% loss and 50 ms a hop: whole
# rounds took 11.1-22.8 s here (tests/netns/README.md), so 20 s sat inside the spread; a
# CI run (stop 28) saw one post unacked at 20 s that the relay did store (its 5 messages
# reached every reader later), and passed 5 of 5 runs here, 2 of them beside two
# simulators. 40 s: a post still fails when its updates are never acked.
POST_TIMEOUT_S = 40

binary = None
failures = []
passed = 0


def check(cond, message):
    global passed
    print(("ok: " if cond else "FAIL: ") + message, flush=True)
    if cond:
        passed += 1
    else:
        failures.append(message)
    return cond


def set_loss(ns, percent):
    """Replaces the host's loss rule (one nft transaction), keeping the counter's table."""
    ov.nft(ns, f"""delete table inet rploss
table inet rploss {{
  chain input {{
    type filter hook input priority -10;
    meta l4proto udp numgen random mod 100 < {percent} counter drop
  }}
}}
""")


def client_cmd(ns, args, data_dir):
    # The embedded node takes the test delay from the environment (it has no flag).
    return ["ip", "netns", "exec", ns, "env", f"RINGPEER_TEST_DELAY_MS={ov.DELAY_MS}",
            binary] + args + ["--data-dir", data_dir, "--listen", "0.0.0.0:0"]


def client(ns, args, data_dir, stdin=None, timeout=40):
    t0 = time.monotonic()
    try:
        r = subprocess.run(client_cmd(ns, args, data_dir), input=stdin, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        r = subprocess.CompletedProcess(e.cmd, 124, e.stdout or "", e.stderr or "")
    r.took = time.monotonic() - t0
    return r


def clients_at_once(runs, timeout=40):
    """Runs one client command per host at the same time: {host: (namespace, args,
    data_dir)} -> {host: (returncode, stdout, stderr)}. Each is killed after `timeout` s."""
    procs = {h: subprocess.Popen(client_cmd(ns, args, data_dir), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for h, (ns, args, data_dir) in runs.items()}
    ov.procs.extend(procs.values())
    results = {}
    for h, p in procs.items():
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results[h] = (p.returncode, out, err)
    return results


def parse_lines(text):
    out = []
    for line in (text or "").splitlines():
        if line.startswith("{"):
            try:
                m = json.loads(line)
            except ValueError:
                continue
            out.append((m["author"], m["text"]))
    return out


class Relay:
    def __init__(self, ns, data_dir):
        self.ns, self.data_dir = ns, data_dir
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.log_path = data_dir + ".log"
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, binary, "serve", "--data-dir", self.data_dir,
             "--listen", f"0.0.0.0:{PORT}", "--shards", "1", "--admin", "off",
             "--log-format", "json", "--test-delay-ms", str(ov.DELAY_MS)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ov.procs.append(self.proc)

    def status(self):
        try:
            r = subprocess.run([binary, "status", "--data-dir", self.data_dir, "--json"],
                               capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(r.stdout) if r.returncode == 0 else None

    def up(self):
        return self.proc.poll() is None and self.status() is not None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class Follower:
    """`ringpeer room read --follow --json` in a host's namespace, output in a file."""

    def __init__(self, name, ns, invite, data_dir):
        self.name, self.data_dir = name, data_dir
        self.out_path = f"{data_dir}.follow{int(time.monotonic() * 1000)}.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(client_cmd(ns, ["room", "read", invite, "--follow",
                                                     "--json", "--timeout", "30"], data_dir),
                                     stdout=self.out, stderr=subprocess.STDOUT)
        ov.procs.append(self.proc)

    def lines(self):
        with open(self.out_path, "rb") as f:
            return parse_lines(f.read().decode(errors="replace"))

    def texts(self):
        return [t for _, t in self.lines()]

    def raw(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.close()
        return rc


def post_round(net, invite, tag, d):
    """Every member host posts PER_POST messages at once; returns {host: (rc, took, err)}
    and the texts of the posts that exited 0 (acked by a relay)."""
    procs = {}
    for h in MEMBERS:
        lines = "".join(f"{tag} {h} m{i}\n" for i in range(PER_POST))
        p = subprocess.Popen(client_cmd(net[h][0], ["room", "post", invite, "-", "--nick", h,
                                                    "--timeout", str(POST_TIMEOUT_S)],
                                        d(f"post-{h}")),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ov.procs.append(p)
        procs[h] = (p, lines, time.monotonic())
    results, acked = {}, []
    for h, (p, lines, t0) in procs.items():
        try:
            _, err = p.communicate(lines, timeout=POST_TIMEOUT_S + 15)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        results[h] = (p.returncode, time.monotonic() - t0, (err or "").strip())
        if p.returncode == 0:
            acked += [l for l in lines.splitlines()]
    return results, acked


def all_delivered(followers, want):
    want = set(want)
    return all(want <= set(f.texts()) for f in followers.values())


def missing_report(followers, want):
    want = set(want)
    return "; ".join(f"{h} misses {len(want - set(f.texts()))} "
                     f"(e.g. {sorted(want - set(f.texts()))[:6]})"
                     for h, f in followers.items() if not want <= set(f.texts()))


def duplicates(f):
    t = f.texts()
    return len(t) - len(set(t))


def total_drops(net):
    return sum(ov.loss_drops(ns) for ns, _ in net.values())


def udp_port(ns, pid):
    """The UDP port process `pid` listens on in namespace ns (an embedded client binds
    0.0.0.0:0), or None."""
    r = ov.sh("ss", "-Hunap", ns=ns, check=False)
    for line in r.stdout.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]  # State Recv-Q Send-Q Local Peer Process; -H: no header
            return int(local.rsplit(":", 1)[1])
    return None


def delay_applies(net, relay_ip, followers):
    """Checks that both ends of room traffic hold their sends: a pong from the relay, timed
    from h2, and from each public member's embedded node (its follower), timed from h1,
    takes at least DELAY_MS (each node answers at once and holds the pong). Without the
    shim these round trips take well under a millisecond."""
    rtts = ov.ping_rtts(net["h2"][0], [f"{relay_ip}:{PORT}"])
    relay_rtts = sorted(rtts.get(f"{relay_ip}:{PORT}", []))
    check(bool(relay_rtts) and relay_rtts[0] >= ov.DELAY_MS,
          f"the relay holds its sends {ov.DELAY_MS} ms: pings from h2 answered in "
          f"{', '.join(f'{t:.1f}' for t in relay_rtts) or 'none'} ms")
    # n1's follower is behind the NAT, which lets no ping in: the public members only.
    targets = {}
    for h in MEMBERS[:4]:
        port = udp_port(net[h][0], followers[h].proc.pid)
        if port is not None:
            targets[h] = f"{net[h][1]}:{port}"
    rtts = ov.ping_rtts(net["h1"][0], list(targets.values())) if targets else {}
    got = {h: sorted(rtts.get(t, [])) for h, t in targets.items()}
    check(len(got) == 4 and all(r and r[0] >= ov.DELAY_MS for r in got.values()),
          f"the members' embedded nodes hold their sends {ov.DELAY_MS} ms "
          f"(RINGPEER_TEST_DELAY_MS): pings from h1 to the followers on h2..h5 answered in "
          + "; ".join(f"{h}: {', '.join(f'{t:.1f}' for t in r) or 'none'}"
                      for h, r in got.items()) + " ms")


def main():
    global binary
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        ov.skip("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            ov.skip(f"{tool} is not installed (tools/setup.sh installs iproute2, nftables)")
    atexit.register(ov.cleanup)
    signal.signal(signal.SIGTERM, ov.on_signal)
    signal.signal(signal.SIGINT, ov.on_signal)
    ov.sweep_stale()
    # For diagnosis only: NETNS_ROOMS_LOSS=0 runs the first phase without loss.
    ov.LOSS_PERCENT = int(os.environ.get("NETNS_ROOMS_LOSS", ov.LOSS_PERCENT))
    ov.tmpdir = tempfile.mkdtemp(prefix="ringpeer-netns-rooms-")
    tmp = ov.tmpdir
    d = lambda name: os.path.join(tmp, name)
    t_start = time.monotonic()
    try:
        net = ov.build_network()
    except RuntimeError as e:
        if any(w in str(e) for w in ("Operation not permitted", "not supported",
                                     "Protocol not supported", "No such file")):
            ov.skip(f"this machine does not allow the test network: {e}")
        raise
    relay_ns, relay_ip = net["h1"]
    boot = f"{relay_ip}:{PORT}"
    relay = Relay(relay_ns, d("relay"))
    relay.start()
    if not check(bool(ov.wait_for(relay.up, 10.0)), f"relay up on h1 ({boot})"):
        print(relay.log())
        return 1

    made = subprocess.run([binary, "room", "create", "netns", "--bootstrap", boot, "--json",
                           "--data-dir", d("admin")], capture_output=True, text=True,
                          timeout=20)
    if not check(made.returncode == 0, f"room create: {made.stderr.strip()!r}"):
        return 1
    room = json.loads(made.stdout)
    writer, reader = room["writer_invite"], room["reader_invite"]

    followers = {}
    try:
        # 1 and 2: five hosts, 5% loss, the NAT host among them.
        for h in MEMBERS:
            followers[h] = Follower(h, net[h][0], reader, d(f"member-{h}"))
        drops0 = total_drops(net)
        acked, t_post = [], time.monotonic()
        for r in range(ROUNDS):
            res, ok = post_round(net, writer, f"r{r}", d)
            acked += ok
            for h, (rc, took, err) in res.items():
                check(rc == 0, f"round {r}: {h} posted {PER_POST} messages, acked by the "
                               f"relay ({took:.1f} s){'' if rc == 0 else f': rc {rc} {err!r}'}")
        posted = time.monotonic() - t_post
        t0 = time.monotonic()
        got = ov.wait_for(lambda: all_delivered(followers, acked), DELIVER_DEADLINE_S)
        check(bool(got), f"5% loss, {ov.DELAY_MS} ms delay: each of {len(followers)} followers "
                         f"(h2..h5, n1) received all {len(acked)} acked messages from five "
                         f"hosts (posting {posted:.1f} s, then {time.monotonic() - t0:.1f} s)"
                         f"{'' if got else ': ' + missing_report(followers, acked)}")
        if ov.DELAY_MS > 0:
            delay_applies(net, relay_ip, followers)
        dups = {h: duplicates(f) for h, f in followers.items()}
        check(not any(dups.values()), f"no follower printed a message twice ({dups})")
        check(total_drops(net) > drops0,
              f"the 5% loss rules dropped {total_drops(net) - drops0} datagrams meanwhile")
        nat_texts = [t for t in acked if " n1 " in t]
        check(len(nat_texts) == ROUNDS * PER_POST,
              f"NAT host: n1 posted through the relay at {boot} and all "
              f"{ROUNDS * PER_POST} of its messages were acked")
        check(all(set(nat_texts) <= set(followers[h].texts()) for h in MEMBERS[:4]),
              "NAT host: every public follower (h2..h5) received n1's messages")
        public_texts = [t for t in acked if " n1 " not in t]
        check(set(public_texts) <= set(followers["n1"].texts()),
              f"NAT host: n1's follower received all {len(public_texts)} messages of the "
              f"public hosts")
        one = client(net["n1"][0], ["room", "read", reader, "--json"], d("n1-oneshot"))
        texts = [t for _, t in parse_lines(one.stdout)]
        check(one.returncode == 0 and set(acked) <= set(texts) and len(texts) == len(acked),
              f"NAT host: a fresh one-shot reader on n1 reads the whole history "
              f"({len(texts)} of {len(acked)}, {one.took:.1f} s){one.stderr.strip()!r}")
        st = relay.status() or {}
        seen = [p["address"] for p in st.get("peers", [])
                if p.get("address", "").startswith(ov.ROUTER_PUBLIC + ":")]
        print(f"info: the relay lists {len(seen)} peer(s) at the router's public address "
              f"{ov.ROUTER_PUBLIC}: {seen}")

        # 3: kill the relay's node right after an ack, bring it back on its data directory.
        for h, f in followers.items():
            rc = f.stop(signal.SIGTERM)
            check(rc == 0, f"{h}'s follower exits 0 on SIGTERM ({rc})")
        followers = {}
        last = "".join(f"before-kill m{i}\n" for i in range(20))
        p = client(net["h3"][0], ["room", "post", writer, "-", "--nick", "h3", "--timeout",
                                  str(POST_TIMEOUT_S)], d("post-h3"), stdin=last)
        if check(p.returncode == 0, f"20 messages posted from h3 and acked just before the "
                                    f"kill ({p.took:.1f} s): {p.stderr.strip()!r}"):
            acked += last.splitlines()
        relay.proc.kill()
        relay.proc.wait(timeout=5)
        t_kill = time.monotonic()

        def restarted():
            relay.start()
            try:
                relay.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                return True  # still running after 1 s: it bound its port
            return None
        ok = ov.wait_for(restarted, 15.0, interval=0.1)
        check(bool(ok) and bool(ov.wait_for(relay.up, 10.0)),
              f"relay SIGKILLed and restarted on the same data directory "
              f"({time.monotonic() - t_kill:.1f} s after the kill)")
        fresh = client(net["h4"][0], ["room", "read", reader, "--json"], d("after-kill-h4"))
        texts = [t for _, t in parse_lines(fresh.stdout)]
        lost = [t for t in acked if t not in set(texts)]
        check(fresh.returncode == 0 and not lost and len(texts) == len(acked),
              f"after the kill a fresh reader on h4 (only the relay to learn from) reads every "
              f"acked message: {len(texts)} of {len(acked)} ({fresh.took:.1f} s)"
              f"{'' if not lost else f'; lost {lost[:5]}'} {fresh.stderr.strip()!r}")

        # 4: 10% loss everywhere; followers back on their data directories; post again.
        for ns, _ in net.values():
            set_loss(ns, 10)
        drops0 = total_drops(net)
        for h in MEMBERS:
            followers[h] = Follower(h, net[h][0], reader, d(f"member-{h}"))
        t_post = time.monotonic()
        for r in range(ROUNDS, 2 * ROUNDS):
            res, ok = post_round(net, writer, f"r{r}", d)
            acked += ok
            for h, (rc, took, err) in res.items():
                check(rc == 0, f"10% loss, round {r}: {h} posted {PER_POST} messages, acked "
                               f"({took:.1f} s){'' if rc == 0 else f': rc {rc} {err!r}'}")
        posted = time.monotonic() - t_post
        t0 = time.monotonic()
        got = ov.wait_for(lambda: all_delivered(followers, acked), DELIVER_DEADLINE_S)
        check(bool(got), f"10% loss: each follower holds all {len(acked)} acked messages "
                         f"(posting {posted:.1f} s, then {time.monotonic() - t0:.1f} s)"
                         f"{'' if got else ': ' + missing_report(followers, acked)}")
        drops = total_drops(net) - drops0
        check(drops > 0, f"the 10% loss rules dropped {drops} datagrams meanwhile")
        # Each live member's replica holds exactly the acked updates: the same set of updates
        # everywhere, hence the same order and the same state hash (the order is a function
        # of the set: Kahn's algorithm, smallest id first).
        exact = {h: sorted(f.texts()) == sorted(acked) for h, f in followers.items()}
        check(all(exact.values()), f"10% loss: every follower's replica holds exactly the "
                                   f"{len(acked)} acked messages, each once ({exact})")
        for h, f in followers.items():
            f.stop(signal.SIGTERM)
        # The same state hash on every member: `room info` on each follower's data directory
        # (its cache, then a sync with the room), all at once, under the same 10% loss.
        infos = clients_at_once({h: (net[h][0], ["room", "info", reader, "--json"],
                                     d(f"member-{h}")) for h in MEMBERS})
        hashes = {}
        for h, (rc, out, err) in infos.items():
            try:
                j = json.loads(out) if rc == 0 else None
            except ValueError:
                j = None
            hashes[h] = (j["state_hash"][:16], j["log_size"], j["from_cache"]) if j else None
            if j is None:
                print(f"info: {h}'s room info failed: {err.strip()!r}")
        first = hashes[MEMBERS[0]]
        check(first is not None and all(v is not None and v[:2] == first[:2]
                                        for v in hashes.values()),
              f"10% loss: every member reports the same state hash and log size ({hashes})")
        check(all(v is not None and v[2] > 0 for v in hashes.values()),
              "each reopened the room from its cache (from_cache > 0)")
        # The room's order, read at once on every host by fresh readers (a new data
        # directory: no cache, so each one syncs the whole log under 10% loss).
        readers = clients_at_once({h: (net[h][0], ["room", "read", reader, "--json"],
                                       d(f"final-{h}")) for h in MEMBERS})
        lists = {}
        for h, (rc, out, err) in readers.items():
            lists[h] = parse_lines(out) if rc == 0 else None
            if rc != 0:
                print(f"info: {h}'s read failed: {err.strip()!r}")
        ref = lists[MEMBERS[0]]
        same = ref is not None and all(l == ref for l in lists.values())
        check(same, f"10% loss: fresh readers on the five member hosts print the same ordered history "
                    f"({', '.join(f'{h}: {len(l) if l is not None else None}' for h, l in lists.items())} messages)")
        if ref is not None:
            texts = [t for _, t in ref]
            check(sorted(texts) == sorted(acked),
                  f"that history is exactly the {len(acked)} acked messages, each once "
                  f"({len(texts)})")
        if not same and ref is not None:
            for h, l in lists.items():
                if l is not None and l != ref:
                    i = next((i for i, (a, b) in enumerate(zip(l, ref)) if a != b),
                             min(len(l), len(ref)))
                    print(f"info: {h} differs from {MEMBERS[0]} at position {i}")
    finally:
        for f in followers.values():
            f.stop(signal.SIGKILL)

    took = time.monotonic() - t_start
    if failures:
        print("--- relay log (tail) ---")
        print("\n".join(relay.log().splitlines()[-20:]))
        for h, f in (followers or {}).items():
            print(f"--- {h} follower output (tail) ---")
            print("\n".join(f.raw().splitlines()[-5:]))
        print(f"{passed} passed, {len(failures)} failed ({took:.1f} s)")
        return 1
    print(f"{passed} passed, 0 failed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    finally:
        ov.cleanup()
    sys.exit(rc)
