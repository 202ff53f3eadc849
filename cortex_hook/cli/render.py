"""How decisions and GPUs are shown: the documented `--json` objects and the text a sysadmin reads."""

import time

from .. import rules
from ..quantities import format_size


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
        "score": v.score, "priority": v.priority, "priority_from": v.priority_from, "demoted": v.demoted,
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
                    "visible_devices": s.visible_devices, "topology": s.topology,
                    "same_model": s.same_model, "class": s.klass,
                    "on_unavailable": s.on_unavailable if s.on_unavailable != "wait"
                    else f"wait {s.wait_seconds:g}s",
                    "preempt": s.preempt, "when_preempted": s.when_preempted,
                    "preempt_grace": s.preempt_grace_seconds},
        "preempt": {"victims": [{"unit": v.unit, "class": v.klass, "since": v.since, "gpus": list(v.gpus),
                                 "when_preempted": v.when_preempted} for v in d.victims],
                    "gpus": list(d.promised)} if d.victims else None,
        "env": dict(d.launch.env), "argv": d.launch.argv,
        "notes": list(d.notes) + list(d.launch.notes),
        "verdicts": [verdict_json(v) for v in d.verdicts],
    }


def render_decision(d, show_env=True):
    """Plan text: the service asked for, one line per GPU with its verdict, the result, the env.
    Columns are as wide as their widest entry; UUIDs are shown as prefixes every command takes."""
    s = d.service
    want = "all usable GPUs" if s.gpus == "all" else f"{s.gpus} GPU{'s' if s.gpus != 1 else ''}"
    lines = [f"{d.unit}: services[{s.position}] match {s.match!r} (line {s.line}): server {s.server}, "
             f"class {s.klass}, {want}, {s.describe_memory}, {s.sharing}, topology {s.topology}"]
    prefixes = rules.unique_prefixes(v.gpu.uuid for v in d.verdicts)
    heads = []
    for v in d.verdicts:
        g = v.gpu
        tag = "SELECTED" if v.selected else ("ok" if v.accepted else "rejected")
        prio = "prio " + rules.describe_rank(v.priority, v.priority_from, g.uuid, g.index)
        heads.append((tag, g.label, g.name, prefixes.get(g.uuid, "?"), prio))
    widths = [max((len(h[i]) for h in heads), default=0) for i in range(5)]
    for v, head in zip(d.verdicts, heads):
        head = "  " + " ".join(c.ljust(w) for c, w in zip(head, widths))
        if v.accepted:
            terms = " + ".join(f"{t.name} {t.value:.2f}x{t.weight:g} ({t.detail})" for t in v.terms)
            lines.append(f"{head} score {v.score:.2f} = {terms}" if terms else f"{head} score {v.score:.2f}")
            lines.extend(f"{'':13}note: {n}" for n in v.notes)
        else:
            lines.append(f"{head} " + "; ".join(r.text for r in v.reasons))
            lines.extend(f"{'':13}note: {n}" for n in v.notes)
    lines.extend(f"  note: {n}" for n in list(d.notes) + list(d.launch.notes))
    lines.append(f"  => {d.summary}")
    if show_env and d.ok:
        lines.extend(f"     {k}={v}" for k, v in d.launch.env.items())
        if d.launch.argv is not None:
            import shlex  # only wrapper modes have a command to show
            lines.append("     command: " + shlex.join(d.launch.argv))
    return "\n".join(lines)


def _day(when):
    return time.strftime("%Y-%m-%d", time.localtime(when)) if when else "never"


def _size(n):
    return format_size(n).replace(" ", "")


def _status_cells(r, prefixes):
    """One row of the `status` table, as its cells."""
    uuid = prefixes.get(r["uuid"], "?")
    prio = rules.describe_rank(r["priority"], r.get("priority_from"), r["uuid"], r["index"])
    lease = ", ".join(r["leased_by"]) or "-"
    if r["present"] is False:
        return ("absent", uuid, r["name"] or "?", r["pci_bus_id"] or "-", "-", "-", "-", "-",
                f"not present (last seen {_day(r['last_seen'])})", prio, r["drain_text"] or "-", lease)
    mem = "?" if r["memory_total"] is None else f"{_size(r['memory_used'])}/{_size(r['memory_total'])}"
    if r["is_mig"]:
        power = "-"  # NVML measures power per GPU, not per MIG instance
    elif r["power_mw"] is None:
        power = "?"
    else:
        limit = "" if r["power_limit_mw"] is None else f"/{r['power_limit_mw'] // 1000}W"
        power = f"{r['power_mw'] // 1000}W{limit}"
    if r["present"] is None:
        health = f"unknown (last seen {_day(r['last_seen'])})"
    else:
        codes = r["health"] + (["demoted"] if r["demoted"] else [])  # (why: `plan` says)
        health = "MIG parent" if r["mig_parent"] else (",".join(codes) or "ok")
    return (r["label"].replace("GPU ", "", 1), uuid, r["name"] or "?", r["pci_bus_id"] or "?", mem,
            "?" if r["utilization"] is None else f"{r['utilization']}%",
            "?" if r["temperature"] is None else f"{r['temperature']}C",
            power, health, prio, r["drain_text"] or "-", lease)


def render_status(rows, other_uuids=(), monitor=None):
    """The `status` table, then the processes on the GPUs (where the driver lists them), then the
    MONITOR line (files/monitorstatus.describe). UUIDs are shown as their shortest prefix that
    names one GPU among ROWS and OTHER_UUIDS (GPUs seen before), which every command takes back;
    no cell is cut."""
    prefixes = rules.unique_prefixes([r["uuid"] for r in rows] + list(other_uuids))
    header = ("GPU", "UUID", "NAME", "BUS ID", "MEMORY", "UTIL", "TEMP", "POWER", "HEALTH", "PRIO", "DRAIN",
              "LEASED BY")
    out = [text_table([header] + [_status_cells(r, prefixes) for r in rows])]
    procs = [(r["label"].replace("GPU ", "", 1), str(p["pid"]), _size(p["used_memory"]) if p["used_memory"] is not None
              else "?", p.get("command") or "?", p.get("unit") or "-")
             for r in rows for p in r.get("processes") or ()]
    if procs:
        out += ["", text_table([("GPU", "PID", "MEMORY", "COMMAND", "UNIT")] + procs)]
    if monitor:
        out += ["", monitor]
    return "\n".join(out)


def text_table(table):
    """TABLE (rows of cells, the first its header) as text, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
