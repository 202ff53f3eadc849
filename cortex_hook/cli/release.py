"""`release`: what a unit's lease unit runs at every stop of every server, however it ended (its imports
are the stop path's: tests/cli/test_startpath.py lists them)."""

import os

from ..files.record import clear_start
from ..release import release as release_gpus
from ..systemd.unitname import normalize_unit


def release(ctx, args):
    """Give back a unit's GPUs and remove its runtime files (idempotent)."""
    unit = normalize_unit(args.unit)
    if ctx.may_open_state() and not os.path.exists(ctx.state_path):  # nothing was ever allocated: create nothing
        clear_start(ctx.runtime_dir, unit)
        print(f"{unit}: held no GPU")
        return 0
    with ctx.open_state() as state:
        uuids = release_gpus(unit, state, ctx.runtime_dir)
    print(f"{unit}: released {', '.join(uuids)}" if uuids else f"{unit}: held no GPU")
    return 0
