#!/usr/bin/env python3
"""A flood of challenge pings (each asks for an ed25519 signature) takes a bounded share of
a shard: the node signs at most its per-shard budget (kSignaturesPerSecondMax = 2000/s,
burst 200) and counts the rest as challenge_limited, while liveness pings (no signature)
are still answered.

usage: challenge_flood.py RINGPEER_BINARY FLOOD_BINARY
"""
import argparse
import subprocess
import sys

from harness import Cluster, check, summary, wait_for

SIGNATURES_PER_S = 2000
SIGNATURE_BURST = 200


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("flood")
    a = ap.parse_args()
    with Cluster(a.binary) as c:
        node = c.start("target", ["--listen", "127.0.0.1:0", "--shards", "1", "--admin", "off"])
        port = node.port()
        out = subprocess.run([a.flood, "--mode", "challenges", "--target", f"127.0.0.1:{port}",
                              "--count", "40000", "--sources", "64"],
                             capture_output=True, text=True, timeout=120)
        print(out.stdout.strip())
        check(out.returncode == 0, "flood tool ran")
        f = {k: float(v) for k, v in (kv.split("=") for kv in out.stdout.split())}
        budget = SIGNATURE_BURST + SIGNATURES_PER_S * (f["seconds"] + 1.0)
        check(f["signed_pongs"] <= budget,
              f"signatures stayed within the budget ({f['signed_pongs']:.0f} <= {budget:.0f} in "
              f"{f['seconds']:.2f} s)")
        sc = node.status()["shard_counters"][0]
        check(sc["dropped"]["challenge_limited"] > 0,
              f"the rest were counted as challenge_limited ({sc['dropped']['challenge_limited']})")
        check(f["signed_pongs"] > 0, "honest challenges within the budget were answered")
        # The budget refills: a new peer verifies the node right after the flood.
        other = c.start("other", ["--listen", "127.0.0.1:0", "--shards", "1", "--admin", "off",
                                  "--bootstrap", f"127.0.0.1:{port}"])
        other.wait_ready()
        check(wait_for(lambda: any(p["verified"] and p["live"] for p in other.status()["peers"]),
                       timeout=5), "a new peer verifies the node right after the flood")
        check(node.proc.poll() is None, "node survived")
    summary()


if __name__ == "__main__":
    sys.exit(main())
