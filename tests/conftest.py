"""Shared fixtures: the real instruments (fake NVML driver, systemd sandbox), a CLI runner, and
builders for simulated GPUs and policies.

Instruments: a test that needs one FAILS when $CI is set and the instrument is missing; outside
CI it is skipped with a message naming what is missing.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .fakegpu import build_fake_nvml, gpu_desc, uuid_of  # noqa: F401  (gpu_desc, uuid_of: for the tests)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CORTEX_HOOK_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
FAKE_NVML_SRC = os.path.join(SHARED, "tools", "fake-nvml")
SD_SANDBOX = os.path.join(SHARED, "tools", "sd-sandbox", "sd-sandbox.sh")
CACHE = os.path.join(REPO, ".cache")


def require(ok, what):
    """Fail under CI, skip elsewhere, when an instrument is missing."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"instrument missing under CI: {what}")
    pytest.skip(f"instrument missing: {what}")


def _build_fake_nvml(outdir, version_script=None):
    src = os.path.join(FAKE_NVML_SRC, "fake_nvml.c")
    require(os.path.exists(src), f"fake NVML source {src} (../shared/tools/fake-nvml)")
    require(shutil.which("gcc"), "gcc (to build the fake NVML driver)")
    return build_fake_nvml(src, outdir, version_script)


@pytest.fixture(scope="session")
def fake_nvml_lib():
    """Directory holding the fake libnvidia-ml.so.1 (built by .ci/run, or here on first use)."""
    prebuilt = os.environ.get("FAKE_NVML_LIB_DIR")
    if prebuilt and os.path.exists(os.path.join(prebuilt, "libnvidia-ml.so.1")):
        return prebuilt
    return _build_fake_nvml(os.path.join(CACHE, "fake-nvml", "lib"))


@pytest.fixture(scope="session")
def fake_nvml_old_lib():
    """A fake driver exporting only core.map's symbols: an old driver missing newer functions."""
    core = os.path.join(FAKE_NVML_SRC, "core.map")
    require(os.path.exists(core), f"{core}")
    return _build_fake_nvml(os.path.join(CACHE, "fake-nvml", "lib-core"), core)


class Box:
    """A throw-away host: policy, simulated GPUs, state and runtime dir in one temp directory."""

    def __init__(self, root):
        self.root = str(root)
        os.chmod(self.root, 0o755)
        self.policy = os.path.join(self.root, "policy.yaml")
        self.gpus_file = os.path.join(self.root, "gpus.json")
        self.state = os.path.join(self.root, "state", "state.db")
        self.runtime = os.path.join(self.root, "run")
        self.lib = None

    def write_gpus(self, gpus, **top):
        """Describe the GPUs (list of gpu_desc dicts); used by simulated and fake NVML alike."""
        with open(self.gpus_file, "w") as f:
            json.dump(dict(top, gpus=gpus), f, indent=1)
        return self

    def write_policy(self, body, inventory="simulated"):
        """Write a policy: BODY is YAML for everything after version/inventory."""
        head = "version: 1\n"
        if inventory == "simulated":
            head += "inventory:\n  simulated: gpus.json\n"
        elif inventory:
            head += f"inventory: {inventory}\n"
        with open(self.policy, "w") as f:
            f.write(head + textwrap.dedent(body))
        os.chmod(self.policy, 0o644)
        return self

    def env(self, **extra):
        env = dict(os.environ)
        for k in ("CUDA_VISIBLE_DEVICES", "CORTEX_HOOK_UNIT", "JOURNAL_STREAM", "CORTEX_HOOK_DISABLE_PLUGINS",
                  "INVOCATION_ID"):
            env.pop(k, None)
        env.update(CORTEX_HOOK_POLICY=self.policy, CORTEX_HOOK_STATE=self.state,
                   CORTEX_HOOK_RUNTIME_DIR=self.runtime)
        if self.lib:
            env.update(LD_LIBRARY_PATH=self.lib, FAKE_NVML_CONFIG=self.gpus_file)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cli(self, *args, env=None, **kw):
        """Run `python -m cortex_hook ARGS` against this box; returns CompletedProcess (text)."""
        return subprocess.run([sys.executable, "-m", "cortex_hook", *args], env=env or self.env(),
                              capture_output=True, text=True, timeout=120, **kw)

    def json(self, *args, expect=0, env=None):
        r = self.cli(*args, "--json", env=env)
        assert r.returncode == expect, (r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def env_file(self, unit):
        return os.path.join(self.runtime, unit + ".env")


@pytest.fixture
def box(tmp_path):
    """A Box with a simulated inventory."""
    return Box(tmp_path)


@pytest.fixture
def nvml_box(tmp_path, fake_nvml_lib):
    """A Box whose inventory is the real nvidia-ml-py talking to the fake driver."""
    b = Box(tmp_path)
    b.lib = fake_nvml_lib
    return b


def assert_state_intact(state_path):
    """The state database passes SQLite's integrity check and is still in WAL mode."""
    import sqlite3
    conn = sqlite3.connect(state_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def assert_one_line_error(stderr, *needles):
    """The error output is exactly one line, no traceback, and mentions every NEEDLE."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


_sandboxes = iter(range(1_000_000))


@pytest.fixture(scope="session")
def service_venv():
    """cortex-hook installed (editable) into a venv of the system Python, which every user can run:
    what a unit with User= executes. Built once under .cache/service-venv."""
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    require(system_python, "a system python3 in /usr/bin (services with User= cannot run /root/.pyenv)")
    path = os.path.join(CACHE, "service-venv")
    marker = os.path.join(path, ".installed")
    stamp = str(os.path.getmtime(os.path.join(REPO, "pyproject.toml")))
    if not (os.path.exists(marker) and open(marker).read() == stamp):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([system_python, "-m", "venv", path], check=True)
        subprocess.run([os.path.join(path, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "-e", REPO], check=True)
        with open(marker, "w") as f:
            f.write(stamp)
    for d in (CACHE, path):
        os.chmod(d, 0o755)
    return path


@pytest.fixture
def sandbox(tmp_path, service_venv):
    """A real systemd (sd-sandbox) of our own, always brought down, even when the test fails."""
    require(os.path.exists(SD_SANDBOX), f"sd-sandbox ({SD_SANDBOX})")
    require(os.geteuid() == 0, "root (sd-sandbox boots systemd in namespaces)")
    require(shutil.which("nsenter") and shutil.which("unshare"), "nsenter/unshare (util-linux)")
    from .sandbox import Sandbox
    os.chmod(tmp_path, 0o755)  # services running as User=nobody read and write files here
    sb = Sandbox(f"chk{os.getpid()}n{next(_sandboxes)}", tmp_path / "sdsb", service_venv)
    sb.up()
    try:
        yield sb
    finally:
        sb.down()


@pytest.fixture
def host(sandbox, fake_nvml_lib):
    """A Host (tests/sandbox.py): policy, fake GPUs, state and units of one test, in a sandbox."""
    from .sandbox import Host, host_root
    with host_root(sandbox) as root:
        yield Host(sandbox, root, fake_nvml_lib)
