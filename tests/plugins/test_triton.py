"""Triton's plugin: a CUDA memory pool per visible GPU, and a failed model named in one line."""

import pytest

from ..helpers.servers import POOL, THEIRS, TRITON, MiB256, check_rewrite, prepare, uuids


# -- Triton ------------------------------------------------------------------------------------------


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


def test_triton_failure_reason_is_the_gist_not_the_traceback():
    from cortex_hook_triton import _first_line
    trace = "Traceback (most recent call last):\n  File \"model.py\", line 9\nRuntimeError: weights missing"
    assert _first_line(trace) == "RuntimeError: weights missing"
    assert _first_line("Internal: failed to load 'x'\nmore") == "Internal: failed to load 'x'"
    assert len(_first_line("y" * 500)) == 200
