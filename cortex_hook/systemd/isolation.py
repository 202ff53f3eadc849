"""GPU device isolation (`isolate: true`): the unit's device cgroup lets through only its GPUs.

CUDA_VISIBLE_DEVICES is a convention a process can ignore; the device cgroup is not. From
`ExecStartPre=+` (so for this start only) we set, at runtime:

    DevicePolicy=closed                          (/dev/null and friends stay usable)
    DeviceAllow=                                 (drop whatever an earlier start allowed)
    DeviceAllow=/dev/nvidia<minor> rw            (each chosen GPU, by its NVML minor number)
    DeviceAllow=/dev/nvidiactl rw, /dev/nvidia-uvm rw, /dev/nvidia-uvm-tools rw, char-nvidia-caps rw

`char-nvidia-frontend` would allow every /dev/nvidiaN, so GPUs are listed by path.
`release` puts the unit back to DevicePolicy=auto.
"""

import os
import shutil
import subprocess

from ..errors import OutputError

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def allow_list(gpus, dev="/dev"):
    """DeviceAllow= values for GPUS: their nodes plus the control nodes that exist."""
    minors = sorted({g.minor for g in gpus if g.minor is not None})
    entries = [f"{dev}/nvidia{m} rw" for m in minors]
    entries += [f"{n} rw" for n in CONTROL_NODES if os.path.exists(n)]
    if any(g.is_mig for g in gpus):
        entries.append("char-nvidia-caps rw")  # MIG instances are reached through /dev/nvidia-caps/*
    return entries


def _systemctl(*args):
    exe = shutil.which("systemctl") or "/bin/systemctl"
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
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
