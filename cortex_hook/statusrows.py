"""The rows `status` shows, one per GPU, as plain data: what `status --json` prints, what the
table and `status --watch` render, and what the metrics are made of (metrics/collect.py)."""

import time

from . import rules
from .quantities import format_ago


def drain_words(drain, now):
    """How `status` says who drained a GPU: `drained by monitor: XID 79, 3 min ago`, `drained by
    admin: maintenance`."""
    if drain.source == "monitor":
        return f"drained by monitor: {drain.detail or drain.reason}, {format_ago(now - drain.since)}"
    return f"drained by {drain.source}: {drain.reason}"


def _drain_fields(drain, now):
    if drain is None:
        return {"drain": None, "drain_source": None, "drain_detail": None, "drain_since": None, "drain_text": None}
    return {"drain": drain.reason, "drain_source": drain.source, "drain_detail": drain.detail,
            "drain_since": drain.since, "drain_text": drain_words(drain, now)}


def gpu_rows(gpus, policy, plugins, snapshot, seen=None, live=True, now=None):
    """Status rows (dicts) for every GPU present, then every ranked GPU that is absent. The health
    column holds the faults `plan` rejects a GPU for (the plugins' cortex_gpu_faults). Not LIVE:
    GPUS are only those the state has seen (the driver could not be asked), so their health and
    presence are unknown (`present` None). NOW (default: the clock) dates drains and trouble."""
    now = time.time() if now is None else now
    holders = {}
    for lease in snapshot.leases:
        holders.setdefault(lease.uuid, []).append(lease.unit + (" (shared)" if lease.sharing == "shared" else ""))
    rows = []
    present = set()
    for g in gpus:
        present.add(g.uuid)
        problems = plugins.gpu_faults(policy, g) if live else []
        drain = rules.drain_of(snapshot, g)
        rank, holder = rules.rank_of(snapshot.priorities, g)
        rows.append({
            "index": g.index, "mig_index": g.mig_index, "label": g.label, "uuid": g.uuid, "name": g.name,
            "pci_bus_id": g.pci_bus_id, "memory_used": g.memory_used, "memory_total": g.memory_total,
            "memory_free": g.memory_free, "utilization": g.utilization, "temperature": g.temperature,
            "power_mw": g.power_mw, "power_limit_mw": g.power_limit_mw,
            "health": [p.code for p in problems],
            "health_text": [p.text for p in problems],
            "mig_parent": rules.is_mig_parent(g), "is_mig": g.is_mig,
            "priority": rank, "priority_from": holder, **_drain_fields(drain, now),
            "demoted": rules.demotion_of(snapshot, g, policy.health, now),
            "leased_by": holders.get(g.uuid, []), "present": True if live else None,
            "last_seen": None if live else (seen or {}).get(g.uuid, (None,) * 4)[3],
            "problems": list(g.problems),
            "processes": None if g.processes is None else _own_processes(g, gpus),
        })
    for uuid, rank in sorted(snapshot.priorities.items(), key=lambda kv: kv[1]):
        if uuid in present:
            continue
        idx, name, bus, last = (seen or {}).get(uuid, (None, "?", None, None))
        rows.append({"index": idx, "mig_index": None, "label": "absent", "uuid": uuid, "name": name,
                     "pci_bus_id": bus, "present": False, "priority": rank, "priority_from": uuid,
                     "last_seen": last, "health": [], "health_text": [], "leased_by": holders.get(uuid, []),
                     "demoted": None, **_drain_fields(snapshot.drains.get(uuid), now)})
    return rows


def _own_processes(gpu, gpus):
    """GPU's processes as plain dicts; a MIG parent's without those its instances list."""
    on_instances = {p.pid for g in gpus if g.parent_uuid == gpu.uuid for p in g.processes or ()}
    return [{"pid": p.pid, "used_memory": p.used_memory} for p in gpu.processes if p.pid not in on_instances]
