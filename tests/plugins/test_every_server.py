"""What every server plugin does alike: MIG instances, the visible-devices form, a CPU fallback,
leaving other servers' services alone, and tensor parallel sizes that count the other groups."""

import pytest

from cortex_hook.model import Launch
from cortex_hook.planner import plan

from ..helpers.builders import GiB
from ..helpers.servers import (
    ALL,
    MIG_UUID,
    ONE_DEVICE_FLAGS,
    TWO_GPU_FLAGS,
    four_gpus,
    make_gpu,
    make_request,
    mig_gpus,
    notes_text,
    prepare,
    uuids,
)


# -- every plugin ------------------------------------------------------------------------------------


def pool(server):
    return {"cuda_memory_pool": "256MiB"} if server == "triton" else {}


@pytest.mark.parametrize("visible", ["uuid", "index"])
@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_mig_instance_for_every_server(plugins, server, argv, visible):
    """A MIG instance is one device named by its UUID, whatever visible_devices says."""
    _, launch = prepare(plugins, server, argv, 1, gpus=mig_gpus(), visible_devices=visible, options=pool(server))
    assert launch.env["CUDA_VISIBLE_DEVICES"] == MIG_UUID
    assert launch.argv == argv + ONE_DEVICE_FLAGS[server]
    assert "OLLAMA_SCHED_SPREAD" not in launch.env and "GGML_VK_VISIBLE_DEVICES" not in launch.env


@pytest.mark.parametrize("visible", ["uuid", "index"])
@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_visible_devices_for_every_server(plugins, server, argv, visible):
    """UUIDs or PCI-bus-ordered indices as the policy says; vLLM gets indices either way."""
    _, launch = prepare(plugins, server, argv, 2, gpus=four_gpus(pci_reversed=True), visible_devices=visible,
                        options=pool(server))
    expected = uuids(0, 1) if visible == "uuid" and server != "vllm" else "3,2"
    assert launch.env["CUDA_VISIBLE_DEVICES"] == expected
    assert launch.argv == argv + TWO_GPU_FLAGS[server]


@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_cpu_fallback_adds_no_gpu_flags(plugins, server, argv):
    """No GPU chosen (on_unavailable: cpu): CUDA sees none, and no plugin adds a GPU flag."""
    gpus = [make_gpu(0, free=2), make_gpu(1, free=2)]
    request = make_request(server, gpus, 1, min_free_memory=8 * GiB, on_unavailable="cpu",
                           options={"cuda_memory_pool": "256MiB"} if server == "triton" else {})
    decision = plan(plugins, request)
    assert decision.ok and decision.chosen == [] and decision.fallback == "cpu"
    launch = Launch(argv=list(argv))
    plugins.prepare_launch(request, decision, launch)
    assert launch.argv == argv
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert not any(k in launch.env for k in ("GGML_VK_VISIBLE_DEVICES", "OLLAMA_SCHED_SPREAD"))


@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_plugins_leave_other_servers_alone(plugins, server, argv):
    """A `server: generic` service running this very command gets the CUDA variables only."""
    _, launch = prepare(plugins, "generic", argv, 2, gpus=four_gpus([]))
    assert launch.argv == argv
    assert launch.notes == []
    assert launch.env["CUDA_VISIBLE_DEVICES"] == uuids(0, 1)
    assert set(launch.env) == {"CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES", "CORTEX_GPU_COUNT", "CORTEX_GPU_UUIDS",
                               "CORTEX_GPU_INDICES", "CORTEX_HOOK_UNIT"}


@pytest.mark.parametrize("server, argv, n, expected_tail, note", [
    ("vllm", ["vllm", "serve", "m", "-dp", "2"], 4, ["--tensor-parallel-size", "2"], "data parallel 2"),
    ("vllm", ["vllm", "serve", "m", "--data_parallel_size=2", "-pp", "2"], 4, ["--tensor-parallel-size", "1"],
     "pipeline parallel 2 / data parallel 2"),
    ("vllm", ["vllm", "serve", "m", "-dp", "3"], 4, ["--tensor-parallel-size", "1"], "cannot be split"),
    ("sglang", ["python", "-m", "sglang.launch_server", "--dp-size", "2"], 4, ["--tp-size", "2"],
     "data parallel 2"),
    ("sglang", ["python", "-m", "sglang.launch_server", "--pp-size=2"], 2, ["--tp-size", "1"], "pipeline 2"),
])
def test_tensor_parallel_counts_the_other_parallel_groups(plugins, server, argv, n, expected_tail, note):
    _, launch = prepare(plugins, server, argv, n=n)
    assert launch.argv[-2:] == expected_tail
    assert note in notes_text(launch)
