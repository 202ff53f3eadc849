"""Who holds a lease, and whether that holder still exists.

Under systemd a unit's GPUs are taken by its lease unit, `cortex-hook-lease@UNIT.service`
(systemd/leaseunit.py): that unit stays active, with no process, from the allocation until UNIT
has stopped, so the holder is the lease unit's invocation id, alive while systemd lists that
invocation as active (`/run/systemd/units/invocation:NAME`). Drop-ins of earlier versions
allocated inside UNIT itself, whose cgroup then held the lease. Outside systemd the holder is a
pid plus that pid's start time (so a reused pid is not mistaken for the old one). All of them
carry the boot id: nothing from a previous boot is alive.
"""

import os

from .errors import UsageError
from .model import Record
from .systemd.leaseunit import lease_unit_of

_CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup")
UNITS_DIR = "/run/systemd/units"  # systemd's `invocation:NAME` links, one per active unit


class Holder(Record):
    """The identity recorded with a lease."""

    pid: int
    pid_start: int | None
    boot_id: str | None
    cgroup: str | None = None
    invocation: str | None = None
    unit: str | None = None  # the systemd unit that holds it (the lease unit)


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


def _stat_fields(pid):
    """The fields of /proc/PID/stat from the third on (state, ppid, …), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return data[data.rfind(b")") + 2:].split()


def pid_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None if gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19])
    except (IndexError, ValueError, TypeError):
        return None


def own_cgroup():
    """The path of the systemd unit cgroup this process runs in (`/system.slice/x.service`), or None."""
    return cgroup_of("self")


def cgroup_of(pid):
    """The path of the systemd cgroup process PID (or `self`) runs in, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, _, rest = line.partition(":")  # hierarchy-ID:controllers:path
        controllers, _, path = rest.partition(":")
        if controllers in ("", "name=systemd"):
            return path[: -len("/.control")] if path.endswith("/.control") else path  # Delegate=yes
    return None


def cgroup_dir(path):
    """The directory of cgroup PATH in the first hierarchy that has it, or None."""
    for root in _CGROUP_ROOTS:
        candidate = root + path
        if os.path.isdir(candidate):
            return candidate
    return None


def invocation_of(unit):
    """The invocation id systemd lists for UNIT while it is active, or None."""
    try:
        return os.readlink(os.path.join(UNITS_DIR, "invocation:" + unit))
    except OSError:
        return None


def in_lease_unit(unit):
    """True when this process runs in UNIT's lease unit (its allocate or release)."""
    path = own_cgroup()
    return bool(path) and path.rsplit("/", 1)[-1] == lease_unit_of(unit)


def current_holder(unit, holder_pid=None):
    """The holder for a lease taken now for UNIT.

    In UNIT's lease unit (what the drop-ins run), that unit's invocation; inside UNIT's own
    cgroup (drop-ins of earlier versions, or the wrapper as main process), the cgroup; otherwise
    HOLDER_PID (default: our parent, i.e. the shell or script that asked)."""
    path = own_cgroup()
    name = path.rsplit("/", 1)[-1] if path else None
    if name is not None and name == lease_unit_of(unit):
        return Holder(pid=os.getpid(), pid_start=pid_start_time(os.getpid()), boot_id=boot_id(),
                      invocation=os.environ.get("INVOCATION_ID"), unit=name)
    cgroup = cgroup_dir(path) if name == unit else None
    pid = holder_pid if holder_pid is not None else (os.getpid() if cgroup else os.getppid())
    start = pid_start_time(pid)
    if start is None:  # a lease no holder bounds would be reaped at the next allocation
        raise UsageError(f"--holder-pid {pid}: no such process")
    return Holder(pid=pid, pid_start=start, boot_id=boot_id(), cgroup=cgroup,
                  invocation=os.environ.get("INVOCATION_ID") if cgroup else None)


def this_boot(recorded):
    """False when RECORDED (a boot id, or None) is another boot's."""
    now_boot = boot_id()
    return not (recorded and now_boot and recorded != now_boot)


def pid_alive(pid, pid_start):
    """True while process PID runs and is the one that started at PID_START (None: any)."""
    start = pid_start_time(pid)
    return start is not None and (pid_start is None or start == pid_start)


def process_ended(pid):
    """True when PID is no process, or a zombie (it has ended; only its exit status is left)."""
    fields = _stat_fields(pid)
    return not fields or fields[0] in (b"Z", b"X")


def lease_alive(lease):
    """True while the lease's holder still exists in this boot."""
    if not this_boot(lease.boot_id):
        return False
    if lease.holder_unit:
        return lease.invocation is not None and invocation_of(lease.holder_unit) == lease.invocation
    if lease.cgroup:
        return os.path.isdir(lease.cgroup)
    if lease.pid is None:
        return True  # taken by hand with no holder: only `release` ends it
    return pid_alive(lease.pid, lease.pid_start)


def unit_pids(unit):
    """Pids in the cgroup of the systemd unit UNIT (in any slice two levels deep), or none."""
    import glob  # only for a service that may preempt

    for root in _CGROUP_ROOTS:
        for path in glob.glob(f"{root}/*/{glob.escape(unit)}") + glob.glob(f"{root}/*/*/{glob.escape(unit)}"):
            found = cgroup_pids(path)
            if found:
                return found
    return set()


def cgroup_pids(cgroup_dir):
    """Pids in a cgroup directory (empty if it is gone)."""
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()
