"""Built-in availability checks: drains, reservations, other units' leases, the inherited
CUDA_VISIBLE_DEVICES, and the MIG rules (a MIG parent is not a device; a process uses one MIG
instance)."""

from ... import rules
from ...model import Reason
from ..markers import hookimpl


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU that is drained, reserved for others, leased, promised to a unit that
    preempted its holder, outside the inherited set, or a MIG device the service cannot use."""
    reasons = []
    svc = request.service
    if rules.is_mig_parent(gpu):
        reasons.append(Reason("mig-parent", "MIG mode is on: its MIG instances are the candidates"))
    if gpu.is_mig and (svc.gpus == "all" or svc.gpus > 1):
        reasons.append(Reason("mig-multi", "a process can use only one MIG instance; "
                                           f"this service asks for {svc.gpus} GPUs"))
    if gpu.uuid is None:
        return reasons
    drain = rules.drain_of(request.snapshot, gpu)
    if drain:
        reasons.append(Reason("drained", f"drained by the {drain.source}: {drain.reason}"))
    others = rules.reserved_for_others(request.policy, request.unit, gpu)
    if others and svc.klass != "critical":
        reasons.append(Reason("reserved", f"reserved for {', '.join(others)}"))
    for lease in request.snapshot.leases:
        if lease.unit == request.unit or lease.uuid not in (gpu.uuid, gpu.parent_uuid):
            continue
        if lease.sharing == "exclusive":
            reasons.append(Reason("leased", f"leased exclusively by {lease.unit}"))
        elif svc.sharing == "exclusive":
            reasons.append(Reason("leased", f"in use (shared) by {lease.unit}; this service needs it alone"))
    for promise in request.snapshot.promises:
        if promise.unit != request.unit and promise.uuid in (gpu.uuid, gpu.parent_uuid):
            why = f", which preempted {promise.victim} for it" if promise.victim else ", with GPUs it preempted"
            reasons.append(Reason("promised", f"promised to {promise.unit}{why}"))
    if request.visible is not None and gpu.uuid not in request.visible \
            and (gpu.parent_uuid is None or gpu.parent_uuid not in request.visible):
        reasons.append(Reason("not-visible", "outside the inherited CUDA_VISIBLE_DEVICES="
                                             f"{request.visible_text}"))
    return reasons
