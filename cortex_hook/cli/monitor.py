"""`monitor` (the daemon; systemd runs it) and `install-monitor` (its unit file)."""

import os

from ..files.atomic import write_atomic
from ..monitor.daemon import Monitor
from ..systemd import monitorunit
from ..systemd.program import Options


def monitor(ctx, args):
    """Watch every GPU until stopped (with --once: register, poll once, act, exit)."""
    return Monitor(ctx).run(once=args.once)


def install_monitor(ctx, args):
    """Write ROOT/etc/systemd/system/cortex-hook-monitor.service."""
    options = Options(args.program, policy=ctx.policy_given, state=ctx.state_given,
                      runtime_dir=ctx.runtime_dir, root=args.root)
    directory = os.path.join(args.root, "etc/systemd/system")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, monitorunit.NAME)
    write_atomic(path, monitorunit.render(options))
    print(f"wrote {path}; now: systemctl daemon-reload && systemctl enable --now {monitorunit.NAME}")
    return 0
