"""containers/cdispec.py through `cortex-hook allocate`/`release` on a box of its own: the spec is
written with the start and removed with it, NVIDIA's spec is read as JSON or YAML, and what is
wrong is one line naming the file (a missing spec, a GPU it does not name, a spec others can
write), with no lease left behind."""

import json
import os

import pytest

from ..helpers.box import gpu_desc, uuid_of

POLICY = """\
services:
  - match: llm.service
    gpus: 2
    cdi: true
"""


def nvidia(gpus, common=None):
    spec = {"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": uuid_of(i), "containerEdits": {
                "env": [f"CDI_GPU_{i}=1"], "deviceNodes": [{"path": f"/dev/nvidia{i}"}]}} for i in gpus]}
    if common:
        spec["containerEdits"] = common
    return spec


@pytest.fixture
def cdi_box(box, tmp_path):
    specs, out = tmp_path / "specs", tmp_path / "cdi"
    specs.mkdir()
    box.write_gpus([gpu_desc(0), gpu_desc(1, memory_used="20GiB"), gpu_desc(2)]).write_policy(POLICY)
    box.cdi_env = box.env(CORTEX_HOOK_CDI_DIR=out, CORTEX_HOOK_CDI_SPEC_DIRS=specs)
    box.specs, box.out = specs, out
    return box


def ours(box):
    path = box.out / "cortex-hook-llm.service.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_the_spec_comes_and_goes_with_the_lease(cdi_box, form):
    import yaml

    spec = nvidia(range(3), common={"deviceNodes": [{"path": "/dev/nvidiactl"}], "env": ["NVIDIA_COMMON=1"]})
    text = json.dumps(spec) if form == "json" else yaml.safe_dump(spec)
    (cdi_box.specs / f"nvidia.{form}").write_text(text)
    r = cdi_box.cli("allocate", "llm", env=cdi_box.cdi_env)
    assert r.returncode == 0, r.stderr
    made = ours(cdi_box)
    assert made["kind"] == "cortex-hook.local/gpu" and made["cdiVersion"] == "0.6.0"
    [device] = made["devices"]
    edits = device["containerEdits"]
    assert device["name"] == "llm.service"
    assert [d["path"] for d in edits["deviceNodes"]] == ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia2"]
    env = dict(e.split("=", 1) for e in edits["env"])
    assert env["NVIDIA_COMMON"] == env["CDI_GPU_0"] == env["CDI_GPU_2"] == "1" and "CDI_GPU_1" not in env
    assert env["CORTEX_GPU_UUIDS"] == f"{uuid_of(0)},{uuid_of(2)}"
    assert oct(os.stat(cdi_box.out / "cortex-hook-llm.service.json").st_mode & 0o777) == "0o644"
    assert cdi_box.cli("release", "llm", env=cdi_box.cdi_env).returncode == 0
    assert ours(cdi_box) is None


@pytest.mark.parametrize("case, needle", [
    ("none", "no CDI spec of kind nvidia.com/gpu in"),
    ("missing-gpu", f"names no device {uuid_of(2)} (GPU 2); regenerate it with `nvidia-ctk cdi generate`"),
    ("writable", "writable by"),
])
def test_what_is_wrong_is_one_line_and_no_lease_is_left(cdi_box, case, needle):
    if case != "none":
        path = cdi_box.specs / "nvidia.json"
        path.write_text(json.dumps(nvidia(range(2) if case == "missing-gpu" else range(3))))
        if case == "writable":
            os.chmod(path, 0o666)
    r = cdi_box.cli("allocate", "llm", env=cdi_box.cdi_env)
    assert r.returncode in (73, 77), (r.returncode, r.stderr)
    assert needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert cdi_box.json("leases", env=cdi_box.cdi_env)["leases"] == []
    assert ours(cdi_box) is None


def test_a_template_instance_gets_a_device_name_cdi_accepts():
    from cortex_hook.containers.cdispec import device_name

    assert device_name("vllm@mistral-7b.service") == "vllm_mistral-7b.service"
    assert device_name("a\\x2db.service") == "a_x2db.service"


def test_a_spec_dir_others_can_write_is_refused(cdi_box):
    (cdi_box.specs / "nvidia.json").write_text(json.dumps(nvidia(range(3))))
    cdi_box.out.mkdir()
    os.chmod(cdi_box.out, 0o777)
    r = cdi_box.cli("allocate", "llm", env=cdi_box.cdi_env)
    assert r.returncode == 77 and "CDI spec dir" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert cdi_box.json("leases", env=cdi_box.cdi_env)["leases"] == [] and ours(cdi_box) is None
