"""A server in a real podman container under the real systemd 252 (sd-sandbox, where podman runs
with `--cgroup-manager=cgroupfs`: the sandbox has no D-Bus): `install --mode supervise` wraps
`podman run`, the container gets exactly the chosen GPUs (each one's CDI device, from a spec for
the fake GPUs in the sandbox's private /run/cdi, marks the container's env), the server's env and
flags, and the probe reaches it; a stop ends the container and gives the GPUs back."""

import json
import shutil
import tempfile

import pytest

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import STANDIN, require

pytestmark = pytest.mark.systemd

POLICY = """\
services:
  - match: llm.service
    server: llama.cpp
    gpus: 2
"""


def cdi_spec(gpus):
    """A CDI spec naming each fake GPU by UUID, as `nvidia-ctk cdi generate` would; its only edit
    marks the container's env with the GPU's index."""
    return {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": uuid_of(i), "containerEdits": {"env": [f"CDI_GPU_{i}=1"]}} for i in gpus]}


def test_a_podman_server_gets_exactly_its_gpus_inside_its_container(host, tmp_path):
    require(shutil.which("podman"), "podman (Debian package podman)")
    host.setup(POLICY, gpus=[gpu_desc(0), gpu_desc(1, memory_used="20GiB"), gpu_desc(2)])
    spec = host.out / "nvidia.json"
    spec.write_text(json.dumps(cdi_spec(range(3))))
    host.sb.run("sh", "-c", f"mkdir -p /run/cdi && cp {spec} /run/cdi/nvidia.json", check=True)
    runroot = tempfile.mkdtemp(prefix="chp-")  # (podman: at most 50 characters)
    storage = f"--root {tmp_path}/root --runroot {runroot}"
    host.sb.write_unit("llm.service", "[Service]\nExecStart=/usr/bin/podman --cgroup-manager=cgroupfs "
                       f"{storage} run --rm --network host --device nvidia.com/gpu=all -v {host.out}:/out "
                       f"--rootfs /:O /usr/bin/python3 -u {STANDIN} --host 127.0.0.1 --port 18080 "
                       "--record /out/llm.json\n")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    try:
        _run_and_check(host)
    finally:
        host.sb.down()  # (its mounts go with it) before the runroot goes
        shutil.rmtree(runroot, ignore_errors=True)


def _run_and_check(host):
    host.sb.systemctl("start", "llm.service", check=True)
    record = host.record(host.out / "llm.json")
    env = record["env"]
    assert sorted(k for k in env if k.startswith("CDI_GPU_")) == ["CDI_GPU_0", "CDI_GPU_2"]
    assert env["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(0)},{uuid_of(2)}"
    assert env["CORTEX_GPU_UUIDS"] == f"{uuid_of(0)},{uuid_of(2)}"
    assert record["argv"] == [STANDIN, "--host", "127.0.0.1", "--port", "18080", "--record", "/out/llm.json",
                              "--tensor-split", "24,24", "--main-gpu", "0"]  # (llama.cpp's flags, inside)
    status = host.sb.prop("llm.service", "StatusText")
    assert status.startswith("ready"), status
    host.sb.stop("llm.service")
    assert host.leases() == []


def test_env_mode_gives_a_container_its_gpus_through_a_cdi_device_of_its_own(host, tmp_path):
    """`cdi: true` and `install --mode env`: the unit's command never changes (`--device
    cortex-hook.local/gpu=llm.service`); each start's spec holds that start's GPUs (NVIDIA's edits
    for them and in common, and the env), and is gone when the unit stops."""
    require(shutil.which("podman"), "podman (Debian package podman)")
    host.setup(POLICY + "    cdi: true\n", gpus=[gpu_desc(0), gpu_desc(1, memory_used="20GiB"), gpu_desc(2)])
    spec = dict(cdi_spec(range(3)), containerEdits={"env": ["NVIDIA_COMMON=1"]})
    (host.out / "nvidia.json").write_text(json.dumps(spec))
    host.sb.run("sh", "-c", f"mkdir -p /run/cdi && cp {host.out}/nvidia.json /run/cdi/nvidia.json", check=True)
    runroot = tempfile.mkdtemp(prefix="chp-")
    host.sb.write_unit("llm.service", "[Service]\nExecStart=/usr/bin/podman --cgroup-manager=cgroupfs "
                       f"--root {tmp_path}/root --runroot {runroot} run --rm --network host "
                       f"--device cortex-hook.local/gpu=llm.service -v {host.out}:/out --rootfs /:O "
                       f"/usr/bin/python3 -u {STANDIN} --host 127.0.0.1 --port 18080 --record /out/llm.json\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    try:
        host.sb.systemctl("start", "llm.service", check=True)
        env = host.record(host.out / "llm.json")["env"]
        assert sorted(k for k in env if k.startswith("CDI_GPU_")) == ["CDI_GPU_0", "CDI_GPU_2"]
        assert env["NVIDIA_COMMON"] == "1" and env["CORTEX_GPU_UUIDS"] == f"{uuid_of(0)},{uuid_of(2)}"
        assert env["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(0)},{uuid_of(2)}"
        assert host.sb.exists("/run/cdi/cortex-hook-llm.service.json")
        host.sb.stop("llm.service")
        assert not host.sb.exists("/run/cdi/cortex-hook-llm.service.json")
        assert host.leases() == []
    finally:
        host.sb.down()
        shutil.rmtree(runroot, ignore_errors=True)
