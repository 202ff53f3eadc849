"""GPU device isolation (`isolate: true`): the unit's device cgroup lets through only its GPUs.

CUDA_VISIBLE_DEVICES is a convention a process can ignore; the device cgroup is not. From the
unit's lease unit, before the unit starts (so for this start only), we set, at runtime:

    DevicePolicy=closed                          (/dev/null and friends stay usable)
    DeviceAllow=                                 (drop whatever an earlier start allowed)
    DeviceAllow=/dev/nvidia<minor> rw            (each chosen GPU, by its NVML minor number)
    DeviceAllow=/dev/nvidiactl rw, /dev/nvidia-uvm rw, /dev/nvidia-uvm-tools rw, char-nvidia-caps rw

A unit that starts on CPU (on_unavailable: cpu) gets DevicePolicy=closed and no NVIDIA node at
all. `char-nvidia-frontend` would allow every /dev/nvidiaN, so GPUs are listed by path.
`release` puts the unit back to DevicePolicy=auto.
"""

import os
import subprocess

from ..errors import OutputError

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
SYSTEMCTL = ("/usr/bin/systemctl", "/bin/systemctl")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def allow_list(gpus, dev="/dev"):
    """DeviceAllow= values for GPUS: their nodes plus the control nodes that exist; none at all
    for no GPU (a CPU fallback may open no NVIDIA device)."""
    if not gpus:
        return []
    minors = sorted({g.minor for g in gpus if g.minor is not None})
    entries = [f"{dev}/nvidia{m} rw" for m in minors]
    entries += [f"{n} rw" for n in CONTROL_NODES if os.path.exists(n)]
    if any(g.is_mig for g in gpus):
        entries.append("char-nvidia-caps rw")  # MIG instances are reached through /dev/nvidia-caps/*
    return entries


def systemctl_path():
    """systemctl where the system installs it (never found through a PATH someone else set)."""
    for path in SYSTEMCTL:
        if os.access(path, os.X_OK):
            return path
    raise OutputError(f"device isolation: no systemctl at {' or '.join(SYSTEMCTL)}")


def _systemctl(*args):
    try:
        r = subprocess.run([systemctl_path(), *args], capture_output=True, text=True, timeout=30,
                           env=CLEAN_ENV, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OutputError(f"device isolation: systemctl failed: {exc}") from None
    if r.returncode != 0:
        raise OutputError(f"device isolation: systemctl {' '.join(args[:3])}: {r.stderr.strip() or r.returncode}")


def apply(unit, gpus):
    """Restrict UNIT's devices to GPUS for this start."""
    props = ["DevicePolicy=closed", "DeviceAllow="] + [f"DeviceAllow={e}" for e in allow_list(gpus)]
    _systemctl("set-property", "--runtime", unit, *props)


def lift(unit):
    """Undo `apply` (on release)."""
    _systemctl("set-property", "--runtime", unit, "DevicePolicy=auto", "DeviceAllow=")
