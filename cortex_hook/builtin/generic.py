"""Built-in `generic` server: environment only, for any server without a plugin of its own."""

from ..hookspecs import hookimpl


@hookimpl
def cortex_server_names():
    """`server: generic` (the default) gets the CUDA environment and nothing else."""
    return ["generic"]


@hookimpl(tryfirst=True)
def cortex_readiness_probe(request, launch):
    """The policy's `readiness:` URL, for any server: the admin's word beats a plugin's guess."""
    if request.service.readiness:
        from ..probe import probe_from_url
        return probe_from_url(request.service.readiness)
    return None
