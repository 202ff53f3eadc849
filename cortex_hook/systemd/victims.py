"""Stopping the units a preemption chose (preemption.py), through systemd, never waiting for the job.

`when_preempted: requeue` restarts the victim (`systemctl restart`): systemd stops it (its
KillSignal=, SIGTERM by default), its lease unit gives its GPUs back, and its next start waits for
a GPU as a requeued unit (a victim whose lease unit is still in its handoff, not yet running, is
restarted too: `try-restart` would leave it be). `stop` stops it, and it stays stopped. A victim still running
`preempt_grace` after the stop began is killed (SIGKILL), as systemd's TimeoutStopSec= would; a
shorter TimeoutStopSec= of its own kills it sooner.
"""

from ..errors import OutputError
from ..preemption import MARGIN_S
from ..quantities import format_duration
from .journal import NOTICE, WARNING, log, tell_unit
from .systemctl import systemctl


class Stopping:
    """The victims one preempting start (the unit BY) stopped at NOW (time.monotonic()): it kills
    each that outlives its grace, and gives up on them all at `deadline`."""

    def __init__(self, by, victims, now):
        self.by, self.victims, self.since = by, victims, now
        self.deadline = now + max(v.grace_seconds for v in victims) + MARGIN_S
        self.killed = set()
        for victim in victims:
            stop(victim, by)

    def escalate(self, holds_gpus, now):
        """SIGKILL each victim past its grace for which HOLDS_GPUS(victim) is still true (its old
        leases on the GPUs it gives up: never a new instance of it that runs elsewhere)."""
        for victim in self.victims:
            if victim.unit not in self.killed and now - self.since >= victim.grace_seconds \
                    and holds_gpus(victim):
                self.killed.add(victim.unit)
                kill(victim, self.by)


def stop(victim, by):
    """Stop or requeue VICTIM (a model.Victim) for the unit BY; False (and a warning) if systemctl
    failed."""
    gpus = ", ".join(victim.labels)
    if victim.when_preempted == "stop":
        verb, what = "stop", "stopped (when_preempted: stop)"
    else:  # (not try-restart: it does nothing to a victim whose lease unit is still in its handoff)
        verb, what = "restart", "restarted to wait for a GPU (when_preempted: requeue)"
    tell_unit(victim.unit, NOTICE, f"{victim.unit} preempted by {by} for {gpus}: {what}")
    return _systemctl(victim, by, verb, "--no-block", "--", victim.unit)


def kill(victim, by):
    """SIGKILL what is left of VICTIM: its grace is over."""
    tell_unit(victim.unit, WARNING, f"{victim.unit} still runs {format_duration(victim.grace_seconds)} after it "
                                    f"was told to stop (preempt_grace), preempted by {by}: SIGKILL")
    return _systemctl(victim, by, "kill", "--signal=SIGKILL", "--", victim.unit)


def _systemctl(victim, by, *args):
    try:
        systemctl(f"preempting {victim.unit} for {by}", *args)
    except OutputError as exc:
        log(WARNING, f"cortex-hook: warning: {exc}")
        return False
    return True
