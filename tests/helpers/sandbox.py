"""A real systemd 252 as PID 1 in private namespaces (../shared/tools/sd-sandbox), for tests.

One sandbox per test: booted in ~0.3 s, always brought down (the fixture's finally). Units go in
SANDBOX_DIR/etc-systemd/system (/etc/systemd/system inside); /tmp and the venv are the host's,
so tests exchange files with services through their tmp_path.
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

from cortex_hook.systemd.leaseunit import lease_unit_of

from .box import Box, gpu_desc
from .instruments import SD_SANDBOX, STANDIN


class Sandbox:
    """Drive one sandbox: systemctl, journal, files and processes inside it."""

    def __init__(self, name, directory, venv):
        self.running = False
        self.name = name
        self.dir = str(directory)
        self.program = os.path.join(venv, "bin", "cortex-hook")  # runnable by any User=
        self.python = os.path.join(venv, "bin", "python")
        self.env = dict(os.environ, SDSANDBOX_NAME=name, SDSANDBOX_DIR=self.dir)

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self, keep=False):
        """Boot it (KEEP: with the /etc/systemd of the previous boot, as a reboot)."""
        r = subprocess.run([SD_SANDBOX, "up", *(["--keep"] if keep else [])], env=self.env, capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sd-sandbox up failed: {r.stderr}\n{r.stdout}")
        self.running = True

    def down(self):
        """Bring the sandbox down (once; later calls do nothing)."""
        if not self.running:
            return
        self.running = False
        r = subprocess.run([SD_SANDBOX, "down"], env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sd-sandbox down failed: {r.stderr}\n{r.stdout}")

    # -- running things inside --------------------------------------------------------------------
    def run(self, *cmd, timeout=120, check=False):
        r = subprocess.run([SD_SANDBOX, "exec", *cmd], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def systemctl(self, *args, timeout=120, check=False):
        return self.run("systemctl", *args, timeout=timeout, check=check)

    def cortex(self, *args, check=False):
        """`cortex-hook ARGS` inside the sandbox (as root, like an admin at the shell)."""
        return self.run(self.program, *args, check=check)

    def show(self, unit, *props):
        r = self.systemctl("show", unit, *[f"-p{p}" for p in props], check=True)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def device_allow(self, unit):
        """Every DeviceAllow= entry of UNIT (`systemctl show` gives one line each)."""
        r = self.systemctl("show", unit, "-pDeviceAllow", check=True)
        return [line.split("=", 1)[1] for line in r.stdout.splitlines() if line.startswith("DeviceAllow=")]

    def prop(self, unit, name):
        return self.show(unit, name)[name]

    def journal(self, unit):
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat").stdout

    def read(self, path):
        r = self.run("cat", path)
        return r.stdout if r.returncode == 0 else None

    def exists(self, path):
        return self.run("test", "-e", path).returncode == 0

    def environ(self, pid):
        """The environment of process PID (a pid inside the sandbox)."""
        r = self.run("cat", f"/proc/{pid}/environ", check=True)
        return dict(item.split("=", 1) for item in r.stdout.split("\0") if "=" in item)

    def children(self, pid):
        r = self.run("cat", f"/proc/{pid}/task/{pid}/children")
        return [int(x) for x in r.stdout.split()] if r.returncode == 0 else []

    # -- units ---------------------------------------------------------------------------------
    @property
    def unit_dir(self):
        return os.path.join(self.dir, "etc-systemd", "system")

    def write_unit(self, name, text):
        """Write /etc/systemd/system/NAME (NAME may be `UNIT.d/DROPIN.conf`)."""
        path = os.path.join(self.unit_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def daemon_reload(self):
        self.systemctl("daemon-reload", check=True)

    def set_environment(self, **env):
        self.systemctl("set-environment", *[f"{k}={v}" for k, v in env.items()], check=True)

    def wait_for(self, predicate, what, timeout=60.0, interval=0.1, unit=None):
        """Poll PREDICATE until true (returns its value) or fail naming WHAT (and UNIT's journal)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                detail = ""
                if unit:
                    status = self.systemctl("status", unit, "--no-pager", "-n", "0").stdout
                    detail = f"\n{status}\njournal:\n" + "\n".join(self.journal(unit).splitlines()[-25:])
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
            time.sleep(interval)

    def stop(self, *units, timeout=60.0):
        """`systemctl stop UNITS`, then wait until each one's lease unit has stopped too: `systemctl
        stop` returns once the unit is down, and its lease unit releases just after."""
        self.systemctl("stop", *units, check=True, timeout=timeout)
        for unit in units:
            self.wait_released(unit, timeout=timeout)

    def wait_released(self, unit, timeout=60.0):
        """Wait until UNIT's lease unit is inactive or failed (its release has run)."""
        return self.wait_state(lease_unit_of(unit), "inactive", "failed", timeout=timeout)

    def wait_state(self, unit, *states, timeout=60.0):
        return self.wait_for(lambda: self.prop(unit, "ActiveState") in states and self.show(
            unit, "ActiveState", "SubState", "Result", "StatusText", "MainPID"),
            f"{unit} to reach {'/'.join(states)}", timeout, unit=unit)

    def leases(self, state_path, policy_path):
        r = self.cortex("--state", state_path, "--policy", policy_path, "leases", "--json", check=True)
        return json.loads(r.stdout)["leases"]


# -- one test's server ---------------------------------------------------------------------------
PORT = 18080  # each sandbox has its own network namespace
SUPERVISED = """\
services:
  - match: llm.service
    readiness: http://127.0.0.1:18080/health
"""  # the stand-in is ready once it answers /health
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
        """cortex-hook at the sandbox's shell (which, unlike units, lacks the manager's environment)."""
        driver = [f"LD_LIBRARY_PATH={self.box.lib}", f"FAKE_NVML_CONFIG={self.box.gpus_file}"] if self.box.lib else []
        return self.sb.run("env", *driver, self.sb.program, *self.flags(), *args, check=check)

    def cortex_json(self, *args):
        """`cortex-hook ARGS --json` at the sandbox's shell, parsed."""
        return json.loads(self.cortex(*args, "--json").stdout)

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

    def start_record(self, unit):
        """The record allocate left for UNIT's current start in the sandbox's /run (read the way
        the wrapper reads it; its decision as plain data), or None."""
        code = ("import json, sys; from cortex_hook.files.record import read_record; "
                "r = read_record('/run/cortex-hook', sys.argv[1]); "
                "print(json.dumps(r and dict(r, decision=r['decision'].to_plain())))")
        return json.loads(self.sb.run(self.sb.python, "-I", "-c", code, unit, check=True).stdout)

    def decision(self, unit):
        """What allocate decided for UNIT's current start (plain data), or None."""
        record = self.start_record(unit)
        return record and record["decision"]


def gpu_env(env):
    return {k: v for k, v in env.items() if k in GPU_VARS}


@contextlib.contextmanager
def host_root(sandbox=None):
    """A root-owned 0755 temp dir a User=nobody service can read (pytest's tmp is 0700).

    SANDBOX is brought down first on the way out: its units' ExecStopPost= writes in here.
    """
    root = tempfile.mkdtemp(prefix="cortex-hook-sd-")
    os.chmod(root, 0o755)
    try:
        yield pathlib.Path(root)
    finally:
        if sandbox is not None:
            sandbox.down()
        shutil.rmtree(root, ignore_errors=True)
