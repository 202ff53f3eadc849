"""vLLM's plugin: indices (never UUIDs), --tensor-parallel-size, and what it says without NVLink."""

import functools

import pytest

from ..helpers.servers import (
    MIG_UUID,
    THEIRS,
    UUID_NOTE,
    VLLM,
    check_rewrite,
    four_gpus,
    mig_gpus,
    notes_text,
    prepare,
    uuids,
)


# -- vLLM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, n, options, expected, notes_in, notes_out", [
    pytest.param(VLLM, 1, {}, VLLM + ["--tensor-parallel-size", "1"], [], [], id="1gpu"),
    pytest.param(VLLM, 2, {}, VLLM + ["--tensor-parallel-size", "2"], ["--tensor-parallel-size 2: 2 GPUs"], [],
                 id="2gpus"),
    pytest.param(VLLM, 4, {}, VLLM + ["--tensor-parallel-size", "4"], [], [], id="4gpus"),
    pytest.param(VLLM + ["-tp", "4"], 2, {}, VLLM + ["-tp", "4"],
                 [f"the command sets --tensor-parallel-size 4; cortex-hook would set 2 {THEIRS}"], [],
                 id="short-tp-theirs"),
    pytest.param(VLLM + ["--tensor-parallel-size=4"], 2, {"flags": "theirs"}, VLLM + ["--tensor-parallel-size=4"],
                 [f"the command sets --tensor-parallel-size 4; cortex-hook would set 2 {THEIRS}"], [],
                 id="long-eq-tp-theirs"),
    pytest.param(["vllm", "serve", "/models/m", "-tp", "4", "--port", "18124"], 2, {"flags": "ours"},
                 VLLM + ["--tensor-parallel-size", "2"],
                 ["--tensor-parallel-size 2 replaces the command's 4 (options.flags: ours)"], [THEIRS],
                 id="short-tp-ours"),
    pytest.param(VLLM + ["--tensor-parallel-size=4"], 2, {"flags": "ours"}, VLLM + ["--tensor-parallel-size", "2"],
                 ["replaces the command's 4"], [], id="long-eq-tp-ours"),
    pytest.param(VLLM + ["-tp", "2"], 2, {}, VLLM + ["-tp", "2"], [], ["the command sets"], id="same-value"),
    pytest.param(VLLM + ["-pp", "2"], 4, {}, VLLM + ["-pp", "2", "--tensor-parallel-size", "2"],
                 ["--tensor-parallel-size 2: 4 GPUs / pipeline parallel 2"], [], id="short-pp-halves-tp"),
    pytest.param(VLLM + ["--pipeline-parallel-size=2"], 4, {},
                 VLLM + ["--pipeline-parallel-size=2", "--tensor-parallel-size", "2"], [], [], id="long-eq-pp"),
    pytest.param(VLLM + ["-pp", "2", "-tp", "4"], 4, {}, VLLM + ["-pp", "2", "-tp", "4"],
                 ["the command sets --tensor-parallel-size 4; cortex-hook would set 2"], [], id="pp-and-tp-theirs"),
    pytest.param(VLLM + ["-pp", "2", "-tp", "1"], 4, {"flags": "ours"},
                 VLLM + ["-pp", "2", "--tensor-parallel-size", "2"], ["replaces the command's 1"], [],
                 id="pp-and-tp-ours"),
])
def test_vllm_argv(plugins, argv, n, options, expected, notes_in, notes_out):
    _, launch = prepare(plugins, "vllm", argv, n, options=options)
    check_rewrite(launch, expected, notes_in, notes_out)


@pytest.mark.parametrize("visible, gpus, n, expected, uuid_note", [
    pytest.param("uuid", four_gpus, 1, "0", True, id="uuid-1gpu"),
    pytest.param("uuid", four_gpus, 2, "0,1", True, id="uuid-2gpus"),
    pytest.param("uuid", four_gpus, 4, "0,1,2,3", True, id="uuid-4gpus"),
    pytest.param("uuid", functools.partial(four_gpus, pci_reversed=True), 2, "3,2", True, id="uuid-pci-order"),
    pytest.param("index", four_gpus, 2, "0,1", False, id="index"),
    pytest.param("index", functools.partial(four_gpus, pci_reversed=True), 2, "3,2", False, id="index-pci-order"),
])
def test_vllm_always_gets_indices(plugins, visible, gpus, n, expected, uuid_note):
    _, launch = prepare(plugins, "vllm", VLLM, n, gpus=gpus(), visible_devices=visible)
    assert launch.env["CUDA_VISIBLE_DEVICES"] == expected
    assert launch.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert (UUID_NOTE in launch.notes) == uuid_note
    assert launch.env["CORTEX_GPU_UUIDS"] == uuids(*range(n))  # the UUIDs are still there for the admin


def test_vllm_mig_instance_keeps_its_uuid(plugins):
    """A MIG instance can only be named by UUID: no index rewrite for it."""
    _, launch = prepare(plugins, "vllm", VLLM, 1, gpus=mig_gpus())
    assert launch.env["CUDA_VISIBLE_DEVICES"] == MIG_UUID
    assert UUID_NOTE not in launch.notes
    assert launch.argv == VLLM + ["--tensor-parallel-size", "1"]


NO_NVLINK_ENV = {"NCCL_P2P_LEVEL": "PHB", "NCCL_IB_DISABLE": 1}


@pytest.mark.parametrize("links, n, options, env, note", [
    pytest.param([(0, 1)], 2, {"no_nvlink_env": NO_NVLINK_ENV}, {}, None, id="joined"),
    pytest.param([], 2, {"no_nvlink_env": NO_NVLINK_ENV}, {"NCCL_P2P_LEVEL": "PHB", "NCCL_IB_DISABLE": "1"},
                 "GPU 0, GPU 1 are not all joined by NVLink: tensor parallel over PCIe (vllm#8087); "
                 "set NCCL_P2P_LEVEL=PHB, NCCL_IB_DISABLE=1", id="not-joined-with-option"),
    pytest.param([], 2, {}, {},
                 "GPU 0, GPU 1 are not all joined by NVLink: tensor parallel over PCIe (vllm#8087); "
                 "options.no_nvlink_env can set NCCL_P2P_LEVEL", id="not-joined-without-option"),
    pytest.param(None, 2, {"no_nvlink_env": {"NCCL_P2P_LEVEL": "PHB"}}, {"NCCL_P2P_LEVEL": "PHB"},
                 "GPU 0, GPU 1 may not be joined by NVLink (the driver does not say): tensor parallel over "
                 "PCIe (vllm#8087); set NCCL_P2P_LEVEL=PHB", id="driver-does-not-say"),
    pytest.param([(0, 1), (2, 3)], 4, {"no_nvlink_env": {"NCCL_P2P_LEVEL": "PHB"}}, {"NCCL_P2P_LEVEL": "PHB"},
                 "GPU 0, GPU 1, GPU 2, GPU 3 are not all joined by NVLink", id="4gpus-two-islands"),
    pytest.param([(a, b) for a in range(4) for b in range(a + 1, 4)], 4, {"no_nvlink_env": {"NCCL_P2P_LEVEL": "PHB"}},
                 {}, None, id="4gpus-all-joined"),
    pytest.param([], 1, {"no_nvlink_env": NO_NVLINK_ENV}, {}, None, id="1gpu-nothing-to-join"),
])
def test_vllm_nvlink(plugins, links, n, options, env, note):
    _, launch = prepare(plugins, "vllm", VLLM, n, gpus=four_gpus(links), options=options)
    assert {k: v for k, v in launch.env.items() if k.startswith("NCCL_")} == env
    nvlink_notes = [x for x in launch.notes if "NVLink" in x]
    if note is None:
        assert nvlink_notes == []
    else:
        assert len(nvlink_notes) == 1 and note in nvlink_notes[0], launch.notes


def test_vllm_env_mode_tells_how_to_pass_the_size(plugins):
    _, launch = prepare(plugins, "vllm", None, 2)
    assert launch.argv is None
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "env mode: pass --tensor-parallel-size ${CORTEX_GPU_COUNT} in ExecStart=" in launch.notes


def test_underscore_spelling_of_the_admins_flag_is_recognised(plugins):
    """vLLM accepts --tensor_parallel_size too: it is the admin's flag, not a reason to add ours."""
    _, launch = prepare(plugins, "vllm", ["vllm", "serve", "m", "--tensor_parallel_size=4"], n=2)
    assert launch.argv == ["vllm", "serve", "m", "--tensor_parallel_size=4"]
    assert "the command sets --tensor-parallel-size 4; cortex-hook would set 2" in notes_text(launch)
