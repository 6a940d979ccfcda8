#!/usr/bin/env python3
"""`ringpeer chat` in a real terminal: two chats run in tmux panes (a pty each, as a person
would run them) against a relay on 127.0.0.1, and the test reads the screens.

What a person must see, each checked on the screen with a bounded wait:
  1. the history on join: messages posted before the chat started, in order;
  2. a line typed in one chat appears in the other (and, echoed by the terminal, in its
     own pane, once: the chat does not print one's own messages twice);
  3. who is there: "* bob is here" when bob joins, /who lists both nicks, "* bob left";
  4. a clear line when the relay goes away ("-- connection lost; retrying") and when it
     is back ("-- connection is back"), and that messages flow again after it;
  5. /quit leaves: the process exits 0 and the other chat shows "* bob left".

Skipped (exit 77) when tmux is missing. Cleans up its tmux server (own socket), the relay
and the temporary directory, also on failure.

usage: chat_tmux.py RINGPEER_BINARY
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from harness import Cluster, check, summary, wait_for
from rooms import run
from rooms_relay import start_relay


class Tmux:
    """A private tmux server (its own socket), killed on close."""

    def __init__(self, tmp):
        self.sock = os.path.join(tmp, "tmux.sock")

    def cmd(self, *args, check_rc=True):
        out = subprocess.run(["tmux", "-S", self.sock] + list(args), capture_output=True,
                             text=True, timeout=10)
        if check_rc and out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def open(self, name, argv, rc_file=None):
        # remain-on-exit keeps the pane (and its exit status) after the chat quits. It is
        # set in the same tmux command as the session is made, so that a chat that exits
        # early cannot take its window with it before the option applies.
        shell = " ".join(f"'{a}'" for a in argv)
        if rc_file is not None:  # the exit status, as the shell saw it
            shell = f"sh -c \"{shell}; echo \\$? > '{rc_file}'\""
        first = [] if os.path.exists(self.sock) else ["-f", "/dev/null"]
        self.cmd(*first, "new-session", "-d", "-s", name, "-x", "160", "-y", "50", shell,
                 ";", "set-option", "-w", "-t", name, "remain-on-exit", "on")

    def screen(self, name):
        # -J joins wrapped lines; -S - from the start of the history.
        return self.cmd("capture-pane", "-p", "-J", "-S", "-", "-t", name, check_rc=False)

    def lines(self, name):
        return [l.rstrip() for l in self.screen(name).splitlines()]

    def type(self, name, text):
        self.cmd("send-keys", "-t", name, "-l", text)
        self.cmd("send-keys", "-t", name, "Enter")


    def close(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    a = ap.parse_args()
    if shutil.which("tmux") is None:
        print("skipped: tmux is not installed (apt-get install tmux)")
        sys.exit(77)
    b = os.path.abspath(a.binary)
    with Cluster(b) as c:
        tmux = Tmux(c.tmp)
        try:
            relay, port = start_relay(c, "1", 0)
            boot = f"127.0.0.1:{port}"
            d = lambda name: os.path.join(c.tmp, name)
            made = run(b, ["room", "create", "lobby", "--bootstrap", boot, "--json",
                           "--writers", "3"], d("admin"))
            check(made.returncode == 0, f"room create: {made.stderr.strip()!r}")
            room = json.loads(made.stdout)
            invites = [room["writer_invite"]] + room.get("more_writer_invites", [])
            check(len(invites) == 3, f"three writer invites ({len(invites)})")

            history = ["before you came 1", "before you came 2", "before you came 3"]
            posted = run(b, ["room", "post", invites[2], "-", "--nick", "carol",
                             "--bootstrap", boot], d("carol"), stdin="\n".join(history) + "\n")
            check(posted.returncode == 0, f"carol posts the history: {posted.stderr.strip()!r}")

            def chat(name, invite):
                tmux.open(name, [b, "chat", invite, "--nick", name, "--data-dir", d(name),
                                 "--listen", "127.0.0.1:0", "--bootstrap", boot],
                          rc_file=d(name + ".rc"))

            def exit_status(name):
                try:
                    with open(d(name + ".rc")) as f:
                        return f.read().strip() or None
                except FileNotFoundError:
                    return None

            def shows(name, text, timeout=10):
                return wait_for(lambda: any(text in l for l in tmux.lines(name)), timeout, 0.05)

            chat("alice", invites[0])
            check(shows("alice", "-- connected"), "alice's screen says it is connected:\n" +
                  tmux.screen("alice"))
            screen = tmux.lines("alice")
            at = [next((i for i, l in enumerate(screen) if l == f"carol: {h}"), -1)
                  for h in history]
            check(all(i >= 0 for i in at) and at == sorted(at),
                  f"alice sees the history on join, in order ({at}):\n" + "\n".join(screen))

            chat("bob", invites[1])
            check(shows("bob", "-- connected"), "bob is connected:\n" + tmux.screen("bob"))
            check(shows("alice", "* bob is here"), "alice sees '* bob is here':\n" +
                  tmux.screen("alice"))

            t0 = time.monotonic()
            tmux.type("alice", "hello from alice")
            check(shows("bob", "alice: hello from alice"),
                  "bob sees alice's line:\n" + tmux.screen("bob"))
            print(f"  alice -> bob on screen in {(time.monotonic() - t0) * 1000:.0f} ms "
                  "(includes tmux polling)")
            tmux.type("bob", "hi alice")
            check(shows("alice", "bob: hi alice"), "alice sees bob's line")
            own = [l for l in tmux.lines("alice") if "hello from alice" in l]
            check(len(own) == 1, f"alice's own line is on her screen once, as typed ({own})")

            tmux.type("alice", "/who")
            check(shows("alice", "-- here:"), "/who answers")
            who = next(l for l in tmux.lines("alice") if l.startswith("-- here:"))
            check("alice" in who and "bob" in who, f"/who lists alice and bob: {who!r}")

            # bob leaves: alice sees it, and bob's chat exits 0.
            tmux.type("bob", "/quit")
            rc = wait_for(lambda: exit_status("bob"), 10, 0.05)
            check(rc == "0", f"/quit exits 0 ({rc})")
            check(shows("alice", "* bob left"), "alice sees '* bob left':\n" + tmux.screen("alice"))

            # The relay goes away (alice's only peer now: members that find each other in
            # the DHT also talk directly): her screen says so, then says when it is back.
            rc, _ = relay.stop(signal.SIGKILL)
            check(rc == -signal.SIGKILL, "relay killed")
            check(shows("alice", "-- connection lost", timeout=30),
                  "alice's screen says the connection was lost:\n" + tmux.screen("alice"))
            relay, port2 = start_relay(c, "1", port)
            check(port2 == port, "relay back on its port")
            check(shows("alice", "-- connection is back", timeout=30),
                  "alice's screen says the connection is back:\n" + tmux.screen("alice"))
            posted = run(b, ["room", "post", invites[2], "welcome back", "--nick", "carol",
                             "--bootstrap", boot], d("carol"))
            check(posted.returncode == 0, f"carol posts again: {posted.stderr.strip()!r}")
            check(shows("alice", "carol: welcome back"),
                  "messages reach alice again after the relay's return:\n" + tmux.screen("alice"))
        finally:
            tmux.close()
    summary()


if __name__ == "__main__":
    main()
