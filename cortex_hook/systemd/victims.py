"""Stopping the units a preemption chose (preemption.py), through systemd, never waiting for the job.

`when_preempted: requeue` restarts the victim (`systemctl try-restart`): systemd stops it (its
KillSignal=, SIGTERM by default), its lease unit gives its GPUs back, and its next start waits for
a GPU as a requeued unit. `stop` stops it, and it stays stopped. A victim still running
`preempt_grace` after the stop began is killed (SIGKILL), as systemd's TimeoutStopSec= would; a
shorter TimeoutStopSec= of its own kills it sooner.
"""

from ..errors import OutputError
from ..quantities import format_duration
from .journal import NOTICE, WARNING, log, tell_unit
from .systemctl import systemctl


def stop(victim, by):
    """Stop or requeue VICTIM (a model.Victim) for the unit BY; False (and a warning) if systemctl
    failed."""
    gpus = ", ".join(victim.labels)
    if victim.when_preempted == "stop":
        verb, what = "stop", "stopped (when_preempted: stop)"
    else:
        verb, what = "try-restart", "restarted to wait for a GPU (when_preempted: requeue)"
    tell_unit(victim.unit, NOTICE, f"{victim.unit} preempted by {by} for {gpus}: {what}")
    return _systemctl(victim, by, verb, "--no-block", victim.unit)


def kill(victim, by):
    """SIGKILL what is left of VICTIM: its grace is over."""
    tell_unit(victim.unit, WARNING, f"{victim.unit} still runs {format_duration(victim.grace_seconds)} after it "
                                    f"was told to stop (preempt_grace), preempted by {by}: SIGKILL")
    return _systemctl(victim, by, "kill", "--signal=SIGKILL", victim.unit)


def _systemctl(victim, by, *args):
    try:
        systemctl(f"preempting {victim.unit} for {by}", *args)
    except OutputError as exc:
        log(WARNING, f"cortex-hook: warning: {exc}")
        return False
    return True
