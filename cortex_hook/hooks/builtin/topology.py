"""Built-in selection for more than one GPU: NVLink-joined sets first, then PCIe/NUMA locality.

Greedy in rank order: the best-ranked GPU that can start a joined set, then the best-ranked GPUs
joined to every GPU chosen so far. With `topology: any` the best-ranked GPUs are taken as they are.
"""

from ...model import Selection
from ...rules import nvlinked, within
from ..markers import hookimpl

_LOCALITY = ((20, "under one PCIe switch tree"), (30, "under one PCIe host bridge"), (40, "on one NUMA node"))


def greedy_set(ranked, count, joined):
    """The first COUNT-sized set, in rank order, whose members are pairwise JOINED (a predicate on
    two members of RANKED); or None."""
    for start, seed in enumerate(ranked):
        chosen = [seed]
        for cand in ranked:
            if cand is seed:
                continue
            if all(joined(cand, c) for c in chosen):
                chosen.append(cand)
                if len(chosen) == count:
                    return chosen
        if len(ranked) - start < count:
            break
    return None


@hookimpl
def cortex_select_gpus(request, ranked, count):
    """Choose COUNT GPUs honouring `topology: prefer-nvlink | require-nvlink`."""
    mode = request.service.topology
    if count <= 1 or mode == "any":
        return None
    top = ranked[:count]
    chosen = greedy_set(ranked, count, lambda a, b: nvlinked(a.gpu, b.gpu))
    if chosen:
        notes = [f"all {count} joined by NVLink"]
        skipped = [v for v in top if v not in chosen]
        if skipped:
            notes.append("passed over " + ", ".join(v.gpu.label for v in skipped)
                         + " (better ranked, but not NVLink-joined to the rest)")
        return Selection(chosen, notes)
    unknown = any(v.gpu.nvlink_peers is None for v in ranked)
    missing = ("NVLink is unknown (the driver does not report it)" if unknown
               else f"no free NVLink-joined set of {count}")
    if mode == "require-nvlink":
        return Selection([], [f"{missing}; topology: require-nvlink"])
    for level, where in _LOCALITY:
        close = within(level)
        chosen = greedy_set(ranked, count, lambda a, b, close=close: close(a.gpu, b.gpu))
        if chosen:
            return Selection(chosen, [f"{missing}: chose {count} GPUs {where}"])
    return Selection(top, [f"{missing}, nor a set sharing a NUMA node: the best-ranked GPUs are used"])
