"""cortex-hook plugin for Hugging Face Text Generation Inference (`server: tgi`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: tgi`."""
    return ["tgi"]
