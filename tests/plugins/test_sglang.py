"""SGLang's plugin: --tp-size, and a --base-gpu-id that CUDA_VISIBLE_DEVICES makes wrong."""

import pytest

from ..helpers.servers import SGLANG, THEIRS, check_rewrite, prepare


# -- SGLang ------------------------------------------------------------------------------------------


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
