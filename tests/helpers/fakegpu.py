"""Simulated GPUs for the tests and the benchmarks (standard library only: bench/ loads it too).

`gpu_desc` describes one GPU with the fake NVML driver's JSON keys (the simulated inventory reads
the same keys); `build_fake_nvml` compiles ../shared/tools/fake-nvml/fake_nvml.c into
OUTDIR/libnvidia-ml.so.1 when the library is missing or older than its source.
"""

import os
import shutil
import subprocess


LIB_NAME = "libnvidia-ml.so.1"


class MissingTool(Exception):
    """A tool the build needs (gcc) is not installed."""


def uuid_of(i):
    """The UUID `gpu_desc(I)` gives."""
    return f"GPU-00000000-0000-4000-8000-{i:012x}"


def gpu_desc(i, **kw):
    """One simulated GPU (fake-NVML JSON keys), healthy, idle and 24 GiB unless told otherwise."""
    desc = {
        "name": "NVIDIA L4",
        "uuid": uuid_of(i),
        "pci_bus_id": f"00000000:{0x10 + i:02X}:00.0",
        "minor_number": i,
        "memory_total": "24GiB",
        "memory_used": 0,
        "utilization_gpu": 0,
        "temperature": 40,
        "compute_capability": "8.9",
        "numa_node": 0,
    }
    desc.update(kw)
    return desc


def build_fake_nvml(src, outdir, version_script=None):
    """OUTDIR, holding SRC compiled as libnvidia-ml.so.1 (rebuilt when older than SRC; the final
    name appears complete or not at all). VERSION_SCRIPT limits the symbols it exports."""
    lib = os.path.join(outdir, LIB_NAME)
    if os.path.exists(lib) and os.path.getmtime(lib) >= os.path.getmtime(src):
        return outdir
    if not shutil.which("gcc"):
        raise MissingTool("gcc (to build the fake NVML driver)")
    os.makedirs(outdir, exist_ok=True)
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", f"-Wl,-soname,{LIB_NAME}"]
    if version_script:
        cmd.append(f"-Wl,--version-script={version_script}")
    tmp = lib + f".{os.getpid()}"
    subprocess.run(cmd + ["-o", tmp, src, "-lpthread"], check=True)
    os.replace(tmp, lib)
    return outdir
