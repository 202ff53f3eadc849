"""`exec`, the wrapper in ExecStart= that becomes the server (same pid, zero cost once running)."""

from ..launch import run_exec
from ..systemd.journal import speak_as_cortex_hook
from ..systemd.unitname import normalize_unit


def exec(ctx, args):  # noqa: A001 (named after the command)
    """Become the server."""
    speak_as_cortex_hook()  # in the server's unit: `journalctl -t cortex-hook -u UNIT` finds our lines
    run_exec(ctx, normalize_unit(args.unit), list(args.server or []), args.argv0)
    return 0
