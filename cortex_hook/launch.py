"""What a wrapper in ExecStart= (`exec`, `supervise`) runs: this start's decision, the server's
environment and argv shaped by the plugins, and for `exec` the server itself in its place.

The decision is the record the unit's lease unit wrote for this start (no driver call, no state
write; works as the unit's User=), or, outside systemd, a fresh allocation held by the wrapper's
own pid.
"""

import os
import shutil
import sys

from .allocation import allocate, check_server, service_for
from .errors import UsageError
from .files import record as records
from .holders import boot_id, invocation_of
from .model import Request, Snapshot
from .servercommand import shape
from .systemd.leaseunit import lease_unit_of


class Prepared:
    """Everything a wrapper needs: request, decision, launch (env + argv), plugins; REUSED when
    the decision came from allocate's record (the lease is the lease unit's, not the wrapper's)."""

    def __init__(self, plugins, request, decision, launch, reused):
        self.plugins, self.request, self.decision, self.launch = plugins, request, decision, launch
        self.reused = reused


def prepare(ctx, unit, argv, environ, on_wait=None):
    """Reuse this start's lease (or allocate one) and let the plugins shape env and argv."""
    if not argv:
        raise UsageError("no server command given after --")
    policy, plugins = ctx.policy(), ctx.plugins()  # the lease unit's parse and call plan, if unchanged
    check_server(plugins, policy, service_for(policy, unit))
    record = records.read_record(ctx.runtime_dir, unit)
    if record and _this_start(record, unit, environ):
        decision = record["decision"]
        request = Request(unit=unit, service=decision.service, policy=policy, snapshot=Snapshot(),
                          gpus=decision.chosen)
        launch = shape(plugins, request, decision, list(argv))
        decision.launch = launch
        return Prepared(plugins, request, decision, launch, reused=True)
    with ctx.open_state() as state:
        decision, request = allocate(ctx, unit, state, environ, holder_pid=os.getpid(), argv=argv,
                                     on_wait=on_wait)
    return Prepared(plugins, request, decision, decision.launch, reused=False)


def _this_start(record, unit, environ):
    """RECORD is the decision for this start of UNIT: made in this boot by UNIT's lease unit as it
    is active now, or (drop-ins of earlier versions) in UNIT itself, by this invocation's
    ExecStartPre."""
    made_by = record.get("invocation")
    if not made_by or record.get("boot_id") != boot_id():
        return False
    return made_by in (invocation_of(lease_unit_of(unit)), environ.get("INVOCATION_ID"))


def describe_gpus(decision):
    """`GPU-…,GPU-… (priority 0, 1)`, whole UUIDs (what every command takes back; a start's
    record keeps only the chosen GPUs, too few to know a prefix is unique), or why there is none."""
    if not decision.chosen:
        return "CPU (no GPU available)" if decision.fallback == "cpu" else "no GPU"
    names = ",".join(g.uuid for g in decision.chosen)
    prios = ", ".join("-" if v.priority is None else str(v.priority) for v in decision.verdicts if v.selected)
    return f"{names} (priority {prios})" if prios else names


def resolve_program(argv, env):
    """The executable for argv[0], searched on the server's PATH like execvp would."""
    prog = argv[0]
    if "/" in prog:
        return prog
    found = shutil.which(prog, path=env.get("PATH", os.defpath))
    if not found:
        raise UsageError(f"{prog}: command not found on PATH={env.get('PATH', os.defpath)}")
    return found


def server_env(launch):
    """The server's whole environment: ours, plus what the plugins set."""
    env = dict(os.environ)
    env.update(launch.env)
    return env


def server_command(launch, argv0=None):
    """(executable, argv) for the server: argv[0] replaced by ARGV0 (an ExecStart=@ line)."""
    env = server_env(launch)
    final = list(launch.argv)
    program = resolve_program(final, env)
    if argv0:
        final[0] = argv0
    return program, final, env


def run_exec(ctx, unit, argv, argv0):
    """Become the server: zero cost once it runs."""
    p = prepare(ctx, unit, argv, os.environ)
    program, final, env = server_command(p.launch, argv0)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(program, final, env)
    except OSError as exc:
        raise UsageError(f"cannot run {program}: {exc.strerror}") from None
