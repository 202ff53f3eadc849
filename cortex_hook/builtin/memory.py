"""Built-in memory check: enough free memory for the service, counting its own old memory as free."""

from ..hookspecs import hookimpl
from ..model import Reason
from ..quantities import format_size


def free_for(request, gpu):
    """Free memory on GPU for this request: the driver's free plus what this unit's own
    previous processes hold (a restarting service does not compete with itself). None if unknown."""
    if gpu.memory_free is None:
        return None
    own = 0
    if request.own_pids and gpu.processes:
        own = sum(p.used_memory or 0 for p in gpu.processes if p.pid in request.own_pids)
    return gpu.memory_free + own


def needed(request, gpu):
    """Bytes the service needs free on GPU (None: unknown because the size is unknown)."""
    svc = request.service
    if svc.min_free_fraction is not None:
        if gpu.memory_total is None:
            return None
        return int(svc.min_free_fraction * gpu.memory_total)
    return svc.min_free_memory or 0


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU without the free memory the service asks for."""
    if gpu.lost:
        return None
    need = needed(request, gpu)
    if need == 0:
        return None
    free = free_for(request, gpu)
    if need is None or free is None:
        why = "; ".join(p for p in gpu.problems if p.startswith("memory")) or "not reported"
        return Reason("memory-unknown", f"free memory unknown ({why}); needs {request.service.describe_memory}")
    if free < need:
        want = request.service.describe_memory
        return Reason("memory", f"not enough free memory: {format_size(free)} free, needs "
                                f"{format_size(need)}" + (f" ({want})" if "%" in want else ""))
    return None
