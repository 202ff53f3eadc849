"""Built-in `generic` server: environment only, for any server without a plugin of its own."""

from ..markers import hookimpl


@hookimpl
def cortex_server_names():
    """`server: generic` (the default) gets the CUDA environment and nothing else."""
    return ["generic"]
