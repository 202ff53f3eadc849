"""The end of one start of one unit: its leases, its runtime files and its device lockdown go.

It needs no policy and no plugins: the unit's lease unit runs it (ExecStopPost=) after every way
the unit can end, even with a broken policy, on the stop path of every server. A start whose
release never ran (its holder is gone) is undone the same way when its leases are reaped.
"""

from .errors import CortexError
from .files import record as records

REAP_LIFT_TIMEOUT_S = 10  # a reap lifts a lockdown inside the state's lock: never wait long there


def release(unit, state, runtime_dir, ended=None):
    """Give back UNIT's GPUs and remove its runtime files; idempotent. Returns the UUIDs released.
    ENDED (systemd/unitresult.py: how UNIT's run ended) goes into the history.

    Needs no policy (it runs when a unit stops, even when the policy is broken)."""
    uuids = state.release(unit, detail={"ended": ended} if ended else None)
    _undo(unit, runtime_dir, records.read_record(runtime_dir, unit))
    return uuids


def reap(state, runtime_dir, alive, limit=None, exclude_unit=None):
    """Drop the leases whose holder is gone (ALIVE(lease) is False) and undo their starts as
    `release` would. Returns (reaped leases, [one-line problem]); a start that cannot be undone
    (systemctl failing) is a problem to report, never a reason to fail the caller.

    All in one write transaction, and only for a record written by the reaped start itself: a new
    start of the same unit (which takes the same lock to write its own) is never undone."""
    problems = []
    with state.write():
        gone = state.reap(alive, limit, exclude_unit=exclude_unit)
        for unit in sorted({lease.unit for lease in gone}):
            record = records.read_record(runtime_dir, unit)
            if record is None or not _written_by(record, [lease for lease in gone if lease.unit == unit]):
                continue
            try:
                _undo(unit, runtime_dir, record, lift_timeout=REAP_LIFT_TIMEOUT_S)
            except (CortexError, OSError) as exc:
                problems.append(f"{unit}: reaped, but {exc}")
    return gone, problems


def _written_by(record, leases):
    """RECORD was written by the start that took LEASES (same holder invocation and boot, and
    naming their GPUs)."""
    chosen = {g.uuid for g in record["decision"].chosen}
    return all(record.get("invocation") == lease.invocation and record.get("boot_id") == lease.boot_id
               and lease.uuid in chosen for lease in leases)


def _undo(unit, runtime_dir, record, lift_timeout=None):
    """Remove what allocate left for UNIT's start (RECORD): its runtime files, and its lockdown."""
    records.clear_start(runtime_dir, unit)
    if record and record["decision"].service.cdi:
        from .containers import cdispec  # only a service with a CDI device of its own

        cdispec.remove(unit)
    if record and record.get("isolated"):
        from .systemd import isolation  # subprocess (~7 ms): only an isolated unit has a lockdown to lift
        isolation.lift(unit, timeout=lift_timeout)
