"""The wrappers in ExecStart=: `exec` (become the server) and `supervise` (stay, and tell systemd
when the server is really ready).

Both first get this start's decision: the record `ExecStartPre=+cortex-hook allocate` wrote for
this same invocation (no driver call, no state write; works as the unit's User=), or, outside
systemd, a fresh allocation held by the wrapper's own pid. Then the plugins prepare the server's
environment and argv.
"""

import os
import signal
import sys

from .errors import CortexError, UsageError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORWARD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PROBE_INTERVAL_S = 0.5


class Prepared:
    """Everything a wrapper needs: request, decision, launch (env + argv), plugins."""

    def __init__(self, plugins, request, decision, launch, reused):
        self.plugins, self.request, self.decision, self.launch = plugins, request, decision, launch
        self.reused = reused


def prepare(unit, argv, args, environ, on_wait=None):
    """Reuse this start's lease (or allocate one) and let the plugins shape env and argv."""
    from . import runtime
    from .allocation import check_server, service_for
    from .holders import boot_id
    from .model import Decision, Launch, Request, Snapshot, Verdict
    from .plugins import load_plugins
    from .policyfile import load_policy

    if not argv:
        raise UsageError("no server command given after --")
    directory = runtime.runtime_dir(args.runtime_dir)
    memo_dir = runtime.trusted_runtime_dir(directory)  # as the CLI's commands: cli._memo_dir
    policy = load_policy(args.policy, cache_dir=memo_dir)  # ExecStartPre's parse, if unchanged
    svc = service_for(policy, unit)
    plugins = load_plugins(cache_dir=memo_dir)  # the hook plan ExecStartPre recorded, if any
    check_server(plugins, policy, svc)
    record = runtime.read_record(directory, unit)
    invocation = environ.get("INVOCATION_ID")
    if record and invocation and record.get("invocation") == invocation and record.get("boot_id") == boot_id():
        chosen = [runtime.gpu_from_dict(g) for g in record["chosen"]]
        verdicts = [Verdict(gpu=g, priority=p, selected=True)
                    for g, p in zip(chosen, record.get("priorities") or [None] * len(chosen))]
        decision = Decision(unit=unit, service=svc, verdicts=verdicts, chosen=chosen, ok=True,
                            summary=record.get("summary", ""), notes=list(record.get("notes", [])),
                            fallback=record.get("fallback"))
        request = Request(unit=unit, service=svc, policy=policy, snapshot=Snapshot(), gpus=chosen)
        launch = Launch(argv=list(argv))
        plugins.prepare_launch(request, decision, launch)
        decision.launch = launch
        return Prepared(plugins, request, decision, launch, reused=True)
    from .allocation import allocate
    from .state import State
    with State.open(args.state) as state:
        decision, request = allocate(unit, policy, plugins, state, environ, directory, holder_pid=os.getpid(),
                                     argv=argv, on_wait=on_wait)
    return Prepared(plugins, request, decision, decision.launch, reused=False)


def describe_gpus(decision):
    """`GPU-1a2b…,GPU-3c4d… (priority 0, 1)`, or why there is none."""
    if not decision.chosen:
        return "CPU (no GPU available)" if decision.fallback == "cpu" else "no GPU"
    from .explain import short_uuid
    names = ",".join(short_uuid(g.uuid) for g in decision.chosen)
    prios = ", ".join("-" if v.priority is None else str(v.priority) for v in decision.verdicts if v.selected)
    return f"{names} (priority {prios})" if prios else names


def resolve_program(argv, env):
    """The executable for argv[0], searched on the server's PATH like execvp would."""
    import shutil
    prog = argv[0]
    if "/" in prog:
        return prog
    found = shutil.which(prog, path=env.get("PATH", os.defpath))
    if not found:
        raise UsageError(f"{prog}: command not found on PATH={env.get('PATH', os.defpath)}")
    return found


def server_env(launch):
    env = dict(os.environ)
    env.update(launch.env)
    return env


def run_exec(unit, argv, argv0, args):
    """Become the server: zero cost once it runs."""
    p = prepare(unit, argv, args, os.environ)
    env = server_env(p.launch)
    program = resolve_program(p.launch.argv, env)
    final = list(p.launch.argv)
    if argv0:
        final[0] = argv0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(program, final, env)
    except OSError as exc:
        raise UsageError(f"cannot run {program}: {exc.strerror}") from None


class Supervisor:
    """Runs the server as a child and speaks sd_notify for it."""

    def __init__(self, unit, argv, argv0, args):
        from .notify import Notifier
        self.unit, self.argv, self.argv0, self.args = unit, argv, argv0, args
        self.notify = Notifier()
        self.child = None
        self.stopping = False
        self.pidfd = None

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if signum in STOP_SIGNALS:
            self.stopping = True
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except ProcessLookupError:
                pass

    # -- waiting --------------------------------------------------------------------------------
    def _wait(self, seconds):
        """Sleep up to SECONDS, returning early when the child exits (pidfd: no polling)."""
        if self.pidfd is not None:
            import select
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            poller.poll(None if seconds is None else int(seconds * 1000))
            return self.child.poll()
        import subprocess
        try:
            return self.child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def run(self):
        """Start, wait for ready, keep the watchdog fed, stop; returns the exit code."""
        for sig in FORWARD_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.notify.status(f"allocating GPUs for {self.unit}…")
        try:
            p = prepare(self.unit, self.argv, self.args, os.environ, on_wait=lambda d, left: self.notify.status(
                f"waiting for a GPU ({left:.0f}s left): {d.summary}"))
        except CortexError as exc:
            self.notify.status(f"failed: {exc}")
            raise
        probe = p.plugins.readiness_probe(p.request, p.launch)
        where = describe_gpus(p.decision)
        env = server_env(p.launch)
        program = resolve_program(p.launch.argv, env)
        final = list(p.launch.argv)
        if self.argv0:
            final[0] = self.argv0
        self.notify.status(f"starting {os.path.basename(program)} on {where}")
        try:
            if self.stopping:
                return 0
            return self._run_child(p, probe, where, program, final, env)
        finally:
            if not p.reused:  # we took the lease ourselves (no ExecStartPre): give it back
                self._release()

    def _release(self):
        from .allocation import release
        from .runtime import runtime_dir
        from .state import State
        try:
            with State.open(self.args.state, create=False) as state:
                release(self.unit, state, runtime_dir(self.args.runtime_dir))
        except CortexError as exc:
            from .log import WARNING, log
            log(WARNING, f"cortex-hook: could not release {self.unit}: {exc}")

    def _run_child(self, p, probe, where, program, final, env):
        import subprocess

        from .notify import watchdog_interval
        from .probe import FAILED, READY, ProbeResult

        self.child = subprocess.Popen(final, executable=program, env=env)
        try:
            self.pidfd = os.pidfd_open(self.child.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        ready = False
        while self.child.poll() is None and not self.stopping:
            result = probe.check() if probe is not None else ProbeResult(READY, "no readiness probe")
            if result.state == READY:
                self.notify.ready(f"ready on {where}" + ("" if probe else " (no readiness probe configured)"))
                ready = True
                break
            if result.state == FAILED:
                self.notify.status(f"failed: {probe.label}: {result.detail}")
                self._stop_child()
                return 1
            self.notify.status(f"waiting for {probe.label}: {result.detail}")
            self._wait(PROBE_INTERVAL_S)
        interval = watchdog_interval()
        while ready and self.child.poll() is None and not self.stopping:
            if interval is None:
                self._wait(None)
                continue
            result = probe.check() if probe is not None else ProbeResult(READY, "")
            if result.state == READY:
                self.notify.watchdog()
                self.notify.status(f"ready on {where}")
            else:  # no ping: systemd's watchdog ends the hung server
                self.notify.status(f"unhealthy ({probe.label}: {result.detail}); not feeding the watchdog")
            self._wait(interval)
        return self._finish(ready)

    def _stop_child(self):
        if self.child.poll() is None:
            self.child.terminate()
        self._wait(None)
        self.child.wait()

    def _finish(self, ready):
        if self.stopping:
            self.notify.stopping(f"stopping {self.unit}")
            self.child.wait()
            return 0
        code = self.child.wait()
        shown = f"signal {-code}" if code < 0 else f"code {code}"
        if not ready:
            self.notify.status(f"server exited with {shown} before it was ready")
            return 128 - code if code < 0 else (code or 1)
        self.notify.stopping(f"server exited with {shown}")
        return 128 - code if code < 0 else code


def run_supervise(unit, argv, argv0, args):
    """`cortex-hook supervise`: returns the exit code for the process."""
    return Supervisor(unit, argv, argv0, args).run()
