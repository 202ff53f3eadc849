"""The server plugins' tests: nothing from the test runner's environment reaches a plugin."""

import pytest

# Variables a plugin reads from the environment it runs in: none may leak in from the test runner.
SERVER_ENV = ("LLAMA_ARG_TENSOR_SPLIT", "LLAMA_ARG_MAIN_GPU", "LLAMA_ARG_HOST", "LLAMA_ARG_PORT", "NUM_SHARD",
              "HOSTNAME", "PORT", "OLLAMA_HOST", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CORTEX_HOOK_UNIT")


@pytest.fixture(autouse=True)
def clean_server_env(monkeypatch):
    """Unset every SERVER_ENV variable for the test."""
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
