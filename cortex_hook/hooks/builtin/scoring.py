"""Built-in score terms: free memory, idleness and coolness, weighted by the policy's `scoring:`."""

from ...model import ScoreTerm
from ...quantities import format_size
from ...rules import free_for
from ..markers import hookimpl


@hookimpl
def cortex_score_gpu(request, gpu):
    """Score an accepted GPU: each term in [0, 1] times its weight; unknown facts score 0."""
    weights = request.policy.scoring
    terms = []
    free = free_for(request, gpu)
    if free is not None and gpu.memory_total:
        terms.append(ScoreTerm("free_memory", min(1.0, free / gpu.memory_total), weights.free_memory,
                               f"{format_size(free)} of {format_size(gpu.memory_total)} free"))
    else:
        terms.append(ScoreTerm("free_memory", 0.0, weights.free_memory, "free memory unknown"))
    if gpu.utilization is not None:
        terms.append(ScoreTerm("utilization", 1 - min(100, gpu.utilization) / 100, weights.utilization,
                               f"{gpu.utilization}% busy"))
    else:
        terms.append(ScoreTerm("utilization", 0.0, weights.utilization, "utilisation unknown"))
    limit = request.policy.health.max_temperature or 100
    if gpu.temperature is not None:
        terms.append(ScoreTerm("temperature", max(0.0, 1 - gpu.temperature / limit), weights.temperature,
                               f"{gpu.temperature}°C"))
    else:
        terms.append(ScoreTerm("temperature", 0.0, weights.temperature, "temperature unknown"))
    return [t for t in terms if t.weight]
