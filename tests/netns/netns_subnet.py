#!/usr/bin/env python3
"""Six `ringpeer serve` hosts in one private /24 (a container network) table each other.

Goal (issue 11, item 2): the per-/24 routing-table limit (2 per bucket, 10 per table) is
for public addresses; on a private network, where compose and Kubernetes put every node in
one /24, it must not keep nodes from knowing each other.

Topology (every namespace is created by this test and deleted at the end, even on failure):

    h1..h6 (10.78.0.11..16/24) ──veth── [bridge br0 in ns "sw"]

The bridge lives in a namespace of its own, so the host's firewall (Docker's FORWARD DROP
and bridge netfilter) never sees the traffic. Each host's namespace drops 5% of incoming
UDP (netns_overlay.add_loss, counted), and every node holds each datagram it sends for
netns_overlay.DELAY_MS (50 ms) before sending it (--test-delay-ms).

Checks:
 1. within 35 s of the last start, every host's routing table holds every other host
    (`ringpeer status --json`: a live, verified peer with "in_table": true), 30 of 30
    directed entries;
 2. the loss rules dropped datagrams meanwhile (otherwise loss was not tested).

Skips (exit 77, "skipped: ...") where network namespaces or nftables are not allowed.

usage: netns_subnet.py RINGPEER_BINARY
"""
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns_overlay as ov  # noqa: E402  (namespaces, loss rules, hosts, cleanup)

HOSTS = 6
# Most runs table all 30 pairs in 1-8 s, but a pair whose first exchanges were all lost
# learns of each other again only from the other's liveness ping (every 10 s) or the next
# peer exchange (30 s), after 2 s request timeouts: CI saw 29 of 30 at 10.6 s once. The
# bug this test guards against left pairs untabled for good, so the deadline covers one
# peer-exchange round, not the median.
TABLE_DEADLINE_S = 35.0


def build_network():
    sw = ov.add_ns("sw")
    ov.sh("ip", "link", "add", "br0", "type", "bridge", ns=sw)
    ov.sh("ip", "link", "set", "br0", "up", ns=sw)
    hosts = {}
    for i in range(1, HOSTS + 1):
        h = ov.add_ns(f"h{i}")
        ov.veth(h, "eth0", sw, f"p{i}")
        ov.sh("ip", "link", "set", f"p{i}", "master", "br0", "up", ns=sw)
        ip = f"10.78.0.{10 + i}"
        ov.sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=h)
        ov.sh("ip", "link", "set", "eth0", "up", ns=h)
        ov.add_loss(h)
        hosts[f"h{i}"] = (h, ip)
    return hosts


def tabled(statuses):
    """(a, b) for each host a whose routing table holds b (live and verified)."""
    by_id = {s["node_id"]: name for name, s in statuses.items()}
    out = set()
    for name, s in statuses.items():
        for p in s["peers"]:
            if p["live"] and p["verified"] and p.get("in_table") and p["id"] in by_id:
                out.add((name, by_id[p["id"]]))
    return out


def main():
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
    ov.tmpdir = tempfile.mkdtemp(prefix="ringpeer-netns-subnet-")
    try:
        net = build_network()
    except RuntimeError as e:
        if any(w in str(e) for w in ("Operation not permitted", "not supported",
                                     "Protocol not supported", "No such file")):
            ov.skip(f"this machine does not allow the test network: {e}")
        raise
    boot = [f"{net['h1'][1]}:{ov.PORT}"]
    hosts = [ov.Host(binary, "h1", *net["h1"], bootstrap=[])]
    for i in range(2, HOSTS + 1):
        hosts.append(ov.Host(binary, f"h{i}", *net[f"h{i}"], bootstrap=boot))
    for h in hosts:
        h.start()
    t0 = time.monotonic()
    want = HOSTS * (HOSTS - 1)
    last = [set()]

    def all_tabled():
        statuses = {h.name: h.status() for h in hosts}
        if any(s is None for s in statuses.values()):
            return None
        last[0] = tabled(statuses)
        return len(last[0]) == want
    ok = ov.wait_for(all_tabled, TABLE_DEADLINE_S)
    took = time.monotonic() - t0
    ov.check(bool(ok), f"{HOSTS} hosts in one /24, {ov.LOSS_PERCENT}% loss, {ov.DELAY_MS} ms "
                       f"delay: {len(last[0])} of {want} directed routing-table entries "
                       f"({took:.1f} s, deadline {TABLE_DEADLINE_S:.0f} s)")
    if not ok:
        missing = sorted((a, b) for a in (h.name for h in hosts) for b in (h.name for h in hosts)
                         if a != b and (a, b) not in last[0])
        print("info: missing: " + " ".join(f"{a}->{b}" for a, b in missing))
        # What each host that misses one knows of it (contact state, failures, last heard).
        by_name = {h.name: h for h in hosts}
        for a, b in missing:
            sa = by_name[a].status() or {}
            ip_b = net[b][1]
            seen = [p for p in sa.get("peers", []) if ip_b in str(p.get("addr", ""))]
            print(f"info: {a}'s entries for {b} ({ip_b}): {json.dumps(seen) if seen else 'none'}")
    drops = sum(ov.loss_drops(h.ns) for h in hosts)
    ov.check(drops > 0, f"the loss rules dropped {drops} datagrams meanwhile")
    if ov.failures:
        for h in hosts:
            print(f"--- {h.name} log (tail) ---")
            print("\n".join(h.log().splitlines()[-10:]))
        print("0 passed, 1 failed")
        return 1
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        ov.cleanup()
    sys.exit(rc)
