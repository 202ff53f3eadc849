"""The `supervise` wrapper: run the server as a child and tell systemd what happens to it.

STATUS= says what it is doing (allocating, starting, waiting for the health endpoint, ready);
READY=1 goes out only once the server's own readiness probe passes, WATCHDOG=1 only while it
keeps passing. Signals are passed on once; the exit code is 0 when systemd stopped it, else the
server's. A lease the wrapper took itself (no lease unit: outside systemd) is given back on the way
out.
"""

import os
import select
import signal
import subprocess

from .release import release
from .errors import CortexError
from .launch import describe_gpus, prepare, server_command
from .probe import FAILED, READY, ProbeResult
from .servercommand import readiness
from .systemd.journal import WARNING, log
from .systemd.notify import Notifier, watchdog_interval

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORWARD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PROBE_INTERVAL_S = 0.5


class Supervisor:
    """Runs the server as a child and speaks sd_notify for it."""

    def __init__(self, ctx, unit, argv, argv0):
        self.ctx, self.unit, self.argv, self.argv0 = ctx, unit, argv, argv0
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
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            poller.poll(None if seconds is None else int(seconds * 1000))
            return self.child.poll()
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
            p = prepare(self.ctx, self.unit, self.argv, os.environ, on_wait=lambda d, text: self.notify.status(text))
        except CortexError as exc:
            self.notify.status(f"failed: {exc}")
            raise
        probe = readiness(p.plugins, p.request, p.launch)
        where = describe_gpus(p.decision)
        program, final, env = server_command(p.launch, self.argv0)
        self.notify.status(f"starting {os.path.basename(program)} on {where}")
        try:
            if self.stopping:
                return 0
            return self._run_child(p, probe, where, program, final, env)
        finally:
            if not p.reused:  # we took the lease ourselves (no lease unit): give it back
                self._release()

    def _release(self):
        try:
            with self.ctx.open_state(create=False) as state:
                release(self.unit, state, self.ctx.runtime_dir)
        except CortexError as exc:
            log(WARNING, f"cortex-hook: could not release {self.unit}: {exc}")

    def _run_child(self, p, probe, where, program, final, env):
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
            code = self.child.wait()
            self.notify.status(f"stopped {'after it was ready' if ready else 'before it was ready'}: "
                               f"server exited with {_shown(code)}")  # the last STATUS= says how it ended
            return 0
        code = self.child.wait()
        shown = _shown(code)
        if not ready:
            self.notify.status(f"server exited with {shown} before it was ready")
            return 128 - code if code < 0 else (code or 1)
        self.notify.stopping(f"server exited with {shown}")
        return 128 - code if code < 0 else code


def _shown(code):
    """A child's exit status as the STATUS= lines say it: `code 1`, `signal 15`."""
    return f"signal {-code}" if code < 0 else f"code {code}"


def run_supervise(ctx, unit, argv, argv0):
    """`cortex-hook supervise`: returns the exit code for the process."""
    return Supervisor(ctx, unit, argv, argv0).run()
