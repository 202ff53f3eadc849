"""cortex-hook plugin for vLLM (`server: vllm`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: vllm`."""
    return ["vllm"]
