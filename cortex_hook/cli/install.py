"""Putting cortex-hook in front of units: `install`/`uninstall` a unit's drop-in, and the
systemd generator (`install-generator`, and `generate`, which systemd runs)."""

import os
import sys

from ..errors import CortexError
from ..files.atomic import write_atomic
from ..policy.load import load_policy
from ..systemd import generator
from ..systemd.dropin import install as install_dropin
from ..systemd.dropin import uninstall as uninstall_dropin
from ..systemd.dropin import validate_target
from ..systemd.program import Options


def _options(ctx, args):
    """Where the installed commands find their files: what the command line or environment named
    is baked into the drop-in, the defaults are not."""
    return Options(getattr(args, "program", None), policy=ctx.policy_given, state=ctx.state_given,
                   runtime_dir=ctx.runtime_dir, root=getattr(args, "root", "/"))


def _policy_service(ctx, unit):
    """The policy's service for UNIT when the policy can be read (for WatchdogSec=), else None."""
    try:
        return load_policy(ctx.policy_path).service_for(unit.replace("@.service", "@x.service"))
    except CortexError:
        return None


def install(ctx, args):
    """Write (or with --dry-run print) a unit's drop-in."""
    unit = validate_target(args.unit)
    path, text = install_dropin(unit, args.mode, _options(ctx, args), root=args.root, dry_run=args.dry_run,
                                service=_policy_service(ctx, unit))
    if args.dry_run:
        print(f"# {path}")
        print(text, end="")
    else:
        print(f"wrote {path}; now: systemctl daemon-reload && systemctl restart {unit}")
    return 0


def uninstall(ctx, args):
    """Remove a unit's drop-in."""
    path = uninstall_dropin(args.unit, root=args.root)
    print(f"removed {path}; now: systemctl daemon-reload" if path else f"{args.unit}: no cortex-hook drop-in")
    return 0


def install_generator(ctx, args):
    """Write the generator script into ROOT/etc/systemd/system-generators."""
    options = _options(ctx, args)
    argv = []
    for flag, value in (("--policy", options.policy), ("--state", options.state),
                        ("--runtime-dir", options.runtime_dir)):
        if value:
            argv += [flag, os.path.abspath(value)]
    argv += ["generate", "--program", options.program]
    directory = os.path.join(args.root, "etc/systemd/system-generators")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, "cortex-hook-generator")
    # sys.executable as is, not its realpath: a venv's bin/python is what makes the venv importable
    write_atomic(path, generator.script(os.path.abspath(sys.executable), argv), mode=0o755)
    print(f"wrote {path}; now: systemctl daemon-reload")
    return 0


def generate(ctx, args):
    """Run as a systemd generator (NORMAL_DIR EARLY_DIR LATE_DIR); always exits 0."""
    return generator.main(ctx, args.dirs, args.program)
