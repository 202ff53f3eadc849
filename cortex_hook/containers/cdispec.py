"""Env mode for containers: one CDI device per unit, `cortex-hook.local/gpu=<unit>`, holding this
start's GPUs. A unit says `--device cortex-hook.local/gpu=%n` (or quadlet `AddDevice=`) once; each
start rewrites its spec, so the container gets the GPUs of that start without its command line
ever changing.

At `allocate` (a service with `cdi: true`) the spec `/run/cdi/cortex-hook-<unit>.json` is written
atomically: its one device carries the edits NVIDIA's own spec (`nvidia-ctk cdi generate`, in
/etc/cdi or /var/run/cdi) gives the chosen GPUs and all its devices in common (device nodes,
mounts, hooks), plus the server's CUDA_* and CORTEX_GPU_* env as the container sees it (indices
from 0). `release` removes it. NVIDIA's spec decides what podman runs as root (its hooks), so it
is refused when others can write it.
"""

import json
import os
import re

from ..errors import OutputError
from ..files.atomic import remove_quietly, write_atomic
from ..files.trust import check_trusted

KIND = "cortex-hook.local/gpu"
NVIDIA_KIND = "nvidia.com/gpu"
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")  # where CDI (and so podman) reads specs
PREFIX = "cortex-hook-"
_NAME = re.compile(r"[^A-Za-z0-9_.:-]")
LISTS = ("env", "deviceNodes", "mounts", "hooks")


def out_dir():
    """Where the per-unit specs go: /run/cdi ($CORTEX_HOOK_CDI_DIR for a box of one's own)."""
    return os.environ.get("CORTEX_HOOK_CDI_DIR") or "/run/cdi"


def spec_dirs():
    """Where NVIDIA's spec is read: CDI's own dirs ($CORTEX_HOOK_CDI_SPEC_DIRS, colon-separated)."""
    given = os.environ.get("CORTEX_HOOK_CDI_SPEC_DIRS")
    return tuple(given.split(":")) if given else SPEC_DIRS


def device_name(unit):
    """UNIT as a CDI device name (letters, digits, `_ . : -`): `vllm@a.service` -> `vllm_a.service`."""
    return _NAME.sub("_", unit)


def spec_path(unit):
    """The spec of UNIT's device."""
    return os.path.join(out_dir(), f"{PREFIX}{device_name(unit)}.json")


def nvidia_spec():
    """(path, spec) of NVIDIA's CDI spec for its GPUs; OutputError naming the dirs when none."""
    for directory in spec_dirs():
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.startswith(PREFIX) or not name.endswith((".json", ".yaml", ".yml")):
                continue
            path = os.path.join(directory, name)
            spec = _read(path)
            if isinstance(spec, dict) and spec.get("kind") == NVIDIA_KIND:
                check_trusted(path, "CDI spec")
                return path, spec
    raise OutputError(f"no CDI spec of kind {NVIDIA_KIND} in {' or '.join(spec_dirs())}: generate it with "
                      "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (NVIDIA Container Toolkit)")


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if path.endswith(".json"):
        try:
            return json.loads(data)
        except ValueError:
            return None
    import yaml  # only for a unit with `cdi: true`, and only NVIDIA's spec

    try:
        return yaml.safe_load(data)
    except yaml.YAMLError:  # a spec that does not parse is not NVIDIA's one
        return None


def edits_for(spec, path, chosen, env):
    """The container edits of CHOSEN (Gpu) in SPEC (NVIDIA's, at PATH): its common edits, each
    GPU's own (OutputError when it names one not), then ENV ({name: value})."""
    devices = {d.get("name"): d.get("containerEdits") or {} for d in spec.get("devices") or []}
    parts = [spec.get("containerEdits") or {}]
    for gpu in chosen:
        if gpu.uuid not in devices:
            raise OutputError(f"{path}: names no device {gpu.uuid} ({gpu.label}); regenerate it with "
                              "`nvidia-ctk cdi generate` (the GPUs changed?)")
        parts.append(devices[gpu.uuid])
    merged = {}
    for part in parts:
        for key, value in part.items():
            if key in LISTS:
                merged.setdefault(key, []).extend(v for v in value if v not in merged.get(key, []))
            else:
                merged.setdefault(key, value)
    merged["env"] = [e for e in merged.get("env", []) if e.partition("=")[0] not in env]
    merged["env"] += [f"{name}={value}" for name, value in env.items()]
    return merged


def write(unit, chosen, env):
    """Write UNIT's spec: one device holding CHOSEN's edits and ENV. Returns its path."""
    path, spec = nvidia_spec()
    device = {"name": device_name(unit), "containerEdits": edits_for(spec, path, chosen, env)}
    ours = {"cdiVersion": spec.get("cdiVersion") or "0.5.0", "kind": KIND, "devices": [device]}
    directory = out_dir()
    os.makedirs(directory, mode=0o755, exist_ok=True)
    check_trusted(directory, "CDI spec dir")
    target = spec_path(unit)
    write_atomic(target, (json.dumps(ours, indent=1) + "\n").encode(), mode=0o644)
    return target


def remove(unit):
    """Remove UNIT's spec (idempotent)."""
    remove_quietly(spec_path(unit))
