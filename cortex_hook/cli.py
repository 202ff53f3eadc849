"""`cortex-hook` command line. Each command imports only what it needs: the hook runs on the
start path of every inference server.

Exit codes: 0 ok, 2 usage, 69 no GPU satisfies the service, 70 internal error, 73 cannot write
an output file, 74 state database unusable, 75 timed out (driver or `wait`), 77 unsafe file
permissions, 78 bad policy.
"""

import os
import sys

from .errors import EXIT_SOFTWARE, EXIT_STATE, CortexError


# -- helpers ------------------------------------------------------------------------------------
def _unit(name):
    from .unitname import normalize_unit
    return normalize_unit(name)


def _policy(args, memo_dir):
    """The policy; read from its parsed copy in MEMO_DIR (see _memo_dir) while unchanged."""
    from .policyfile import load_policy
    return load_policy(args.policy, cache_dir=memo_dir)


def _memo_dir(args):
    """The runtime dir if memos may be read and written there (it exists and only root, or we,
    can change it), else None. A command asks once and hands it to the policy and the plugins."""
    from .runtime import trusted_runtime_dir
    return trusted_runtime_dir(_runtime_dir(args))


def _state(args, create=True):
    from .state import State
    return State.open(args.state, create=create, transient=args.exit_fast)


def _runtime_dir(args):
    from .runtime import runtime_dir
    return runtime_dir(args.runtime_dir)


def _print_json(obj):
    import json
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _gpus(policy, memo_dir, state=None):
    from .allocation import discover
    from .plugins import load_plugins
    gpus = discover(load_plugins(cache_dir=memo_dir), policy, frozenset({"processes", "full"}))
    if state is not None:
        state.remember_gpus(gpus)
    return gpus


def _resolve(args, refs):
    """Resolve GPU references (needs the inventory, so the policy) -> uuids."""
    from .gpuref import resolve_gpu
    memo_dir = _memo_dir(args)
    policy = _policy(args, memo_dir)
    with _state(args) as state:
        gpus = _gpus(policy, memo_dir, state)
        seen = state.seen_gpus()
    return [resolve_gpu(r, gpus, seen) for r in refs]


# -- commands -----------------------------------------------------------------------------------
def cmd_status(args):
    """Print the GPU table."""
    from .explain import gpu_rows, render_status
    memo_dir = _memo_dir(args)
    policy = _policy(args, memo_dir)
    with _state(args) as state:
        gpus = _gpus(policy, memo_dir, state)
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
    memo_dir = _memo_dir(args)
    policy = _policy(args, memo_dir)
    argv = _server_argv(args)
    if not argv:
        from .unitfile import unit_command
        try:
            argv = unit_command(unit)
        except CortexError:
            argv = None
    with _state(args) as state:
        decision = plan_unit(unit, policy, load_plugins(cache_dir=memo_dir), state, os.environ, argv)
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
    memo_dir = _memo_dir(args)
    policy = _policy(args, memo_dir)

    notifier = None

    def waiting(decision, left):
        nonlocal notifier
        from .notify import Notifier
        notifier = notifier or Notifier()  # under Type=notify this shows in `systemctl status`
        notifier.status(f"waiting for a GPU ({left:.0f}s left): {decision.summary}")

    with _state(args) as state:
        try:
            plugins = load_plugins(cache_dir=memo_dir)
            decision, _ = allocate(unit, policy, plugins, state, os.environ, _runtime_dir(args),
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
    memo_dir = _memo_dir(args)
    policy = _policy(args, memo_dir)
    with _state(args) as state:
        gpus = _gpus(policy, memo_dir, state)
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
    from .policyfile import load_policy
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
    from .policyfile import load_policy
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
    from .policyfile import policy_path

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


# the commands ExecStartPre=+ and ExecStopPost=+ run: every server start and stop waits for them
START_PATH_COMMANDS = ("allocate", "release")
_GLOBAL_OPTIONS = {"--policy": "policy", "--state": "state", "--runtime-dir": "runtime_dir"}


def command_of(argv):
    """The subcommand word in ARGV (after the global options), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _GLOBAL_OPTIONS:
            i += 2
            continue
        if not word.startswith("-"):
            return word
        i += 1
    return None


class _Args:
    """What argparse would return, for the command lines `start_path_args` reads."""

    def __init__(self, **values):
        self.__dict__.update(values)


def start_path_args(argv):
    """The parsed ARGV if it is `[--policy F] [--state F] [--runtime-dir D] allocate|release UNIT`
    (each option one separate value word, as installed drop-ins write them), else None.

    Equal to argparse's result for those lines (a test holds the two together); anything else,
    --help included, goes to argparse."""
    values = dict.fromkeys(_GLOBAL_OPTIONS.values())
    i = 0
    while i + 1 < len(argv) and argv[i] in _GLOBAL_OPTIONS and not argv[i + 1].startswith("-"):
        values[_GLOBAL_OPTIONS[argv[i]]] = argv[i + 1]
        i += 2
    rest = argv[i:]
    if len(rest) != 2 or rest[0] not in START_PATH_COMMANDS or rest[1].startswith("-"):
        return None
    values.update(command=rest[0], unit=rest[1])
    if rest[0] == "allocate":
        values.update(json=False, holder_pid=None)
    return _Args(**values)


def main(argv=None, exit_fast=False):
    """Run one command; returns the exit code (see the module docstring). EXIT_FAST: the caller
    ends the process with os._exit when this returns (see `run`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    server = None
    if "--" in argv:  # everything after the first `--` is the server's, options included
        cut = argv.index("--")
        argv, server = argv[:cut], argv[cut + 1:]
    args = start_path_args(argv) if server is None else None
    if args is None:
        from .cliparser import build_parser
        command = command_of(argv)
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        if server is not None and args.command not in ("plan", "exec", "supervise"):
            build_parser().error(f"`{args.command}` takes no command after --")
    args.server = server
    args.exit_fast = exit_fast
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


def run(argv=None):
    """The `cortex-hook` console script: `main(ARGV)`, then exit (never returns).

    For the start-path commands (allocate and release, whatever their options) the cyclic
    garbage collector is off (a process this short never needs it) and the process ends with
    os._exit once stdout and stderr are flushed. The interpreter's own teardown, mostly a final
    collection over every object, costs more than the decision (about 10 ms per start). Nothing is lost by skipping it: the state is committed
    (its connection is released by the exit, see State.close), files are written and renamed,
    and plugins are told to finish their work before their hook returns (README, "Write a
    plugin")."""
    import gc
    argv = list(sys.argv[1:] if argv is None else argv)
    fast = command_of(argv) in START_PATH_COMMANDS
    if fast:
        gc.disable()
    code = main(argv, exit_fast=fast)
    if not fast:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
