"""GPUs as a person names them on the command line (UUID or unique UUID prefix, index, label,
PCI bus id), and the inventory the admin commands show and resolve names against."""

import re

from ..inventory import discover, remember
from ..errors import EXIT_CONFIG, DriverError, PolicyError, TimeoutExpired, UsageError
from ..model import Gpu, Policy
from ..rules import is_device_uuid, normalize_pci, uuids_with_prefix
from ..systemd.journal import error

_LABEL = re.compile(r"(?:GPU\s*)?([0-9]+)(?:\s*MIG\s*([0-9]+))?", re.IGNORECASE)
STATUS_DETAIL = frozenset({"processes", "full"})  # what only the views ask the driver for


def inventory(ctx, state, detail=STATUS_DETAIL):
    """Every GPU present now, with the DETAIL facts (by default every one `status` shows); each
    is remembered in the state so that a GPU that disappears can still be named and shown as absent."""
    gpus = discover(ctx.plugins(), ctx.policy(), detail)
    return remember(state, gpus)


class ViewInventory:
    """What a view shows: the GPUs, the policy they are judged by, where they come from
    (`policy`: the policy's inventory; `nvml`: the driver, the policy being broken; `state`: the
    GPUs the state has seen, the driver failing too), and the broken policy's error (or None)."""

    def __init__(self, gpus, policy, source, broken=None, driver_problem=None):
        self.gpus, self.policy, self.source = gpus, policy, source
        self.broken, self.driver_problem = broken, driver_problem

    def exit_code(self):
        """The view's exit code: 0, or, after one line on stderr naming the policy's file:line and
        what is shown instead, 78 (EXIT_CONFIG) when the policy is broken."""
        if self.broken is None:
            return 0
        if self.source == "nvml":
            shown = "the GPUs as NVML reports them, health by the default thresholds"
        else:
            shown = (f"the {len(self.gpus) or 'no'} GPUs last seen in the state, live facts unknown "
                     f"(NVML: {self.driver_problem})")
        error(f"{self.broken} (policy broken; showing {shown})")
        return EXIT_CONFIG


def view_inventory(ctx, state):
    """The GPUs a view shows, even when the policy is broken: then NVML's, and when the driver
    cannot be asked either, those the state has seen (see ViewInventory)."""
    try:
        policy = ctx.policy()
        return ViewInventory(inventory(ctx, state), policy, "policy")
    except PolicyError as exc:  # a view must still show the GPUs (the simulated file is policy too)
        broken = exc
    policy = Policy()
    try:
        gpus = discover(ctx.plugins(), policy, STATUS_DETAIL)
    except (DriverError, TimeoutExpired) as exc:
        return ViewInventory(seen_as_gpus(state.seen_gpus()), policy, "state", broken, str(exc))
    return ViewInventory(remember(state, gpus), policy, "nvml", broken)


def seen_as_gpus(seen):
    """The GPUs of SEEN ({uuid: (index, name, pci_bus_id, last_seen)}) with only those facts; a
    MIG instance (its number among its parent's not recorded) hangs under the GPU on its bus."""
    whole = {bus: uuid for uuid, (_, _, bus, _) in seen.items() if uuid.startswith("GPU-") and bus}
    gpus = [Gpu(index=idx if idx is not None else -1, uuid=uuid, name=name or "?", pci_bus_id=bus,
                parent_uuid=(whole.get(bus, "?") if uuid.startswith("MIG-") else None))
            for uuid, (idx, name, bus, _) in seen.items()]
    return sorted(gpus, key=lambda g: (g.index, g.is_mig, g.uuid))


def resolve_refs(ctx, refs):
    """The UUIDs the GPU references REFS name (UsageError for one that names no GPU)."""
    with ctx.open_state() as state:
        gpus = inventory(ctx, state, detail=frozenset())
        seen = state.seen_gpus()
    return [resolve_gpu(r, gpus, seen) for r in refs]


def resolve_gpu(ref, gpus, seen=None):
    """The UUID of the GPU REF names among GPUS (or, for a UUID, among those SEEN before).

    REF is a UUID or a unique prefix of one (`GPU-1a2b`, as CUDA_VISIBLE_DEVICES takes it), an
    index (`2`), a label as the views show it (`GPU 2`, `GPU 2 MIG 0`, `2 MIG 0`), or a PCI bus
    id."""
    text = ref.strip()
    if text.startswith(("GPU-", "MIG-")):
        return _by_uuid(text, gpus, seen or {})
    label = _LABEL.fullmatch(text) if text.isascii() else None  # (`²` is a digit to isdigit, not to int)
    if label:
        index, mig = int(label.group(1)), label.group(2)
        found = [g for g in gpus if g.index == index and
                 (not g.is_mig if mig is None else g.is_mig and g.mig_index == int(mig))]
        if not found:
            what = "no GPU with that index" if mig is None else "no such MIG instance"
            raise UsageError(f"GPU {text}: {what} (there are {sum(not g.is_mig for g in gpus)} GPUs; "
                             "`cortex-hook status` lists them)")
        if found[0].uuid is None:
            raise UsageError(f"GPU {text}: the driver gives no UUID for it (lost?)")
        return found[0].uuid
    pci = normalize_pci(text)
    if pci:
        found = [g for g in gpus if not g.is_mig and (g.pci_bus_id or "").upper() == pci]
        if not found:
            raise UsageError(f"GPU {text}: no GPU at PCI bus id {pci}")
        return found[0].uuid
    raise UsageError(f"GPU {text!r}: give a UUID or a unique prefix of one (GPU-…/MIG-…), an index "
                     "(2, or `2 MIG 0` for a MIG instance), or a PCI bus id (0000:18:00.0)")


def _by_uuid(text, gpus, seen):
    """The one UUID among the GPUs present and SEEN that is TEXT or starts with it."""
    labels = {g.uuid: g.label for g in gpus if g.uuid}
    known = list(labels) + [u for u in seen if u not in labels]
    if text in known:
        return text
    found = uuids_with_prefix(text, known)
    if len(found) == 1:
        return found[0]
    if not found:
        what = "not present and never seen here" if is_device_uuid(text) else "no GPU's UUID starts with it"
        raise UsageError(f"GPU {text}: {what} (`cortex-hook status` lists GPUs)")
    named = [f"{u} ({labels.get(u, 'absent')})" for u in sorted(found)]
    more = f" and {len(named) - 8} more" if len(named) > 8 else ""
    raise UsageError(f"GPU {text}: ambiguous, the UUIDs of {len(found)} GPUs start with it: "
                     f"{', '.join(named[:8])}{more}")
