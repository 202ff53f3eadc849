"""GPUs as a person names them on the command line (UUID, index or PCI bus id), and the inventory
the admin commands show and resolve names against."""

from ..allocation import discover
from ..errors import UsageError
from ..rules import is_device_uuid, normalize_pci


def inventory(ctx, state):
    """Every GPU present now, with every detail `status` shows; each is remembered in the state
    so that a GPU that disappears can still be named and shown as absent."""
    gpus = discover(ctx.plugins(), ctx.policy(), frozenset({"processes", "full"}))
    state.remember_gpus(gpus)
    return gpus


def resolve_refs(ctx, refs):
    """The UUIDs the GPU references REFS name (UsageError for one that names no GPU)."""
    with ctx.open_state() as state:
        gpus = inventory(ctx, state)
        seen = state.seen_gpus()
    return [resolve_gpu(r, gpus, seen) for r in refs]


def resolve_gpu(ref, gpus, seen=None):
    """The UUID of the GPU REF names among GPUS (or, for a UUID, among those SEEN before)."""
    text = ref.strip()
    if is_device_uuid(text):
        if any(g.uuid == text for g in gpus) or text in (seen or {}):
            return text
        raise UsageError(f"GPU {text}: not present and never seen here (`cortex-hook status` lists GPUs)")
    if text.isascii() and text.isdigit():  # (`²` is a digit to isdigit, not to int)
        found = [g for g in gpus if g.index == int(text) and not g.is_mig]
        if not found:
            raise UsageError(f"GPU {text}: no GPU with that index (there are {sum(not g.is_mig for g in gpus)})")
        if found[0].uuid is None:
            raise UsageError(f"GPU {text}: the driver gives no UUID for it (lost?)")
        return found[0].uuid
    pci = normalize_pci(text)
    if pci:
        found = [g for g in gpus if not g.is_mig and (g.pci_bus_id or "").upper() == pci]
        if not found:
            raise UsageError(f"GPU {text}: no GPU at PCI bus id {pci}")
        return found[0].uuid
    raise UsageError(f"GPU {text!r}: give a UUID (GPU-…/MIG-…), an index, or a PCI bus id (0000:18:00.0)")
