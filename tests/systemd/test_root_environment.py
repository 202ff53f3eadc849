"""Root never runs with a unit's environment. A server user who owns the directories a unit points
its environment at (a venv or conda tree is common) must not get code run as root: not through
LD_PRELOAD, not through LD_LIBRARY_PATH (where pynvml finds libnvidia-ml.so.1), not through a
PATH whose `systemctl` is theirs. Each is tried under the real systemd 252 (sd-sandbox) with a
library or program owned by the unit's user that writes down the uid it runs as."""

import os
import shutil
import subprocess

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.box import gpu_desc
from ..helpers.instruments import require

pytestmark = pytest.mark.systemd
NOBODY = 65534
SPY = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void spy(void) {
    char exe[512] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    FILE *f = fopen(LOG, "a");
    if (f) { fprintf(f, "uid=%d exe=%s\n", (int)getuid(), exe); fclose(f); }
}
"""


def users_dir(host, name):
    """A directory owned by the unit's user (nobody), as a venv of theirs would be."""
    path = host.out / name
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)
    return path


def spy_library(host, directory, name, log):
    """A shared library, owned by nobody, whose constructor appends `uid=… exe=…` to LOG."""
    require(shutil.which("gcc"), "gcc (to build the spy library)")
    source = host.out / "spy.c"
    source.write_text(SPY)
    target = directory / name
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DLOG="{log}"', "-o", str(target), str(source)], check=True)
    os.chown(target, NOBODY, NOBODY)
    return target


def uids(log):
    """The uids the spy ran as, or [] if it never ran."""
    return [int(line.split()[0][4:]) for line in log.read_text().splitlines()] if log.exists() else []


def run_once(host, unit, record=None):
    """Start UNIT, wait for its lease (and for the stand-in's RECORD of its env, if given: a
    Type=simple start returns before the server has run), then stop it."""
    host.sb.systemctl("start", unit, check=True)
    host.sb.wait_state(lease_unit_of(unit), "active")
    seen = host.record(record) if record is not None else None
    host.sb.stop(unit)
    return seen


def test_ld_preload_of_the_unit_never_runs_as_root(host):
    """Environment=LD_PRELOAD=<nobody's .so>: the server loads it (as nobody), root never does: not
    when the GPUs are taken, not when they are given back."""
    host.setup("services:\n  - match: llm.service\n")
    log = host.out / "preload.log"
    library = spy_library(host, users_dir(host, "venv"), "spy.so", log)
    record = host.standin_unit("llm.service", f"User=nobody\nEnvironment=LD_PRELOAD={library}\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    seen = run_once(host, "llm.service", record)
    assert seen["env"]["LD_PRELOAD"] == str(library)
    assert NOBODY in uids(log)  # the unit's environment did reach its own processes
    assert 0 not in uids(log), log.read_text()
    assert host.leases() == []
    # the spy would have seen it: a `+` command in a unit (what the drop-ins used to run) loads it as root
    host.sb.write_unit("control.service", f"[Service]\nType=oneshot\nUser=nobody\n"
                                          f"Environment=LD_PRELOAD={library}\nExecStartPre=+/bin/true\n"
                                          "ExecStart=/bin/true\n")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "control.service", check=True)
    assert 0 in uids(log)


def test_ld_library_path_of_the_unit_never_chooses_roots_nvml(host):
    """Environment=LD_LIBRARY_PATH=<nobody's dir holding a libnvidia-ml.so.1>: root's NVML is the one
    the service manager's environment finds (the fake driver here), never the user's."""
    host.setup("services:\n  - match: llm.service\n")
    log = host.out / "nvml.log"
    venv = users_dir(host, "venv-lib")
    spy_library(host, venv, "libnvidia-ml.so.1", log)
    host.standin_unit("llm.service", f"User=nobody\nEnvironment=LD_LIBRARY_PATH={venv}\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    run_once(host, "llm.service")
    assert 0 not in uids(log), log.read_text()
    assert [h["action"] for h in host.cortex_json("history", "llm.service")["history"]] == ["allocate", "release"]


def test_path_of_the_unit_never_chooses_roots_systemctl(host):
    """Environment=PATH=<nobody's bin>:… with isolate: true: the device lockdown runs the system's
    systemctl by its absolute path; the user's `systemctl` never runs as root."""
    host.setup("isolate: true\nservices:\n  - match: llm.service\n", gpus=[gpu_desc(0, minor_number=0)])
    log = host.out / "systemctl.log"
    bin_dir = users_dir(host, "bin")
    fake = bin_dir / "systemctl"
    fake.write_text(f"#!/bin/sh\necho uid=$(id -u) exe=$0 >> {log}\nexec /bin/systemctl \"$@\"\n")
    fake.chmod(0o755)
    os.chown(fake, NOBODY, NOBODY)
    host.standin_unit("llm.service", f"User=nobody\nEnvironment=PATH={bin_dir}:/usr/bin:/bin\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.sb.prop("llm.service", "DevicePolicy") == "closed"  # systemctl did run: the real one
    host.sb.stop("llm.service")
    assert 0 not in uids(log), log.read_text()
    assert host.sb.prop("llm.service", "DevicePolicy") == "auto"
