"""`metrics`: the Prometheus exposition once, on stdout or into node_exporter's textfile
collector (written atomically: the collector must never read half a file)."""

import sys

from ..errors import DriverError, TimeoutExpired, UsageError
from ..files import monitorstatus
from ..files.atomic import write_atomic
from ..metrics.collect import families
from ..metrics.exposition import render
from ..systemd.journal import WARNING, log
from .gpuref import ViewInventory, seen_as_gpus, view_inventory


def metrics(ctx, args):
    """Print the metrics once (with --textfile, replace that `.prom` file atomically). A broken
    policy still gives the metrics (of the GPUs by the default thresholds) and exits 78, like
    `status`; a driver that cannot be asked gives those of the GPUs the state has seen."""
    if args.textfile and not args.textfile.endswith(".prom"):
        raise UsageError(f"--textfile {args.textfile}: node_exporter's textfile collector reads only *.prom files")
    with ctx.open_state() as state:
        try:
            view = view_inventory(ctx, state)
        except (DriverError, TimeoutExpired) as exc:
            log(WARNING, f"cortex-hook: warning: {exc}; showing the GPUs last seen in the state")
            view = ViewInventory(seen_as_gpus(state.seen_gpus()), ctx.policy(), "state", None, str(exc))
        health = view.policy.health
        snapshot = state.snapshot(health.demote_window_seconds)
        status = monitorstatus.read(ctx.runtime_dir, health.poll_seconds)
        text = render(families(view.policy, ctx.plugins(), view.gpus, view.source != "state", state, snapshot,
                               status))
    if args.textfile:
        write_atomic(args.textfile, text)
    else:
        sys.stdout.write(text)
    return view.exit_code()
