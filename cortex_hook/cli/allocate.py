"""`allocate`: what ExecStartPre=+ runs at every start of every server (its imports are the start
path's: tests/cli/test_startpath.py lists them)."""

import os

from ..allocation import allocate as allocate_gpus
from ..errors import UnavailableError
from ..systemd.unitname import normalize_unit
from .render import decision_json, print_json, render_decision


def allocate(ctx, args):
    """Lease GPUs for one unit and write its env file; the explanation goes to stdout."""
    unit = normalize_unit(args.unit)
    notifier = None

    def waiting(decision, left):
        nonlocal notifier
        if notifier is None:
            from ..systemd.notify import Notifier  # sdnotify: only a start that waits talks to systemd
            notifier = Notifier()  # under Type=notify this shows in `systemctl status`
        notifier.status(f"waiting for a GPU ({left:.0f}s left): {decision.summary}")

    with ctx.open_state() as state:
        try:
            decision, _ = allocate_gpus(ctx, unit, state, os.environ, holder_pid=args.holder_pid, on_wait=waiting)
        except UnavailableError as exc:
            if exc.decision is not None:  # the explanation on stdout; stderr gets the one-line error
                _show(args, exc.decision, show_env=False)
            raise
    _show(args, decision)
    return 0


def _show(args, decision, show_env=True):
    if args.json:
        print_json(decision_json(decision))
    else:
        print(render_decision(decision, show_env=show_env), flush=True)
