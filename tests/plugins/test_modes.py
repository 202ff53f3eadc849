"""Every server plugin's notes follow the launch's real mode: a wrapper (exec/supervise) rewrites
the argv, so nothing is said about passing flags in ExecStart=, even where the wrapper has not
started yet (the lease unit, argv None); in env mode nothing rewrites the command, so the plan
says what ExecStart= must carry, checks it when it knows it, and never rewrites it."""

import pytest

from ..helpers.servers import ALL, POOL, VLLM, notes_text, prepare

COUNT = "${CORTEX_GPU_COUNT}"


@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_the_lease_unit_of_a_wrapped_unit_gives_no_env_mode_advice(plugins, server, argv):
    options = {"cuda_memory_pool": "256MiB"} if server == "triton" else {}
    _, launch = prepare(plugins, server, None, 2, mode="wrapper", options=options)
    assert launch.argv is None
    assert "env mode" not in notes_text(launch) and "ExecStart=" not in notes_text(launch), launch.notes


@pytest.mark.parametrize("server, argv, note", [
    ("vllm", None, f"env mode: pass --tensor-parallel-size {COUNT} in ExecStart="),
    ("sglang", None, f"env mode: pass --tp-size {COUNT} in ExecStart="),
    ("triton", None, f"env mode: options.cuda_memory_pool is not applied (nothing rewrites ExecStart=); pass "
                     f"{POOL}=0:268435456 {POOL}=1:268435456 there, or install with --mode exec or supervise"),
    ("vllm", VLLM, f"env mode: pass --tensor-parallel-size {COUNT} in ExecStart= (it does not set it)"),
    ("vllm", VLLM + ["-tp", "4"], "env mode: ExecStart= sets --tensor-parallel-size 4; with this plan it should "
                                  f"be 2 (--tensor-parallel-size {COUNT})"),
    ("tgi", ["text-generation-launcher", "--num-shard", "1"],
     f"env mode: ExecStart= sets --num-shard 1; with this plan it should be 2 (--num-shard {COUNT})"),
])
def test_env_mode_says_what_execstart_must_carry(plugins, server, argv, note):
    options = {"cuda_memory_pool": "256MiB"} if server == "triton" else {}
    _, launch = prepare(plugins, server, argv, 2, mode="env", options=options)
    assert launch.argv == argv  # never rewritten
    assert note in launch.notes, launch.notes


@pytest.mark.parametrize("server, argv", [
    ("vllm", VLLM + ["--tensor-parallel-size", COUNT]),
    ("vllm", VLLM + ["--tensor-parallel-size", "$CORTEX_GPU_COUNT"]),  # systemd's whole-word form
    ("vllm", VLLM + ["-tp=2"]),
    ("sglang", ["python", "-m", "sglang.launch_server", "--tp", COUNT]),
    ("tgi", ["text-generation-launcher"]),  # TGI shards over every visible GPU by itself
    ("llama.cpp", ["llama-server", "-m", "/m.gguf"]),  # llama.cpp splits by free memory by itself
    ("triton", ["tritonserver", f"{POOL}=0:1"]),  # the admin's own pool flag
    ("ollama", ["ollama", "serve"]),
])
def test_env_mode_is_quiet_when_the_command_is_right(plugins, server, argv):
    options = {"cuda_memory_pool": "256MiB"} if server == "triton" else {}
    _, launch = prepare(plugins, server, argv, 2, mode="env", options=options)
    assert launch.argv == argv
    assert not [n for n in launch.notes if "ExecStart=" in n or "the command sets" in n], launch.notes


def test_one_gpu_needs_no_tensor_parallel_advice(plugins):
    """vLLM's default is one GPU: an env-mode unit with one GPU needs no flag."""
    _, launch = prepare(plugins, "vllm", None, 1, mode="env")
    assert "env mode" not in notes_text(launch)


def test_a_wrapped_command_that_passes_the_count_itself_is_not_contradicted(plugins):
    """`plan` shows `${CORTEX_GPU_COUNT}` as written (only the start fills it in); it means the
    count, so it is not "the command sets … ; cortex-hook would set 2"."""
    _, launch = prepare(plugins, "vllm", VLLM + ["--tensor-parallel-size", COUNT], 2)
    assert launch.argv == VLLM + ["--tensor-parallel-size", COUNT]
    assert "the command sets" not in notes_text(launch)
