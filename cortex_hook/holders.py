"""Who holds a lease, and whether that holder still exists.

Under systemd the holder is the unit's cgroup: it exists from the first ExecStartPre until the
unit is fully stopped, whatever process is running at the moment. Elsewhere the holder is a pid
plus that pid's start time (so a reused pid is not mistaken for the old one). Both carry the boot
id: nothing from a previous boot is alive.
"""

import os

from .model import Record

_CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup")


class Holder(Record):
    """The identity recorded with a lease."""

    pid: int
    pid_start: int | None
    boot_id: str | None
    cgroup: str | None = None
    invocation: str | None = None


_boot_id = None


def boot_id():
    """This boot's id (/proc/sys/kernel/random/boot_id), or None if unreadable."""
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
    return _boot_id or None


def pid_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def unit_cgroup_dir(unit, pid="self"):
    """The cgroup directory of UNIT if process PID runs inside it (as ExecStartPre= does)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, _, rest = line.partition(":")  # hierarchy-ID:controllers:path
        controllers, _, path = rest.partition(":")
        if controllers not in ("", "name=systemd"):
            continue
        if path.endswith("/.control"):  # Delegate=yes units run ExecStartPre= in .control
            path = path[: -len("/.control")]
        if path.rsplit("/", 1)[-1] != unit:
            continue
        for root in _CGROUP_ROOTS:
            candidate = root + path
            if os.path.isdir(candidate):
                return candidate
    return None


def current_holder(unit, holder_pid=None):
    """The holder for a lease taken now for UNIT.

    Inside the unit's own cgroup (ExecStartPre=, or the wrapper as main process) the cgroup
    holds the lease; otherwise HOLDER_PID (default: our parent, i.e. the shell or script that
    asked) does.
    """
    cgroup = unit_cgroup_dir(unit)
    pid = holder_pid if holder_pid is not None else (os.getpid() if cgroup else os.getppid())
    return Holder(pid=pid, pid_start=pid_start_time(pid), boot_id=boot_id(), cgroup=cgroup,
                  invocation=os.environ.get("INVOCATION_ID") if cgroup else None)


def lease_alive(lease):
    """True while the lease's holder still exists in this boot."""
    now_boot = boot_id()
    if lease.boot_id and now_boot and lease.boot_id != now_boot:
        return False
    if lease.cgroup:
        return os.path.isdir(lease.cgroup)
    if lease.pid is None:
        return True  # taken by hand with no holder: only `release` ends it
    start = pid_start_time(lease.pid)
    return start is not None and (lease.pid_start is None or start == lease.pid_start)


def cgroup_pids(cgroup_dir):
    """Pids in a cgroup directory (empty if it is gone)."""
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()
