"""The six server plugins (llama.cpp, vLLM, Triton, SGLang, TGI, Ollama): how each rewrites the
server's argv and environment for the GPUs chosen, where and how it decides the server is ready
(against the stand-in server's flavour of each, a real HTTP server in a subprocess), the plugin
options the policy validator accepts, and `plan` reading a unit's own ExecStart=.

Rewriting is checked in-process (Request/Decision as the planner builds them, then every plugin's
prepare_launch) and end to end through `cortex-hook plan --json UNIT -- CMD`.
"""

import contextlib
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from cortex_hook.model import Gpu, Launch
from cortex_hook.planner import plan
from cortex_hook.systemd import unitfile
from cortex_hook.probe import FAILED, READY, WAITING, CompletionSmokeProbe, HttpProbe

from ..helpers import builders
from ..helpers.box import gpu_desc, uuid_of
from ..helpers.builders import GiB, uuid
from ..helpers.instruments import STANDIN


# Variables a plugin reads from the environment it runs in: none may leak in from the test runner.
SERVER_ENV = ("LLAMA_ARG_TENSOR_SPLIT", "LLAMA_ARG_MAIN_GPU", "LLAMA_ARG_HOST", "LLAMA_ARG_PORT", "NUM_SHARD",
              "HOSTNAME", "PORT", "OLLAMA_HOST", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CORTEX_HOOK_UNIT")


@pytest.fixture(autouse=True)
def clean_server_env(monkeypatch):
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)


# -- building requests and decisions in-process ----------------------------------------------------
def make_gpu(i, free=None, pci=None, **kw):
    """GPU i of an idle box: 24 GiB, with 24, 20, 16, 12 GiB free for GPUs 0..3 (so the planner
    ranks them 0, 1, 2, 3), PCI bus order = index order unless PCI says otherwise."""
    return builders.make_gpu(i, free=24 - 4 * i if free is None else free, name="NVIDIA L4", pci=pci, **kw)


def four_gpus(links=None, pci_reversed=False):
    """Four GPUs. LINKS: None = the driver does not say; else the NVLink pairs, e.g. [(0, 1)]."""
    gpus = [make_gpu(i, pci=f"00000000:{0x40 - 0x10 * i:02X}:00.0" if pci_reversed else None) for i in range(4)]
    if links is not None:
        for g in gpus:
            g.nvlink_peers = frozenset(uuid(b if a == g.index else a) for a, b in links if g.index in (a, b))
    return gpus


MIG_UUID = "MIG-11111111-2222-4333-8444-555555555555"


def mig_gpus():
    """One GPU in MIG mode (not schedulable itself) with one 3g.40gb instance."""
    parent = make_gpu(0, mig_enabled=True)
    inst = Gpu(index=0, uuid=MIG_UUID, name="NVIDIA A100 MIG 3g.40gb", pci_bus_id=parent.pci_bus_id,
               memory_total=40 * GiB, memory_free=40 * GiB, memory_used=0, utilization=0, temperature=40,
               numa_node=0, parent_uuid=parent.uuid, mig_index=0)
    return [parent, inst]


def make_request(server, gpus, n=1, options=None, visible_devices="uuid", **svc):
    """The request of `llm.service`, served by SERVER, for N of GPUS."""
    return builders.make_request(gpus, unit="llm.service", server=server, gpus=n, visible_devices=visible_devices,
                                 options=dict(options or {}), **svc)


def prepare(plugins, server, argv, n=1, gpus=None, env=None, **svc):
    """Plan for SERVER on GPUS (four_gpus() by default) and let every plugin prepare the launch of
    ARGV (None: env-file mode). Returns (decision, launch)."""
    request = make_request(server, four_gpus() if gpus is None else gpus, n, **svc)
    decision = plan(plugins, request)
    assert decision.ok, decision.summary
    launch = Launch(argv=None if argv is None else list(argv), env=dict(env or {}))
    plugins.prepare_launch(request, decision, launch)
    return decision, launch


def probe_for(plugins, server, argv=None, env=None, **svc):
    request = make_request(server, four_gpus(), 1, **svc)
    return plugins.readiness_probe(request, Launch(argv=argv, env=dict(env or {})))


def notes_text(launch):
    return "\n".join(launch.notes)


def check_rewrite(launch, expected_argv, notes_in=(), notes_out=()):
    assert launch.argv == expected_argv
    text = notes_text(launch)
    for needle in notes_in:
        assert needle in text, (needle, launch.notes)
    for needle in notes_out:
        assert needle not in text, (needle, launch.notes)


def uuids(*indices):
    return ",".join(uuid(i) for i in indices)


THEIRS = "(options.flags: theirs keeps the command's)"


# -- llama.cpp ---------------------------------------------------------------------------------------
LLAMA = ["llama-server", "-m", "/models/m.gguf", "--port", "18123"]


@pytest.mark.parametrize("argv, n, options, expected, notes_in, notes_out", [
    pytest.param(LLAMA, 1, {}, LLAMA, [], ["--tensor-split", "--main-gpu"], id="1gpu-nothing-added"),
    pytest.param(LLAMA, 2, {}, LLAMA + ["--tensor-split", "24,20", "--main-gpu", "0"],
                 ["--tensor-split 24,20: in proportion to each GPU's free memory (GiB)",
                  "--main-gpu 0: GPU 0 (the first chosen, highest-ranked GPU)"], [], id="2gpus"),
    pytest.param(LLAMA, 4, {}, LLAMA + ["--tensor-split", "24,20,16,12", "--main-gpu", "0"], [], [], id="4gpus"),
    pytest.param(LLAMA + ["-ts", "3,1"], 1, {}, LLAMA + ["-ts", "3,1"], [], ["--tensor-split"],
                 id="1gpu-admin-split-untouched"),
    pytest.param(LLAMA + ["-ts", "3,1"], 2, {}, LLAMA + ["-ts", "3,1", "--main-gpu", "0"],
                 [f"the command sets --tensor-split 3,1; cortex-hook would set 24,20 {THEIRS}"], [],
                 id="short-ts-theirs-by-default"),
    pytest.param(LLAMA + ["--tensor-split=3,1"], 2, {"flags": "theirs"},
                 LLAMA + ["--tensor-split=3,1", "--main-gpu", "0"],
                 [f"the command sets --tensor-split 3,1; cortex-hook would set 24,20 {THEIRS}"], [],
                 id="long-eq-ts-theirs"),
    pytest.param(LLAMA + ["-ts", "3,1"], 2, {"flags": "ours"}, LLAMA + ["--tensor-split", "24,20", "--main-gpu", "0"],
                 ["--tensor-split 24,20 replaces the command's 3,1 (options.flags: ours)"], [THEIRS],
                 id="short-ts-ours"),
    pytest.param(["llama-server", "--tensor-split=3,1", "-m", "/models/m.gguf"], 2, {"flags": "ours"},
                 ["llama-server", "-m", "/models/m.gguf", "--tensor-split", "24,20", "--main-gpu", "0"],
                 ["replaces the command's 3,1"], [], id="long-eq-ts-ours"),
    pytest.param(LLAMA + ["-ts", "3,1", "--tensor-split", "2,2"], 2, {"flags": "ours"},
                 LLAMA + ["--tensor-split", "24,20", "--main-gpu", "0"], ["replaces the command's 2,2"], [],
                 id="given-twice-ours-once"),
    pytest.param(LLAMA + ["--tensor-split", "24,20"], 2, {}, LLAMA + ["--tensor-split", "24,20", "--main-gpu", "0"],
                 [], ["the command sets --tensor-split"], id="same-value-no-disagreement"),
    pytest.param(LLAMA + ["-mg", "1"], 2, {}, LLAMA + ["-mg", "1", "--tensor-split", "24,20"],
                 [f"the command sets --main-gpu 1; cortex-hook would set 0 {THEIRS}"], [], id="short-mg-theirs"),
    pytest.param(LLAMA + ["--main-gpu", "1"], 2, {"flags": "ours"},
                 LLAMA + ["--tensor-split", "24,20", "--main-gpu", "0"],
                 ["--main-gpu 0 replaces the command's 1 (options.flags: ours)"], [], id="long-mg-ours"),
])
def test_llama_argv(plugins, argv, n, options, expected, notes_in, notes_out):
    _, launch = prepare(plugins, "llama.cpp", argv, n, options=options)
    check_rewrite(launch, expected, notes_in, notes_out)


def test_llama_split_env_var_with_theirs_keeps_the_environment(plugins, monkeypatch):
    """LLAMA_ARG_TENSOR_SPLIT in the unit's environment is the admin's split: kept, and said so."""
    monkeypatch.setenv("LLAMA_ARG_TENSOR_SPLIT", "3,1")
    _, launch = prepare(plugins, "llama.cpp", LLAMA, 2)
    check_rewrite(launch, LLAMA + ["--main-gpu", "0"],
                  [f"the command sets --tensor-split $LLAMA_ARG_TENSOR_SPLIT; cortex-hook would set 24,20 {THEIRS}"])
    assert "LLAMA_ARG_TENSOR_SPLIT" not in launch.env


def test_llama_split_env_var_in_launch_env_counts_as_set(plugins):
    _, launch = prepare(plugins, "llama.cpp", LLAMA, 2, env={"LLAMA_ARG_MAIN_GPU": "1"})
    check_rewrite(launch, LLAMA + ["--tensor-split", "24,20"],
                  ["the command sets --main-gpu $LLAMA_ARG_MAIN_GPU; cortex-hook would set 0"])
    assert launch.env["LLAMA_ARG_MAIN_GPU"] == "1"


def effective(launch, flags, env_name):
    """The value the server ends up with: its command-line flag wins over its environment variable
    (llama.cpp and TGI's clap both read the env only when the flag is absent)."""
    from cortex_hook.serverkit import flag_value
    value = flag_value(launch.argv, *flags)
    if value is not None:
        return value
    return launch.env.get(env_name, os.environ.get(env_name))


@pytest.mark.parametrize("server, env_name, flags, argv, n, ours", [
    pytest.param("llama.cpp", "LLAMA_ARG_TENSOR_SPLIT", ("--tensor-split", "-ts"), LLAMA, 2, "24,20", id="llama"),
    pytest.param("tgi", "NUM_SHARD", ("--num-shard",), ["text-generation-launcher", "--model-id", "m"], 2, "2",
                 id="tgi"),
])
def test_flags_ours_also_beats_the_environment_variable(plugins, monkeypatch, server, env_name, flags, argv, n, ours):
    """`options.flags: ours` means cortex-hook's value wins, also over the admin's value given
    as LLAMA_ARG_TENSOR_SPLIT / NUM_SHARD (adding the flag does it: llama.cpp warns "environment
    variable is set, but will be overwritten by command line argument"; clap, TGI's parser, also
    prefers the flag). The note must not say "options.flags: ours keeps the command's"."""
    monkeypatch.setenv(env_name, "9")
    _, launch = prepare(plugins, server, argv, n, options={"flags": "ours"})
    assert effective(launch, flags, env_name) == ours, (launch.argv, launch.notes)
    assert "options.flags: ours keeps" not in notes_text(launch)


@pytest.mark.parametrize("visible, gpus, expected_cvd, expected_vk, note", [
    pytest.param("uuid", four_gpus, uuids(0, 1), "0,1", None, id="uuid"),
    pytest.param("index", four_gpus, "0,1", "0,1", None, id="index"),
    pytest.param("index", functools.partial(four_gpus, pci_reversed=True), "3,2", "3,2",
                 "CUDA index differs from nvidia-smi's: GPU 0 is CUDA 3, GPU 1 is CUDA 2", id="index-pci-order"),
    pytest.param("uuid", functools.partial(four_gpus, pci_reversed=True), uuids(0, 1), "3,2", None,
                 id="uuid-pci-order"),
])
def test_llama_environment(plugins, visible, gpus, expected_cvd, expected_vk, note):
    _, launch = prepare(plugins, "llama.cpp", LLAMA, 2, gpus=gpus(), visible_devices=visible)
    assert launch.env["CUDA_VISIBLE_DEVICES"] == expected_cvd
    assert launch.env["GGML_VK_VISIBLE_DEVICES"] == expected_vk  # Vulkan: PCI-bus-ordered indices
    assert launch.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert launch.env["CORTEX_GPU_COUNT"] == "2"
    if note:
        assert note in launch.notes
    else:
        assert not any("CUDA index differs" in n for n in launch.notes)


def test_llama_mig_gets_the_instance_uuid_and_no_vulkan_list(plugins):
    _, launch = prepare(plugins, "llama.cpp", LLAMA, 1, gpus=mig_gpus(), visible_devices="index")
    assert launch.env["CUDA_VISIBLE_DEVICES"] == MIG_UUID
    assert "GGML_VK_VISIBLE_DEVICES" not in launch.env
    assert launch.argv == LLAMA
    assert "MIG instances are always named by UUID in CUDA_VISIBLE_DEVICES" in launch.notes


def test_llama_unknown_free_memory_splits_equally(plugins):
    gpus = four_gpus()
    for g in gpus:
        g.memory_free = None
    _, launch = prepare(plugins, "llama.cpp", LLAMA, 2, gpus=gpus)
    assert launch.argv[-4:] == ["--tensor-split", "1,1", "--main-gpu", "0"]
    assert "--tensor-split 1,1: equal parts (free memory unknown)" in launch.notes


# -- vLLM --------------------------------------------------------------------------------------------
VLLM = ["vllm", "serve", "/models/m", "--port", "18124"]


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


UUID_NOTE = "vLLM gets PCI-bus-ordered indices, not UUIDs (it crashes on UUIDs: vllm#13815)"


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


# -- Triton ------------------------------------------------------------------------------------------
TRITON = ["tritonserver", "--model-repository", "/models", "--http-port", "18125"]
POOL = "--cuda-memory-pool-byte-size"
MiB256 = 256 * 2**20


@pytest.mark.parametrize("argv, n, options, expected, notes_in", [
    pytest.param(TRITON, 2, {}, TRITON, [], id="no-option-untouched"),
    pytest.param(TRITON, 1, {"cuda_memory_pool": "256MiB"}, TRITON + [f"{POOL}=0:{MiB256}"],
                 [f"{POOL} 256MiB for each of the 1 visible GPUs"], id="1gpu"),
    pytest.param(TRITON, 2, {"cuda_memory_pool": "256MiB"}, TRITON + [f"{POOL}=0:{MiB256}", f"{POOL}=1:{MiB256}"],
                 [f"{POOL} 256MiB for each of the 2 visible GPUs"], id="2gpus"),
    pytest.param(TRITON, 4, {"cuda_memory_pool": "1GiB"}, TRITON + [f"{POOL}={i}:{2**30}" for i in range(4)], [],
                 id="4gpus"),
    pytest.param(TRITON + [POOL, "0:1000"], 2, {"cuda_memory_pool": "256MiB"}, TRITON + [POOL, "0:1000"],
                 [f"the command sets {POOL}; cortex-hook would set 0:{MiB256}, 1:{MiB256} {THEIRS}"],
                 id="theirs"),
    pytest.param(TRITON + [f"{POOL}=0:1000", POOL, "1:1000"], 2, {"cuda_memory_pool": "256MiB", "flags": "ours"},
                 TRITON + [f"{POOL}=0:{MiB256}", f"{POOL}=1:{MiB256}"], [], id="ours-replaces-every-one"),
])
def test_triton_argv(plugins, argv, n, options, expected, notes_in):
    _, launch = prepare(plugins, "triton", argv, n, options=options)
    check_rewrite(launch, expected, notes_in)


@pytest.mark.parametrize("visible, expected", [("uuid", uuids(0, 1)), ("index", "0,1")])
def test_triton_environment(plugins, visible, expected):
    _, launch = prepare(plugins, "triton", None, 2, options={"cuda_memory_pool": "256MiB"}, visible_devices=visible)
    assert launch.argv is None
    assert launch.env["CUDA_VISIBLE_DEVICES"] == expected


# -- SGLang ------------------------------------------------------------------------------------------
SGLANG = ["python", "-m", "sglang.launch_server", "--model-path", "/models/m", "--port", "18126"]


@pytest.mark.parametrize("argv, n, options, expected, notes_in, notes_out", [
    pytest.param(SGLANG, 1, {}, SGLANG + ["--tp-size", "1"], [], [], id="1gpu"),
    pytest.param(SGLANG, 2, {}, SGLANG + ["--tp-size", "2"], ["--tp-size 2: 2 GPUs"], [], id="2gpus"),
    pytest.param(SGLANG, 4, {}, SGLANG + ["--tp-size", "4"], [], [], id="4gpus"),
    pytest.param(SGLANG + ["--tp", "2"], 4, {}, SGLANG + ["--tp", "2"],
                 [f"the command sets --tp-size 2; cortex-hook would set 4 {THEIRS}"], [], id="tp-theirs"),
    pytest.param(SGLANG + ["--tp-size=2"], 4, {"flags": "ours"}, SGLANG + ["--tp-size", "4"],
                 ["--tp-size 4 replaces the command's 2 (options.flags: ours)"], [], id="tp-size-eq-ours"),
    pytest.param(SGLANG + ["--base-gpu-id", "1"], 2, {}, SGLANG + ["--base-gpu-id", "1", "--tp-size", "2"],
                 ["--base-gpu-id 1 counts from the first *visible* GPU: with CUDA_VISIBLE_DEVICES set by "
                  "cortex-hook it should be 0"], [], id="base-gpu-id-pointed-out"),
    pytest.param(SGLANG + ["--base-gpu-id", "0"], 2, {}, SGLANG + ["--base-gpu-id", "0", "--tp-size", "2"],
                 [], ["--base-gpu-id"], id="base-gpu-id-0-fine"),
])
def test_sglang_argv(plugins, argv, n, options, expected, notes_in, notes_out):
    _, launch = prepare(plugins, "sglang", argv, n, options=options)
    check_rewrite(launch, expected, notes_in, notes_out)


def test_sglang_tensor_parallel_size_alias_is_the_admins_flag(plugins):
    """SGLang declares --tensor-parallel-size as an alias of --tp-size (server_args.py: tp_size,
    aliases=["--tensor-parallel-size"]). The admin's value must be kept (flags: theirs), not
    followed by a second `--tp-size 4` that argparse lets win."""
    argv = SGLANG + ["--tensor-parallel-size", "2"]
    _, launch = prepare(plugins, "sglang", argv, 4)
    check_rewrite(launch, argv, ["the command sets --tp-size 2; cortex-hook would set 4"])


# -- TGI ---------------------------------------------------------------------------------------------
TGI = ["text-generation-launcher", "--model-id", "/models/m", "--port", "18127"]


@pytest.mark.parametrize("argv, n, options, expected, notes_in", [
    pytest.param(TGI, 1, {}, TGI + ["--num-shard", "1"], [], id="1gpu"),
    pytest.param(TGI, 2, {}, TGI + ["--num-shard", "2"], ["--num-shard 2: 2 GPUs"], id="2gpus"),
    pytest.param(TGI, 4, {}, TGI + ["--num-shard", "4"], [], id="4gpus"),
    pytest.param(TGI + ["--num-shard", "1"], 2, {}, TGI + ["--num-shard", "1"],
                 [f"the command sets --num-shard 1; cortex-hook would set 2 {THEIRS}"], id="theirs"),
    pytest.param(TGI + ["--num-shard=1"], 2, {"flags": "ours"}, TGI + ["--num-shard", "2"],
                 ["--num-shard 2 replaces the command's 1 (options.flags: ours)"], id="eq-ours"),
])
def test_tgi_argv(plugins, argv, n, options, expected, notes_in):
    _, launch = prepare(plugins, "tgi", argv, n, options=options)
    check_rewrite(launch, expected, notes_in)


def test_tgi_num_shard_in_the_environment_is_the_admins(plugins, monkeypatch):
    monkeypatch.setenv("NUM_SHARD", "1")
    _, launch = prepare(plugins, "tgi", TGI, 2)
    check_rewrite(launch, TGI, [f"the command sets --num-shard $NUM_SHARD; cortex-hook would set 2 {THEIRS}"])


# -- Ollama ------------------------------------------------------------------------------------------
OLLAMA = ["ollama", "serve"]


@pytest.mark.parametrize("n, visible, argv, expected_cvd, spread", [
    pytest.param(1, "uuid", OLLAMA, uuids(0), None, id="1gpu"),
    pytest.param(2, "uuid", OLLAMA, uuids(0, 1), "1", id="2gpus-spread"),
    pytest.param(4, "uuid", OLLAMA, uuids(0, 1, 2, 3), "1", id="4gpus-spread"),
    pytest.param(2, "index", OLLAMA, "0,1", "1", id="index"),
    pytest.param(2, "uuid", None, uuids(0, 1), "1", id="env-mode"),
])
def test_ollama_environment_only(plugins, n, visible, argv, expected_cvd, spread):
    _, launch = prepare(plugins, "ollama", argv, n, visible_devices=visible)
    assert launch.argv == argv  # Ollama takes no GPU flags
    assert launch.env["CUDA_VISIBLE_DEVICES"] == expected_cvd
    assert launch.env.get("OLLAMA_SCHED_SPREAD") == spread
    assert ("OLLAMA_SCHED_SPREAD=1: spread models over the GPUs given" in launch.notes) == (spread == "1")


# -- every plugin ------------------------------------------------------------------------------------
ALL = [("llama.cpp", LLAMA), ("vllm", VLLM), ("triton", TRITON), ("sglang", SGLANG), ("tgi", TGI),
       ("ollama", OLLAMA)]


def pool(server):
    return {"cuda_memory_pool": "256MiB"} if server == "triton" else {}


ONE_DEVICE_FLAGS = {"llama.cpp": [], "vllm": ["--tensor-parallel-size", "1"], "triton": [f"{POOL}=0:{MiB256}"],
                    "sglang": ["--tp-size", "1"], "tgi": ["--num-shard", "1"], "ollama": []}
TWO_GPU_FLAGS = {"llama.cpp": ["--tensor-split", "24,20", "--main-gpu", "0"],
                 "vllm": ["--tensor-parallel-size", "2"], "triton": [f"{POOL}=0:{MiB256}", f"{POOL}=1:{MiB256}"],
                 "sglang": ["--tp-size", "2"], "tgi": ["--num-shard", "2"], "ollama": []}


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


# -- end to end: `cortex-hook plan --json UNIT -- CMD` -----------------------------------------------
def plan_json(box, unit, *cmd, order="documented"):
    args = ["plan", unit, "--json", "--", *cmd] if order == "documented" else ["plan", "--json", unit, "--", *cmd]
    r = box.cli(*args)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_e2e_every_server_two_gpus(box, server, argv):
    box.write_gpus([gpu_desc(0), gpu_desc(1, memory_used="4GiB"), gpu_desc(2, memory_used="8GiB")])
    options = "\n    options: {cuda_memory_pool: 256MiB}" if server == "triton" else ""
    box.write_policy(f"services:\n  - match: llm.service\n    server: {server}\n    gpus: 2{options}\n")
    out = plan_json(box, "llm.service", *argv)
    assert out["gpus"] == [uuid_of(0), uuid_of(1)]
    assert out["argv"] == argv + TWO_GPU_FLAGS[server]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == ("0,1" if server == "vllm" else f"{uuid_of(0)},{uuid_of(1)}")
    assert out["env"].get("OLLAMA_SCHED_SPREAD") == ("1" if server == "ollama" else None)


def test_e2e_vllm_without_nvlink(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2, memory_used="20GiB")])
    box.write_policy("""\
        services:
          - match: llm.service
            server: vllm
            gpus: 2
            options:
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB}
        """)
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m", "-tp", "4", "--port", "18124")
    assert out["argv"] == ["vllm", "serve", "/models/m", "-tp", "4", "--port", "18124"]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert out["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert out["env"]["NCCL_P2P_LEVEL"] == "PHB"
    assert UUID_NOTE in out["notes"]
    assert f"the command sets --tensor-parallel-size 4; cortex-hook would set 2 {THEIRS}" in out["notes"]
    assert any("GPU 0, GPU 1 are not all joined by NVLink" in n for n in out["notes"])


def test_e2e_vllm_with_nvlink_and_ours(box):
    box.write_gpus([gpu_desc(0, nvlink={"peers": {"1": 12}}), gpu_desc(1)])
    box.write_policy("""\
        services:
          - match: llm.service
            server: vllm
            gpus: 2
            options:
              flags: ours
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB}
        """)
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m", "--tensor-parallel-size=4")
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "2"]
    assert "NCCL_P2P_LEVEL" not in out["env"]
    assert not any("NVLink" in n for n in out["notes"])


def test_e2e_llama_split_follows_free_memory_and_rank(box):
    """GPU 1 has more free memory, so it ranks first: first in CUDA_VISIBLE_DEVICES, first in
    the split, main GPU 0 (= GPU 1 after renumbering)."""
    box.write_gpus([gpu_desc(0, memory_used="4GiB"), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: llama.cpp\n    gpus: 2\n")
    out = plan_json(box, "llm.service", "llama-server", "-m", "/models/m.gguf")
    assert out["gpus"] == [uuid_of(1), uuid_of(0)]
    assert out["argv"] == ["llama-server", "-m", "/models/m.gguf", "--tensor-split", "24,20", "--main-gpu", "0"]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(1)},{uuid_of(0)}"
    assert out["env"]["GGML_VK_VISIBLE_DEVICES"] == "1,0"


def test_e2e_triton_pool_ours(box):
    box.write_gpus([gpu_desc(i) for i in range(4)])
    box.write_policy("""\
        services:
          - match: triton.service
            server: triton
            gpus: 4
            visible_devices: index
            options: {cuda_memory_pool: 64MiB, flags: ours}
        """)
    out = plan_json(box, "triton.service", "tritonserver", "--model-repository", "/m", f"{POOL}=0:1")
    assert out["argv"] == ["tritonserver", "--model-repository", "/m"] + [f"{POOL}={i}:{64 * 2**20}" for i in range(4)]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_e2e_vllm_on_a_mig_instance(box):
    box.write_gpus([gpu_desc(0, name="NVIDIA A100-SXM4-80GB", memory_total="80GiB", mig_mode=1,
                             mig_devices=[{"uuid": MIG_UUID, "memory_total": "40GiB", "memory_used": 0}])])
    box.write_policy("services:\n  - match: llm.service\n    server: vllm\n")
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m")
    assert out["gpus"] == [MIG_UUID]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == MIG_UUID
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "1"]


def test_e2e_plan_unit_json_as_documented(box):
    """README and `--help`: `plan UNIT [--json]`, and `-- COMMAND...` after it. `plan UNIT --json
    -- CMD` must print JSON and rewrite CMD, not take `--json --` as the start of the command."""
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: vllm\n    gpus: 2\n")
    r = box.cli("plan", "llm.service", "--json", "--", "vllm", "serve", "/models/m")
    assert r.returncode == 0, r.stderr
    try:
        out = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"`plan UNIT --json -- CMD` printed text, not JSON (--json taken as the command?):\n"
                    f"{r.stdout[-300:]}")
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "2"]


def test_e2e_json_before_the_unit_works_too(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: sglang\n    gpus: 2\n")
    out = plan_json(box, "llm.service", "python", "-m", "sglang.launch_server", "--json", order="flag-first")
    assert out["argv"] == ["python", "-m", "sglang.launch_server", "--json", "--tp-size", "2"]  # the server's --json


# -- `plan UNIT` without a command: the unit's own ExecStart= ----------------------------------------
UNIT_TEXT = r"""[Unit]
Description=chat model

[Service]
Environment=LLAMA_ARG_CTX_SIZE=2048
# the model path has a space; the key file name an escaped one
ExecStart=-/opt/llama/bin/llama-server \
    -m "/srv/models/my model.gguf" --alias 'chat bot' \
    --api-key-file /etc/llm/key\x20file --system-prompt-file "/etc/llm/say \"hi\".txt" \
    --port 18123 --slot-save-path /var/lib/llm/100%%/$${USER}
Restart=on-failure
"""
UNIT_WORDS = ["/opt/llama/bin/llama-server", "-m", "/srv/models/my model.gguf", "--alias", "chat bot",
              "--api-key-file", "/etc/llm/key file", "--system-prompt-file", '/etc/llm/say "hi".txt',
              "--port", "18123", "--slot-save-path", "/var/lib/llm/100%/${USER}"]


def write_unit(root, name, text):
    path = root / "etc" / "systemd" / "system" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unit_command_unquotes_like_systemd(tmp_path):
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    assert unitfile.unit_command("llm.service", str(tmp_path)) == UNIT_WORDS


@pytest.mark.parametrize("mode", ["exec", "supervise"])
def test_unit_command_unwraps_our_own_wrapper(tmp_path, mode):
    from cortex_hook.systemd.dropin import Options, install
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    path, text = install("llm.service", mode, Options("/usr/local/bin/cortex-hook", policy="/etc/cortex-hook/p.yaml",
                                                      runtime_dir="/run/cortex-hook"), root=str(tmp_path))
    assert "ExecStart=-/usr/local/bin/cortex-hook --policy /etc/cortex-hook/p.yaml" in text  # really wrapped
    assert unitfile.unit_command("llm.service", str(tmp_path)) == UNIT_WORDS


def test_unit_command_unwraps_an_argv0_wrapper(tmp_path):
    """`ExecStart=@/usr/bin/python3 llm-server ARGS`: the wrapper takes --argv0 llm-server."""
    from cortex_hook.systemd.dropin import Options, install
    write_unit(tmp_path, "llm.service",
               "[Service]\nExecStart=@/usr/bin/python3 llm-server -u /opt/llm/serve.py --port 18123\n")
    _, text = install("llm.service", "supervise", Options("/usr/local/bin/cortex-hook", runtime_dir="/run/ch"),
                      root=str(tmp_path))
    assert "--argv0 llm-server --" in text
    assert unitfile.unit_command("llm.service", str(tmp_path)) == [
        "/usr/bin/python3", "-u", "/opt/llm/serve.py", "--port", "18123"]


def test_unit_command_of_an_unwrapped_argv0_unit(tmp_path):
    """Unwrapped, `@/usr/bin/python3 llm-server ARGS` runs /usr/bin/python3 with ARGS (llm-server
    is only argv[0]); the command shown must not have llm-server as an argument, and must match
    what the same unit gives once wrapped (above)."""
    write_unit(tmp_path, "llm.service",
               "[Service]\nExecStart=@/usr/bin/python3 llm-server -u /opt/llm/serve.py --port 18123\n")
    assert unitfile.unit_command("llm.service", str(tmp_path)) == [
        "/usr/bin/python3", "-u", "/opt/llm/serve.py", "--port", "18123"]


def test_unit_command_follows_drop_in_overrides(tmp_path):
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    write_unit(tmp_path, "llm.service.d/10-port.conf",
               "[Service]\nExecStart=\nExecStart=/opt/llama/bin/llama-server --port=18999\n")
    assert unitfile.unit_command("llm.service", str(tmp_path)) == ["/opt/llama/bin/llama-server", "--port=18999"]
    assert unitfile.unit_command("absent.service", str(tmp_path)) is None


def _cli_plan(box, monkeypatch, capsys, root, *plan_args):
    from cortex_hook import cli
    monkeypatch.setattr(unitfile, "unit_command", functools.partial(unitfile.unit_command, root=str(root)))
    rc = cli.main(["--policy", box.policy, "--state", box.state, "--runtime-dir", box.runtime, *plan_args])
    return rc, capsys.readouterr().out


@pytest.fixture
def wrapped_llama_unit(box, tmp_path):
    from cortex_hook.systemd.dropin import Options, install
    root = tmp_path / "root"
    write_unit(root, "llm.service", UNIT_TEXT)
    install("llm.service", "supervise", Options("/usr/local/bin/cortex-hook", runtime_dir="/run/ch"), root=str(root))
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: llama.cpp\n    gpus: 2\n")
    return root


def test_plan_without_a_command_rewrites_the_units_own(box, monkeypatch, capsys, wrapped_llama_unit):
    rc, out = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "--json", "llm.service")
    assert rc == 0
    assert json.loads(out)["argv"] == UNIT_WORDS + ["--tensor-split", "24,24", "--main-gpu", "0"]
    rc, text = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "llm.service")
    assert rc == 0 and "--tensor-split 24,24" in text and "my model.gguf" in text


def test_plan_unit_json_without_a_command_as_documented(box, monkeypatch, capsys, wrapped_llama_unit):
    """`plan UNIT --json` (the documented order) reads the unit's command too, and prints JSON."""
    rc, out = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "llm.service", "--json")
    assert rc == 0
    try:
        data = json.loads(out)
    except ValueError:
        pytest.fail(f"`plan UNIT --json` printed text (its command became ['--json']):\n{out[-300:]}")
    assert data["argv"] == UNIT_WORDS + ["--tensor-split", "24,24", "--main-gpu", "0"]


# -- probe addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("server, argv, env, host, port", [
    ("llama.cpp", ["llama-server"], {}, "127.0.0.1", 8080),
    ("llama.cpp", ["llama-server", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("llama.cpp", ["llama-server", "--port=18123", "--host=127.0.0.5"], {}, "127.0.0.5", 18123),
    ("llama.cpp", ["llama-server", "--host", "0.0.0.0", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("llama.cpp", ["llama-server"], {"LLAMA_ARG_PORT": "18123", "LLAMA_ARG_HOST": "127.0.0.6"}, "127.0.0.6", 18123),
    ("llama.cpp", ["llama-server", "--port", "18124"], {"LLAMA_ARG_PORT": "18123"}, "127.0.0.1", 18124),
    ("llama.cpp", None, {"LLAMA_ARG_PORT": "18123"}, "127.0.0.1", 18123),
    ("vllm", ["vllm", "serve", "m"], {}, "127.0.0.1", 8000),
    ("vllm", ["vllm", "serve", "m", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("vllm", ["vllm", "serve", "m", "--port=18123", "--host", "::"], {}, "127.0.0.1", 18123),
    ("triton", ["tritonserver"], {}, "127.0.0.1", 8000),
    ("triton", ["tritonserver", "--http-port", "18123"], {}, "127.0.0.1", 18123),
    ("triton", ["tritonserver", "--http-port=18123", "--http-address=127.0.0.7"], {}, "127.0.0.7", 18123),
    ("triton", ["tritonserver", "--grpc-port", "18124"], {}, "127.0.0.1", 8000),
    ("sglang", ["python", "-m", "sglang.launch_server"], {}, "127.0.0.1", 30000),
    ("sglang", ["python", "-m", "sglang.launch_server", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("sglang", ["python", "-m", "sglang.launch_server", "--port=18123"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher"], {}, "127.0.0.1", 3000),
    ("tgi", ["text-generation-launcher", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher", "-p", "18123", "--hostname", "0.0.0.0"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher"], {"PORT": "18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {}, "127.0.0.1", 11434),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "127.0.0.1:18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "http://127.0.0.1:18123/"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "0.0.0.0:18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "0.0.0.0"}, "127.0.0.1", 11434),
    ("ollama", ["ollama", "serve", "--port", "18123"], {}, "127.0.0.1", 11434),
], ids=lambda v: v if isinstance(v, str) else None)
def test_probe_address(plugins, server, argv, env, host, port):
    probe = probe_for(plugins, server, argv, env)
    assert isinstance(probe, HttpProbe)
    assert (probe.host, probe.port) == (host, port)


@pytest.mark.parametrize("where", ["launch-env", "unit-env"])
def test_probe_address_from_the_units_environment(plugins, monkeypatch, where):
    """The wrapper runs with the unit's Environment=: the probe reads it as the server does."""
    env = {"LLAMA_ARG_PORT": "18123"}
    if where == "unit-env":
        monkeypatch.setenv("LLAMA_ARG_PORT", "18123")
        env = {}
    probe = probe_for(plugins, "llama.cpp", ["llama-server"], env)
    assert (probe.host, probe.port, probe.path) == ("127.0.0.1", 18123, "/health")


@pytest.mark.parametrize("value, host, port", [
    pytest.param("[::1]:18123", "::1", 18123, id="ipv6-loopback-with-port"),
    pytest.param("http://127.0.0.1", "127.0.0.1", 80, id="scheme-without-port"),
])
def test_ollama_host_parsed_as_ollama_does(plugins, value, host, port):
    """Ollama's envconfig.Host(): net.SplitHostPort strips IPv6 brackets; a scheme without a port
    means 80/443. The probe must knock where `ollama serve` listens."""
    probe = probe_for(plugins, "ollama", ["ollama", "serve"], {"OLLAMA_HOST": value})
    assert (probe.host, probe.port) == (host, port)


@pytest.mark.parametrize("server, path", [("llama.cpp", "/health"), ("vllm", "/health"),
                                          ("triton", "/v2/health/ready"), ("sglang", "/health"),
                                          ("tgi", "/health"), ("ollama", "/")])
def test_probe_paths(plugins, server, path):
    assert probe_for(plugins, server, ["x"]).path == path


def test_vllm_smoke_test_wraps_the_health_probe(plugins):
    probe = probe_for(plugins, "vllm", ["vllm", "serve", "m", "--port", "18123"], options={"smoke_test": True})
    assert isinstance(probe, CompletionSmokeProbe)
    assert (probe.inner.host, probe.inner.port, probe.inner.path) == ("127.0.0.1", 18123, "/health")
    assert isinstance(probe_for(plugins, "vllm", ["vllm"], options={"smoke_test": False}), HttpProbe)


def test_policy_readiness_url_beats_the_plugin(plugins):
    probe = probe_for(plugins, "vllm", ["vllm", "serve", "m", "--port", "18123"], readiness="http://127.0.0.1:18999/ping")
    assert (probe.port, probe.path) == (18999, "/ping")


# -- readiness against the stand-in ------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standin:
    """The stand-in server in a subprocess; stopped by PID."""

    def __init__(self, argv, env=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []

    def wait_for(self, needle, timeout=30.0):
        """Read stdout lines until one contains NEEDLE (polling, no sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if needle in line:
                return line
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        raise AssertionError(f"{needle!r} not seen; stdout: {self.lines}; rc {self.proc.poll()}; stderr: {err}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@contextlib.contextmanager
def standin(argv, env=None):
    s = Standin(argv, env)
    try:
        yield s
    finally:
        s.stop()


def standin_cmd(*args):
    return [sys.executable, "-u", STANDIN, *args]


ADDRESSING = {  # how each server is told to listen on PORT
    "llama.cpp": lambda p: (["llama-server", "--port", str(p)], {}),
    "vllm": lambda p: (["vllm", "serve", "m", "--port", str(p)], {}),
    "triton": lambda p: (["tritonserver", "--http-port", str(p)], {}),
    "sglang": lambda p: (["python", "-m", "sglang.launch_server", "--port", str(p)], {}),
    "tgi": lambda p: (["text-generation-launcher", "--port", str(p)], {}),
    "ollama": lambda p: (["ollama", "serve"], {"OLLAMA_HOST": f"127.0.0.1:{p}"}),
}


@pytest.mark.parametrize("server", sorted(ADDRESSING))
def test_closed_port_is_waiting(plugins, server):
    port = free_port()
    argv, env = ADDRESSING[server](port)
    probe = probe_for(plugins, server, argv, env)
    assert probe.port == port
    result = probe.check()
    assert (result.state, result.detail) == (WAITING, "not listening yet")


def test_llama_loading_then_ready(plugins, tmp_path):
    port, ready, sick = free_port(), tmp_path / "loaded", tmp_path / "sick"
    argv = standin_cmd(f"--port={port}", "--ready-file", str(ready), "--unhealthy-file", str(sick))
    probe = probe_for(plugins, "llama.cpp", argv)
    assert probe.check().state == WAITING
    with standin(argv) as s:
        s.wait_for("listening")
        first = probe.check()
        assert (first.state, first.detail) == (WAITING, "503 Loading model")
        assert probe.check().state == WAITING  # still loading: no change without the file
        ready.touch()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 ok")
        sick.touch()
        assert probe.check().state == WAITING  # llama's plugin never calls a running server failed


def test_vllm_closed_until_ready_then_unhealthy(plugins, tmp_path):
    port, ready, sick = free_port(), tmp_path / "loaded", tmp_path / "dead"
    argv = standin_cmd("--flavour", "vllm", "--model", "tiny", "--port", str(port), "--ready-file", str(ready),
                       "--unhealthy-file", str(sick))
    probe = probe_for(plugins, "vllm", argv)
    with standin(argv) as s:
        s.wait_for("closed until")
        result = probe.check()
        assert (result.state, result.detail) == (WAITING, "not listening yet")
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")
        sick.touch()
        result = probe.check()
        assert result.state != READY and result.detail == "503 Service Unavailable"


def completions(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        rows = [json.loads(line) for line in f]
    return [json.loads(r["body"]) for r in rows if (r["method"], r["path"]) == ("POST", "/v1/completions")]


def test_vllm_smoke_test_ready_only_after_a_completion(plugins, tmp_path):
    port, ready, failing, log = free_port(), tmp_path / "loaded", tmp_path / "failing", str(tmp_path / "req.log")
    failing.touch()
    argv = standin_cmd("--flavour", "vllm", f"--port={port}", "--model", "tiny", "--ready-file", str(ready),
                       "--request-log", log, "--completion-fails", str(failing))
    probe = probe_for(plugins, "vllm", argv, options={"smoke_test": True})
    with standin(argv) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for("listening")
        result = probe.check()  # /health is 200, but the engine cannot generate
        assert result.state == WAITING
        assert result.detail == ("one-token completion: 500 EngineCore encountered an issue. "
                                 "See stack trace for the root cause.")
        assert probe.label == "/health + one-token completion"
        assert completions(log) == [{"model": "tiny", "prompt": "Hello", "max_tokens": 1}]
        failing.unlink()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK; one-token completion ok")
        assert len(completions(log)) == 2
        assert probe.check().state == READY and len(completions(log)) == 2  # once passed: /health alone
        assert probe.label == "/health"


def test_vllm_smoke_test_never_ready_while_completions_fail(plugins, tmp_path):
    port, log = free_port(), str(tmp_path / "req.log")
    argv = standin_cmd("--flavour", "vllm", "--port", str(port), "--model", "tiny", "--request-log", log,
                       "--completion-fails")
    probe = probe_for(plugins, "vllm", argv, options={"smoke_test": True})
    with standin(argv) as s:
        s.wait_for("listening")
        assert HttpProbe("127.0.0.1", port, "/health").check().state == READY  # health alone would say ready
        states = [probe.check().state for _ in range(3)]
        assert states == [WAITING] * 3
        assert len(completions(log)) == 3


def test_triton_closed_until_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "triton", "--model-repository", "/models", "--http-address", "127.0.0.1",
                       "--http-port", str(port), "--grpc-port", "0", "--ready-file", str(ready))
    probe = probe_for(plugins, "triton", argv)
    assert probe.port == port
    with standin(argv) as s:
        s.wait_for("closed until")
        assert (probe.check().state, probe.check().detail) == (WAITING, "not listening yet")
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_triton_broken_model_fails_the_start_naming_it(plugins, tmp_path):
    port = free_port()
    argv = standin_cmd("--flavour", "triton", "--model-repository", "/models", f"--http-port={port}",
                       "--exit-on-error=false", "--broken-model", "broken")
    probe = probe_for(plugins, "triton", argv)
    with standin(argv) as s:
        s.wait_for("listening")
        result = probe.check()
    assert result.state == FAILED
    assert result.detail.startswith("400 Bad Request; model broken unavailable: Internal: RuntimeError: "
                                    "cortex-hook test model: deliberately broken, fails to load"), result.detail
    assert "identity" not in result.detail  # the model that loaded is not blamed


def test_triton_broken_model_with_exit_on_error_never_listens(plugins, tmp_path):
    """Triton's default (--exit-on-error=true): exit 1, the port never opens (the stand-in too)."""
    port = free_port()
    argv = standin_cmd("--flavour", "triton", f"--http-port={port}", "--exit-on-error=true", "--broken-model", "b")
    with standin(argv) as s:
        assert s.proc.wait(timeout=30) == 1
        assert probe_for(plugins, "triton", argv).check().detail == "not listening yet"


def test_tgi_loading_then_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "tgi", "--model-id", "/models/m", "-p", str(port), "--ready-file", str(ready))
    probe = probe_for(plugins, "tgi", argv)
    with standin(argv) as s:
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (WAITING, "503 unhealthy")
        ready.touch()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_sglang_closed_until_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "sglang", "--model-path", "/models/m", "--port", str(port),
                       "--ready-file", str(ready))
    probe = probe_for(plugins, "sglang", argv)
    with standin(argv) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_ollama_ready_on_ollama_host(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "up"
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}"}
    argv = standin_cmd("--flavour", "ollama", "serve", "--ready-file", str(ready))
    probe = probe_for(plugins, "ollama", argv, env)
    assert probe.port == port
    with standin(argv, env) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for(f"listening on 127.0.0.1:{port}")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 Ollama is running")


def test_standin_flavour_stops_cleanly_on_sigterm(tmp_path):
    port, record = free_port(), str(tmp_path / "rec.json")
    with standin(standin_cmd("--flavour", "sglang", "--port", str(port), "--record", record)) as s:
        s.wait_for("listening")
        os.kill(s.proc.pid, signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0
    with open(record + ".signals") as f:
        assert f.read() == "SIGTERM\n"
    with open(record) as f:
        assert json.load(f)["flavour"] == "sglang"


def test_standin_default_is_still_llama(tmp_path):
    """No --flavour: the llama.cpp answers other tests rely on, byte for byte."""
    port = free_port()
    with standin(standin_cmd("--host", "127.0.0.1", "--port", str(port))) as s:
        assert s.wait_for("listening") == f"standin: listening on 127.0.0.1:{port}\n"
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert (resp.status, resp.read(), resp.version) == (200, b'{"status": "ok"}', 10)
            conn.close()
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            assert resp.status == 404 and json.loads(resp.read())["error"]["message"] == "File Not Found"
        finally:
            conn.close()


# -- options validation ------------------------------------------------------------------------------
def policy_with_options(box, server, option_lines, before=""):
    box.write_gpus([gpu_desc(0)])
    body = "services:\n" + before + f"  - match: llm.service\n    server: {server}\n    options:\n"
    body += "".join(f"      {line}\n" for line in option_lines)
    box.write_policy(body)
    with open(box.policy) as f:
        return f.read().splitlines()


def where(lines, key):
    """file line:column of KEY as an options key."""
    for i, line in enumerate(lines):
        if line.strip().startswith(key + ":"):
            return i + 1, line.index(key) + 1
    raise AssertionError(key)


def assert_policy_error(box, r, lines, key, message, position=0):
    line, col = where(lines, key)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        f"cortex-hook: {box.policy}:{line}:{col}: services[{position}].options.{key}: {message}"]


@pytest.mark.parametrize("server, option, key, message", [
    ("llama.cpp", "flag: ours", "flag", "unknown option (did you mean 'flags'?)"),
    ("vllm", "smoke_tset: true", "smoke_tset", "unknown option (did you mean 'smoke_test'?)"),
    ("vllm", "no_nvlink_evn: {NCCL_P2P_LEVEL: PHB}", "no_nvlink_evn", "unknown option (did you mean 'no_nvlink_env'?)"),
    ("triton", "cuda_memory_poll: 256MiB", "cuda_memory_poll", "unknown option (did you mean 'cuda_memory_pool'?)"),
    ("sglang", "flgas: ours", "flgas", "unknown option (did you mean 'flags'?)"),
    ("tgi", "flag: theirs", "flag", "unknown option (did you mean 'flags'?)"),
    ("ollama", "flags_: ours", "flags_", "unknown option (did you mean 'flags'?)"),
    ("vllm", "cuda_memory_pool: 1GiB", "cuda_memory_pool", "unknown option (known: flags, no_nvlink_env, smoke_test)"),
    ("ollama", "smoke_test: true", "smoke_test", "unknown option (known: flags)"),
])
def test_validate_unknown_option(box, server, option, key, message):
    lines = policy_with_options(box, server, [option])
    assert_policy_error(box, box.cli("validate"), lines, key, message)


@pytest.mark.parametrize("server, option, key, message", [
    ("triton", "cuda_memory_pool: lots", "cuda_memory_pool", "expected a size such as 20GiB, 512MiB or 24GB, got 'lots'"),
    ("triton", "cuda_memory_pool: -1", "cuda_memory_pool", "a size cannot be negative"),
    ("vllm", "smoke_test: maybe", "smoke_test", "expected true or false, got 'maybe'"),
    ("vllm", "no_nvlink_env: PHB", "no_nvlink_env", "expected a mapping of environment variable names to values"),
    ("vllm", "no_nvlink_env: {1BAD: x}", "no_nvlink_env", "expected a mapping of environment variable names to values"),
] + [(s, "flags: mine", "flags", "expected one of theirs, ours, got 'mine'")
     for s in ("llama.cpp", "vllm", "triton", "sglang", "tgi", "ollama")])
def test_validate_bad_option_value(box, server, option, key, message):
    lines = policy_with_options(box, server, ["flags: theirs", option] if key != "flags" else [option])
    assert_policy_error(box, box.cli("validate"), lines, key, message)


def test_validate_names_the_service_position_and_plan_refuses_too(box):
    lines = policy_with_options(box, "vllm", ["flags: ours", "smoke_test: maybe"],
                                before="  - match: other.service\n    server: sglang\n")
    message = "expected true or false, got 'maybe'"
    assert_policy_error(box, box.cli("validate"), lines, "smoke_test", message, position=1)
    assert_policy_error(box, box.cli("plan", "llm.service"), lines, "smoke_test", message, position=1)


def test_validate_accepts_every_documented_option(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("""\
        services:
          - match: a.service
            server: llama.cpp
            options: {flags: ours}
          - match: b.service
            server: vllm
            options:
              flags: theirs
              smoke_test: true
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB, NCCL_IB_DISABLE: 1}
          - match: c.service
            server: triton
            options: {cuda_memory_pool: 256MiB, flags: ours}
          - match: d.service
            server: sglang
            options: {flags: ours}
          - match: e.service
            server: tgi
            options: {flags: theirs}
          - match: f.service
            server: ollama
            options: {flags: theirs}
        """)
    r = box.cli("validate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{box.policy}: ok (6 services, inventory simulated)"


def test_generic_server_takes_no_options(box):
    lines = policy_with_options(box, "generic", ["flags: ours"])
    assert_policy_error(box, box.cli("validate"), lines, "flags", "server 'generic' takes no options")


# -- parallel groups, flag spellings, failure reasons ---------------------------------------------
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


def test_underscore_spelling_of_the_admins_flag_is_recognised(plugins):
    """vLLM accepts --tensor_parallel_size too: it is the admin's flag, not a reason to add ours."""
    _, launch = prepare(plugins, "vllm", ["vllm", "serve", "m", "--tensor_parallel_size=4"], n=2)
    assert launch.argv == ["vllm", "serve", "m", "--tensor_parallel_size=4"]
    assert "the command sets --tensor-parallel-size 4; cortex-hook would set 2" in notes_text(launch)


def test_llama_split_counts_the_units_own_memory_as_free(plugins):
    gpus = four_gpus()
    from cortex_hook.model import Process
    gpus[0].memory_free = 4 * 2**30
    gpus[0].processes = (Process(pid=4242, used_memory=20 * 2**30),)
    request = make_request("llama.cpp", gpus, 4)
    request.own_pids = frozenset({4242})
    decision = plan(plugins, request)
    launch = Launch(argv=["llama-server"])
    plugins.prepare_launch(request, decision, launch)
    split = launch.argv[launch.argv.index("--tensor-split") + 1].split(",")
    chosen = [g.index for g in decision.chosen]
    assert split[chosen.index(0)] == "24"  # 4 GiB free + the 20 GiB its old instance holds


def test_triton_failure_reason_is_the_gist_not_the_traceback():
    from cortex_hook_triton import _first_line
    trace = "Traceback (most recent call last):\n  File \"model.py\", line 9\nRuntimeError: weights missing"
    assert _first_line(trace) == "RuntimeError: weights missing"
    assert _first_line("Internal: failed to load 'x'\nmore") == "Internal: failed to load 'x'"
    assert len(_first_line("y" * 500)) == 200


def test_option_values_get_a_did_you_mean(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: a\n    server: vllm\n    options:\n      flags: our\n")
    r = box.cli("validate")
    assert r.returncode == 78
    assert "did you mean 'ours'?" in r.stderr
