"""What `allocate` leaves in the runtime dir for one start of one unit: the env file systemd
reads, and the decision record the wrapper reuses.

`UNIT.env` is what `EnvironmentFile=-/run/cortex-hook/%n.env` reads. `UNIT.record` holds the
decision the unit's lease unit made for this start (its invocation id and boot id,
the decision as plain data), so that `cortex-hook exec|supervise` in ExecStart= of the same start,
possibly running as the unit's User=, reuses it without asking the driver or writing the state.
It is marshal data (files/memo.py), read only from a file root (or the reader) owns: the start
path does not import json for it. `leases`, `history` and `plan` show the same facts.
"""

import time

from ..model import Decision
from ..systemd.envfile import assignment, render_env
from . import memo
from .atomic import remove_quietly, write_atomic
from .rundir import env_file_path, record_name, record_path

UNIT_VARIABLE = "CORTEX_HOOK_UNIT"  # every env file names the unit it was written for
RECORD_VERSION = 3  # 1 was JSON in UNIT.json; 2 held chosen GPUs by hand


def write_start(directory, decision, holder, isolated=False):
    """Write the decision record and env file of DECISION's unit (record first: the env file is
    the commit). The record keeps only the selected verdicts."""
    unit = decision.unit
    kept = Decision(**dict(decision.as_dict(), verdicts=[v for v in decision.verdicts if v.selected]))
    record = {"at": time.time(), "isolated": isolated, "invocation": holder.invocation,
              "boot_id": holder.boot_id, "decision": kept.to_plain()}
    header = f"written by cortex-hook for {unit} at {time.strftime('%Y-%m-%d %H:%M:%S')}; do not edit"
    text = render_env(decision.launch.env, header)
    write_atomic(record_path(directory, unit), memo.encode(_key(unit), record))
    try:
        write_atomic(env_file_path(directory, unit), text)
    except BaseException:
        remove_quietly(record_path(directory, unit))  # no record of a start that holds no lease
        raise


def read_record(directory, unit):
    """UNIT's decision record (a dict; its "decision" read back as a Decision), or None if there
    is none, it cannot be read, or others could have written it."""
    record = memo.load(directory, record_name(unit), _key(unit))
    if not isinstance(record, dict):
        return None
    try:
        return dict(record, decision=Decision.from_plain(record["decision"]))
    except (KeyError, TypeError, AttributeError):
        return None


def clear_start(directory, unit):
    """Remove UNIT's env file and decision record (idempotent); True if either existed.

    An env file written for another unit is left alone: two unit names that differ only in
    backslashes share one env file name (rundir.env_file_name), and one's release must not take
    the other's GPU variables away."""
    path = env_file_path(directory, unit)
    removed = _written_for(path, unit) and remove_quietly(path)
    return remove_quietly(record_path(directory, unit)) or removed


def _written_for(path, unit):
    """False only when the env file at PATH says it was written for a unit other than UNIT."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return True
    ours = [line for line in text.splitlines() if line.startswith(UNIT_VARIABLE + "=")]
    return not ours or ours[-1] == assignment(UNIT_VARIABLE, unit)


def _key(unit):
    return (RECORD_VERSION, unit)
