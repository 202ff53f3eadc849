"""Built-in health checks: lost GPUs, memory faults and heat, as the policy's `health:` says."""

from ... import rules
from ..markers import hookimpl


@hookimpl
def cortex_gpu_faults(policy, gpu):
    """A GPU the driver reports as lost, faulty or too hot is unfit for every service."""
    return rules.faults(policy.health, gpu)
