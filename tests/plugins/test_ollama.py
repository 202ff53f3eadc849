"""Ollama's plugin: environment only, OLLAMA_SCHED_SPREAD for several GPUs."""

import pytest

from ..helpers.servers import OLLAMA, prepare, uuids


# -- Ollama ------------------------------------------------------------------------------------------


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
