"""The `cortex-hook` argument parser (argparse), built only for the command being run.

`allocate UNIT` and `release UNIT` with the global options an installed drop-in writes never
come here: cli/fastargs.py reads those few words itself, which spares the start path of every
server importing argparse and building a parser.
"""

import argparse
import re
import sys

from .. import __version__
from ..systemd.journal import error
from .commands import COMMANDS


class _Formatter(argparse.HelpFormatter):
    """A fixed width: argparse otherwise asks shutil for the terminal size for every add_argument."""

    def __init__(self, prog, indent_increment=2, max_help_position=30, width=100):
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and a formatter that costs nothing until --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        error(f"{self.prog.split(' ', 1)[-1] if ' ' in self.prog else 'usage'}: {message} "
              f"(see `{self.prog} --help`)")
        sys.exit(2)


def _common(parser, suppress):
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--policy", metavar="FILE", default=default,
                        help="policy file (default $CORTEX_HOOK_POLICY or /etc/cortex-hook/policy.yaml)")
    parser.add_argument("--state", metavar="FILE", default=default,
                        help="state database (default $CORTEX_HOOK_STATE or /var/lib/cortex-hook/state.db)")
    parser.add_argument("--runtime-dir", metavar="DIR", default=default,
                        help="env file directory (default $CORTEX_HOOK_RUNTIME_DIR or /run/cortex-hook)")


def _bounded(low, high, what, seconds=False):
    """An argparse type: an integer from LOW to HIGH (ASCII digits; `²` is no number here), or
    with SECONDS a number of seconds (`0.5`, `2`; no `nan`, no `inf`)."""
    pattern, kind = (r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", "a number of seconds") if seconds else (r"-?[0-9]+", "a whole number")

    def parse(text):
        if not re.fullmatch(pattern, text.strip()):
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, not {text!r}")
        value = float(text) if seconds else int(text)
        if not low <= value <= high:
            span = f"{low:g} to {high:g} seconds" if seconds else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"{what} must be from {span}, not {text}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


PID = _bounded(1, 2**22, "a process id")  # the kernel's pid_max is at most 2^22
RANK = _bounded(0, 10**6, "a rank")
COUNT = _bounded(1, 10**6, "a count")
INTERVAL = _bounded(0.2, 3600, "the interval", seconds=True)


class _Skipped:
    """Stands in for the parsers of commands not being run: building all of them on every start
    of every server costs more than parsing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


def build_parser(only=None):
    """The argument parser; with ONLY (a command name), just that command's parser is built in
    full (None, or a word that is no command: all of them)."""
    if only not in COMMANDS:
        only = None
    p = _Parser(prog="cortex-hook", description="Pick the GPUs an inference server gets when systemd starts it.")
    p.add_argument("--version", action="version", version=f"cortex-hook {__version__}")
    _common(p, suppress=False)
    common = _Parser(add_help=False)
    _common(common, suppress=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name, help_text):
        if only is not None and name != only:
            return _Skipped()
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    s = cmd("status", "table of every GPU: memory, health, priority, drain, lease holder")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true",
                   help="a live table in the terminal, with the starts waiting and each unit's last decision "
                        "(q quits)")
    s.add_argument("--interval", type=INTERVAL, metavar="SECONDS",
                   help="with --watch: seconds between refreshes (default 2, at least 0.2)")
    s = cmd("plan", "dry run: which GPUs UNIT would get now, and why (changes nothing); "
                    "`-- COMMAND...` shows how the server command would be rewritten "
                    "(default: the unit's own ExecStart=)")
    s.add_argument("unit")
    s.add_argument("--json", action="store_true")

    s = cmd("allocate", "choose GPUs for UNIT, lease them, write its env file")
    s.add_argument("unit")
    s.add_argument("--json", action="store_true")
    s.add_argument("--holder-pid", type=PID, metavar="PID",
                   help="process whose life bounds the lease outside systemd (default: the caller)")
    s = cmd("release", "give back UNIT's GPUs and remove its env file (idempotent)")
    s.add_argument("unit")
    s = cmd("leases", "list leases")
    s.add_argument("--reap", action="store_true", help="first drop leases whose holder is gone")
    s.add_argument("--json", action="store_true")
    s = cmd("priority", "the admin's GPU order (ranks before every other criterion)")
    psub = s.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    psub.required = True
    pl = psub.add_parser("list", help="show the order", parents=[common])
    pl.add_argument("--json", action="store_true")
    ps = psub.add_parser("set", help="move GPU to RANK (0 = first), shifting the others", parents=[common])
    ps.add_argument("gpu")
    ps.add_argument("rank", type=RANK)
    po = psub.add_parser("order", help="set the whole order, first = best", parents=[common])
    po.add_argument("gpus", nargs="+", metavar="GPU")
    pc = psub.add_parser("clear", help="forget the order (or only the GPUs named)", parents=[common])
    pc.add_argument("gpus", nargs="*", metavar="GPU")
    s = cmd("drain", "keep new work off GPU (existing leases stay)")
    s.add_argument("gpu")
    s.add_argument("--reason", required=True)
    s = cmd("undrain", "let GPU take work again")
    s.add_argument("gpu")
    s = cmd("history", "recent decisions")
    s.add_argument("unit", nargs="?")
    s.add_argument("-n", type=COUNT, default=20, metavar="N")
    s.add_argument("--json", action="store_true")
    s = cmd("validate", "check a policy file without touching anything")
    s.add_argument("file", nargs="?")
    s = cmd("plugins", "list loaded plugins and the hooks each implements")
    s.add_argument("--json", action="store_true")
    s = cmd("install", "write the drop-in that puts cortex-hook in front of UNIT")
    s.add_argument("unit", help="a service, or a template such as vllm@.service (every instance)")
    s.add_argument("--mode", choices=("env", "exec", "supervise"),
                   help="env: env file only; exec: the wrapper becomes the server; "
                        "supervise: the wrapper stays and tells systemd when the server is ready "
                        "(default: the service's `install:` in the policy, else env; said on stderr)")
    s.add_argument("--root", default="/", help="install into this root (image builds, tests)")
    s.add_argument("--program", help="path of cortex-hook to write into the drop-in (default: this one)")
    s.add_argument("--dry-run", action="store_true", help="print the drop-in instead of writing it")
    s = cmd("uninstall", "remove the drop-in cortex-hook wrote for UNIT")
    s.add_argument("unit")
    s.add_argument("--root", default="/")
    s = cmd("install-generator", "install the systemd generator (drop-ins from the policy's install: keys)")
    s.add_argument("--root", default="/")
    s.add_argument("--program", help="path of cortex-hook the generated drop-ins call")
    s = cmd("monitor", "watch the GPUs while servers run: drain a failing GPU, move its servers, "
                       "bring it back (systemd runs it: install-monitor)")
    s.add_argument("--once", action="store_true", help="register, poll once, act, and exit")
    s = cmd("metrics", "the Prometheus metrics once (the monitor serves them at metrics: listen:)")
    s.add_argument("--textfile", metavar="FILE.prom",
                   help="replace FILE.prom atomically (node_exporter's textfile collector) instead of printing")
    s = cmd("install-monitor", "install cortex-hook-monitor.service")
    s.add_argument("--root", default="/")
    s.add_argument("--program", help="path of cortex-hook the unit calls (default: this one)")
    s = cmd("generate", "the generator itself (systemd runs it with NORMAL_DIR EARLY_DIR LATE_DIR)")
    s.add_argument("dirs", nargs="+", metavar="DIR")
    s.add_argument("--program", help=argparse.SUPPRESS)
    for name, text in (("exec", "allocate (or reuse this start's lease), then become the server: "
                                "... -- COMMAND..."),
                       ("supervise", "run the server, report STATUS=/READY=1/WATCHDOG=1 to systemd: "
                                     "... -- COMMAND...")):
        s = cmd(name, text)
        s.add_argument("--unit", required=True)
        s.add_argument("--argv0", help="argv[0] for the server (from an ExecStart=@ line)")
    s = cmd("example", "print a shipped example: `example policy`, `example unit NAME` "
                       "(no argument: list them)")
    s.add_argument("what", nargs="?", choices=("policy", "unit"))
    s.add_argument("name", nargs="?", help="the unit, e.g. vllm@.service")
    s = cmd("demo", "run the main job on a simulated 6-GPU box with a sample policy")
    s.add_argument("--keep", metavar="DIR", help="keep the demo's state and env files in DIR")
    return p
