"""GPU device isolation (`isolate: true`): the unit's device cgroup lets through only its GPUs.

CUDA_VISIBLE_DEVICES is a convention a process can ignore; the device cgroup is not. From the
unit's lease unit, before the unit starts (so for this start only), we set, at runtime:

    DevicePolicy=closed                          (/dev/null and friends stay usable)
    DeviceAllow=                                 (drop whatever an earlier start allowed)
    DeviceAllow=/dev/nvidia<minor> rw            (each chosen GPU, by its NVML minor number)
    DeviceAllow=/dev/nvidiactl rw, /dev/nvidia-uvm rw, /dev/nvidia-uvm-tools rw, char-nvidia-caps rw

A unit that starts on CPU (on_unavailable: cpu) gets DevicePolicy=closed and no NVIDIA node at
all. `char-nvidia-frontend` would allow every /dev/nvidiaN, so GPUs are listed by path.
`release` (and `leases --reap`, for a start whose release never ran) puts back the unit's own
settings (DevicePolicy=auto and no DeviceAllow= when it has none). The unit's own DeviceAllow=
entries stay allowed during the lockdown, except any that names an NVIDIA device.

`set-property --runtime` writes /run/systemd/system.control/UNIT.d/50-Device{Allow,Policy}.conf.
systemd 252 marks a unit "changed on disk" (`systemctl status` then says to daemon-reload) when
set-property creates a drop-in it did not see when it loaded the unit, and not when it rewrites
one it saw. So the generator and `install` leave empty placeholders there before systemd loads
the unit (`prepare`); once written, the files stay until the next boot.
"""

import os

from .systemctl import systemctl
from .unitname import is_template

WHAT = "device isolation"
CONTROL_DIR = "/run/systemd/system.control"  # where `systemctl set-property --runtime` writes
LOCKDOWN_FILES = ("50-DeviceAllow.conf", "50-DevicePolicy.conf")
PLACEHOLDER = ("# cortex-hook (isolate: true): systemctl set-property --runtime writes this unit's\n"
               "# device lockdown here at each start, and lifts it when the unit stops.\n")
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


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


def prepare(unit, control_dir=CONTROL_DIR):
    """Leave empty placeholders where `set-property --runtime` will write UNIT's lockdown, so that
    the first lockdown does not mark UNIT "changed on disk"; never overwrites. Only helps when
    systemd loads UNIT afterwards (the generator runs before systemd loads units; after `install`
    the admin reloads).
    A template has no such files (each instance has its own)."""
    if is_template(unit):
        return
    directory = os.path.join(control_dir, unit + ".d")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for name in LOCKDOWN_FILES:
        try:
            fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(PLACEHOLDER)


def own_devices(unit, control_dir=CONTROL_DIR, root="/"):
    """(DevicePolicy=, [DeviceAllow=]) as UNIT's own files set them, the lockdown files left out
    (DevicePolicy None when they do not set it)."""
    from .unitfile import UnitFiles  # only an isolated start or stop reads them
    lockdown = {os.path.join(control_dir, unit + ".d", name) for name in LOCKDOWN_FILES}
    policy, allow = None, []
    for uf in UnitFiles(unit, root, skip_paths=lockdown).parsed():
        for section, key, value, _ in uf.entries:
            if section == "Service" and key == "DevicePolicy":
                policy = value or None
            elif section == "Service" and key == "DeviceAllow":
                allow = allow + [value] if value else []  # an empty assignment resets the list
    return policy, allow


def lockdown_properties(own, gpus):
    """The properties that lock a unit whose own device settings are OWN to GPUS: its own
    DevicePolicy=strict stays strict, anything else becomes closed; its own DeviceAllow= entries
    stay, except any that names an NVIDIA device (that would let another GPU through)."""
    policy, allow = own
    kept = [entry for entry in allow if "nvidia" not in entry.lower()]
    return ([f"DevicePolicy={'strict' if policy == 'strict' else 'closed'}", "DeviceAllow="]
            + [f"DeviceAllow={e}" for e in kept + allow_list(gpus)])


def apply(unit, gpus):
    """Restrict UNIT's devices to GPUS for this start (keeping what its own files allow)."""
    systemctl(WHAT, "set-property", "--runtime", unit, *lockdown_properties(own_devices(unit), gpus))


def lift(unit, timeout=None):
    """Undo `apply` (on release): UNIT's own device settings again (systemd's default where it has
    none), waiting at most TIMEOUT seconds (default 30) for systemctl."""
    policy, allow = own_devices(unit)
    systemctl(WHAT, "set-property", "--runtime", unit, f"DevicePolicy={policy or 'auto'}", "DeviceAllow=",
              *[f"DeviceAllow={e}" for e in allow], timeout=timeout or 30)
