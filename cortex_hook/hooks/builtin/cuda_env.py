"""Built-in environment: CUDA_VISIBLE_DEVICES in the chosen order, PCI bus ordering, and the
CORTEX_GPU_* variables a unit can use as ${…} in ExecStart=."""

from ... import rules
from ..markers import hookimpl


@hookimpl(tryfirst=True)
def cortex_prepare_launch(request, decision, launch):
    """Set the CUDA and CORTEX_GPU_* variables for the chosen GPUs (first, so servers can adjust)."""
    chosen = decision.chosen
    mode = request.service.visible_devices
    env = launch.env
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(rules.visible_entry(g, mode) for g in chosen) if chosen else rules.CPU_ONLY
    env["CORTEX_GPU_COUNT"] = str(len(chosen))
    env["CORTEX_GPU_UUIDS"] = ",".join(g.uuid for g in chosen)
    env["CORTEX_GPU_INDICES"] = ",".join(str(g.cuda_index) for g in chosen if g.cuda_index is not None)
    env["CORTEX_HOOK_UNIT"] = request.unit
    if mode == "index" and any(g.is_mig for g in chosen):
        launch.notes.append("MIG instances are always named by UUID in CUDA_VISIBLE_DEVICES")
    moved = [g for g in chosen if not g.is_mig and g.cuda_index is not None and g.cuda_index != g.index]
    if mode == "index" and moved:
        launch.notes.append("CUDA index differs from nvidia-smi's: " + ", ".join(
            f"{g.label} is CUDA {g.cuda_index}" for g in moved))
