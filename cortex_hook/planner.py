"""The planner: GPUs + policy + state snapshot in, a Decision with a verdict for every GPU out.

Pure: it reads nothing and writes nothing, so `plan` (dry run) and `allocate` run the same code.
Order of work: check every GPU (every reason that applies), score the accepted ones, rank them
(reservation tier, then the admin priority as rules.rank_order has it, then recent trouble, then
placement: pack or spread, then the score), then select N (topology hooks; under `same_model`, from one model at a time).

Recent trouble the monitor saw (rules.demotion) never outvotes the admin: it orders only GPUs
that tie on the admin's rank (GPUs left unranked, slices sharing their parent's rank), untroubled
first, and the demoted GPU's verdict says why.
"""

import time

from . import placement
from .model import Decision, Selection, Verdict
from .rules import (borrowed_reservation, demotion_of, describe_rank, model_groups, rank_of, rank_order,
                    same_model_notes, same_model_rule)


def rank_key(verdict):
    """Sort key: a GPU promised to this unit (it preempted the holder) first, unreserved before
    borrowed-reserved, the admin's order (rules.rank_order: rank, then a whole GPU before a MIG
    slice), untroubled before demoted, placement (pack or spread), higher score, then index."""
    gpu = verdict.gpu
    return (not verdict.promised, verdict.tier, *rank_order(verdict.priority, gpu), verdict.demoted is not None, verdict.placement,
            -(verdict.score or 0.0), gpu.index, gpu.mig_index if gpu.mig_index is not None else -1)


def plan(plugins, request, now=None):
    """Decide which GPUs REQUEST's unit gets; never raises for an unsatisfiable request. NOW (a
    time.time(), by default the clock's) is when the snapshot's trouble is judged."""
    svc = request.service
    now = time.time() if now is None else now
    verdicts = []
    mine = {p.uuid for p in request.snapshot.promises if p.unit == request.unit}
    for gpu in request.gpus:
        rank, holder = rank_of(request.snapshot.priorities, gpu)
        verdict = Verdict(gpu=gpu, priority=rank, priority_from=holder, promised=gpu.uuid in mine)
        verdict.reasons = plugins.gpu_faults(request.policy, gpu) + plugins.check_gpu(request, gpu)
        if verdict.accepted:
            verdict.terms = plugins.score_gpu(request, gpu)
            verdict.demoted = demotion_of(request.snapshot, gpu, request.policy.health, now)
            if verdict.demoted:
                verdict.notes.append(f"{verdict.demoted} (ranks after the untroubled GPUs of its admin rank; "
                                     "the admin's order stands)")
            others = borrowed_reservation(request, gpu)
            if others:
                verdict.tier = 1
                verdict.notes.append(f"reserved for {', '.join(others)}: usable because this service is "
                                     "critical, ranked after unreserved GPUs")
        verdicts.append(verdict)

    _place(request, [v for v in verdicts if v.accepted])
    accepted = sorted((v for v in verdicts if v.accepted), key=rank_key)
    rejected = [v for v in verdicts if not v.accepted]
    same = same_model_rule(svc, plugins.tensor_parallel(svc))
    groups = model_groups(accepted) if same else [accepted]  # with same_model, one model at a time
    count = (len(groups[0]) if groups else 0) if svc.gpus == "all" else svc.gpus
    selection = _select(plugins, request, groups, count)
    notes = list(selection.notes) if selection else []
    chosen = selection.chosen if selection else []
    notes.extend(same_model_notes(same, groups, chosen, accepted, count, svc.gpus == "all"))
    for v in chosen:
        v.selected = True
        if v.placement_note and _placed(v, accepted):
            v.notes.append(v.placement_note)
    notes.extend(_slice_notes(chosen, accepted))
    ordered = chosen + [v for v in accepted if not v.selected] + rejected
    if chosen:
        return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[v.gpu for v in chosen],
                        ok=True, summary=_chosen_summary(request, chosen), notes=notes)
    summary = _refusal_summary(request, count, accepted, rejected, notes)
    if svc.on_unavailable == "cpu":
        notes.append(summary)
        return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[], ok=True,
                        summary=f"{request.unit}: no GPU available, starting on CPU (on_unavailable: cpu)",
                        notes=notes, fallback="cpu", refused=summary)
    return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[], ok=False,
                    summary=summary, notes=notes)


def _place(request, accepted):
    """Give each accepted verdict its placement key and note (placement.py)."""
    mode = request.service.placement or request.policy.placement
    if len(accepted) < 2 or (mode == placement.SPREAD and not request.snapshot.leases):
        return  # (spread on an idle box: every key is equal, the score decides)
    svc = request.service
    count = len(accepted) if svc.gpus == "all" else svc.gpus
    found = placement.keys(mode, request.gpus, [v.gpu for v in accepted], request.snapshot.leases,
                           svc.sharing == "shared", count)
    for v in accepted:
        v.placement, v.placement_note = found.get(v.gpu.uuid, ((), None))


def _placed(chosen, accepted):
    """True if placement decided between CHOSEN and a GPU left that the admin's order ties with it."""
    tie = rank_key(chosen)[:5]
    return any(not v.selected and rank_key(v)[:5] == tie and v.placement != chosen.placement for v in accepted)


def without_fallback(decision):
    """DECISION, a CPU fallback, as the refusal it stands for (a start that must wait for GPUs:
    requeued, or waiting for the units it preempted)."""
    if decision.refused in decision.notes:
        decision.notes.remove(decision.refused)
    decision.ok, decision.fallback, decision.summary = False, None, decision.refused
    return decision


def _select(plugins, request, groups, count):
    """The Selection of COUNT GPUs from the first of GROUPS (best first) that yields one; the last
    refusal when none does; None when no group has COUNT."""
    selection = None
    for group in groups:
        if not group or len(group) < count:
            continue
        selection = plugins.select_gpus(request, group, count) or Selection(group[:count])
        if selection.chosen and len(selection.chosen) != count:
            raise RuntimeError(f"a select_gpus hook returned {len(selection.chosen)} GPUs, not {count}")
        if selection.chosen:
            break
    return selection


def _slice_notes(chosen, accepted):
    """Why a MIG slice was taken while a whole GPU that qualifies was left."""
    whole = next((v for v in accepted if not v.gpu.is_mig and not v.selected), None)
    if whole is None:
        return []
    notes = []
    for v in chosen:
        if not v.gpu.is_mig:
            continue
        if whole.tier > v.tier:
            why = f"{whole.gpu.label} is reserved for another unit"
        elif rank_order(v.priority, v.gpu) < rank_order(whole.priority, whole.gpu):
            why = (f"it {_rank_words(v)}, {whole.gpu.label} {_rank_words(whole)}"
                   + (f" (`cortex-hook priority set {v.gpu.uuid} RANK` ranks the slice on its own)"
                      if v.priority_from != v.gpu.uuid else ""))
        else:
            why = "the selection (topology) chose it"
        notes.append(f"{v.gpu.label} is a MIG slice ({v.gpu.name}), taken before the whole "
                     f"{whole.gpu.label} ({whole.gpu.name}): {why}")
    return notes


def _rank_words(v):
    text = describe_rank(v.priority, v.priority_from, v.gpu.uuid, v.gpu.index)
    return "has no rank" if text == "-" else f"ranks {text}"


def _chosen_summary(request, chosen):
    parts = []
    for v in chosen:
        rank = describe_rank(v.priority, v.priority_from, v.gpu.uuid, v.gpu.index)
        prio = f"priority {rank}" if v.priority is not None else "no priority set"
        parts.append(f"{v.gpu.label} ({v.gpu.uuid}, {prio}, score {v.score:.2f})")
    return f"{request.unit} gets " + ", ".join(parts)


def _reason_tally(rejected):
    tally = {}
    for v in rejected:
        for r in v.reasons:
            tally[r.code] = tally.get(r.code, 0) + 1
    return sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))


def refusal_reason(decision):
    """One code for why DECISION got no GPU (the metrics' `reason` label): the most common
    rejection code, `no-gpu` when the inventory has none, `selection` when enough GPUs qualified
    but no set of them did (topology, same model)."""
    if not decision.verdicts:
        return "no-gpu"
    tally = _reason_tally(v for v in decision.verdicts if not v.accepted)
    return tally[0][0] if tally else "selection"


def _refusal_summary(request, count, accepted, rejected, notes):
    svc = request.service
    want = "every usable GPU" if svc.gpus == "all" else f"{count} GPU{'s' if count != 1 else ''}"
    if not request.gpus:
        return f"{request.unit} needs {want}; the inventory reports no GPU"
    why = ", ".join(f"{n} {code}" for code, n in _reason_tally(rejected))
    head = (f"{request.unit} needs {want} with {svc.describe_memory}; "
            f"{len(accepted)} of {len(request.gpus)} qualif{'y' if len(accepted) != 1 else 'ies'}")
    tail = f" (rejected: {why})" if why else ""
    extra = f"; {notes[-1]}" if notes else ""
    return head + tail + extra
