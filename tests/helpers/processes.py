"""Talking to processes a test started: a free loopback port, and reading output until a line."""

import select
import socket
import time


def free_port():
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
