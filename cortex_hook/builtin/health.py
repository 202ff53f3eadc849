"""Built-in health checks: lost GPUs, memory faults and heat, as the policy's `health:` says."""

from ..hookspecs import hookimpl
from ..model import Reason


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU the driver reports as lost, faulty or too hot."""
    return health_problems(request.policy.health, gpu)


def health_problems(health, gpu):
    """Every Reason GPU is unfit under the HEALTH thresholds (empty when healthy)."""
    if gpu.lost:
        return [Reason("lost", "lost: the driver answers GPU_IS_LOST")]
    reasons = []
    if gpu.uuid is None:
        reasons.append(Reason("unidentified", "the driver did not give its UUID"))
    if gpu.mig_enabled and not gpu.is_mig:
        reasons.append(Reason("mig-parent", "MIG mode is on: its MIG instances are the candidates"))
    if health.volatile_uncorrectable_ecc and gpu.ecc_volatile_uncorrected:
        reasons.append(Reason("ecc", f"{gpu.ecc_volatile_uncorrected} volatile uncorrectable ECC "
                                     "error(s) since the driver loaded"))
    if health.retired_pages_pending and gpu.retired_pages_pending:
        reasons.append(Reason("retired-pages", "page retirement pending (needs a GPU reset)"))
    if health.remapped_rows_pending and gpu.remapped_rows_pending:
        reasons.append(Reason("remapped-rows", "row remapping pending (needs a GPU reset)"))
    if gpu.remapped_rows_failure:  # not switchable: the GPU needs service, pending or not
        reasons.append(Reason("remap-failure", "row remapping failed (the GPU needs service)"))
    limit = health.max_temperature
    if limit is not None and gpu.temperature is not None and gpu.temperature > limit:
        reasons.append(Reason("too-hot", f"too hot: {gpu.temperature}°C, limit {limit}°C"))
    return reasons
