"""`supervise`, the wrapper in ExecStart= that stays, and tells systemd when the server is ready."""

from ..supervisor import run_supervise
from ..systemd.journal import speak_as_cortex_hook
from ..systemd.unitname import normalize_unit


def supervise(ctx, args):
    """Run and supervise the server."""
    speak_as_cortex_hook()  # in the server's unit: `journalctl -t cortex-hook -u UNIT` finds our lines
    return run_supervise(ctx, normalize_unit(args.unit), list(args.server or []), args.argv0)
