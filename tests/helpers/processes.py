"""Processes a test starts: a free loopback port, reading output until a line, a wrapper whose
server never outlives the test, and a process that holds leases taken with --holder-pid."""

import os
import select
import signal
import socket
import subprocess
import sys
import time


def free_port():
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_group(cmd, **popen):
    """Popen CMD as the leader of its own process group (a wrapper and the server it starts)."""
    return subprocess.Popen(cmd, start_new_session=True, **popen)


def end_group(proc):
    """SIGKILL PROC's whole group if PROC still runs (a failed test must not leave its server)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def read_until(stream, needle, timeout=60.0):
    """Lines from STREAM until one contains NEEDLE (returns them all); fails after TIMEOUT."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen in:\n" + "\n".join(seen))


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat, or None when the process is gone (read here, not via cortex_hook)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (IndexError, ValueError):
        return None


class HolderProcess:
    """A process whose life bounds the leases taken with `--holder-pid` (it reads stdin forever)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
        self.pid = self.proc.pid
        self.start = proc_start_time(self.pid)
        assert self.start is not None

    def alive(self):
        """True while the process lives (and is the same process)."""
        return self.proc.returncode is None and proc_start_time(self.pid) == self.start

    def end(self):
        """Kill and reap it: /proc/PID is gone, so its leases are dead."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()  # reaped: /proc/PID is gone, so its leases are dead
