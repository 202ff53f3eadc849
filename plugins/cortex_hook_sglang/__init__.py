"""cortex-hook plugin for SGLang (`server: sglang`)."""

from cortex_hook import hookimpl


@hookimpl
def cortex_server_names():
    """This plugin serves `server: sglang`."""
    return ["sglang"]
