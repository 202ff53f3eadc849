"""cortex-hook in front of real units, under the real systemd 252 (sd-sandbox), GPUs from the fake
NVML driver: drop-ins, the three modes, readiness, watchdog, lease release on every way out,
the generator, isolation, and hostile values reaching the service byte for byte."""

import json
import os
import pathlib
import shutil
import tempfile

import pytest

from .conftest import Box, gpu_desc, uuid_of
from .sandbox import STANDIN

pytestmark = pytest.mark.systemd
PORT = 18080  # each sandbox has its own network namespace
GPU_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CORTEX_GPU_COUNT", "CORTEX_GPU_UUIDS",
            "CORTEX_GPU_INDICES", "CORTEX_HOOK_UNIT")


class Host:
    """One test's server: a policy, fake GPUs, a state file, and units in the sandbox."""

    def __init__(self, sb, tmp_path, lib):
        self.sb = sb
        self.box = Box(tmp_path)
        self.box.lib = lib
        self.out = tmp_path / "out"
        self.out.mkdir(mode=0o777)
        os.chmod(self.out, 0o1777)  # services running as nobody write their records here

    def setup(self, policy_body, gpus=None):
        self.box.write_gpus(gpus or [gpu_desc(0), gpu_desc(1)])
        self.box.write_policy(policy_body, inventory="nvml")
        self.sb.set_environment(LD_LIBRARY_PATH=self.box.lib, FAKE_NVML_CONFIG=self.box.gpus_file)
        return self

    def flags(self):
        return ["--policy", self.box.policy, "--state", self.box.state]

    def cortex(self, *args, check=True):
        return self.sb.cortex(*self.flags(), *args, check=check)

    def install(self, unit, mode):
        return self.cortex("install", unit, "--mode", mode, "--program", self.sb.program)

    def standin_unit(self, name, extra_service="", args="", port=PORT):
        """A unit running the stand-in server (like llama-server) that records its env and argv."""
        record = self.out / f"{name}.json"
        cmd = f"{self.sb.python} -u {STANDIN} --host 127.0.0.1 --port {port} --record {record} {args}"
        self.sb.write_unit(name, f"[Unit]\nDescription=stand-in {name}\n[Service]\n{extra_service}"
                                 f"ExecStart={cmd}\n")
        return record

    def record(self, path):
        return self.sb.wait_for(lambda: path.exists() and json.loads(path.read_text()), f"{path} to appear")

    def leases(self):
        return self.sb.leases(self.box.state, self.box.policy)

    def decision(self, unit):
        """What allocate decided for UNIT's current start (its record in the sandbox's /run)."""
        text = self.sb.read(f"/run/cortex-hook/{unit}.json")
        return json.loads(text) if text else None


@pytest.fixture
def host(sandbox, fake_nvml_lib):
    """A Host whose files live where a User=nobody service can read them (pytest's tmp is 0700)."""
    root = tempfile.mkdtemp(prefix="cortex-hook-sd-")
    os.chmod(root, 0o755)
    try:
        yield Host(sandbox, pathlib.Path(root), fake_nvml_lib)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def gpu_env(env):
    return {k: v for k, v in env.items() if k in GPU_VARS}


# -- the three modes ---------------------------------------------------------------------------
def test_env_mode_with_user_gets_exactly_the_planned_variables(host):
    """ExecStartPre=+ allocates as root; the main process (User=nobody) gets the env file."""
    host.setup("services:\n  - match: llm.service\n    min_free_memory: 8GiB\n")
    record = host.standin_unit("llm.service", "User=nobody\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    seen = host.record(record)
    assert seen["uid"] != 0
    planned = host.decision("llm.service")
    assert planned["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    main_pid = int(host.sb.prop("llm.service", "MainPID"))
    assert gpu_env(host.sb.environ(main_pid)) == planned["env"]
    assert gpu_env(seen["env"]) == planned["env"]
    assert [(l["unit"], l["uuid"]) for l in host.leases()] == [("llm.service", uuid_of(0))]

    host.sb.systemctl("stop", "llm.service", check=True)
    assert host.leases() == []
    assert host.sb.read("/run/cortex-hook/llm.service.env") is None


SUPERVISED = """\
services:
  - match: llm.service
    readiness: http://127.0.0.1:18080/health
"""


def test_exec_mode_becomes_the_server_with_its_prefixes(host):
    """exec: MAINPID *is* the server (same pid), with the planned env; `@` keeps its argv[0]."""
    host.setup("services:\n  - match: llm.service\n")
    record = host.out / "llm.json"
    host.sb.write_unit("llm.service", f"[Service]\nUser=nobody\nExecStart=@{host.sb.python} llm-standin -u "
                                      f"{STANDIN} --port {PORT} --record {record}\n")
    host.install("llm.service", "exec")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    seen = host.record(record)
    main_pid = int(host.sb.prop("llm.service", "MainPID"))
    assert seen["argv"][0].endswith("standin_server.py")  # python's argv; its argv[0] is below
    assert host.sb.read(f"/proc/{main_pid}/cmdline").split("\0")[0] == "llm-standin"
    planned = host.decision("llm.service")["env"]
    assert gpu_env(host.sb.environ(main_pid)) == planned == gpu_env(seen["env"])
    assert planned["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    host.sb.systemctl("stop", "llm.service", check=True)
    assert host.leases() == []


def test_supervise_blocks_until_health_turns_200(host):
    """Type=notify: the start waits while /health says 503 Loading model, with that in STATUS=,
    and completes (READY=1) only once it says 200; STATUS then names the GPUs by UUID."""
    host.setup(SUPERVISED)
    ready = host.out / "model-loaded"
    record = host.standin_unit("llm.service", "User=nobody\n", args=f"--ready-file {ready}")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "--no-block", "llm.service", check=True)
    loading = host.sb.wait_for(lambda: "503 Loading model" in host.sb.prop("llm.service", "StatusText") and
                               host.sb.show("llm.service", "ActiveState", "StatusText"), "STATUS= 503 Loading model")
    assert loading["ActiveState"] == "activating"
    assert loading["StatusText"] == "waiting for /health: 503 Loading model"
    ready.touch()
    st = host.sb.wait_state("llm.service", "active")
    assert st["StatusText"] == "ready on GPU-00000000…0000 (priority -)"
    planned = host.decision("llm.service")["env"]
    assert gpu_env(host.sb.environ(int(st["MainPID"]))) == planned  # the wrapper
    assert gpu_env(host.record(record)["env"]) == planned           # and the server it runs
    host.sb.systemctl("stop", "llm.service", check=True)
    final = host.sb.show("llm.service", "Result", "ActiveState")
    assert final == {"Result": "success", "ActiveState": "inactive"}
    assert (host.out / "llm.service.json.signals").read_text() == "SIGTERM\n"  # exactly once
    assert host.leases() == []


def test_supervise_fails_the_start_when_the_server_dies_first(host):
    host.setup(SUPERVISED)
    host.standin_unit("llm.service", "User=nobody\n", args="--exit-before-ready 3")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    r = host.sb.systemctl("start", "llm.service")
    assert r.returncode != 0
    st = host.sb.show("llm.service", "Result", "ExecMainStatus", "StatusText", "ActiveState")
    assert st["ActiveState"] == "failed" and st["Result"] == "exit-code" and st["ExecMainStatus"] == "3"
    assert st["StatusText"] == "server exited with code 3 before it was ready"
    assert host.leases() == []


def test_watchdog_ends_a_server_whose_health_goes_bad(host):
    host.setup(SUPERVISED + "    watchdog: 2s\n")
    sick = host.out / "sick"
    host.standin_unit("llm.service", "User=nobody\n", args=f"--unhealthy-file {sick}")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.sb.prop("llm.service", "WatchdogUSec") == "2s"
    assert len(host.leases()) == 1
    sick.touch()
    host.sb.wait_for(lambda: host.sb.prop("llm.service", "Result") == "watchdog", "Result=watchdog")
    host.sb.wait_state("llm.service", "failed", "inactive")
    assert "Watchdog timeout" in host.sb.journal("llm.service")
    assert host.leases() == []
