"""What an admin changes: the GPU priority order, drains."""

from ..errors import UsageError
from .gpuref import inventory, resolve_refs
from .render import print_json


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
    with ctx.open_state() as state:
        gpus = inventory(ctx, state)
        ranked = state.priorities()
        seen = state.seen_gpus()
    present = {g.uuid: g for g in gpus if g.uuid}
    rows = [{"rank": rank, "uuid": uuid, "present": uuid in present,
             "index": present[uuid].index if uuid in present else None,
             "name": present[uuid].name if uuid in present else seen.get(uuid, (None, "?"))[1]}
            for uuid, rank, _ in ranked]
    unranked = [g for g in gpus if g.uuid and g.uuid not in {u for u, _, _ in ranked}]
    if as_json:
        print_json({"priority": rows, "unranked": [g.uuid for g in unranked]})
        return 0
    if not rows:
        print("no priority set: GPUs rank by score alone")
    for r in rows:
        where = f"{'GPU ' + str(r['index']) if r['present'] else 'absent':<8}"
        print(f"{r['rank']:>4}  {where} {r['uuid']}  {r['name']}")
    for g in unranked:
        print(f"{'-':>4}  {g.label:<8} {g.uuid}  {g.name}  (no rank: after every ranked GPU)")
    return 0


def drain(ctx, args):
    """Keep new work off a GPU (existing leases stay)."""
    (uuid,) = resolve_refs(ctx, [args.gpu])
    with ctx.open_state() as state:
        state.drain(uuid, args.reason)
    print(f"drained {uuid}: {args.reason}")
    return 0


def undrain(ctx, args):
    """Let a drained GPU take work again."""
    (uuid,) = resolve_refs(ctx, [args.gpu])
    with ctx.open_state() as state:
        had = state.undrain(uuid)
    print(f"undrained {uuid}" if had else f"{uuid} was not drained")
    return 0
