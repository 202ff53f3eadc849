"""Built-in availability checks: drains, reservations, other units' leases, the inherited
CUDA_VISIBLE_DEVICES, and the one-MIG-instance-per-process rule."""

from fnmatch import fnmatchcase

from ..hookspecs import hookimpl
from ..model import Reason


def reserved_for(policy, gpu):
    """The unit globs GPU (or, for a MIG instance, its parent) is reserved for, or None."""
    return policy.reservations.get(gpu.uuid) or (
        policy.reservations.get(gpu.parent_uuid) if gpu.parent_uuid else None)


def reserved_for_others(request, gpu):
    """The globs of a reservation on GPU that does not include this unit, or None."""
    globs = reserved_for(request.policy, gpu)
    if globs and not any(fnmatchcase(request.unit, g) for g in globs):
        return globs
    return None


def drain_of(snapshot, gpu):
    """The Drain on GPU (or its MIG parent), or None."""
    return snapshot.drains.get(gpu.uuid) or (snapshot.drains.get(gpu.parent_uuid) if gpu.parent_uuid else None)


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU that is drained, reserved for others, leased, or outside the inherited set."""
    if gpu.uuid is None:
        return None
    reasons = []
    svc = request.service
    drain = drain_of(request.snapshot, gpu)
    if drain:
        reasons.append(Reason("drained", f"drained by the admin: {drain.reason}"))
    others = reserved_for_others(request, gpu)
    if others and svc.klass != "critical":
        reasons.append(Reason("reserved", f"reserved for {', '.join(others)}"))
    for lease in request.snapshot.leases:
        if lease.unit == request.unit or lease.uuid not in (gpu.uuid, gpu.parent_uuid):
            continue
        if lease.sharing == "exclusive":
            reasons.append(Reason("leased", f"leased exclusively by {lease.unit}"))
        elif svc.sharing == "exclusive":
            reasons.append(Reason("leased", f"in use (shared) by {lease.unit}; this service needs it alone"))
    if request.visible is not None and gpu.uuid not in request.visible \
            and (gpu.parent_uuid is None or gpu.parent_uuid not in request.visible):
        reasons.append(Reason("not-visible", "outside the inherited CUDA_VISIBLE_DEVICES="
                                             f"{request.visible_text}"))
    if gpu.is_mig and (svc.gpus == "all" or svc.gpus > 1):
        reasons.append(Reason("mig-multi", "a process can use only one MIG instance; "
                                           f"this service asks for {svc.gpus} GPUs"))
    return reasons


def parse_visible(text, gpus, device_order=None):
    """Read an inherited CUDA_VISIBLE_DEVICES as CUDA does: -> (allowed uuids, notes).

    Entries are indices (in PCI bus order, which cortex-hook always sets), `GPU-`/`MIG-` UUIDs or
    unique prefixes of them. As in CUDA, an entry that names nothing ends the list.
    """
    notes = []
    if device_order not in (None, "PCI_BUS_ID") and any(e.strip().isdigit() for e in text.split(",")):
        notes.append(f"inherited CUDA_DEVICE_ORDER={device_order}: indices read in PCI bus order")
    allowed = set()
    by_cuda = {g.cuda_index: g for g in gpus if not g.is_mig and g.cuda_index is not None}
    for raw in text.split(",") if text.strip() else []:
        entry = raw.strip()
        match = None
        if entry.lstrip("-").isdigit():
            match = by_cuda.get(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            found = [g for g in gpus if g.uuid and g.uuid.startswith(entry)]
            match = found[0] if len(found) == 1 else None
        if match is None:
            notes.append(f"inherited CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU; "
                         "CUDA ignores it and every entry after it")
            break
        allowed.add(match.uuid)
    return frozenset(allowed), notes
