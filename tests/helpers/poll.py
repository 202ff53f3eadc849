"""Polling a condition with a deadline: the tests' only way to wait for something."""

import time


def wait_until(predicate, what, timeout=30.0, interval=0.05, proc=None):
    """PREDICATE()'s first truthy value, polled every INTERVAL; AssertionError naming WHAT after
    TIMEOUT seconds, or as soon as PROC (a Popen that must stay up meanwhile) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited {proc.returncode} first: {proc.communicate()[1]}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
