#!/usr/bin/env python3
"""Long messages (issue 16): a 4,000-character message of multi-byte characters and a
40,000-byte message, posted with `ringpeer room post` and with `ringpeer chat`, reach a
late reader intact; a message past the limit is refused with the limit named.

usage: rooms_long.py RINGPEER_BINARY
"""
import argparse
import json
import os
import subprocess

from harness import Cluster, check, summary
from rooms import run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    b = ap.parse_args().binary
    with Cluster(b) as c:
        relay = c.start("relay", ["--listen", "127.0.0.1:0", "--admin", "off"])
        try:
            boot = f"127.0.0.1:{relay.port()}"
            d = lambda name: os.path.join(c.tmp, name)
            made = run(b, ["room", "create", "long", "--bootstrap", boot, "--json"], d("admin"))
            check(made.returncode == 0, f"room create exits 0: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            w, r = room["writer_invite"], room["reader_invite"]
            cjk = ("日本語のテキスト、é ü ñ — " * 400)[:4000]
            big = "".join(chr(ord("a") + i % 26) for i in range(40000))
            check(len(cjk) == 4000 and len(cjk.encode()) > 9000 and len(big.encode()) == 40000,
                  f"messages: 4,000 characters ({len(cjk.encode())} bytes), 40,000 bytes")
            for name, text in (("multibyte", cjk), ("40000", big)):
                p = run(b, ["room", "post", w, text, "--nick", "poster"], d("poster"))
                check(p.returncode == 0, f"room post of the {name} message exits 0: "
                                         f"{p.stderr.strip()!r}")
            # chat: the lines typed (here piped), then end of input.
            chat = subprocess.run([b, "chat", w, "--nick", "chatter", "--data-dir", d("chatter"),
                                   "--listen", "127.0.0.1:0"],
                                  input="c:" + cjk + "\nc:" + big + "\n", capture_output=True,
                                  text=True, timeout=60)
            check(chat.returncode == 0 and "not sent" not in chat.stderr,
                  f"chat sends both: {chat.stderr.strip()[-300:]!r}")
            too = run(b, ["room", "post", w, "z" * 70000], d("poster"))
            check(too.returncode == 1 and "65503" in too.stderr,
                  f"past the limit: refused with the limit named: {too.stderr.strip()!r}")
            late = run(b, ["room", "read", r, "--json"], d("late"), timeout=60)
            texts = [json.loads(l)["text"] for l in late.stdout.splitlines() if l.startswith("{")]
            check(late.returncode == 0 and texts == [cjk, big, "c:" + cjk, "c:" + big],
                  f"a late reader has all four intact ({[len(t) for t in texts]} characters)")
        except Exception:
            print(relay.read_log())
            raise
    summary()


if __name__ == "__main__":
    main()
