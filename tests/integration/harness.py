"""Helpers for integration tests: start real `ringpeer serve` processes on 127.0.0.1,
ask them for status, and always clean up (processes and temporary data directories).

Every wait is bounded in time; nothing sleeps as synchronization except short polls of a
condition with a deadline.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class Node:
    """`ringpeer serve` on `data_dir`. Its log is DIR/node.log, or `log_path` (appended to)
    when the data directory is not a place for it (a test that fills the disk)."""

    def __init__(self, binary, data_dir, args, env=None, log_path=None):
        self.data_dir = data_dir
        self.log_path = log_path or os.path.join(data_dir, "node.log")
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.log = open(self.log_path, "ab" if log_path else "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", data_dir] + args,
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.binary = binary

    def status(self, timeout=5.0):
        out = subprocess.run([self.binary, "status", "--data-dir", self.data_dir, "--json"],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)

    def wait_ready(self, timeout=10.0):
        """Waits until the control socket answers; returns the status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node exited early:\n" + self.read_log())
            st = self.status()
            if st is not None:
                return st
            time.sleep(0.05)
        raise RuntimeError("node did not come up:\n" + self.read_log())

    def run_cli(self, args, timeout=45.0):
        """Runs `ringpeer ARGS --data-dir DIR` against this node; its JSON answer or None."""
        out = subprocess.run([self.binary] + args + ["--data-dir", self.data_dir],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)

    def port(self):
        st = self.wait_ready()
        return int(st["listen"][0].rsplit(":", 1)[1])

    def read_log(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signals the node and returns (exit code, seconds it took)."""
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, time.monotonic() - start


class Cluster:
    """A context manager owning nodes and a temporary directory."""

    def __init__(self, binary):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="ringpeer-it-")
        self.nodes = []

    def start(self, name, args, env=None):
        node = Node(self.binary, os.path.join(self.tmp, name), args, env)
        self.nodes.append(node)
        return node

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for n in self.nodes:
            try:
                n.stop(signal.SIGKILL, timeout=5)
            except Exception:
                pass
            n.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def free_tcp_port():
    """A TCP port free on 127.0.0.1 now (for an admin address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


_checks_passed = 0


def check(cond, message):
    """Asserts one acceptance point; the first failure ends the script with exit 1."""
    global _checks_passed
    if not cond:
        print("FAIL: " + message, flush=True)
        print(f"{_checks_passed} passed, 1 failed", flush=True)
        sys.exit(1)
    _checks_passed += 1
    print("ok: " + message, flush=True)


def summary():
    print(f"{_checks_passed} passed, 0 failed", flush=True)
