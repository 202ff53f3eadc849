"""Built-in memory check: enough free memory for the service, counting its own old memory as free."""

from ... import rules
from ...model import Reason
from ...quantities import format_size
from ..markers import hookimpl


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU without the free memory the service asks for."""
    if gpu.lost:
        return None
    need = rules.memory_needed(request.service, gpu)
    if need == 0:
        return None
    free = rules.free_for(request, gpu)
    if need is None or free is None:
        why = "; ".join(p for p in gpu.problems if p.startswith("memory")) or "not reported"
        return Reason("memory-unknown", f"free memory unknown ({why}); needs {request.service.describe_memory}")
    if free < need:
        want = request.service.describe_memory
        return Reason("memory", f"not enough free memory: {format_size(free)} free, needs "
                                f"{format_size(need)}" + (f" ({want})" if "%" in want else ""))
    return None
