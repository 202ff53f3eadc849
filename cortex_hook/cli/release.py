"""`release`: what a unit's lease unit runs at every stop of every server, however it ended (its imports
are the stop path's: tests/cli/test_startpath.py lists them)."""

import os

from ..files.record import clear_start
from ..holders import in_lease_unit
from ..release import release as release_gpus
from ..systemd.unitname import normalize_unit


def release(ctx, args):
    """Give back a unit's GPUs and remove its runtime files (idempotent)."""
    unit = normalize_unit(args.unit)
    if ctx.may_open_state() and not os.path.exists(ctx.state_path):  # nothing was ever allocated: create nothing
        clear_start(ctx.runtime_dir, unit)
        print(f"{unit}: held no GPU")
        return 0
    ended = None
    if in_lease_unit(unit):  # UNIT has stopped: systemd says how (for `history`)
        from ..systemd.unitresult import how_it_ended  # subprocess: only under systemd
        ended = how_it_ended(unit)
    with ctx.open_state() as state:
        uuids = release_gpus(unit, state, ctx.runtime_dir, ended)
    print(f"{unit}: released {', '.join(uuids)}" if uuids else f"{unit}: held no GPU")
    return 0
