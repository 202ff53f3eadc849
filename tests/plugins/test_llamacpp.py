"""llama.cpp's plugin: --tensor-split and --main-gpu for several GPUs, the Vulkan device list."""

import functools
import os

import pytest

from cortex_hook.model import Launch, Process
from cortex_hook.planner import plan

from ..helpers.servers import (
    LLAMA,
    MIG_UUID,
    THEIRS,
    check_rewrite,
    four_gpus,
    make_request,
    mig_gpus,
    notes_text,
    prepare,
    uuids,
)


# -- llama.cpp ---------------------------------------------------------------------------------------


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


def test_llama_split_counts_the_units_own_memory_as_free(plugins):
    gpus = four_gpus()

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
