"""What a preemption leaves in the state: the GPUs promised to the preempting start (`promise`),
and the units it stopped or requeued (`preempted`).

A promise lives as long as the process that made it (the preempting unit's allocate, in its
lease unit): it ends when that start leases the GPU, or when the process is gone (its start was
cancelled), so a promise never outlives the start it was made for. A `preempted` row is taken by
the victim's next start: a requeue is honoured only by the start its preemption caused (within the
victim's grace and a margin); a later start, an admin's, is an ordinary one.
"""

import time

from ..holders import boot_id, pid_start_time
from ..model import Promise
from .tallies import wait_alive

_PROMISES = "SELECT uuid, unit, victim, since, pid, pid_start, boot_id FROM promise"


def promises(state):
    """[Promise] whose maker still runs, oldest first (the dead ones: `drop_dead_promises`)."""
    rows = state.conn.execute(_PROMISES + " ORDER BY since, uuid")
    return [p for p in (Promise(*row) for row in rows) if wait_alive(p)]


def drop_dead_promises(state):
    """Remove the promises whose maker is gone; returns them."""
    dead = [p for p in (Promise(*row) for row in state.conn.execute(_PROMISES)) if not wait_alive(p)]
    if dead:
        with state.write() as c:
            c.executemany("DELETE FROM promise WHERE uuid = ?", [(p.uuid,) for p in dead])
    return dead


def promise(state, unit, uuids, victims, pid):
    """Promise UNIT (whose allocate runs as PID) every GPU of its selection, UUIDS: those of
    VICTIMS ([Victim]) and those free now (victim ''), so that no other start takes one while the
    victims stop; and mark each victim preempted by UNIT. Inside the caller's transaction: the one
    that decided."""
    now, start, boot = time.time(), pid_start_time(pid), boot_id()
    held = {uuid: victim.unit for victim in victims for uuid in victim.gpus}
    with state.write() as c:
        c.executemany("INSERT OR REPLACE INTO promise (uuid, unit, victim, since, pid, pid_start, boot_id) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [(uuid, unit, held.get(uuid, ""), now, pid, start, boot) for uuid in uuids])
        for victim in victims:
            mode = "stop" if victim.when_preempted == "stop" else "requeue"
            c.execute("INSERT OR REPLACE INTO preempted (unit, by_unit, since, mode) VALUES (?, ?, ?, ?)",
                      (victim.unit, unit, now, mode))


def end_promises(state, unit):
    """UNIT leased its GPUs, or gave up: its promises are over (all of them: a GPU it did not take
    goes back to whoever may have it)."""
    with state.write() as c:
        c.execute("DELETE FROM promise WHERE unit = ?", (unit,))


def take_requeue(state, unit, within):
    """The unit that requeued UNIT, when this start is the one its preemption caused (the mark is
    at most WITHIN seconds old: the victim's grace and the margin), else None. The mark is taken
    either way: a later start of UNIT (an admin's) is an ordinary one."""
    row = state.conn.execute("SELECT by_unit, mode, since FROM preempted WHERE unit = ?", (unit,)).fetchone()
    if row:  # (a start that was not preempted, nearly every one, takes no lock here)
        with state.write() as c:
            row = c.execute("SELECT by_unit, mode, since FROM preempted WHERE unit = ?", (unit,)).fetchone()
            c.execute("DELETE FROM preempted WHERE unit = ?", (unit,))
    if row and row[1] == "requeue" and time.time() - row[2] <= within:
        return row[0]
    return None


def handed_back(state, since, unit=None):
    """The UUIDs given back (a `release` or `reap` history row) at SINCE or later, and those
    promised to UNIT: their previous holder's memory may still be on its way back (handoff.py)."""
    uuids = set()
    for (gpus,) in state.conn.execute("SELECT gpus FROM history WHERE action IN ('release', 'reap') AND at >= ? "
                                      "UNION ALL SELECT uuid FROM promise WHERE unit = ?", (since, unit)):
        uuids.update(u for u in gpus.split(",") if u)
    return uuids
