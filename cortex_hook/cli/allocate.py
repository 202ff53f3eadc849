"""`allocate`: what a unit's lease unit runs before every start of every server (its imports are
the start path's: tests/cli/test_startpath.py lists them)."""

import os

from ..allocation import allocate as allocate_gpus
from ..errors import CortexError, UnavailableError, one_line
from ..holders import in_lease_unit
from ..systemd.journal import ERR, NOTICE, tell_unit
from ..systemd.unitname import normalize_unit
from .render import decision_json, print_json, render_decision

INHERITED = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")  # what an outer allocator sets for a unit


def allocate(ctx, args):
    """Lease GPUs for one unit and write its env file; the explanation goes to stdout."""
    unit = normalize_unit(args.unit)
    lease_unit = in_lease_unit(unit)
    environ, mode = _unit_environ(unit) if lease_unit else (os.environ, None)
    notifier = []  # made on first use: only a start that waits, or a lease unit, talks to systemd

    def notify():
        if not notifier:
            from ..systemd.notify import Notifier  # sdnotify
            notifier.append(Notifier())  # STATUS= in `systemctl status cortex-hook-lease@UNIT.service`
        return notifier[0]

    def waiting(decision, text):
        notify().status(text)

    try:
        with ctx.open_state() as state:
            decision, _ = allocate_gpus(ctx, unit, state, environ, holder_pid=args.holder_pid, on_wait=waiting,
                                        mode=mode)
    except CortexError as exc:
        if isinstance(exc, UnavailableError) and exc.decision is not None:
            _show(args, exc.decision, show_env=False)  # the explanation on stdout, the error on stderr
        if lease_unit:  # why UNIT did not start, in UNIT's journal (its status only says "dependency")
            tell_unit(unit, ERR, f"{unit} not started: {exc}")
            notify().send(f"STATUS=not started: {one_line(exc)}")  # how it ended, not "waiting" (logged above)
        raise
    _show(args, decision)
    if lease_unit:  # Type=notify: the lease unit is active once it holds the lease
        tell_unit(unit, NOTICE, decision.summary)
        notify().ready(decision.summary)
    return 0


def _unit_environ(unit):
    """(environ, mode) of UNIT, which the lease unit does not run in: the environment an outer
    allocator gave it (its own Environment= CUDA variables, over the service manager's, which
    the lease unit runs with), and its Launch.mode (does cortex-hook exec/supervise run it?)."""
    from ..systemd.unitfile import UnitFiles  # (only in the lease unit, never outside systemd)
    environ = dict(os.environ)
    files = UnitFiles(unit)
    own = files.environment()
    environ.update({name: own[name] for name in INHERITED if name in own})
    try:
        mode = "wrapper" if files.wrapped() else "env"
    except (CortexError, ValueError):  # an ExecStart= we cannot read: its notes are only advice
        mode = None
    return environ, mode


def _show(args, decision, show_env=True):
    if args.json:
        print_json(decision_json(decision))
    else:
        print(render_decision(decision, show_env=show_env), flush=True)
