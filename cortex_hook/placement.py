"""Placement: where a start goes among GPUs the admin's order leaves tied (`placement:`).

- `pack` fills topology groups that are already in use, so that whole groups stay free for the
  multi-GPU services that need them: it never takes a GPU from a wholly free group (of two or
  more) while a GPU of a partly used group, or a GPU standing alone, would do; among partly used
  groups it takes the one with the fewest free GPUs left (best fit). A multi-GPU service takes
  the smallest NVLink set that still has enough free GPUs. For a shared
  service it prefers a GPU that already has tenants.
- `spread` does the opposite, for load balance: the group with the fewest GPUs in use first and,
  for a shared service, the GPU with the fewest tenants. On an idle box nothing differs, and the
  score decides as before placement existed.

A topology group is, from the closest to the widest: the GPUs joined by NVLink (a connected set),
under one PCIe switch, under one host bridge, on one NUMA node. Each is compared in that order.
Pure: the planner calls `keys` with the GPUs it accepted and the leases in its snapshot; the key
ranks after the admin's order and the monitor's demotion and before the score (planner.rank_key).
"""

LEVELS = (("NVLink set", None), ("PCIe switch", 20), ("PCIe host bridge", 30), ("NUMA node", 40))
PACK, SPREAD = "pack", "spread"


def counts(gpus, wanted, busy):
    """{uuid: [(size, others in use) of its group at each level of LEVELS]} for the whole GPUs among
    GPUS whose uuid is in WANTED; BUSY: the uuids in use (a MIG instance counts as its parent). One
    pass over each wanted GPU's PCIe distances (NVML's common-ancestor levels; the NUMA node where
    they are unknown): linear per GPU, so 64 GPUs stay cheap on the start path."""
    whole = [g for g in gpus if not g.is_mig and g.uuid]
    linked = _nvlink_sets(whole)
    out = {}
    for g in whole:
        if g.uuid not in wanted:
            continue
        s20 = s30 = s40 = 1
        u20 = u30 = u40 = 0  # the other GPUs in use
        distances = g.topology
        for b in whole:
            found = distances.get(b.uuid)
            if found is None:
                if b is g or g.numa_node is None or g.numa_node != b.numa_node:
                    continue
                found = 40
            if found <= 40:  # (unrolled: this loop is n² on the start path)
                taken = b.uuid in busy
                s40 += 1
                u40 += taken
                if found <= 30:
                    s30 += 1
                    u30 += taken
                    if found <= 20:
                        s20 += 1
                        u20 += taken
        members = linked[g.uuid]
        out[g.uuid] = [(len(members), len(members & busy - {g.uuid})), (s20, u20), (s30, u30), (s40, u40)]
    return out


def _nvlink_sets(gpus):
    """{uuid: the set of GPUs joined to it by NVLink, directly or through others}."""
    present = {g.uuid for g in gpus}
    sets = {}
    for g in gpus:
        if g.uuid in sets:
            continue
        members, todo = {g.uuid}, [g]
        by_uuid = None
        while todo:
            a = todo.pop()
            for peer in (a.nvlink_peers or ()):
                if peer in present and peer not in members:
                    members.add(peer)
                    by_uuid = by_uuid or {x.uuid: x for x in gpus}
                    todo.append(by_uuid[peer])
        for uuid in members:
            sets[uuid] = members
    return sets


def keys(mode, gpus, accepted, leases, shared, count=1):
    """{uuid: (sort key, note)} for the ACCEPTED GPUs (a list of Gpu) under MODE; GPUS: every GPU
    the inventory lists; LEASES: those in the snapshot; SHARED: the request's sharing is shared;
    COUNT GPUs wanted (more than one: pack takes the smallest NVLink set that still has COUNT
    free, and the GPUs standing alone after it)."""
    parent = {g.uuid: g.parent_uuid for g in gpus if g.is_mig}
    busy = {parent.get(lease.uuid, lease.uuid) for lease in leases}
    tenants = {}
    for lease in leases:
        tenants[lease.uuid] = tenants.get(lease.uuid, 0) + 1
    tree = counts(gpus, {parent.get(g.uuid, g.uuid) for g in accepted}, busy)
    out = {}
    for gpu in accepted:
        levels = tree.get(parent.get(gpu.uuid, gpu.uuid))
        if levels is None:
            continue
        key = [-tenants.get(gpu.uuid, 0) if mode == PACK else tenants.get(gpu.uuid, 0)] if shared else []
        mine = 1 if parent.get(gpu.uuid, gpu.uuid) in busy else 0
        if mode == PACK and count > 1:
            size, used = levels[0]
            key += [0 if size - used - mine >= count else 1, size - used - mine]
        for size, used in levels:
            if mode == PACK:
                key += [1 if size > 1 and used + mine == 0 else 0, size - used - mine]
            else:
                key.append(used)
        out[gpu.uuid] = (tuple(key), _note(mode, levels, tenants.get(gpu.uuid, 0) if shared else 0))
    return out


def _note(mode, levels, tenants):
    """Why placement put a GPU where it did, at the closest level that groups it with others
    (LEVELS: its (size, in use) per level; the GPU itself is free)."""
    for (name, _), (size, used) in zip(LEVELS, levels):
        if size < 2:
            continue
        if mode == PACK:
            if used:
                return f"packs next to a busy GPU (same {name}: {used} of {size - 1} others in use)"
            return f"packs: its {name} is wholly free (no partly used group could take it)"
        if used:
            return f"spreads: the least used {name} left ({used} of {size - 1} others in use)"
        return f"spreads onto an idle {name}" + (f" ({tenants} other tenants)" if tenants else "")
    return f"{'packs' if mode == PACK else 'spreads'}: no topology group (it stands alone)"
