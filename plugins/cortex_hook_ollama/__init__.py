"""cortex-hook plugin for Ollama (`server: ollama`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: ollama`."""
    return ["ollama"]
