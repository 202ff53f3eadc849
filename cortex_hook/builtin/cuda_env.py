"""Built-in environment: CUDA_VISIBLE_DEVICES in the chosen order, PCI bus ordering, and the
CORTEX_GPU_* variables a unit can use as ${…} in ExecStart=."""

from ..hookspecs import hookimpl

CPU_ONLY = "-1"  # hides every GPU from CUDA (an empty value is read as "unset" by some tools)


def assign_cuda_indices(gpus):
    """Set `cuda_index` on every device: a whole GPU's position in PCI bus order (what CUDA uses
    with CUDA_DEVICE_ORDER=PCI_BUS_ID); a MIG instance gets its parent's."""
    whole = sorted((g for g in gpus if not g.is_mig), key=lambda g: ((g.pci_bus_id or "~").upper(), g.index))
    by_uuid = {}
    for i, gpu in enumerate(whole):
        gpu.cuda_index = i
        by_uuid[gpu.uuid] = i
    for gpu in gpus:
        if gpu.is_mig:
            gpu.cuda_index = by_uuid.get(gpu.parent_uuid)


def visible_entry(gpu, mode):
    """How GPU is named in CUDA_VISIBLE_DEVICES: its UUID, or its PCI-bus-ordered index."""
    if mode == "index" and not gpu.is_mig and gpu.cuda_index is not None:
        return str(gpu.cuda_index)
    return gpu.uuid


@hookimpl(tryfirst=True)
def cortex_prepare_launch(request, decision, launch):
    """Set the CUDA and CORTEX_GPU_* variables for the chosen GPUs (first, so servers can adjust)."""
    chosen = decision.chosen
    mode = request.service.visible_devices
    env = launch.env
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(visible_entry(g, mode) for g in chosen) if chosen else CPU_ONLY
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
