"""The end of one start of one unit: its leases, its runtime files and its device lockdown go.

It needs no policy and no plugins: the unit's lease unit runs it (ExecStopPost=) after every way
the unit can end, even with a broken policy, on the stop path of every server.
"""

from .files import record as records


def release(unit, state, runtime_dir):
    """Give back UNIT's GPUs and remove its runtime files; idempotent. Returns the UUIDs released.

    Needs no policy (it runs when a unit stops, even when the policy is broken)."""
    uuids = state.release(unit)
    record = records.read_record(runtime_dir, unit)
    records.clear_start(runtime_dir, unit)
    if record and record.get("isolated"):
        from .systemd import isolation  # subprocess (~7 ms): only an isolated unit has a lockdown to lift
        isolation.lift(unit)
    return uuids
