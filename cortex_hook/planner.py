"""The planner: GPUs + policy + state snapshot in, a Decision with a verdict for every GPU out.

Pure: it reads nothing and writes nothing, so `plan` (dry run) and `allocate` run the same code.
Order of work: check every GPU (every reason that applies), score the accepted ones, rank them
(reservation tier, then the admin priority, then the score), then select N (topology hooks).
"""

from .model import Decision, Selection, Verdict
from .rules import borrowed_reservation, priority_of

_UNRANKED = float("inf")


def rank_key(verdict):
    """Sort key: unreserved before borrowed-reserved, admin priority, higher score, then index."""
    gpu = verdict.gpu
    return (verdict.tier,
            _UNRANKED if verdict.priority is None else verdict.priority,
            -(verdict.score or 0.0),
            gpu.index, gpu.mig_index if gpu.mig_index is not None else -1)


def plan(plugins, request):
    """Decide which GPUs REQUEST's unit gets; never raises for an unsatisfiable request."""
    svc = request.service
    verdicts = []
    for gpu in request.gpus:
        verdict = Verdict(gpu=gpu, priority=priority_of(request.snapshot, gpu))
        verdict.reasons = plugins.gpu_faults(request.policy, gpu) + plugins.check_gpu(request, gpu)
        if verdict.accepted:
            verdict.terms = plugins.score_gpu(request, gpu)
            others = borrowed_reservation(request, gpu)
            if others:
                verdict.tier = 1
                verdict.notes.append(f"reserved for {', '.join(others)}: usable because this service is "
                                     "critical, ranked after unreserved GPUs")
        verdicts.append(verdict)

    accepted = sorted((v for v in verdicts if v.accepted), key=rank_key)
    rejected = [v for v in verdicts if not v.accepted]
    count = len(accepted) if svc.gpus == "all" else svc.gpus
    notes = []
    selection = None
    if accepted and len(accepted) >= count:
        selection = plugins.select_gpus(request, accepted, count) or Selection(accepted[:count])
        notes.extend(selection.notes)
        if selection.chosen and len(selection.chosen) != count:
            raise RuntimeError(f"a select_gpus hook returned {len(selection.chosen)} GPUs, not {count}")
    chosen = selection.chosen if selection else []
    for v in chosen:
        v.selected = True
    ordered = chosen + [v for v in accepted if not v.selected] + rejected
    if chosen:
        return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[v.gpu for v in chosen],
                        ok=True, summary=_chosen_summary(request, chosen), notes=notes)
    summary = _refusal_summary(request, count, accepted, rejected, notes)
    if svc.on_unavailable == "cpu":
        notes.append(summary)
        return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[], ok=True,
                        summary=f"{request.unit}: no GPU available, starting on CPU (on_unavailable: cpu)",
                        notes=notes, fallback="cpu")
    return Decision(unit=request.unit, service=svc, verdicts=ordered, chosen=[], ok=False,
                    summary=summary, notes=notes)


def _chosen_summary(request, chosen):
    parts = []
    for v in chosen:
        prio = f"priority {v.priority}" if v.priority is not None else "no priority set"
        parts.append(f"{v.gpu.label} ({v.gpu.uuid}, {prio}, score {v.score:.2f})")
    return f"{request.unit} gets " + ", ".join(parts)


def _refusal_summary(request, count, accepted, rejected, notes):
    svc = request.service
    want = "every usable GPU" if svc.gpus == "all" else f"{count} GPU{'s' if count != 1 else ''}"
    if not request.gpus:
        return f"{request.unit} needs {want}; the inventory reports no GPU"
    tally = {}
    for v in rejected:
        for r in v.reasons:
            tally[r.code] = tally.get(r.code, 0) + 1
    why = ", ".join(f"{n} {code}" for code, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))
    head = (f"{request.unit} needs {want} with {svc.describe_memory}; "
            f"{len(accepted)} of {len(request.gpus)} qualif{'y' if len(accepted) != 1 else 'ies'}")
    tail = f" (rejected: {why})" if why else ""
    extra = f"; {notes[-1]}" if notes else ""
    return head + tail + extra
