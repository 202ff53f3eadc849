"""Choosing victims: when no GPU set fits, which units of a lower class a `preempt: lower` service
stops to get one (pure, like the planner: `plan` shows the same choice `allocate` acts on).

Only when nothing fits without preemption. Candidates are units of a strictly lower class
(critical > normal > batch) whose leases a lease unit holds (systemd can stop them), and whose
service does not say `when_preempted: never`. The choice is the fewest units, then the lowest
classes, then the most recently started, whose GPUs complete a selection the planner accepts
(every rule, topology included), and in which every victim gives up a GPU the preempting start
gets: no unit is preempted for nothing. The allocation then promises those GPUs to the start in
the transaction that decided (state/preemption.py) and stops or requeues the victims.
"""

from itertools import combinations
from math import comb

from .model import Decision, Request, Snapshot, Victim
from .planner import plan, without_fallback
from .quantities import format_ago
from .rules import CLASS_RANK

MARGIN_S = 30.0  # beyond the victims' grace: their SIGKILL, the end of their cgroup, their release
PLAN_BUDGET = 256  # trial plans for the exact search; beyond, a greedy choice (then pruned)


def plan_with_preemption(plugins, request, now):
    """The planner's Decision for REQUEST; when it fits nothing and the service may preempt, a
    refused Decision naming the victims (`victims`) and the GPUs it would get (`promised`)."""
    decision = plan(plugins, request, now)
    svc = request.service
    if (decision.ok and not decision.fallback) or svc.preempt != "lower":
        return decision
    if any(p.unit == request.unit for p in request.snapshot.promises):  # it preempted already:
        return without_fallback(decision) if decision.fallback else decision  # it waits for its victims
    candidates, skipped = _candidates(request)
    found = _choose(plugins, request, candidates, now) if candidates else None
    if found is None:
        if decision.ok:
            decision.notes.append("preempt: no set of lower-class units would free GPUs that fit")
            return decision
        decision.notes.append("preempt: " + ("; ".join(skipped) if skipped and not candidates else
                                             "no set of lower-class units would free GPUs that fit"))
        return decision
    victims, trial = found
    promised = trial.uuids
    by_uuid = {v.gpu.uuid: v for v in decision.verdicts}
    for victim in victims:
        for uuid in victim.gpus:
            if uuid in by_uuid:
                by_uuid[uuid].notes.append(f"would be freed by preempting {victim.unit}")
    words = "; ".join(describe(v, now) for v in victims)
    return Decision(unit=request.unit, service=svc, verdicts=decision.verdicts, chosen=[], ok=False,
                    summary=f"{request.unit} would preempt {words}", notes=decision.notes + trial.notes,
                    victims=victims, promised=promised)


def describe(victim, now):
    """`embed@nightly.service (batch, started 12 min ago) for GPU 2, GPU 3`."""
    return (f"{victim.unit} ({victim.klass}, started {format_ago(now - victim.since)}) "
            f"for {', '.join(victim.labels)}")


def _candidates(request):
    """([Victim] REQUEST may preempt, most preferred first; [why a lower unit is not one])."""
    mine = CLASS_RANK[request.service.klass]
    units, skipped, seen = {}, [], {request.unit}
    for lease in request.snapshot.leases:
        if lease.unit in seen:
            continue
        seen.add(lease.unit)
        svc = request.policy.service_for(lease.unit)
        if svc is None or CLASS_RANK[svc.klass] >= mine:
            continue
        if svc.when_preempted == "never":
            skipped.append(f"{lease.unit} is never preempted (when_preempted: never)")
            continue
        if not lease.holder_unit:
            skipped.append(f"{lease.unit} holds its GPUs outside systemd: it cannot be stopped")
            continue
        units[lease.unit] = Victim(unit=lease.unit, klass=svc.klass, since=lease.since,
                                   when_preempted=svc.when_preempted, grace_seconds=svc.preempt_grace_seconds)
    leases = [lease for lease in request.snapshot.leases if lease.unit in units]
    for victim in units.values():
        victim.gpus = [lease.uuid for lease in leases if lease.unit == victim.unit]
        victim.since = min(lease.since for lease in leases if lease.unit == victim.unit)
    return sorted(units.values(), key=lambda v: (CLASS_RANK[v.klass], -v.since, v.unit)), skipped


def _subset_key(victims):
    """Fewest units, then the lowest classes, then the most recently started."""
    ranks = sorted((CLASS_RANK[v.klass] for v in victims), reverse=True)
    return (len(victims), ranks, -min(v.since for v in victims), [v.unit for v in victims])


def _choose(plugins, request, candidates, now):
    """(victims, trial Decision) of the preferred set of CANDIDATES that frees a selection, or None."""
    budget = PLAN_BUDGET
    for size in range(1, len(candidates) + 1):
        if comb(len(candidates), size) > budget:
            return _greedy(plugins, request, candidates, now)
        for subset in sorted(combinations(candidates, size), key=_subset_key):
            budget -= 1
            found = _trial(plugins, request, subset, now)
            if found:
                return found
    return None


def _greedy(plugins, request, candidates, now):
    """Add candidates in order of preference until a selection fits (whether or not each one gives
    up a GPU), then leave out each one the selection does not need (the most preferred victims
    are dropped last), and keep the set only if every victim left gives up a GPU."""
    taken = []
    for victim in candidates:
        taken.append(victim)
        if _fits(plugins, request, taken, now):
            break
    else:
        return None
    for victim in list(reversed(taken)):
        fewer = [v for v in taken if v is not victim]
        if fewer and _fits(plugins, request, fewer, now):
            taken = fewer
    return _trial(plugins, request, taken, now)


def _fits(plugins, request, victims, now):
    """The Decision of planning without VICTIMS' leases (their processes' memory counted as
    free) when it selects GPUs, else None."""
    gone = {v.unit for v in victims}
    snap = request.snapshot
    leaving = request.leaving_pids.union(*(request.unit_pids.get(u, ()) for u in gone))
    trial_request = Request(**dict(request.as_dict(), leaving_pids=leaving, snapshot=Snapshot(
        **dict(snap.as_dict(), leases=[lease for lease in snap.leases if lease.unit not in gone]))))
    decision = plan(plugins, trial_request, now)
    return decision if decision.ok and not decision.fallback else None


def _trial(plugins, request, victims, now):
    """(victims, Decision) when planning without VICTIMS (_fits) selects GPUs from every one of
    them (each victim then keeps only what it gives up in `gpus`), else None."""
    decision = _fits(plugins, request, victims, now)
    if decision is None:
        return None
    taken = {}
    for gpu in decision.chosen:
        taken[gpu.uuid] = gpu.label
        if gpu.parent_uuid:
            taken[gpu.parent_uuid] = gpu.label
    chosen = []
    for victim in victims:
        mine = [uuid for uuid in victim.gpus if uuid in taken]
        if not mine:
            return None
        chosen.append(Victim(**dict(victim.as_dict(), gpus=mine, labels=[taken[u] for u in mine])))
    return chosen, decision
