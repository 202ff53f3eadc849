"""Reading the monitor's status file, `monitor.status` in the runtime dir, so that `status` can
say whether the monitor runs.

The monitor (cortex_hook/monitor/) writes it atomically at every poll: JSON with at least "pid"
and "at" (its time.time()), and "poll_seconds" (its polling interval), "gpus", "drained" and
"status" (its STATUS= line). The monitor counts as running while the file is fresh (written
within STALE_POLLS polling intervals) and its pid is alive; a stale file, a dead pid or no file
at all means it is not running (it adds, it is never required).
"""

import json
import os
import time

from ..quantities import format_ago
from .rundir import MONITOR_STATUS, trusted

STALE_POLLS = 3


def read(directory, poll_seconds=10.0, now=None):
    """What the status file in DIRECTORY says, plus {"running", "age", "why"} ("why": why it counts
    as not running, or None). POLL_SECONDS (the policy's `poll`) judges staleness when the file
    does not give the monitor's own interval."""
    now = time.time() if now is None else now
    info = {"running": False, "pid": None, "at": None, "age": None, "why": "no status file"}
    if not trusted(directory):  # (a file others could write says nothing)
        return info if not os.path.lexists(directory) else dict(info, why=f"runtime dir {directory} is not root's")
    try:
        with open(os.path.join(directory, MONITOR_STATUS), encoding="utf-8") as f:
            data = json.load(f)
        pid, at = data["pid"], float(data["at"])
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError(pid)
    except FileNotFoundError:
        return info
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return dict(info, why="status file unreadable")
    poll = data.get("poll_seconds")
    poll = poll if isinstance(poll, (int, float)) and not isinstance(poll, bool) and poll > 0 else poll_seconds
    info = dict(data, pid=pid, at=at, age=max(0.0, now - at), why=None)
    if not _alive(pid):
        info["why"] = f"pid {pid} is gone"
    elif now - at > STALE_POLLS * poll:
        info["why"] = f"no poll for {STALE_POLLS} polling intervals"
    info["running"] = info["why"] is None
    return info


def describe(info):
    """The `status` line: `monitor: running (pid N, last poll 4 s ago): STATUS`, or
    `monitor: not running` (with what its status file last said, if there is one)."""
    if info["running"]:
        status = info.get("status")
        return (f"monitor: running (pid {info['pid']}, last poll {format_ago(info['age'])})"
                + (f": {status}" if isinstance(status, str) and status else ""))
    if info["at"] is None:
        return "monitor: not running" + (f" ({info['why']})" if info["why"] != "no status file" else "")
    return f"monitor: not running ({info['why']}; last poll {format_ago(info['age'])})"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
