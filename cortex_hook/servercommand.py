"""The server's launch as the plugins shape it: its own command line, or, when the command runs
a container engine (`podman run … IMAGE CMD…`), the container's command inside the engine's,
which is given exactly the chosen GPUs (containers/)."""

import os

from .model import Launch

ENGINE_WORDS = ("podman", "env")  # argv[0] of a command that may run a container engine


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
        from .containers.rewrite import contain

        launch.argv, notes = contain(parts, launch, decision.chosen)
        launch.notes.extend(notes)
    return launch
