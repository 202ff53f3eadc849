"""What a start asks the driver, and about which processes: the inventory (with the GPUs that
two answers give one UUID, and lost GPUs named by the UUID they had), the facts a decision needs,
and the unit's own old processes, whose memory counts as free.
"""

import os

from .errors import DriverError, PolicyError, TimeoutExpired
from .holders import cgroup_pids, lease_alive


def own_pids(unit_leases, holder=None):
    """Processes of this unit's previous instance: their GPU memory counts as free."""
    pids = set()
    for lease in unit_leases:
        if lease.cgroup:
            pids |= cgroup_pids(lease.cgroup)
        elif lease.pid and lease_alive(lease):
            pids.add(lease.pid)
    if holder is not None and holder.cgroup:
        pids |= cgroup_pids(holder.cgroup)
    pids.discard(os.getpid())
    return frozenset(pids)


def detail_for(svc, pids, handed=False):
    """The optional inventory facts this decision needs (each costs driver calls): the processes
    when the unit's own old ones may hold memory (PIDS), or when a GPU was HANDED over lately (its
    previous holder's memory may not be back yet: handoff.py)."""
    detail = set()
    if (svc.gpus == "all" or svc.gpus > 1) and svc.topology != "any":
        detail.add("topology")
    if pids or handed or svc.preempt == "lower":  # (a victim's memory counts as free for the preemptor)
        detail.add("processes")
    return frozenset(detail)


def discover(plugins, policy, detail):
    """The inventory's GPUs, or PolicyError when no plugin provides the policy's inventory. GPUs the
    driver gives one UUID between them are unidentified, all of them: none can be named safely."""
    gpus = plugins.discover_gpus(policy, detail)
    if gpus is None:
        raise PolicyError(policy.path, 0, 0, "inventory", f"no plugin provides inventory {policy.inventory!r}")
    holders = {}
    for gpu in gpus:
        if gpu.uuid is not None:
            holders.setdefault(gpu.uuid, []).append(gpu)
    for uuid, same in holders.items():
        if len(same) > 1:
            for gpu in same:
                others = ", ".join(g.label for g in same if g is not gpu)
                gpu.problems = tuple(gpu.problems) + (f"the driver gives it the UUID of {others} ({uuid})",)
                gpu.uuid = None
    return gpus


def name_lost(gpus, seen):
    """Give a lost GPU the driver no longer names (no UUID) the UUID it had when it last answered
    at the same index (SEEN: State.seen_gpus()), so that its drain and its leases still show
    against it. Said in its problems; a GPU that cannot be told apart keeps no UUID."""
    present = {g.uuid for g in gpus if g.uuid}
    for gpu in gpus:
        if gpu.uuid is None and gpu.lost and not gpu.is_mig:
            known = [u for u, row in seen.items() if row[0] == gpu.index and u.startswith("GPU-") and u not in present]
            if len(known) == 1:
                gpu.uuid = known[0]
                gpu.problems = tuple(gpu.problems) + ("its UUID is the one it had when it last answered",)
                present.add(known[0])
    return gpus


def remember(state, gpus):
    """Record GPUS as seen in STATE, and give each lost one the UUID it had (name_lost)."""
    state.remember_gpus(gpus)
    return name_lost(gpus, state.seen_gpus())


def discover_for(plugins, policy, svc, detail):
    """-> (gpus, driver problem). A driver that fails or hangs means "no GPU" for a service that
    may start on CPU; a driver that fails (not hangs) is waited out by a `wait` service."""
    try:
        return discover(plugins, policy, detail), None
    except (DriverError, TimeoutExpired) as exc:
        if svc.on_unavailable == "cpu" or (svc.on_unavailable == "wait" and isinstance(exc, DriverError)):
            return [], str(exc)
        raise
