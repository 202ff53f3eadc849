"""GPUs as a person names them on the command line: UUID, index or PCI bus id -> UUID."""

import re

from .errors import UsageError

_UUID = re.compile(r"(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_PCI = re.compile(r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])")


def normalize_pci(text):
    """`18:00.0`, `0000:18:00.0` or `00000000:18:00.0` -> `00000000:18:00.0`; None if not one."""
    m = _PCI.fullmatch(text.strip())
    if not m:
        return None
    dom, bus, dev, fn = m.groups()
    return f"{int(dom or '0', 16):08X}:{int(bus, 16):02X}:{int(dev, 16):02X}.{fn}"


def resolve_gpu(ref, gpus, seen=None):
    """The UUID of the GPU REF names among GPUS (or, for a UUID, among those SEEN before)."""
    text = ref.strip()
    if _UUID.fullmatch(text):
        if any(g.uuid == text for g in gpus) or text in (seen or {}):
            return text
        raise UsageError(f"GPU {text}: not present and never seen here (`cortex-hook status` lists GPUs)")
    if text.isdigit():
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
