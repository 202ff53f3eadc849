"""What the runtime monitor (cortex_hook/monitor/) reads and writes in the state: its drains, the
non-fatal trouble it sees on GPUs, and how often it has acted on a unit.

A drain says who made it (`source`): the monitor drains a GPU only when nothing else has, and
lifts only its own drains, so an admin's drain is never replaced or lifted by the monitor (an
admin's `drain` over a monitor's drain makes it the admin's; `undrain` lifts any). The monitor's
history rows are ordinary history rows (State.record): unit = the affected unit, or the GPU's UUID
for what concerns the GPU alone; actions `fault-drain`, `fault-restart`, `fault-stop`,
`fault-ignore`, `fault-limited`, `fault-recover`; detail {"gpu", "why", "source": "monitor"}.

Not on the start path: the planner reads trouble through State.snapshot().
"""

import time

from ..model import Drain

TROUBLE_KINDS = ("corrected_ecc", "xid", "throttle", "recovered")
FAULT_RESTART = "fault-restart"


def drain_by_monitor(state, uuid, reason, detail):
    """Drain UUID for the monitor (REASON for people, DETAIL what it saw, e.g. `XID 79`); False,
    changing nothing, when UUID is drained already (by an admin or by the monitor)."""
    with state.write() as c:
        return c.execute("INSERT OR IGNORE INTO drain (uuid, reason, since, source, detail) "
                         "VALUES (?, ?, ?, 'monitor', ?)", (uuid, reason, time.time(), detail)).rowcount > 0


def lift_monitor_drain(state, uuid):
    """Lift UUID's drain if the monitor made it; True if one was lifted (an admin's stays)."""
    with state.write() as c:
        return c.execute("DELETE FROM drain WHERE uuid = ? AND source = 'monitor'", (uuid,)).rowcount > 0


def monitor_drains(state):
    """[Drain] the monitor made and nobody has lifted or taken over, oldest first."""
    rows = state.conn.execute("SELECT uuid, reason, since, source, detail FROM drain WHERE source = 'monitor' "
                              "ORDER BY since, uuid")
    return [Drain(*row) for row in rows]


def record_trouble(state, uuid, kind, count=1, detail=""):
    """Record non-fatal trouble seen on UUID now: KIND one of TROUBLE_KINDS (ValueError otherwise)."""
    if kind not in TROUBLE_KINDS:
        raise ValueError(f"unknown trouble kind {kind!r} (one of {', '.join(TROUBLE_KINDS)})")
    with state.write() as c:
        c.execute("INSERT INTO trouble (uuid, at, kind, count, detail) VALUES (?, ?, ?, ?, ?)",
                  (uuid, time.time(), kind, int(count), str(detail)))


def trouble_since(state, since):
    """{uuid: [Trouble]} recorded at SINCE (a time.time()) or later, oldest first."""
    return state.trouble(since)


def prune_trouble(state, before):
    """Forget the trouble recorded before BEFORE (a time.time()); returns how many rows went."""
    with state.write() as c:
        return c.execute("DELETE FROM trouble WHERE at < ?", (before,)).rowcount


def fault_actions_since(state, unit, since, actions=(FAULT_RESTART,)):
    """How many times the monitor restarted UNIT (or took another of ACTIONS on it) at SINCE or
    later (history rows; the history keeps only its last `history_limit` rows, so older ones may
    be gone)."""
    marks = ", ".join("?" * len(actions))
    return state.conn.execute(f"SELECT count(*) FROM history WHERE unit = ? AND action IN ({marks}) AND at >= ?",
                              (unit, *actions, since)).fetchone()[0]
