"""`cortex-hook` command line. Each command imports only what it needs: the hook runs on the
start path of every inference server.

Exit codes: 0 ok, 2 usage, 69 no GPU satisfies the service, 70 internal error, 73 cannot write
an output file, 74 state database unusable, 75 timed out (driver or `wait`), 77 unsafe file
permissions, 78 bad policy.
"""

import argparse
import os
import sys

from .errors import EXIT_SOFTWARE, EXIT_STATE, CortexError


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
        from .log import error
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


class _Skipped:
    """Stands in for the parsers of commands not being run: building all of them on every start
    of every server costs more than parsing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


_GLOBAL_VALUE_OPTIONS = ("--policy", "--state", "--runtime-dir")


def command_of(argv):
    """The subcommand word in ARGV (after the global options), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _GLOBAL_VALUE_OPTIONS:
            i += 2
            continue
        if not word.startswith("-"):
            return word
        i += 1
    return None


def build_parser(only=None):
    """The argument parser; with ONLY, just that subcommand's parser is built in full."""
    p = _Parser(prog="cortex-hook", description="Pick the GPUs an inference server gets when systemd starts it.")
    p.add_argument("--version", action="version", version=f"cortex-hook {_version()}")
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
    s = cmd("plan", "dry run: which GPUs UNIT would get now, and why (changes nothing); "
                    "`-- COMMAND...` shows how the server command would be rewritten "
                    "(default: the unit's own ExecStart=)")
    s.add_argument("unit")
    s.add_argument("--json", action="store_true")

    s = cmd("allocate", "choose GPUs for UNIT, lease them, write its env file")
    s.add_argument("unit")
    s.add_argument("--json", action="store_true")
    s.add_argument("--holder-pid", type=int, metavar="PID",
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
    ps.add_argument("rank", type=int)
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
    s.add_argument("-n", type=int, default=20, metavar="N")
    s.add_argument("--json", action="store_true")
    s = cmd("validate", "check a policy file without touching anything")
    s.add_argument("file", nargs="?")
    s = cmd("plugins", "list loaded plugins and the hooks each implements")
    s.add_argument("--json", action="store_true")
    s = cmd("install", "write the drop-in that puts cortex-hook in front of UNIT")
    s.add_argument("unit", help="a service, or a template such as vllm@.service (every instance)")
    s.add_argument("--mode", choices=("env", "exec", "supervise"), default="env",
                   help="env: env file only; exec: the wrapper becomes the server; "
                        "supervise: the wrapper stays and tells systemd when the server is ready")
    s.add_argument("--root", default="/", help="install into this root (image builds, tests)")
    s.add_argument("--program", help="path of cortex-hook to write into the drop-in (default: this one)")
    s.add_argument("--dry-run", action="store_true", help="print the drop-in instead of writing it")
    s = cmd("uninstall", "remove the drop-in cortex-hook wrote for UNIT")
    s.add_argument("unit")
    s.add_argument("--root", default="/")
    s = cmd("install-generator", "install the systemd generator (drop-ins from the policy's install: keys)")
    s.add_argument("--root", default="/")
    s.add_argument("--program", help="path of cortex-hook the generated drop-ins call")
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
    s = cmd("demo", "run the main job on a simulated 6-GPU box with a sample policy")
    s.add_argument("--keep", metavar="DIR", help="keep the demo's state and env files in DIR")
    return p


def _version():
    from . import __version__
    return __version__


# -- helpers ------------------------------------------------------------------------------------
def _unit(name):
    from .unitname import normalize_unit
    return normalize_unit(name)


def _policy(args, cached=True):
    """The policy; cached=True reads it from its parsed cache in the runtime dir when unchanged."""
    from .policy import load_policy
    cache_dir = _trusted_runtime_dir(args) if cached else None
    return load_policy(args.policy, cache_dir=cache_dir)


def _trusted_runtime_dir(args):
    """The runtime dir if it exists and only root (or we) can change it, else None."""
    import stat

    from .safety import stat_is_trusted
    directory = _runtime_dir(args)
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    return directory if stat.S_ISDIR(st.st_mode) and stat_is_trusted(st) else None


def _state(args, create=True):
    from .state import State
    return State.open(args.state, create=create)


def _runtime_dir(args):
    from .runtime import runtime_dir
    return runtime_dir(args.runtime_dir)


def _print_json(obj):
    import json
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _gpus(args, policy, state=None):
    from .allocation import discover
    from .plugins import load_plugins
    gpus = discover(load_plugins(), policy, frozenset({"processes", "full"}))
    if state is not None:
        state.remember_gpus(gpus)
    return gpus


def _resolve(args, refs):
    """Resolve GPU references (needs the inventory, so the policy) -> uuids."""
    from .gpuref import resolve_gpu
    policy = _policy(args)
    with _state(args) as state:
        gpus = _gpus(args, policy, state)
        seen = state.seen_gpus()
    return [resolve_gpu(r, gpus, seen) for r in refs]


# -- commands -----------------------------------------------------------------------------------
def cmd_status(args):
    """Print the GPU table."""
    from .explain import gpu_rows, render_status
    policy = _policy(args)
    with _state(args) as state:
        gpus = _gpus(args, policy, state)
        rows = gpu_rows(gpus, policy, state.snapshot(), state.seen_gpus())
    if args.json:
        _print_json({"gpus": rows})
    else:
        print(render_status(rows))
    return 0


def cmd_plan(args):
    """Dry run for one unit."""
    from .allocation import plan_unit
    from .explain import render_decision
    from .plugins import load_plugins
    unit = _unit(args.unit)
    policy = _policy(args)
    argv = _server_argv(args)
    if not argv:
        from .unitfile import unit_command
        try:
            argv = unit_command(unit)
        except CortexError:
            argv = None
    with _state(args) as state:
        decision = plan_unit(unit, policy, load_plugins(), state, os.environ, argv)
    if args.json:
        _print_json(decision.to_json())
    else:
        print(render_decision(decision))
    return 0 if decision.ok else 69


def cmd_allocate(args):
    """Lease GPUs for one unit and write its env file."""
    from .allocation import allocate
    from .errors import UnavailableError
    from .explain import render_decision
    from .plugins import load_plugins
    unit = _unit(args.unit)
    policy = _policy(args)

    notifier = None

    def waiting(decision, left):
        nonlocal notifier
        from .notify import Notifier
        notifier = notifier or Notifier()  # under Type=notify this shows in `systemctl status`
        notifier.status(f"waiting for a GPU ({left:.0f}s left): {decision.summary}")

    with _state(args) as state:
        try:
            decision, _ = allocate(unit, policy, load_plugins(), state, os.environ, _runtime_dir(args),
                                   holder_pid=args.holder_pid, on_wait=waiting)
        except UnavailableError as exc:
            if exc.decision is not None:  # the explanation on stdout; stderr gets the one-line error
                if args.json:
                    _print_json(exc.decision.to_json())
                else:
                    print(render_decision(exc.decision, show_env=False), flush=True)
            raise
    if args.json:
        _print_json(decision.to_json())
    else:
        print(render_decision(decision))
    return 0


def cmd_release(args):
    """Give back a unit's GPUs."""
    from .allocation import release
    from .state import state_path
    unit = _unit(args.unit)
    if not os.path.exists(state_path(args.state)):  # nothing was ever allocated: create nothing
        from .runtime import clear_start
        clear_start(_runtime_dir(args), unit)
        print(f"{unit}: held no GPU")
        return 0
    with _state(args) as state:
        uuids = release(unit, state, _runtime_dir(args))
    print(f"{unit}: released {', '.join(uuids)}" if uuids else f"{unit}: held no GPU")
    return 0


def cmd_leases(args):
    """List (and optionally reap) leases."""
    import time

    from .holders import lease_alive
    with _state(args) as state:
        reaped = state.reap(lease_alive) if args.reap else []
        leases = state.leases()
    if args.json:
        _print_json({"leases": [dict(unit=l.unit, uuid=l.uuid, sharing=l.sharing, pid=l.pid,
                                     pid_start=l.pid_start, boot_id=l.boot_id, cgroup=l.cgroup,
                                     invocation=l.invocation, since=l.since, alive=lease_alive(l))
                                for l in leases],
                     "reaped": [dict(unit=l.unit, uuid=l.uuid) for l in reaped]})
        return 0
    for l in reaped:
        print(f"reaped {l.unit} {l.uuid} (holder gone)")
    if not leases:
        print("no leases")
    for l in leases:
        holder = f"cgroup {l.cgroup}" if l.cgroup else f"pid {l.pid}"
        alive = "" if lease_alive(l) else "  (holder gone: `leases --reap` drops it)"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(l.since))
        print(f"{l.unit:<32} {l.uuid}  {l.sharing:<9} {holder}  since {since}{alive}")
    return 0


def cmd_priority(args):
    """list | set | order | clear."""
    if args.action == "list":
        return _priority_list(args)
    if args.action == "set":
        if args.rank < 0:
            from .errors import UsageError
            raise UsageError("rank must be 0 (first) or more")
        (uuid,) = _resolve(args, [args.gpu])
        with _state(args) as state:
            state.set_priority(uuid, args.rank)
    elif args.action == "order":
        uuids = _resolve(args, args.gpus)
        if len(set(uuids)) != len(uuids):
            from .errors import UsageError
            raise UsageError("a GPU is named twice in the order")
        with _state(args) as state:
            state.set_priority_order(uuids)
    else:
        uuids = _resolve(args, args.gpus) if args.gpus else None
        with _state(args) as state:
            state.clear_priorities(set(uuids) if uuids else None)
    return _priority_list(args)


def _priority_list(args):
    policy = _policy(args)
    with _state(args) as state:
        gpus = _gpus(args, policy, state)
        ranked = state.priorities()
        seen = state.seen_gpus()
    present = {g.uuid: g for g in gpus if g.uuid}
    rows = [{"rank": rank, "uuid": uuid, "present": uuid in present,
             "index": present[uuid].index if uuid in present else None,
             "name": present[uuid].name if uuid in present else seen.get(uuid, (None, "?"))[1]}
            for uuid, rank, _ in ranked]
    unranked = [g for g in gpus if g.uuid and g.uuid not in {u for u, _, _ in ranked}]
    if getattr(args, "json", False):
        _print_json({"priority": rows, "unranked": [g.uuid for g in unranked]})
        return 0
    if not rows:
        print("no priority set: GPUs rank by score alone")
    for r in rows:
        where = f"{'GPU ' + str(r['index']) if r['present'] else 'absent':<8}"
        print(f"{r['rank']:>4}  {where} {r['uuid']}  {r['name']}")
    for g in unranked:
        print(f"{'-':>4}  {g.label:<8} {g.uuid}  {g.name}  (no rank: after every ranked GPU)")
    return 0


def cmd_drain(args):
    """Drain a GPU."""
    (uuid,) = _resolve(args, [args.gpu])
    with _state(args) as state:
        state.drain(uuid, args.reason)
    print(f"drained {uuid}: {args.reason}")
    return 0


def cmd_undrain(args):
    """Undrain a GPU."""
    (uuid,) = _resolve(args, [args.gpu])
    with _state(args) as state:
        had = state.undrain(uuid)
    print(f"undrained {uuid}" if had else f"{uuid} was not drained")
    return 0


def cmd_history(args):
    """Recent decisions."""
    import time
    unit = _unit(args.unit) if args.unit else None
    with _state(args, create=False) as state:
        rows = state.history(unit, args.n)
    if args.json:
        _print_json({"history": rows})
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
        what = r["detail"].get("summary") or ", ".join(r["gpus"]) or "-"
        print(f"{when}  {r['action']:<8} {r['unit']:<28} {what}")
    return 0


def cmd_validate(args):
    """Check a policy file (and that every server it names has a plugin)."""
    from .allocation import check_server
    from .plugins import load_plugins
    from .policy import load_policy
    path = args.file or args.policy
    policy = load_policy(path)  # never the cache: validate reads the file itself
    plugins = load_plugins()
    for svc in policy.services:
        check_server(plugins, policy, svc)
    print(f"{policy.path}: ok ({len(policy.services)} service{'s' if len(policy.services) != 1 else ''}, "
          f"inventory {policy.inventory})")
    return 0


def cmd_plugins(args):
    """Loaded plugins and their hooks."""
    from .plugins import disabled_plugins, load_plugins
    impls = load_plugins().implementations()
    if args.json:
        _print_json({"plugins": impls, "disabled": sorted(disabled_plugins())})
        return 0
    for name, hooks in impls.items():
        print(f"{name}: {', '.join(hooks)}")
    blocked = disabled_plugins()
    if blocked:
        print(f"disabled by CORTEX_HOOK_DISABLE_PLUGINS: {', '.join(sorted(blocked))}")
    return 0


def _install_options(args, program=None):
    """Where installed commands find their files: explicit flags or environment win over defaults."""
    from .dropin import Options, program_path
    return Options(program or getattr(args, "program", None) or program_path(),
                   policy=args.policy or os.environ.get("CORTEX_HOOK_POLICY"),
                   state=args.state or os.environ.get("CORTEX_HOOK_STATE"),
                   runtime_dir=_runtime_dir(args), root=getattr(args, "root", "/"))


def _policy_service(args, unit):
    """The policy's service for UNIT when the policy can be read (for WatchdogSec=), else None."""
    from .policy import load_policy
    try:
        return load_policy(args.policy).service_for(unit.replace("@.service", "@x.service"))
    except CortexError:
        return None


def cmd_install(args):
    """Write (or print) a unit's drop-in."""
    from .dropin import install, validate_target
    unit = validate_target(args.unit)
    path, text = install(unit, args.mode, _install_options(args), root=args.root, dry_run=args.dry_run,
                         service=_policy_service(args, unit))
    if args.dry_run:
        print(f"# {path}")
        print(text, end="")
    else:
        print(f"wrote {path}; now: systemctl daemon-reload && systemctl restart {unit}")
    return 0


def cmd_uninstall(args):
    """Remove a unit's drop-in."""
    from .dropin import uninstall
    path = uninstall(args.unit, root=args.root)
    print(f"removed {path}; now: systemctl daemon-reload" if path else f"{args.unit}: no cortex-hook drop-in")
    return 0


GENERATOR_SCRIPT = """#!{python} -I
# The cortex-hook systemd generator, written by `cortex-hook install-generator`.
# systemd runs it at boot and on every daemon-reload; it writes drop-ins for the
# policy's services that have `install:`. It never asks the GPU driver and never fails.
import sys
from cortex_hook.cli import main
sys.exit(main({argv!r} + sys.argv[1:]))
"""


def cmd_install_generator(args):
    """Install the generator script into ROOT/etc/systemd/system-generators."""
    from .envfile import write_atomic
    options = _install_options(args)
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
    write_atomic(path, GENERATOR_SCRIPT.format(python=os.path.abspath(sys.executable), argv=argv), mode=0o755)
    print(f"wrote {path}; now: systemctl daemon-reload")
    return 0


def cmd_generate(args):
    """Run as a systemd generator; always exits 0."""
    from .generator import main as generator_main
    from .policy import policy_path

    def options():
        return _install_options(args, args.program), policy_path(args.policy), _runtime_dir(args)
    return generator_main(args.dirs, options)


def _server_argv(args):
    """The server command given after `--` (split off before argparse sees the line)."""
    return list(getattr(args, "server", None) or [])


def cmd_exec(args):
    """Become the server."""
    from .launch import run_exec
    run_exec(_unit(args.unit), _server_argv(args), args.argv0, args)
    return 0


def cmd_supervise(args):
    """Run and supervise the server."""
    from .launch import run_supervise
    return run_supervise(_unit(args.unit), _server_argv(args), args.argv0, args)


def cmd_demo(args):
    """The embedded demo."""
    from .demo.run import run_demo
    return run_demo(args.keep)


COMMANDS = {name[4:].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("cmd_")}


def main(argv=None):
    """Entry point of the `cortex-hook` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    server = None
    if "--" in argv:  # everything after the first `--` is the server's, options included
        cut = argv.index("--")
        argv, server = argv[:cut], argv[cut + 1:]
    command = command_of(argv)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    if server is not None and args.command not in ("plan", "exec", "supervise"):
        build_parser().error(f"`{args.command}` takes no command after --")
    args.server = server
    try:
        return COMMANDS[args.command](args)
    except CortexError as exc:
        from .log import error
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line, traceback only on request
        import sqlite3
        from .log import error
        if isinstance(exc, sqlite3.Error):
            error(f"state database error: {exc}")
            return EXIT_STATE
        if os.environ.get("CORTEX_HOOK_DEBUG"):
            import traceback
            traceback.print_exc()
        error(f"internal error: {type(exc).__name__}: {exc} (set CORTEX_HOOK_DEBUG=1 for a traceback)")
        return EXIT_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
