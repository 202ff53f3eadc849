"""What an admin changes: the GPU priority order, drains."""

from .. import rules
from ..errors import UsageError
from .gpuref import resolve_refs, view_inventory
from .render import print_json, text_table


def priority(ctx, args):
    """`priority list | set GPU RANK | order GPU... | clear [GPU...]`."""
    if args.action == "set":
        (uuid,) = resolve_refs(ctx, [args.gpu])
        with ctx.open_state() as state:
            state.set_priority(uuid, args.rank)
    elif args.action == "order":
        uuids = resolve_refs(ctx, args.gpus)
        if len(set(uuids)) != len(uuids):
            raise UsageError("a GPU is named twice in the order")
        with ctx.open_state() as state:
            state.set_priority_order(uuids)
    elif args.action == "clear":
        uuids = resolve_refs(ctx, args.gpus) if args.gpus else None
        with ctx.open_state() as state:
            state.clear_priorities(set(uuids) if uuids else None)
    return _priority_list(ctx, getattr(args, "json", False))


def _priority_list(ctx, as_json):
    """The admin order and where every device stands in it, by the planner's rule (rules.rank_of,
    rules.rank_order): a MIG instance without a rank of its own takes its parent's."""
    with ctx.open_state() as state:
        view = view_inventory(ctx, state)
        ranked = state.priorities()
        seen = state.seen_gpus()
    priorities = {uuid: rank for uuid, rank, _ in ranked}
    live = view.source != "state"
    present = {g.uuid: g for g in view.gpus if g.uuid}
    rows = [{"rank": rank, "uuid": uuid, "present": (uuid in present) if live else None,
             "index": present[uuid].index if uuid in present else None,
             "label": present[uuid].label if uuid in present else "absent",
             "name": present[uuid].name if uuid in present else seen.get(uuid, (None, "?"))[1]}
            for uuid, rank, _ in ranked]
    inherited = [g for g in present.values() if rules.rank_of(priorities, g)[1] not in (None, g.uuid)]
    unranked = [g for g in present.values() if rules.rank_of(priorities, g)[0] is None]
    if as_json:
        print_json({"priority": rows, "unranked": [g.uuid for g in unranked],
                    "inherited": [{"uuid": g.uuid, "label": g.label, "rank": priorities[g.parent_uuid],
                                   "from": g.parent_uuid} for g in inherited],
                    "inventory": view.source, "policy_error": None if view.broken is None else str(view.broken)})
        return view.exit_code()
    if not rows:
        print("no priority set: GPUs rank by score alone (a whole GPU before a MIG slice)")
    table = []
    for r in rows:
        gpu = present.get(r["uuid"])
        note = "MIG parent: its MIG instances without a rank of their own take this one" \
            if gpu is not None and rules.is_mig_parent(gpu) else ""
        table.append((_order_key(r["rank"], gpu, r["uuid"]), (str(r["rank"]), r["label"], r["uuid"], r["name"], note)))
    for g in inherited + unranked:
        rank, holder = rules.rank_of(priorities, g)
        note = "no rank: after every ranked GPU" if rank is None else ""
        table.append((_order_key(rank, g, g.uuid), (rules.describe_rank(rank, holder, g.uuid, g.index),
                                                    g.label, g.uuid, g.name, note)))
    if table:
        print(text_table([("RANK", "GPU", "UUID", "NAME", "")] + [cells for _, cells in sorted(table)]))
    return view.exit_code()


def _order_key(rank, gpu, uuid):
    """Where a device's line goes: as the planner orders by rank (rules.rank_order), then by index."""
    if gpu is None:  # absent: only its rank is known
        return (rank, uuid.startswith("MIG-"), -1, -1, uuid)
    return (*rules.rank_order(rank, gpu), gpu.index, -1 if gpu.mig_index is None else gpu.mig_index, uuid)


def drain(ctx, args):
    """Keep new work off a GPU (existing leases stay); a drain the monitor made becomes the
    admin's, which the monitor never lifts."""
    (uuid,) = resolve_refs(ctx, [args.gpu])
    with ctx.open_state() as state:
        before = state.snapshot().drains.get(uuid)
        state.drain(uuid, args.reason)
    took = (f" (it was the monitor's drain, {before.detail or before.reason}: now yours, which the monitor "
            "never lifts)") if before is not None and before.source == "monitor" else ""
    print(f"drained {uuid}: {args.reason}{took}")
    return 0


def undrain(ctx, args):
    """Let a drained GPU take work again, whoever drained it."""
    (uuid,) = resolve_refs(ctx, [args.gpu])
    with ctx.open_state() as state:
        before = state.snapshot().drains.get(uuid)
        had = state.undrain(uuid)
    was = f" (it was drained by {before.source}: {before.reason})" if had and before is not None else ""
    print(f"undrained {uuid}{was}" if had else f"{uuid} was not drained")
    return 0
