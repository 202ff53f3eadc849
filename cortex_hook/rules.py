"""The GPU facts every layer needs, answered in one place.

Which GPUs are reserved, drained, faulty, demoted for recent trouble or outside an inherited
CUDA_VISIBLE_DEVICES; how much memory is free for a unit; which CUDA index a GPU has; where the
admin ranked it; how a person names a GPU. The built-in plugins (cortex_hook/hooks/builtin) are
thin hook implementations over these functions, and `status`, the planner and the server plugins
ask the same functions, so a GPU is never judged one way by `plan` and another by `status`.

Pure: GPUs, policy and state snapshot in, answers out; nothing here reads a file or the driver.
"""

import re
from fnmatch import fnmatchcase

from .model import DEFAULT_FATAL_XIDS, DEFAULT_IGNORE_XIDS, Reason  # noqa: F401 (the XID defaults, named here)
from .quantities import format_ago, format_duration

# patterns, compiled (and cached) by re at first use: not at every start
DEVICE_UUID = r"(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
_PCI_BUS_ID = r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.([0-7]))?"
CPU_ONLY = "-1"  # CUDA_VISIBLE_DEVICES that hides every GPU (an empty value reads as "unset" to some tools)
CLASS_RANK = {"batch": 0, "normal": 1, "critical": 2}  # `class:`: who goes first, and who may preempt whom


# -- naming a GPU --------------------------------------------------------------------------------


def is_device_uuid(text):
    """True for a whole GPU or MIG UUID as NVML gives it (`GPU-…`, `MIG-…`)."""
    return bool(re.fullmatch(DEVICE_UUID, text))


def normalize_pci(text):
    """`18:00.0`, `0000:18:00.0` or `00000000:18:00.0` -> NVML's `00000000:18:00.0`; None if
    TEXT is not a PCI bus id."""
    m = re.fullmatch(_PCI_BUS_ID, str(text).strip())
    if not m:
        return None
    dom, bus, dev, fn = m.groups()
    return f"{int(dom or '0', 16):08X}:{int(bus, 16):02X}:{int(dev, 16):02X}.{fn or '0'}"


def uuids_with_prefix(prefix, uuids):
    """The UUIDS that start with PREFIX, a `GPU-`/`MIG-` UUID or a prefix of one, as
    CUDA_VISIBLE_DEVICES takes it; an empty list when PREFIX is not such a prefix."""
    if not prefix.startswith(("GPU-", "MIG-")):
        return []
    return [u for u in uuids if u and u.startswith(prefix)]


def unique_prefixes(uuids, shortest=12):
    """{uuid: its shortest prefix (at least SHORTEST characters: `GPU-` and 8 hex digits) that no
    other of UUIDS starts with}: how a table shows a UUID that every command takes back."""
    names = sorted({u for u in uuids if u})
    out = {}
    for i, uuid in enumerate(names):
        longest = shortest
        for other in names[max(0, i - 1):i] + names[i + 1:i + 2]:  # sorted: the nearest share the most
            common = next((k for k, (a, b) in enumerate(zip(uuid, other)) if a != b),
                          min(len(uuid), len(other)))
            longest = max(longest, common + 1)
        out[uuid] = uuid[:longest]
    return out


# -- the admin's word ----------------------------------------------------------------------------
# One rule for every view and every decision (`priority list`, `status`, `plan`, `allocate`): a
# GPU's rank is its own; a MIG instance without one takes its parent's; ranked before unranked,
# lower rank first, and at equal rank (in practice: both unranked) a whole GPU before a MIG slice.
_UNRANKED = float("inf")


def rank_of(priorities, gpu):
    """(rank, the UUID that holds it) of GPU under the admin order PRIORITIES ({uuid: rank}): its
    own rank, else (a MIG instance) its parent's, else (None, None)."""
    for holder in (gpu.uuid, gpu.parent_uuid):
        if holder and priorities.get(holder) is not None:
            return priorities[holder], holder
    return None, None


def priority_of(snapshot, gpu):
    """The admin rank of GPU (a MIG instance without its own rank takes its parent's), or None."""
    return rank_of(snapshot.priorities, gpu)[0]


def rank_order(rank, gpu):
    """The admin's part of every ordering of GPUs: ranked first, by rank; a whole GPU before a
    MIG slice of the same rank."""
    return (_UNRANKED if rank is None else rank, gpu.is_mig)


def describe_rank(rank, holder, uuid, index):
    """The rank of the device UUID (GPU INDEX, or a MIG instance of it) as `0`, `0 from GPU 2`
    (a MIG instance that takes its parent's rank), or `-` (no rank)."""
    if rank is None:
        return "-"
    return str(rank) if holder == uuid else f"{rank} from GPU {index}"


def drain_of(snapshot, gpu):
    """The Drain on GPU (or its MIG parent), or None."""
    return snapshot.drains.get(gpu.uuid) or (snapshot.drains.get(gpu.parent_uuid) if gpu.parent_uuid else None)


def reserved_for(policy, gpu):
    """The unit globs GPU (or, for a MIG instance, its parent) is reserved for, or None."""
    return policy.reservations.get(gpu.uuid) or (
        policy.reservations.get(gpu.parent_uuid) if gpu.parent_uuid else None)


def reserved_for_others(policy, unit, gpu):
    """The globs of a reservation on GPU that does not include UNIT, or None."""
    globs = reserved_for(policy, gpu)
    if globs and not any(fnmatchcase(unit, g) for g in globs):
        return globs
    return None


def borrowed_reservation(request, gpu):
    """The globs of another unit's reservation a critical service may borrow GPU from (it then
    ranks after every unreserved GPU); None for an unreserved GPU or a service of another class."""
    if request.service.klass != "critical":
        return None
    return reserved_for_others(request.policy, request.unit, gpu)


# -- faults ------------------------------------------------------------------------------------
def faults(health, gpu):
    """Every Reason GPU is unfit for any service under the HEALTH thresholds (empty when healthy)."""
    if gpu.lost:
        return [Reason("lost", "lost: the driver answers GPU_IS_LOST")]
    reasons = []
    if gpu.uuid is None:
        why = [p for p in gpu.problems if "UUID" in p or p.startswith("uuid")]
        reasons.append(Reason("unidentified", "; ".join(why) or "the driver did not give its UUID"))
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


def is_mig_parent(gpu):
    """True for a GPU in MIG mode: its MIG instances are the devices, not the GPU itself."""
    return bool(gpu.mig_enabled and not gpu.is_mig)


# -- XIDs and trouble (what the runtime monitor saw) ------------------------------------------------
# What each XID of the default lists (model.DEFAULT_FATAL_XIDS, DEFAULT_IGNORE_XIDS) means, after
# NVIDIA's XID catalog; the README's "When a GPU fails" says why each is fatal or ignored.
XID_MEANINGS = {
    13: "graphics engine exception", 31: "GPU memory page fault", 43: "GPU stopped processing",
    45: "preemptive cleanup, due to previous errors", 48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning", 62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded", 64: "ECC page retirement or row remapping failure",
    68: "video processor exception", 74: "NVLink error", 79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate", 94: "contained ECC error", 95: "uncontained ECC error",
    109: "context switch timeout", 119: "GSP RPC timeout", 120: "GSP error", 140: "unrecovered ECC error",
    143: "GPU initialization failure",
}


def demotion(uuid, snapshot, health, now):
    """Why the GPU UUID ranks after the untroubled GPUs of its admin rank (recent trouble in
    SNAPSHOT.trouble within HEALTH's `demote_window` before NOW), or None: `demoted: 14 corrected
    ECC errors in the last hour`, `demoted: XID 94 12 min ago`, `demoted: recovered from XID 79
    30 min ago`. Corrected ECC errors count from `demote_corrected_ecc`, other trouble from one."""
    window = health.demote_window_seconds
    rows = [t for t in snapshot.trouble.get(uuid, ()) if t.at >= now - window] if window else []
    parts = []
    ecc = sum(t.count for t in rows if t.kind == "corrected_ecc")
    if ecc and ecc >= health.demote_corrected_ecc:
        span = {3600: "hour", 86400: "day", 60: "minute"}.get(window) or format_duration(window)
        parts.append(f"{ecc} corrected ECC error{'s' if ecc != 1 else ''} in the last {span}")
    seen = {}  # (kind, detail) -> (how many, the latest)
    for t in rows:
        if t.kind != "corrected_ecc":
            n, last = seen.get((t.kind, t.detail), (0, t))
            seen[(t.kind, t.detail)] = (n + 1, t if t.at >= last.at else last)
    for n, last in sorted(seen.values(), key=lambda item: -item[1].at):
        what = _TROUBLE_WORDS.get(last.kind, "{kind} {detail}").format(kind=last.kind, detail=last.detail).strip()
        when = format_ago(now - last.at)
        parts.append(f"{what} {n} times, last {when}" if n > 1 else f"{what} {when}")
    return "demoted: " + ", ".join(parts) if parts else None


_TROUBLE_WORDS = {"xid": "XID {detail}", "throttle": "{detail} throttling", "recovered": "recovered from {detail}"}


def demotion_of(snapshot, gpu, health, now):
    """rules.demotion of GPU, or (a MIG instance) of its parent GPU, whose trouble it shares."""
    if gpu.uuid is None:
        return None
    return demotion(gpu.uuid, snapshot, health, now) or (
        demotion(gpu.parent_uuid, snapshot, health, now) if gpu.parent_uuid else None)


# -- memory --------------------------------------------------------------------------------------
def free_for(request, gpu, leaving=True):
    """Free memory on GPU for this request: the driver's free plus what this unit's own previous
    processes hold (a restarting service does not compete with itself) and, with LEAVING, what
    processes that have already ended still hold (being freed: the start waits for it,
    handoff.py). None if unknown."""
    if gpu.memory_free is None:
        return None
    own = 0
    counted = request.own_pids | request.leaving_pids if leaving else request.own_pids
    if counted and gpu.processes:
        own = sum(p.used_memory or 0 for p in gpu.processes if p.pid in counted)
    return gpu.memory_free + own


def memory_needed(service, gpu):
    """Bytes SERVICE needs free on GPU (None: unknown, because the GPU's size is unknown)."""
    if service.min_free_fraction is not None:
        if gpu.memory_total is None:
            return None
        return int(service.min_free_fraction * gpu.memory_total)
    return service.min_free_memory or 0


# -- CUDA's view ---------------------------------------------------------------------------------
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
    """How GPU is named in CUDA_VISIBLE_DEVICES: its UUID, or (MODE "index") its PCI-bus-ordered
    index; a MIG instance always by UUID."""
    if mode == "index" and not gpu.is_mig and gpu.cuda_index is not None:
        return str(gpu.cuda_index)
    return gpu.uuid


def inherited_visible(unit, environ):
    """The CUDA_VISIBLE_DEVICES an outer allocator set, or None.

    A value that our own env file put there (a restart reads the previous start's env file
    before the allocation runs) is not an outer restriction and is ignored.
    """
    text = environ.get("CUDA_VISIBLE_DEVICES")
    if text is None or environ.get("CORTEX_HOOK_UNIT") == unit:
        return None
    return text


def parse_visible(text, gpus, device_order=None):
    """Read an inherited CUDA_VISIBLE_DEVICES as CUDA does: -> (allowed uuids, notes).

    Entries are indices (in PCI bus order, which cortex-hook always sets), `GPU-`/`MIG-` UUIDs or
    unique prefixes of them. As in CUDA, an entry that names nothing ends the list.
    """
    entries = [raw.strip() for raw in text.split(",")] if text.strip() else []
    notes = []
    if device_order not in (None, "PCI_BUS_ID") and any(_is_index(e) for e in entries):
        notes.append(f"inherited CUDA_DEVICE_ORDER={device_order}: indices read in PCI bus order")
    allowed = set()
    by_cuda = {g.cuda_index: g for g in gpus if not g.is_mig and g.cuda_index is not None}
    for entry in entries:
        match = None
        if _is_index(entry):
            match = by_cuda.get(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            found = uuids_with_prefix(entry, [g.uuid for g in gpus])
            match = next(g for g in gpus if g.uuid == found[0]) if len(found) == 1 else None
        if match is None:
            notes.append(f"inherited CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU; "
                         "CUDA ignores it and every entry after it")
            break
        allowed.add(match.uuid)
    return frozenset(allowed), notes


def _is_index(entry):
    """An integer as CUDA reads one (ASCII digits, an optional minus); `²` is a digit to
    str.isdigit but not to int()."""
    return re.fullmatch(r"-?[0-9]+", entry) is not None


# -- tensor parallel -----------------------------------------------------------------------------
def same_model_rule(service, tensor_parallel):
    """Why SERVICE's GPUs must all be one model, in the plan's words, or None when they need not:
    `same_model: true`, or (unset) a multi-GPU service whose server plugin runs it tensor parallel
    (TENSOR_PARALLEL: each GPU holds a slice of every layer, so the slowest or smallest GPU
    sets the pace and the memory for all)."""
    if service.gpus == 1 or service.same_model is False:
        return None
    return "same_model: true" if service.same_model else \
        ("same_model is on for tensor parallel" if tensor_parallel else None)


def model_of(gpu):
    """What "the same model" compares: the driver's name (a MIG instance's carries its profile);
    a GPU whose name the driver did not give is like no other."""
    return gpu.name if gpu.name and gpu.name != "?" else ("unknown", gpu.uuid, gpu.index)


def model_groups(verdicts):
    """VERDICTS (best first) in groups of one model each, best first within, the groups in the
    order of their best member."""
    groups = {}
    for v in verdicts:
        groups.setdefault(model_of(v.gpu), []).append(v)
    return list(groups.values())


def same_model_notes(why, groups, chosen, accepted, count, every):
    """What the plan says when the rule WHY mattered (GPUs of more than one model qualify): each
    GPU of another model it left out (every one with EVERY, else those ranked before the last
    chosen), or, when nothing was chosen, that no model has COUNT that fit."""
    if not why or len(groups) < 2:
        return []
    if chosen:
        first = chosen[0].gpu
        taken = {id(v) for v in chosen}
        last = max(i for i, v in enumerate(accepted) if id(v) in taken)
        return [f"{v.gpu.label} ({_model_name(v.gpu)}): not the same model as {first.label} "
                f"({_model_name(first)}); {why}"
                for i, v in enumerate(accepted) if model_of(v.gpu) != model_of(first) and (every or i < last)]
    tally = ", ".join(f"{len(g)} {_model_name(g[0].gpu)}" for g in groups)
    verb = "fit" if any(len(g) >= count for g in groups) else "qualify"
    return [f"no {count} GPUs of one model {verb} ({tally}); {why}"]


def _model_name(gpu):
    return gpu.name if gpu.name and gpu.name != "?" else "model unknown"


def nvlinked(a, b):
    """True if GPUs A and B are joined by NVLink."""
    return bool(a.nvlink_peers) and b.uuid in a.nvlink_peers


def within(level):
    """A predicate: are two GPUs at most LEVEL apart on the PCIe tree (NVML's common-ancestor
    level: 20 one switch, 30 one host bridge, 40 one NUMA node, which the NUMA node also tells)?"""
    def close(a, b):
        found = a.topology.get(b.uuid)
        if found is None:
            return level >= 40 and a.numa_node is not None and a.numa_node == b.numa_node
        return found <= level
    return close
