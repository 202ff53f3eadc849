"""The server's launch as the plugins shape it: its own command line, or, when the command runs
a container engine (`podman run … IMAGE CMD…`), the container's command inside the engine's,
which is given exactly the chosen GPUs (containers/)."""

import os

from .errors import UsageError
from .model import Launch

ENGINE_WORDS = ("podman", "docker", "env")  # argv[0] of a command that may run a container engine


def shape(plugins, request, decision, argv, mode=None):
    """The Launch of DECISION for the server command ARGV (None: not known, as in the lease unit):
    env and argv as the plugins shape them. For a container engine's command the plugins see the
    container's own command, and the engine's options are then rewritten (containers/rewrite.py).
    UsageError for an engine command line that cannot be split faithfully."""
    parts = None
    if argv and os.path.basename(argv[0]) in ENGINE_WORDS:
        from .containers.split import split  # only for a command that may run a container

        parts = split(argv)
    launch = Launch(argv=None if argv is None else list(parts.command if parts else argv), mode=mode)
    plugins.prepare_launch(request, decision, launch)
    if parts is not None and launch.argv is not None:
        from .containers.rewrite import contain, published

        launch.inside = list(launch.argv)
        launch.argv, notes = contain(parts, launch, decision.chosen)
        launch.ports = published(parts)
        launch.notes.extend(notes)
    return launch


def readiness(plugins, request, launch):
    """The server plugin's readiness probe for LAUNCH; in a container, read from the container's
    own command and moved to the port the engine publishes for it. UsageError when the server's
    port is not published (nothing on the host could reach it)."""
    if launch.inside is None:
        return plugins.readiness_probe(request, launch)
    probe = plugins.readiness_probe(request, Launch(**dict(launch.as_dict(), argv=launch.inside)))
    target = getattr(probe, "inner", probe)
    if probe is None or launch.ports.get("*") == "*":
        return probe
    host_port = launch.ports.get(str(target.port))
    if host_port is None:
        raise UsageError(f"{request.unit}: the server listens on port {target.port} inside its container, "
                         f"which the engine does not publish: add -p {target.port}:{target.port} "
                         "(or --network host)")
    target.port = int(host_port)
    if target.host in ("0.0.0.0", "::"):
        target.host = "127.0.0.1"
    return probe
