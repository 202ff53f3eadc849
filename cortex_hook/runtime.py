"""The runtime dir (/run/cortex-hook): per unit, the env file systemd reads and the decision
record the wrapper reuses.

`UNIT.env` is what `EnvironmentFile=-/run/cortex-hook/%n.env` reads. `UNIT.record` records the
decision of `ExecStartPre=+cortex-hook allocate` for this start (its invocation id, the chosen
GPUs and the environment), so that `cortex-hook exec|supervise` in ExecStart= of the same start,
possibly running as the unit's User=, reuses it without asking the driver or writing the state.
It is marshal data (cortex_hook/memo.py), read only from a file root (or the reader) owns: the
start path does not import json for it. `cortex-hook leases` and `history` show the same facts.
"""

import os
import re
import stat
import time

from . import memo
from .envfile import remove_quietly, render_env, write_atomic
from .errors import OutputError
from .model import Gpu

DEFAULT_RUNTIME_DIR = "/run/cortex-hook"
RECORD_SUFFIX = ".record"
RECORD_VERSION = 2  # 1 was JSON in UNIT.json


def runtime_dir(explicit=None):
    """The runtime dir: --runtime-dir, else $CORTEX_HOOK_RUNTIME_DIR, else /run/cortex-hook."""
    return explicit or os.environ.get("CORTEX_HOOK_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR


def env_file_name(unit):
    """The file name `EnvironmentFile=-DIR/%n.env` really reads for UNIT.

    systemd expands EnvironmentFile= paths as globs, where a backslash escapes the next
    character: for `vllm@my\\x2dmodel.service` (systemd-escape's output) it reads
    `vllm@myx2dmodel.service.env`. Unit names cannot hold `*?[`, so dropping the backslashes
    gives exactly the name the glob matches.
    """
    return re.sub(r"\\(.)", r"\1", unit) + ".env"


def env_file_path(directory, unit):
    """Where UNIT's env file lives (UNIT must already be a validated unit name)."""
    return os.path.join(directory, env_file_name(unit))


def ensure_runtime_dir(directory):
    """Create DIRECTORY (0755) if needed; refuse a symlink or something not a directory."""
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        raise OutputError(f"runtime dir {directory}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"runtime dir {directory}: not a plain directory (symlink?); refusing it")


def trusted_runtime_dir(directory):
    """DIRECTORY if it is a directory (not a symlink) that only root (or we) can change, else
    None: where memos (cortex_hook/memo.py) may be read and written."""
    from .safety import stat_is_trusted
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    return directory if stat.S_ISDIR(st.st_mode) and stat_is_trusted(st) else None


def record_path(directory, unit):
    """Where UNIT's decision record lives."""
    return os.path.join(directory, _record_name(unit))


def prepare(directory):
    """Create the runtime dir if needed and refuse it unless only root can change it."""
    from .safety import check_trusted
    ensure_runtime_dir(directory)
    check_trusted(directory, "runtime dir")


def write_start(directory, unit, decision, holder, isolated=False):
    """Write UNIT's decision record and env file (record first: the env file is the commit)."""
    record = {
        "unit": unit, "at": time.time(), "isolated": isolated,
        "invocation": holder.invocation, "boot_id": holder.boot_id,
        "service": decision.service.position, "fallback": decision.fallback,
        "chosen": [gpu_to_dict(g) for g in decision.chosen], "env": decision.launch.env,
        "priorities": [v.priority for v in decision.verdicts if v.selected],
        "notes": list(decision.notes), "summary": decision.summary,
    }
    header = f"written by cortex-hook for {unit} at {time.strftime('%Y-%m-%d %H:%M:%S')}; do not edit"
    text = render_env(decision.launch.env, header)
    write_atomic(record_path(directory, unit), memo.encode(_record_key(unit), record))
    try:
        write_atomic(env_file_path(directory, unit), text)
    except BaseException:
        remove_quietly(record_path(directory, unit))  # no record of a start that holds no lease
        raise


def read_record(directory, unit):
    """UNIT's decision record, or None if there is none, it cannot be read, or others could
    have written it."""
    record = memo.load(directory, _record_name(unit), _record_key(unit))
    return record if isinstance(record, dict) else None


def _record_name(unit):
    return unit + RECORD_SUFFIX


def _record_key(unit):
    return (RECORD_VERSION, unit)


def clear_start(directory, unit):
    """Remove UNIT's env file and decision record (idempotent)."""
    removed = remove_quietly(env_file_path(directory, unit))
    return remove_quietly(record_path(directory, unit)) or removed


def gpu_to_dict(gpu):
    """A Gpu as plain data (marshal and JSON can hold it)."""
    out = gpu.as_dict()
    out["nvlink_peers"] = sorted(gpu.nvlink_peers) if gpu.nvlink_peers is not None else None
    out["processes"] = [[p.pid, p.used_memory] for p in gpu.processes] if gpu.processes is not None else None
    out["problems"] = list(gpu.problems)
    return out


def gpu_from_dict(data):
    """Inverse of gpu_to_dict."""
    from .model import Process
    fields = {k: v for k, v in data.items() if k in Gpu.__slots__}
    if fields.get("nvlink_peers") is not None:
        fields["nvlink_peers"] = frozenset(fields["nvlink_peers"])
    if fields.get("processes") is not None:
        fields["processes"] = tuple(Process(pid, mem) for pid, mem in fields["processes"])
    fields["problems"] = tuple(fields.get("problems") or ())
    return Gpu(**fields)

