"""systemctl as root runs it: the system's binary by absolute path, with a clean environment (never
one found through a PATH, or loaded with an LD_* variable, that someone else set)."""

import os
import subprocess

from ..errors import OutputError

SYSTEMCTL = ("/usr/bin/systemctl", "/bin/systemctl")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def systemctl_path(what):
    """systemctl where the system installs it; OutputError naming WHAT (who needed it) otherwise."""
    for path in SYSTEMCTL:
        if os.access(path, os.X_OK):
            return path
    raise OutputError(f"{what}: no systemctl at {' or '.join(SYSTEMCTL)}")


def systemctl(what, *args, timeout=30):
    """Run `systemctl ARGS`; its stdout. A failure is an OutputError naming WHAT."""
    try:
        r = subprocess.run([systemctl_path(what), *args], capture_output=True, text=True, timeout=timeout,
                           env=CLEAN_ENV, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OutputError(f"{what}: systemctl failed: {exc}") from None
    if r.returncode != 0:
        raise OutputError(f"{what}: systemctl {' '.join(args[:3])}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def show(what, unit, *props, timeout=30):
    """{property: value} of UNIT (`systemctl show -p …`)."""
    out = systemctl(what, "show", unit, *[f"--property={p}" for p in props], timeout=timeout)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
