"""The `cortex-hook` command line: read the command line, build the Context, run one command,
turn what went wrong into one line and an exit code.

Exit codes (sysexits): 0 ok, 2 usage, 69 no GPU satisfies the service, 70 internal error, 73
cannot write an output file, 74 state database unusable, 75 timed out (driver or `wait`), 77
unsafe file permissions, 78 bad policy.

Each command lives in the module commands.COMMANDS names, imported only when that command runs:
`allocate` and `release` (the start path of every server) load nothing the other commands need.
"""

import gc
import os
import sys

from ..context import Context
from ..errors import EXIT_SOFTWARE, EXIT_STATE, CortexError
from ..systemd.journal import error
from . import commands
from .fastargs import START_PATH_COMMANDS, command_of, start_path_args


def main(argv=None, exit_fast=False):
    """Run one command; returns the exit code (see the module docstring). EXIT_FAST: the caller
    ends the process with os._exit when this returns (see `run`)."""
    return _main(argv, exit_fast)[0]


def _main(argv, exit_fast):
    """-> (exit code, the command's Context, which must live until the process exits)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    server = None
    if "--" in argv:  # everything after the first `--` is the server's, options included
        cut = argv.index("--")
        argv, server = argv[:cut], argv[cut + 1:]
    args = start_path_args(argv) if server is None else None
    if args is None:
        from .parser import build_parser  # argparse: never on the start path
        args = build_parser(command_of(argv)).parse_args(argv)
        if server is not None and args.command not in commands.TAKES_SERVER_COMMAND:
            build_parser(None).error(f"`{args.command}` takes no command after --")
    args.server = server
    ctx = Context(policy=args.policy, state=args.state, runtime_dir=args.runtime_dir, fast_exit=exit_fast)
    try:
        return commands.find(args.command)(ctx, args), ctx
    except CortexError as exc:
        error(str(exc))
        return exc.exit_code, ctx
    except KeyboardInterrupt:
        return 130, ctx
    except BrokenPipeError:
        return 0, ctx
    except Exception as exc:  # a bug: one line, traceback only on request
        import sqlite3  # loaded already if the state was opened
        if isinstance(exc, sqlite3.Error):
            error(f"state database error: {exc}")
            return EXIT_STATE, ctx
        if os.environ.get("CORTEX_HOOK_DEBUG"):
            import traceback
            traceback.print_exc()
        error(f"internal error: {type(exc).__name__}: {exc} (set CORTEX_HOOK_DEBUG=1 for a traceback)")
        return EXIT_SOFTWARE, ctx


def run(argv=None):
    """The `cortex-hook` console script: `main(ARGV)`, then exit (never returns).

    For the start-path commands (allocate and release, whatever their options) the cyclic
    garbage collector is off (a process this short never needs it) and the process ends with
    os._exit once stdout and stderr are flushed. The interpreter's own teardown, mostly a final
    collection over every object, costs more than the decision (about 10 ms per start). Nothing
    is lost by skipping it: the state is committed (its connection is released by the exit, see
    State.close), files are written and renamed, and plugins are told to finish their work before
    their hook returns (README, "Write a plugin")."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fast = command_of(argv) in START_PATH_COMMANDS
    if fast:
        gc.disable()
    code, _context = _main(argv, exit_fast=fast)  # held until os._exit: it keeps the state open
    if not fast:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass
    os._exit(code)
