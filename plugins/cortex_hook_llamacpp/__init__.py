"""cortex-hook plugin for llama.cpp's llama-server (`server: llama.cpp`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: llama.cpp`."""
    return ["llama.cpp"]
