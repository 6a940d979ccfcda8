#!/usr/bin/env python3
"""A flood of find_node requests and announces with forged tokens from one address is cut
by the per-address limit, while another peer's find_node requests are still answered, and
every forged token that gets past the limit is rejected.

usage: dht_flood.py RINGPEER_BINARY FLOOD_BINARY
"""
import argparse
import subprocess
import sys

from harness import Cluster, check, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("flood")
    a = ap.parse_args()
    with Cluster(a.binary) as c:
        # The default limits (5000/s per address, burst 10000).
        node = c.start("target", ["--listen", "127.0.0.1:0", "--shards", "1", "--admin", "off"])
        port = node.port()
        out = subprocess.run([a.flood, "--mode", "dht", "--target", f"127.0.0.1:{port}",
                              "--count", "60000", "--sources", "2"],
                             capture_output=True, text=True, timeout=120)
        print(out.stdout.strip())
        check(out.returncode == 0, "flood tool ran")
        f = {k: int(v) for k, v in (kv.split("=") for kv in out.stdout.split())}
        st = node.status()
        sc = st["shard_counters"][0]
        limited = sc["dropped"]["rate_limited"]
        check(limited >= f["flood_sent"] * 0.5,
              f"the flooding address was cut by its limit ({limited} of {f['flood_sent']} dropped)")
        check(f["honest_answered"] >= f["honest_sent"] * 0.9,
              f"the other peer was still answered ({f['honest_answered']}/{f['honest_sent']})")
        rejected = st["overlay"]["tokens_rejected"]
        check(rejected > 0 and st["overlay"]["announces_stored"] == 0,
              f"forged tokens rejected ({rejected}), none stored")
        check(node.proc.poll() is None, "node survived")
    summary()


if __name__ == "__main__":
    sys.exit(main())
