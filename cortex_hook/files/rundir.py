"""The runtime dir (/run/cortex-hook): where it is, what each file in it is called, and whether
it may be trusted.

Per unit it holds `UNIT.env` (what the unit's `EnvironmentFile=` reads) and `UNIT.record` (the
decision, see files/record.py); for every command, the memos of files/memo.py (`policy.cache`,
`hookplan.cache`); the generator's `generator.status`; and the monitor's `monitor.status`
(files/monitorstatus.py). Only root may change it.
"""

import os
import re
import stat

from ..errors import OutputError
from .trust import check_trusted, stat_is_trusted

DEFAULT_RUNTIME_DIR = "/run/cortex-hook"
RECORD_SUFFIX = ".record"
GENERATOR_STATUS = "generator.status"
MONITOR_STATUS = "monitor.status"


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


def record_name(unit):
    """The file name of UNIT's decision record."""
    return unit + RECORD_SUFFIX


def record_path(directory, unit):
    """Where UNIT's decision record lives."""
    return os.path.join(directory, record_name(unit))


def trusted(directory):
    """DIRECTORY if it is a directory (not a symlink) that only root (or we) can change, else
    None: where memos may be read and written."""
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    return directory if stat.S_ISDIR(st.st_mode) and stat_is_trusted(st) else None


def prepare(directory):
    """Create DIRECTORY (0755) if needed; refuse a symlink, something not a directory, or a
    directory someone other than root could change."""
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        raise OutputError(f"runtime dir {directory}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"runtime dir {directory}: not a plain directory (symlink?); refusing it")
    check_trusted(directory, "runtime dir")
