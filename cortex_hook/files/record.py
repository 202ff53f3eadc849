"""What `allocate` leaves in the runtime dir for one start of one unit: the env file systemd
reads, and the decision record the wrapper reuses.

`UNIT.env` is what `EnvironmentFile=-/run/cortex-hook/%n.env` reads. `UNIT.record` holds the
decision of `ExecStartPre=+cortex-hook allocate` for this start (its invocation id and boot id,
the decision as plain data), so that `cortex-hook exec|supervise` in ExecStart= of the same start,
possibly running as the unit's User=, reuses it without asking the driver or writing the state.
It is marshal data (files/memo.py), read only from a file root (or the reader) owns: the start
path does not import json for it. `leases`, `history` and `plan` show the same facts.
"""

import time

from ..model import Decision
from ..systemd.envfile import render_env
from . import memo
from .atomic import remove_quietly, write_atomic
from .rundir import env_file_path, record_name, record_path

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
    """Remove UNIT's env file and decision record (idempotent); True if either existed."""
    removed = remove_quietly(env_file_path(directory, unit))
    return remove_quietly(record_path(directory, unit)) or removed


def _key(unit):
    return (RECORD_VERSION, unit)
