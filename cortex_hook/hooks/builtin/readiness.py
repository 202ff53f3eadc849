"""Built-in readiness: the policy's `readiness:` URL, for any server (the admin's word beats a
server plugin's guess)."""

from ..markers import hookimpl


@hookimpl(tryfirst=True)
def cortex_readiness_probe(request, launch):
    """A probe for the service's `readiness:` URL, if it has one."""
    if request.service.readiness:
        from ...probe import probe_from_url  # json and socket: only the supervisor needs them
        return probe_from_url(request.service.readiness)
    return None
