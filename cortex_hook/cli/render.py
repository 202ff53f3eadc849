"""How decisions and GPUs are shown: the documented `--json` objects and the text a sysadmin reads."""

import time

from .. import rules
from ..quantities import format_size
from ..rules import short_uuid


def print_json(obj):
    """OBJ as indented JSON on stdout."""
    import json  # only --json needs it, never the start path's plain output
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def verdict_json(v):
    """One verdict of the documented `plan --json` object."""
    g = v.gpu
    return {
        "uuid": g.uuid, "index": g.index, "mig_index": g.mig_index, "cuda_index": g.cuda_index,
        "name": g.name, "selected": v.selected,
        "reasons": [{"code": r.code, "text": r.text} for r in v.reasons],
        "score": v.score, "priority": v.priority,
        "terms": [{"name": t.name, "value": round(t.value, 4), "weight": t.weight,
                   "points": round(t.points, 4), "detail": t.detail} for t in v.terms],
        "notes": list(v.notes),
        "memory_free": g.memory_free, "memory_total": g.memory_total,
    }


def decision_json(d):
    """The documented object of `plan --json` and `allocate --json`."""
    s = d.service
    return {
        "unit": d.unit, "ok": d.ok, "summary": d.summary, "fallback": d.fallback,
        "gpus": d.uuids,
        "service": {"match": s.match, "position": s.position, "line": s.line, "server": s.server,
                    "gpus": s.gpus, "min_free_memory": s.describe_memory, "sharing": s.sharing,
                    "visible_devices": s.visible_devices, "topology": s.topology, "class": s.klass,
                    "on_unavailable": s.on_unavailable if s.on_unavailable != "wait"
                    else f"wait {s.wait_seconds:g}s"},
        "env": dict(d.launch.env), "argv": d.launch.argv,
        "notes": list(d.notes) + list(d.launch.notes),
        "verdicts": [verdict_json(v) for v in d.verdicts],
    }


def render_decision(d, show_env=True):
    """Plan text: the service asked for, one line per GPU with its verdict, the result, the env."""
    s = d.service
    want = "all usable GPUs" if s.gpus == "all" else f"{s.gpus} GPU{'s' if s.gpus != 1 else ''}"
    lines = [f"{d.unit}: services[{s.position}] match {s.match!r} (line {s.line}): server {s.server}, "
             f"class {s.klass}, {want}, {s.describe_memory}, {s.sharing}, topology {s.topology}"]
    for v in d.verdicts:
        g = v.gpu
        tag = "SELECTED" if v.selected else ("ok" if v.accepted else "rejected")
        prio = f"prio {v.priority}" if v.priority is not None else "prio -"
        head = f"  {tag:<9}{g.label:<11} {g.name[:22]:<22} {short_uuid(g.uuid):<18} {prio:<7}"
        if v.accepted:
            terms = " + ".join(f"{t.name} {t.value:.2f}x{t.weight:g} ({t.detail})" for t in v.terms)
            lines.append(f"{head} score {v.score:.2f} = {terms}" if terms else f"{head} score {v.score:.2f}")
            lines.extend(f"{'':13}note: {n}" for n in v.notes)
        else:
            lines.append(f"{head} " + "; ".join(r.text for r in v.reasons))
    lines.extend(f"  note: {n}" for n in list(d.notes) + list(d.launch.notes))
    lines.append(f"  => {d.summary}")
    if show_env and d.ok:
        lines.extend(f"     {k}={v}" for k, v in d.launch.env.items())
        if d.launch.argv is not None:
            import shlex  # only wrapper modes have a command to show
            lines.append("     command: " + shlex.join(d.launch.argv))
    return "\n".join(lines)


def gpu_rows(gpus, policy, plugins, snapshot, seen=None):
    """Status rows (dicts) for every GPU present, then every ranked GPU that is absent. The health
    column holds the faults `plan` rejects a GPU for (the plugins' cortex_gpu_faults)."""
    holders = {}
    for lease in snapshot.leases:
        holders.setdefault(lease.uuid, []).append(lease.unit + (" (shared)" if lease.sharing == "shared" else ""))
    rows = []
    present = set()
    for g in gpus:
        present.add(g.uuid)
        problems = plugins.gpu_faults(policy, g)
        drain = rules.drain_of(snapshot, g)
        rows.append({
            "index": g.index, "mig_index": g.mig_index, "label": g.label, "uuid": g.uuid, "name": g.name,
            "pci_bus_id": g.pci_bus_id, "memory_used": g.memory_used, "memory_total": g.memory_total,
            "memory_free": g.memory_free, "utilization": g.utilization, "temperature": g.temperature,
            "health": [p.code for p in problems],
            "health_text": [p.text for p in problems],
            "mig_parent": rules.is_mig_parent(g),
            "priority": rules.priority_of(snapshot, g), "drain": drain.reason if drain else None,
            "leased_by": holders.get(g.uuid, []), "present": True, "problems": list(g.problems),
        })
    for uuid, rank in sorted(snapshot.priorities.items(), key=lambda kv: kv[1]):
        if uuid in present:
            continue
        idx, name, bus, last = (seen or {}).get(uuid, (None, "?", None, None))
        rows.append({"index": idx, "mig_index": None, "label": "absent", "uuid": uuid, "name": name,
                     "pci_bus_id": bus, "present": False, "priority": rank, "last_seen": last,
                     "health": [], "health_text": [], "leased_by": holders.get(uuid, []),
                     "drain": snapshot.drains[uuid].reason if uuid in snapshot.drains else None})
    return rows


def render_status(rows):
    """The `status` table."""
    header = ("GPU", "UUID", "NAME", "MEMORY", "UTIL", "TEMP", "HEALTH", "PRIO", "DRAIN", "LEASED BY")
    table = [header]
    for r in rows:
        if not r["present"]:
            seen = time.strftime("%Y-%m-%d", time.localtime(r["last_seen"])) if r.get("last_seen") else "never"
            table.append(("absent", short_uuid(r["uuid"]), (r["name"] or "?")[:22], "-", "-", "-",
                          f"not present (last seen {seen})", str(r["priority"]), r["drain"] or "-",
                          ", ".join(r["leased_by"]) or "-"))
            continue
        mem = "?" if r["memory_total"] is None else \
            f"{format_size(r['memory_used']).replace(' ', '')}/{format_size(r['memory_total']).replace(' ', '')}"
        health = "MIG parent" if r["mig_parent"] else (",".join(r["health"]) or "ok")
        table.append((
            r["label"].replace("GPU ", ""), short_uuid(r["uuid"]), (r["name"] or "?")[:22], mem,
            "?" if r["utilization"] is None else f"{r['utilization']}%",
            "?" if r["temperature"] is None else f"{r['temperature']}C",
            health, "-" if r["priority"] is None else str(r["priority"]),
            (r["drain"] or "-")[:24], ", ".join(r["leased_by"]) or "-",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
