"""Whose turn: starts waiting for GPUs get them in class order (critical, normal, batch), then in
the order they began to wait, whoever happens to poll first.

Each waiting start records, with its wait, the GPUs it could use once free (`wants`) and the lease
generation its last plan judged (`seen`: a digest of every lease and promise). A start whose plan
succeeds gives way when a start ahead of it wants one of the GPUs it chose and has not yet judged
the present generation: that start plans next (it wakes on the same commit) and either takes its
GPUs or records that it could not, and then the start behind it goes. A start never waits on one
that is not waiting (its process gone: its wait is dropped), so nothing waits forever.
"""

import zlib

from .rules import CLASS_RANK
from .state import tallies

FREEABLE = ("leased", "promised")  # a GPU rejected only for these could be the waiter's once free


def generation(state):
    """A digest of every lease and promise now: a waiter that judged it has seen this state."""
    row = state.conn.execute(
        "SELECT count(*), group_concat(k, ',') FROM (SELECT 'l:' || unit || '=' || uuid AS k FROM lease "
        "UNION ALL SELECT 'p:' || unit || '=' || uuid FROM promise ORDER BY k)").fetchone()
    return f"{row[0]}:{zlib.crc32((row[1] or '').encode()):08x}"


def wants(decision):
    """The GPUs a refused DECISION could use once they are free (only leases or promises reject them)."""
    return tuple(v.gpu.uuid for v in decision.verdicts
                 if v.gpu.uuid and all(r.code in FREEABLE for r in v.reasons))


def ahead(waits, unit, klass, arrival, chosen, seen_now):
    """The first of WAITS (tallies.waits) that goes before UNIT (class KLASS, waiting since
    ARRIVAL, or arriving now) for one of the GPUs CHOSEN, and has not judged SEEN_NOW; None."""
    mine = CLASS_RANK[klass]
    chosen = set(chosen)
    for wait in sorted(waits, key=lambda w: (-CLASS_RANK.get(w.klass, 0), w.since)):
        if wait.unit == unit or wait.seen == seen_now or not chosen.intersection(wait.wants):
            continue
        rank = CLASS_RANK.get(wait.klass, 0)
        if rank > mine or (rank == mine and wait.since < arrival):
            return wait
    return None


def take_turn(state, start, decision):
    """Inside the transaction that planned START (allocation.py): give way when a start waiting
    ahead of it wants a GPU DECISION chose and has not yet judged the leases as they are now
    (DECISION becomes a refusal, START.gave_way is set); a refused start records what it could use
    (START.turn, and its wait's row when it waits). A GPU promised to START is never given away."""
    seen = generation(state)
    start.gave_way = False
    if decision.ok and decision.chosen:
        unpromised = [v.gpu.uuid for v in decision.verdicts if v.selected and not v.promised]  # (its own by preemption)
        first = ahead(tallies.waits(state), start.unit, start.svc.klass, start.arrival, unpromised, seen)
        if first is None:
            return
        labels = ", ".join(g.label for g in decision.chosen if g.uuid in first.wants)
        for v in decision.verdicts:
            v.selected = False
        decision.ok, decision.chosen, start.gave_way = False, [], True
        decision.summary = (f"{start.unit}: {labels} goes first to {first.unit} ({first.klass}), which waits "
                            "ahead of it")
    if not decision.ok and not decision.victims:
        wanted = wants(decision)
        start.turn = (wanted, start.svc.gpus if start.svc.gpus != "all" else len(wanted), seen)
        if start.waiting:
            tallies.judged(state, start.unit, start.turn)
