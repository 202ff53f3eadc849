"""What an admin looks at: `status`, `plan`, `leases`, `history`."""

import os
import time

from ..allocation import plan_unit
from ..files import monitorstatus
from ..holders import cgroup_of, lease_alive
from ..quantities import format_ago, format_duration
from ..release import reap
from ..rules import is_device_uuid
from ..state.tallies import waits
from ..systemd.command import read_command
from ..systemd.journal import WARNING, log
from ..systemd.unitresult import describe as describe_end
from ..systemd.unitname import normalize_unit
from .gpuref import view_inventory
from ..statusrows import gpu_rows
from .render import decision_json, print_json, render_decision, render_status, text_table


def status(ctx, args):
    """The GPU table: memory, power, health, priority, drain (who and why), lease holder,
    processes, and whether the monitor runs. With a broken policy it still shows the GPUs (see
    gpuref.view_inventory), says so in one line on stderr and exits 78. `--watch`: cli/watch.py."""
    if args.watch or args.interval is not None:
        from .watch import watch  # termios and select: only --watch needs them
        return watch(args, lambda: live_status(ctx))
    with ctx.open_state() as state:
        view, rows, seen = status_view(ctx, state)
        waiting = waits(state) if args.json else []
    monitor = monitorstatus.read(ctx.runtime_dir, view.policy.health.poll_seconds)
    if args.json:
        print_json({"gpus": rows, "inventory": view.source, "monitor": monitor,
                    "waits": [w.to_plain() for w in waiting],
                    "policy_error": None if view.broken is None else str(view.broken)})
    else:
        print(render_status(rows, seen, monitorstatus.describe(monitor)))
    return view.exit_code()


def status_view(ctx, state):
    """(ViewInventory, status rows with each process's owner, GPUs seen): what `status` shows."""
    view = view_inventory(ctx, state)
    seen = state.seen_gpus()
    health = view.policy.health
    rows = gpu_rows(view.gpus, view.policy, ctx.plugins(), state.snapshot(health.demote_window_seconds), seen,
                    live=view.source != "state")
    for row in rows:
        for proc in row.get("processes") or ():
            proc.update(process_owner(proc["pid"]))
    return view, rows, seen


def live_status(ctx, now=None):
    """The lines of one `status --watch` frame below its header: the `status` table and processes,
    the starts waiting for a GPU, the last decision about each unit leasing or waiting, the monitor
    line (a broken policy: one line first, and the GPUs as gpuref.view_inventory finds them)."""
    now = time.time() if now is None else now
    with ctx.open_state() as state:
        view, rows, seen = status_view(ctx, state)
        waiting = waits(state)
        units = dict.fromkeys([lease.unit for lease in state.leases()] + [w.unit for w in waiting])
        last = {unit: state.history(unit, 1) for unit in units}
    monitor = monitorstatus.read(ctx.runtime_dir, view.policy.health.poll_seconds)
    lines = [] if view.broken is None else [f"policy broken: {view.broken}"]
    lines += render_status(rows, seen).splitlines()
    lines += ["", *_waiting_lines(waiting, now), "", *_decision_lines(last, now)]
    return lines + ["", monitorstatus.describe(monitor)]


def _waiting_lines(waiting, now):
    """The WAITING section: one row per start waiting for a GPU (unit, class, how long, why)."""
    if not waiting:
        return ["WAITING: none"]
    table = [("WAITING", "CLASS", "FOR", "WHY")]
    table += [(w.unit, w.klass or "-", format_duration(max(0, now - w.since)), w.summary or "-") for w in waiting]
    return text_table(table).splitlines()


def _decision_lines(last, now):
    """The LAST DECISION section: each unit's newest history row (LAST: {unit: [row] or []})."""
    if not last:
        return ["LAST DECISION: no unit leases or waits"]
    table = [("UNIT", "LAST DECISION", "WHEN", "WHAT")]
    for unit, rows in last.items():
        if rows:
            r = rows[-1]
            table.append((unit, r["action"], format_ago(now - r["at"]), _history_what(r)))
        else:
            table.append((unit, "-", "-", "no history"))
    return text_table(table).splitlines()


def process_owner(pid):
    """{"command", "unit"} of process PID: its name and the systemd unit it runs in (None for
    what cannot be read, e.g. a process of another PID namespace)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            # any user names their own processes: no terminal escape of theirs reaches root's terminal
            command = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in f.read().strip()) or None
    except OSError:
        command = None
    path = cgroup_of(pid) or ""
    units = [part for part in path.split("/") if part.endswith((".service", ".scope"))]
    return {"command": command, "unit": units[-1] if units else None}


def plan(ctx, args):
    """Dry run for one unit: which GPUs it would get now, and why; changes nothing."""
    unit = normalize_unit(args.unit)
    argv, mode, command = list(args.server or []), None, None
    if not argv:  # the unit's own command, as systemd would run it; rewritten only when wrapped
        command = read_command(unit)
        argv, mode = command.argv, "wrapper" if command.wrapped else "env"
    with ctx.open_state() as state:
        decision = plan_unit(ctx, unit, state, os.environ, argv, mode)
    if command is not None and decision.ok:
        decision.notes.extend(command.notes(decision.launch.env))
    if args.json:
        print_json(decision_json(decision))
    else:
        print(render_decision(decision))
    return 0 if decision.ok or decision.victims else 69  # (a start that would preempt would start)


def leases(ctx, args):
    """List the leases (and with --reap first drop those whose holder is gone)."""
    problems = []
    with ctx.open_state() as state:
        reaped, problems = reap(state, ctx.runtime_dir, lease_alive) if args.reap else ([], [])
        held = state.leases()
    for problem in problems:
        log(WARNING, f"cortex-hook: warning: {problem}")
    if args.json:
        print_json({"leases": [dict(lease.to_plain(), alive=lease_alive(lease)) for lease in held],
                    "reaped": [{"unit": lease.unit, "uuid": lease.uuid} for lease in reaped]})
        return 0
    for lease in reaped:
        print(f"reaped {lease.unit} {lease.uuid} (holder gone)")
    if not held:
        print("no leases")
        return 0
    table = [("UNIT", "GPU", "SHARING", "HOLDER", "SINCE", "")]
    for lease in held:
        holder = f"cgroup {lease.cgroup}" if lease.cgroup else f"pid {lease.pid}"
        alive = "" if lease_alive(lease) else "(holder gone: `leases --reap` drops it)"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))
        table.append((lease.unit, lease.uuid, lease.sharing, holder, since, alive))
    print(text_table(table))
    return 0


def history(ctx, args):
    """Recent decisions and what the monitor did (of one unit or GPU UUID, or all)."""
    unit = (args.unit if is_device_uuid(args.unit) else normalize_unit(args.unit)) if args.unit else None
    with ctx.open_state(create=False) as state:
        rows = state.history(unit, args.n)
    if args.json:
        print_json({"history": rows})
        return 0
    if not rows:
        print(f"no history for {unit}" if unit else "no history yet")
        return 0
    width = max(8, *(len(r["action"]) for r in rows))
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
        ended = describe_end(r["detail"].get("ended"))
        print(f"{when}  {r['action']:<{width}} {r['unit']:<28} {_history_what(r)}"
              + (f"; ended: {ended}" if ended else ""))
    return 0


def _history_what(row):
    """What a history row says: a decision's summary; for the monitor's rows, what it saw on
    which GPU and what it did about it."""
    detail = row["detail"]
    if detail.get("source") != "monitor":
        return detail.get("summary") or ", ".join(row["gpus"]) or "-"
    gpu = detail.get("gpu")
    what = f"monitor: {detail.get('why') or '?'}" + (f" on {gpu}" if gpu and gpu != row["unit"] else "")
    return what + (f" ({detail['note']})" if detail.get("note") else "")
