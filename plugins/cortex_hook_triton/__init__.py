"""cortex-hook plugin for NVIDIA Triton Inference Server (`server: triton`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: triton`."""
    return ["triton"]
