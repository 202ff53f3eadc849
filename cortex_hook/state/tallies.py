"""What the metrics count, kept in the state so every process adds to the same figures: the starts
waiting for a GPU now (`waiting`), and monotonic tallies (`tally`: a counter per name and label
set; a histogram is its `_bucket`, `_sum` and `_count` tallies, as Prometheus exposes them).

Tallies only grow (a counter that goes down reads as a reset to Prometheus); they are never pruned,
and their label sets are bounded: services are the policy's `match` patterns, never unit names.
Each is written inside the transaction of the change it counts (an allocation, a refusal, a
fault), so a figure never counts a change that did not commit.
"""

import time

from ..holders import boot_id, pid_alive, pid_start_time, this_boot
from ..model import Wait

# seconds: a wait for a GPU, and a handoff (a release to the next lease of the GPU), last from
# well under a second (a GPU freed at once) to the longest `wait` a policy takes (hours)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def _key(labels):
    """LABELS as stored: `name=value` lines, sorted (json is kept off the start path)."""
    return "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in sorted(labels.items()))


def _labels(key):
    return dict(line.partition("=")[::2] for line in key.split("\n")) if key else {}


def add(state, name, labels, by=1.0):
    """Add BY to the tally NAME{LABELS} (a dict of strings)."""
    with state.write() as c:
        c.execute("INSERT INTO tally (name, labels, value) VALUES (?, ?, ?) "
                  "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
                  (name, _key(labels), by))


def observe(state, name, labels, seconds, buckets=DURATION_BUCKETS):
    """Count SECONDS into the histogram NAME{LABELS}: every bucket it fits (`le`, cumulative,
    `+Inf` included), `_sum` and `_count`."""
    with state.write():
        for bound in buckets:
            if seconds <= bound:
                add(state, f"{name}_bucket", dict(labels, le=f"{bound:g}"))
        add(state, f"{name}_bucket", dict(labels, le="+Inf"))
        add(state, f"{name}_sum", labels, seconds)
        add(state, f"{name}_count", labels)


def is_view(state):
    """True for the read-only StateView of a user who is not root (it has no connection; asking it
    for one would raise "needs root")."""
    return "conn" not in vars(state)


def tallies(state):
    """{name: [(labels dict, value)]} of every tally ({} from a read-only view, which has none)."""
    if is_view(state):
        return {}
    out = {}
    for name, labels, value in state.conn.execute("SELECT name, labels, value FROM tally ORDER BY name, labels"):
        out.setdefault(name, []).append((_labels(labels), value))
    return out


# -- waits --------------------------------------------------------------------------------------
def begin_wait(state, unit, service, klass, summary, pid, turn=((), 0, ""), since=None):
    """Record that UNIT (service pattern SERVICE, class KLASS) waits for a GPU in process PID,
    since SINCE (default: now), with TURN = (the GPUs it wants, how many, the generation it saw:
    turns.py); a wait already recorded for UNIT by PID keeps its start. Returns when it began."""
    with state.write() as c:
        row = c.execute("SELECT since, pid FROM waiting WHERE unit = ?", (unit,)).fetchone()
        since = row[0] if row and row[1] == pid else (since or time.time())
        wants, count, seen = turn
        c.execute("INSERT OR REPLACE INTO waiting (unit, service, class, since, pid, pid_start, boot_id, summary, "
                  "wants, count, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (unit, service, klass, since, pid, pid_start_time(pid), boot_id(), summary, ",".join(wants),
                   count, seen))
    return since


def judged(state, unit, turn):
    """UNIT, waiting, planned again and still got nothing: record its TURN (turns.py)."""
    wants, count, seen = turn
    with state.write() as c:
        c.execute("UPDATE waiting SET wants = ?, count = ?, seen = ? WHERE unit = ?",
                  (",".join(wants), count, seen, unit))


def end_wait(state, unit):
    """Forget UNIT's wait; returns when it began (None if none was recorded)."""
    with state.write() as c:
        row = c.execute("SELECT since FROM waiting WHERE unit = ?", (unit,)).fetchone()
        c.execute("DELETE FROM waiting WHERE unit = ?", (unit,))
    return row[0] if row else None


_WAITS = "SELECT unit, service, class, since, pid, pid_start, boot_id, summary, wants, count, seen FROM waiting"


def _wait(row):
    return Wait(*row[:8], wants=tuple(u for u in row[8].split(",") if u), count=row[9], seen=row[10])


def waits(state):
    """[Wait] of the starts waiting now, oldest first (a wait whose process is gone is left out;
    `drop_dead_waits` removes it). A read-only StateView answers from its copy."""
    if is_view(state):
        return state.waits()
    rows = state.conn.execute(_WAITS + " ORDER BY since, unit")
    return [w for w in (_wait(row) for row in rows) if wait_alive(w)]


def wait_alive(wait):
    """True while the process that records WAIT still runs, in this boot (as holders.lease_alive
    judges a pid holder)."""
    return this_boot(wait.boot_id) and (wait.pid is None or pid_alive(wait.pid, wait.pid_start))


def drop_dead_waits(state):
    """Remove the waits whose process is gone (killed while it waited)."""
    rows = state.conn.execute(_WAITS)
    dead = [w.unit for w in (_wait(row) for row in rows) if not wait_alive(w)]
    if dead:
        with state.write() as c:
            c.executemany("DELETE FROM waiting WHERE unit = ?", [(u,) for u in dead])
    return dead


def last_release(state, uuids):
    """When the last of UUIDS was last given back (a `release` or `reap` history row), or None."""
    latest = None
    for uuid in uuids:
        row = state.conn.execute(
            "SELECT max(at) FROM history WHERE action IN ('release', 'reap') AND "
            "(',' || gpus || ',') LIKE ?", (f"%,{uuid},%",)).fetchone()
        if row and row[0] is not None and (latest is None or row[0] > latest):
            latest = row[0]
    return latest


# -- what allocate counts -----------------------------------------------------------------------
STARTS = "cortex_hook_allocations_total"
WAIT = "cortex_hook_wait_duration_seconds"
HANDOFF = "cortex_hook_handoff_duration_seconds"
PREEMPTIONS = "cortex_hook_preemptions_total"


def count_start(state, service, result, reason=""):
    """Count how one start ended: RESULT ok | cpu | refused | timeout, REASON the refusal's code."""
    add(state, STARTS, {"service": service, "result": result, "reason": reason})


def wait_over(state, unit, service, result, uuids=()):
    """End UNIT's wait, if it waited: its duration into the wait histogram, and for a start that
    got UUIDS, the handoff (the last release of those GPUs to now). Inside the caller's write."""
    since = end_wait(state, unit)
    if since is None:
        return
    now = time.time()
    observe(state, WAIT, {"service": service, "result": result}, max(0.0, now - since))
    released = last_release(state, uuids) if uuids else None
    if released is not None and released >= since:
        observe(state, HANDOFF, {"service": service}, max(0.0, now - released))
