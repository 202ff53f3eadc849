"""What the monitor does about a fault and about a recovery.

A fault: the GPU is drained (source `monitor`, so that only the monitor lifts it and an admin's
own drain is never touched), then every unit leasing it (or one of its MIG instances) is acted on
as its service says (`on_gpu_fault`), critical units first: `restart` goes through systemd
(`systemctl try-restart`), so the unit's lease unit gives the dead GPU back and allocates healthy
ones as on any restart; `stop`; or `ignore` (said, and kept in the history).

Each action is taken, then written down: a monitor killed in between acts again on its next start
rather than forgetting. A unit acted on since the drain began is not acted on again, and no unit
is restarted more than `max_fault_restarts` times per `fault_restart_window`.
"""

import time

from ..errors import CortexError
from ..quantities import format_duration
from ..rules import CLASS_RANK
from ..state import monitoring, tallies
from ..systemd.journal import ERR, NOTICE, WARNING, log
from ..systemd.systemctl import systemctl
from .faults import DRAIN, FATAL

MONITOR_UNIT = "cortex-hook-monitor.service"


class SystemdUnits:
    """How the monitor restarts and stops units: through systemd (never waiting for the job)."""

    def restart(self, unit):
        """Restart UNIT if it runs."""
        systemctl("monitor", "try-restart", "--no-block", "--", unit)

    def stop(self, unit):
        """Stop UNIT."""
        systemctl("monitor", "stop", "--no-block", "--", unit)


def say(level, message):
    """One line in the monitor's journal."""
    log(level, f"cortex-hook monitor: {message}")


def drain(state, policy, uuid, label, verdict, why, now):
    """Drain UUID for the monitor (an existing drain is left as it is); True if it is newly drained."""
    with state.write():
        if not monitoring.drain_by_monitor(state, uuid, f"{why} at {_clock(now)}", why):
            return False
        state.record(uuid, "fault-drain", [uuid], {"gpu": uuid, "why": why, "source": "monitor",
                                                  "verdict": verdict}, policy.history_limit)
        tallies.add(state, "cortex_hook_monitor_drains_total", {"UUID": uuid})
    say(ERR if verdict == FATAL else WARNING, f"{label} drained: {why}")
    return True


def act_on_units(ctx, policy, uuid, children, label, why, units, now):
    """Act on every unit leasing UUID or one of CHILDREN (its MIG instances), as its service's
    `on_gpu_fault` says, critical units first. Returns [(unit, what was done)]."""
    with ctx.open_state() as state:
        drains = state.snapshot().drains
        since = drains[uuid].since if uuid in drains else now
        held = {}
        for lease in state.leases():
            if lease.uuid == uuid or lease.uuid in children:
                held.setdefault(lease.unit, []).append(lease)
        plan = []
        for unit in sorted(held, key=lambda u: (_class_order(policy, u), u)):
            plan.append((unit, _decide(state, policy, unit, held[unit], since, now)))
    done = []
    for unit, (action, note) in plan:
        done.append((unit, _carry_out(ctx, policy, unit, uuid, label, why, action, note, units)))
    return done


def _class_order(policy, unit):
    svc = policy.service_for(unit)
    return -CLASS_RANK[svc.klass if svc else "normal"]  # critical first


def _decide(state, policy, unit, leases, since, now):
    """(action, note) for UNIT: restart, stop, ignore, limited, or done (acted on already)."""
    svc = policy.service_for(unit)
    action = svc.on_gpu_fault if svc is not None else "restart"
    if action == "ignore":
        return "ignore", "on_gpu_fault: ignore"
    if monitoring.fault_actions_since(state, unit, since, ("fault-restart", "fault-stop")) > 0:
        return "done", "acted on already since the drain began"
    if not any(lease.holder_unit or lease.cgroup for lease in leases):
        return "ignore", "not started by systemd: nothing to restart or stop"
    health = policy.health
    recent = monitoring.fault_actions_since(state, unit, now - health.fault_restart_window_seconds)
    if action == "restart" and recent >= health.max_fault_restarts:
        return "limited", (f"{recent} fault restarts in the last {_span(health.fault_restart_window_seconds)} "
                           f"(max_fault_restarts: {health.max_fault_restarts}): left as it is")
    return action, f"on_gpu_fault: {action}"


def _carry_out(ctx, policy, unit, uuid, label, why, action, note, units):
    if action == "done":
        return "acted on already"
    if action in ("restart", "stop"):
        try:
            (units.restart if action == "restart" else units.stop)(unit)
        except CortexError as exc:
            say(ERR, f"{unit}: could not {action} it after {label} failed ({why}): {exc}")
            action, note = "failed", str(exc)
    history_action = {"restart": "fault-restart", "stop": "fault-stop", "limited": "fault-limited",
                      "failed": "fault-failed"}.get(action, "fault-ignore")
    with ctx.open_state() as state:
        state.record(unit, history_action, [uuid], {"gpu": uuid, "why": why, "source": "monitor", "note": note},
                     policy.history_limit)
        svc = policy.service_for(unit)
        tallies.add(state, "cortex_hook_monitor_fault_actions_total",
                    {"service": svc.match if svc else "", "action": history_action.replace("fault-", "", 1)})
    if action in ("restart", "stop"):
        say(NOTICE, f"{unit}: {'restarted' if action == 'restart' else 'stopped'}: {label} failed ({why})")
    elif action != "failed":
        say(WARNING, f"{unit}: left on {label} ({why}): {note}")
    return history_action


def recover(ctx, policy, healthy_since, verdicts, labels, now):
    """Lift the monitor's drains of GPUs healthy for `recover:` (VERDICTS: uuid -> this poll's
    verdict; a GPU not seen counts as unhealthy). Returns the UUIDs brought back."""
    back = []
    wait = policy.health.recover_seconds
    with ctx.open_state() as state:
        for found in monitoring.monitor_drains(state):
            verdict = verdicts.get(found.uuid, FATAL)
            if verdict in (FATAL, DRAIN):
                healthy_since.pop(found.uuid, None)
                continue
            start = healthy_since.setdefault(found.uuid, now)
            if wait is None or now - start < wait:
                continue
            if monitoring.lift_monitor_drain(state, found.uuid):
                label = labels.get(found.uuid, found.uuid)
                monitoring.record_trouble(state, found.uuid, "recovered", 1, found.detail)
                tallies.add(state, "cortex_hook_monitor_recoveries_total", {"UUID": found.uuid})
                state.record(found.uuid, "fault-recover", [found.uuid],
                             {"gpu": found.uuid, "why": f"healthy for {_span(now - start)} after {found.detail}",
                              "source": "monitor"}, policy.history_limit)
                say(NOTICE, f"{label} back in service: healthy for {_span(now - start)} after {found.detail}")
                back.append(found.uuid)
            healthy_since.pop(found.uuid, None)
    return back


def _clock(wall):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def _span(seconds):
    return format_duration(seconds)
