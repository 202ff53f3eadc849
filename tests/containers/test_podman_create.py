"""The rewritten command line through the real podman: `podman create` (as `run` would, without
starting anything; its own storage in a temp dir) then `podman inspect` show the container gets
the server's environment and the server's argv exactly as planned, hostile values unchanged.
(podman 4.3.1 resolves CDI devices only when a container starts, and `inspect` does not list them:
the devices are checked on the command line itself, in test_contain.py.)"""

import json
import shutil
import subprocess
import tempfile

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import require

POLICY = """\
services:
  - match: llm.service
    server: vllm
    gpus: 2
"""


def test_podman_creates_the_container_as_planned(box, tmp_path):
    podman = shutil.which("podman")
    require(podman, "podman (Debian package podman)")
    box.write_gpus([gpu_desc(0), gpu_desc(1, memory_used="20GiB"), gpu_desc(2)]).write_policy(POLICY)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    hostile = 'a "b" $c `d`\ne'
    runroot = tempfile.mkdtemp(prefix="ch-pod-")  # (podman: at most 50 characters)
    storage = ["--root", str(tmp_path / "root"), "--runroot", runroot]
    cmd = [podman, *storage, "run", "--rm", "--device", "nvidia.com/gpu=all", "-e", f"HOSTILE={hostile}",
           "--rootfs", str(rootfs), "/bin/serve", "--model", "m"]
    r = box.cli("plan", "llm.service", "--json", "--", *cmd)
    assert r.returncode == 0, r.stderr
    argv = json.loads(r.stdout)["argv"]
    at = argv.index("run")
    created = argv[:at] + ["create", "--name", f"cortex-hook-test-{tmp_path.name}"] + argv[at + 1:]
    try:
        made = subprocess.run(created, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        shown = subprocess.run([podman, *storage, "inspect", made.stdout.strip()], capture_output=True, text=True,
                               timeout=60)
        config = json.loads(shown.stdout)[0]["Config"]
    finally:
        subprocess.run([podman, *storage, "rm", "-af"], capture_output=True, timeout=120)
        shutil.rmtree(runroot, ignore_errors=True)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Cmd"] == ["/bin/serve", "--model", "m", "--tensor-parallel-size", "2"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["CORTEX_GPU_UUIDS"] == f"{uuid_of(0)},{uuid_of(2)}"
    assert env["HOSTILE"] == hostile
    assert [argv[i + 1] for i, w in enumerate(argv) if w == "--device"] == [
        f"nvidia.com/gpu={uuid_of(0)}", f"nvidia.com/gpu={uuid_of(2)}"]
