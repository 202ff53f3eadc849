"""What an admin looks at: `status`, `plan`, `leases`, `history`."""

import os
import time

from ..allocation import plan_unit
from ..errors import CortexError
from ..holders import lease_alive
from ..systemd.unitfile import unit_command
from ..systemd.unitname import normalize_unit
from .gpuref import inventory
from .render import decision_json, gpu_rows, print_json, render_decision, render_status


def status(ctx, args):
    """The GPU table: memory, health, priority, drain, lease holder."""
    with ctx.open_state() as state:
        gpus = inventory(ctx, state)
        rows = gpu_rows(gpus, ctx.policy(), ctx.plugins(), state.snapshot(), state.seen_gpus())
    if args.json:
        print_json({"gpus": rows})
    else:
        print(render_status(rows))
    return 0


def plan(ctx, args):
    """Dry run for one unit: which GPUs it would get now, and why; changes nothing."""
    unit = normalize_unit(args.unit)
    argv = list(args.server or [])
    if not argv:
        try:
            argv = unit_command(unit)
        except CortexError:
            argv = None
    with ctx.open_state() as state:
        decision = plan_unit(ctx, unit, state, os.environ, argv)
    if args.json:
        print_json(decision_json(decision))
    else:
        print(render_decision(decision))
    return 0 if decision.ok else 69


def leases(ctx, args):
    """List the leases (and with --reap first drop those whose holder is gone)."""
    with ctx.open_state() as state:
        reaped = state.reap(lease_alive) if args.reap else []
        held = state.leases()
    if args.json:
        print_json({"leases": [dict(lease.to_plain(), alive=lease_alive(lease)) for lease in held],
                    "reaped": [{"unit": lease.unit, "uuid": lease.uuid} for lease in reaped]})
        return 0
    for lease in reaped:
        print(f"reaped {lease.unit} {lease.uuid} (holder gone)")
    if not held:
        print("no leases")
    for lease in held:
        holder = f"cgroup {lease.cgroup}" if lease.cgroup else f"pid {lease.pid}"
        alive = "" if lease_alive(lease) else "  (holder gone: `leases --reap` drops it)"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))
        print(f"{lease.unit:<32} {lease.uuid}  {lease.sharing:<9} {holder}  since {since}{alive}")
    return 0


def history(ctx, args):
    """Recent decisions (of one unit, or all)."""
    unit = normalize_unit(args.unit) if args.unit else None
    with ctx.open_state(create=False) as state:
        rows = state.history(unit, args.n)
    if args.json:
        print_json({"history": rows})
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
        what = r["detail"].get("summary") or ", ".join(r["gpus"]) or "-"
        print(f"{when}  {r['action']:<8} {r['unit']:<28} {what}")
    return 0
