"""The example container units: each command line splits by its engine's table, and `plan` gives
the container exactly its GPUs (the quadlet file's CDI device name is the one cdispec writes)."""

import configparser
import os
import shlex

from cortex_hook.containers.cdispec import KIND, device_name
from cortex_hook.containers.split import split

from ..helpers.box import gpu_desc, uuid_of

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "examples")


def exec_start(name, unit="x"):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(EXAMPLES, name))
    line = parser["Service"]["ExecStart"].replace("\\\n", " ").replace("%i", unit)
    return shlex.split(line)


def test_the_podman_example_plans_its_gpus_inside_the_container(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2, memory_used="20GiB")]).write_policy(
        "services:\n  - match: \"vllm-podman@*.service\"\n    server: vllm\n    gpus: 2\n")
    argv = exec_start("vllm-podman@.service", "m")
    assert split(argv).image == "docker.io/vllm/vllm-openai:latest"
    r = box.cli("plan", "vllm-podman@m.service", "--json", "--", *argv)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)["argv"]
    assert [out[i + 1] for i, w in enumerate(out) if w == "--device"] == [
        f"nvidia.com/gpu={uuid_of(0)}", f"nvidia.com/gpu={uuid_of(1)}"]
    assert out[-2:] == ["--tensor-parallel-size", "2"]


def test_the_docker_example_splits():
    parts = split(exec_start("tgi-docker.service"))
    assert parts.name == "docker" and parts.image == "ghcr.io/huggingface/text-generation-inference:3.0.0"
    assert [o.name for o in parts.options if o.name == "--gpus"] == ["--gpus"]


def test_the_quadlet_file_names_the_device_cdispec_writes():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(EXAMPLES, "llama.container"))
    assert parser["Container"]["AddDevice"] == f"{KIND}={device_name('llama.service')}"
