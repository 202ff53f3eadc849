"""TGI's plugin: --num-shard."""

import pytest

from ..helpers.servers import TGI, THEIRS, check_rewrite, prepare


# -- TGI ---------------------------------------------------------------------------------------------


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
