"""`exec`, the wrapper in ExecStart= that becomes the server (same pid, zero cost once running)."""

from ..launch import run_exec
from ..systemd.unitname import normalize_unit


def exec(ctx, args):  # noqa: A001 (named after the command)
    """Become the server."""
    run_exec(ctx, normalize_unit(args.unit), list(args.server or []), args.argv0)
    return 0
