"""Fixtures: the real instruments (fake NVML driver, systemd sandbox) and a throw-away host per test.

The builders and assertions live in tests/helpers/ (box.py, builders.py, fakegpu.py, ...).
"""

import os
import shutil
import subprocess

import pytest

from cortex_hook.hooks.manager import load_plugins

from .helpers.box import Box
from .helpers.fakegpu import build_fake_nvml
from .helpers.instruments import CACHE, FAKE_NVML_SRC, REPO, SD_SANDBOX, require
from .helpers.sandbox import Host, Sandbox, host_root


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


@pytest.fixture(scope="session")
def plugins():
    """The plugins as installed here (built-ins and the six server plugins), loaded once. A test
    that needs another set (some disabled, one added) calls load_plugins() itself."""
    return load_plugins()


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
    os.chmod(tmp_path, 0o755)  # services running as User=nobody read and write files here
    sb = Sandbox(f"chk{os.getpid()}n{next(_sandboxes)}", tmp_path / "sdsb", service_venv)
    sb.up()
    try:
        yield sb
    finally:
        sb.down()


@pytest.fixture
def host(sandbox, fake_nvml_lib):
    """A Host (tests/helpers/sandbox.py): policy, fake GPUs, state and units of one test, in a sandbox."""
    with host_root(sandbox) as root:
        yield Host(sandbox, root, fake_nvml_lib)
