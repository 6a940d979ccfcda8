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
                              "--count", "60000", "--rate", "20000", "--sources", "2"],
                             capture_output=True, text=True, timeout=120)
        print(out.stdout.strip())
        check(out.returncode == 0, "flood tool ran")
        f = {k: float(v) for k, v in (kv.split("=") for kv in out.stdout.split())}
        st = node.status()
        sc = st["shard_counters"][0]
        limited = sc["dropped"]["rate_limited"]
        # What the limit means, whatever the machine's speed: of the flood datagrams the
        # node received, at most burst + rate x duration passed the flooder's bucket (the
        # node's clock may see the flood spread over up to one more second). The honest
        # peer's datagrams are the only others it received.
        passed = sc["received"] - limited - (f["honest_sent"] + f["honest_retries"])
        allowed = 10000 + 5000 * (f["flood_seconds"] + 1.0)
        check(limited > 0 and passed <= allowed,
              f"the flooding address was held to its limit: {passed:.0f} passed "
              f"(bucket allows {allowed:.0f}), {limited} of {f['flood_sent']:.0f} dropped")
        check(limited >= f["flood_sent"] * 0.25,
              f"the flood was well over the limit ({f['flood_sent']:.0f} in "
              f"{f['flood_seconds']:.2f} s)")
        # The honest peer is a client that retries (3 tries of 250 ms): it must get its
        # answers. Kernel drops of single datagrams are covered by the retries.
        check(f["honest_sent"] >= 50 and f["honest_answered"] >= f["honest_sent"] * 0.98,
              f"the other peer was still answered ({f['honest_answered']:.0f}/"
              f"{f['honest_sent']:.0f}, {f['honest_retries']:.0f} retries)")
        rejected = st["overlay"]["tokens_rejected"]
        check(rejected > 0 and st["overlay"]["announces_stored"] == 0,
              f"forged tokens rejected ({rejected}), none stored")
        check(node.proc.poll() is None, "node survived")
    summary()


if __name__ == "__main__":
    sys.exit(main())
