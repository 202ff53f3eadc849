"""The monitor's loop: wait for an NVML event until the next poll is due, act on what it sees,
poll every GPU on the policy's interval, bring recovered GPUs back, and tell systemd.

WATCHDOG=1 is sent only after a poll the driver answered within `discovery_timeout`: a hung
driver (or a loop stuck inside it) leaves systemd's watchdog to end and restart the monitor.
STATUS= says what it watches; `/run/cortex-hook/monitor.status` (JSON) tells `status` it runs.
"""

import json
import os
import signal
import time

from ..inventory import discover, remember
from ..errors import CortexError, DriverError, TimeoutExpired
from ..files.atomic import write_atomic
from ..files import rundir
from ..files.rundir import MONITOR_STATUS, trusted
from ..policy.load import load_policy
from ..state import monitoring, tallies
from ..systemd.journal import ERR, NOTICE, WARNING
from ..systemd.notify import Notifier, watchdog_interval
from . import actions
from .events import EventSet
from .faults import DRAIN, FATAL, IGNORE, TROUBLE, classify_event, classify_gpu

DETAIL = frozenset({"monitor"})  # what a poll asks the inventory: health, and corrected ECC
PRUNE_EVERY_S = 3600.0
STOP_WITHIN_S = 5.0  # the longest single wait inside the driver: how long a stop may take


class Monitor:
    """One monitor process. UNITS restarts and stops units (actions.SystemdUnits)."""

    def __init__(self, ctx, units=None):
        self.ctx = ctx
        self.units = units or actions.SystemdUnits()
        self.notify = Notifier()
        self.policy = None
        self.policy_error = None
        self.N = self.events = None
        self.gpus = {}  # uuid -> Gpu, from the last poll
        self.verdicts = {}  # uuid -> verdict of the last poll
        self.healthy_since = {}  # uuid -> when a monitor-drained GPU was first seen healthy
        self.corrected = {}  # uuid -> corrected ECC count at the last poll
        self.hot = set()
        self.next_poll = self.next_prune = 0.0
        self.driver_problem = None
        self.stopping = False
        self.metrics_server = None
        self.last_ping = time.monotonic()
        self.last_verdicts = {}  # uuid -> the previous poll's verdict (a polled fault is counted once)

    # -- life ------------------------------------------------------------------------------------
    def run(self, once=False):
        """Watch until SIGTERM (or, ONCE, for one poll); returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        rundir.prepare(self.ctx.runtime_dir)  # its status file goes there, and the policy's memo
        self._load_policy()
        if self.policy is None:
            raise self.policy_error
        try:
            self._open_events()
            self.poll()
            self._pick_up()
            self._serve_metrics()
            self.notify.ready(self.describe())
            while not once and not self.stopping:
                self.step()
        finally:
            self.close()
        return 0

    def _on_signal(self, signum, frame):
        self.stopping = True

    def close(self):
        """Stop serving metrics; free the event set and the NVML session."""
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        if self.events is not None:
            self.events.close()
        if self.N is not None:
            try:
                self.N.nvmlShutdown()
            except self.N.NVMLError:
                pass
        self.events = self.N = None

    def step(self):
        """Wait for an event until the next poll is due (or systemd's watchdog wants a ping, which
        only a poll gives), then poll if it is. A wait lasts at most STOP_WITHIN_S: a signal is
        seen only when the driver's wait returns, and `systemctl stop` should not wait a whole
        `poll:` interval."""
        due = self.next_poll
        if watchdog_interval() is not None:
            due = min(due, self.last_ping + watchdog_interval())
        wait = min(max(0.0, due - time.monotonic()), STOP_WITHIN_S)
        event = self.events.wait(wait * 1000) if self.events is not None else _sleep(wait)
        if event is not None:
            self.on_event(event)
        elif not self.stopping and time.monotonic() >= due:
            self._load_policy()
            self.poll()

    # -- what it sees ----------------------------------------------------------------------------
    def _open_events(self):
        """Initialise NVML and register every GPU for events. (A driver that hangs here keeps the
        monitor from READY=1: systemd's start timeout, then Restart=, take over.)"""
        try:
            import pynvml as N  # only the monitor and the nvml inventory ask the driver
            N.nvmlInit()
        except ImportError as exc:
            actions.say(WARNING, f"no NVML events (nvidia-ml-py: {exc}); polling only")
            return
        except N.NVMLError as exc:
            actions.say(WARNING, f"no NVML events ({exc}); polling only")
            return
        self.N, self.events = N, EventSet(N)
        try:
            count = N.nvmlDeviceGetCount()
        except N.NVMLError as exc:
            actions.say(WARNING, f"no NVML events: cannot count GPUs ({exc}); polling only")
            count = 0
        for index in range(count):
            try:
                device = N.nvmlDeviceGetHandleByIndex(index)
                uuid = N.nvmlDeviceGetUUID(device)
            except N.NVMLError as exc:
                self.events.polled[f"GPU {index}"] = str(exc)
                continue
            self.events.register(uuid, device)
        for uuid, why in self.events.polled.items():
            actions.say(WARNING, f"{uuid}: polled only: {why}")

    def poll(self):
        """Ask the driver about every GPU; act on faults and trouble; recover; tell systemd."""
        self.next_poll = time.monotonic() + self.policy.health.poll_seconds
        try:
            gpus = discover(self.ctx.plugins(), self.policy, DETAIL)  # under discovery_timeout
        except TimeoutExpired as exc:
            self.driver_problem = str(exc)
            self._tell(ping=False)  # a hung driver: systemd's watchdog takes over
            return False
        except DriverError as exc:
            self.driver_problem = str(exc)
            self._tell(ping=True)
            return False
        self.driver_problem = None
        now = time.time()
        with self.ctx.open_state() as state:
            remember(state, gpus)  # a lost GPU keeps the UUID its drain is under
        self.gpus = {g.uuid: g for g in gpus if g.uuid}
        self.verdicts = {}
        for gpu in self.gpus.values():
            verdict, why = classify_gpu(self.policy.health, gpu)
            self.verdicts[gpu.uuid] = verdict
            if verdict != IGNORE and self.last_verdicts.get(gpu.uuid) != verdict:
                self._count_fault(gpu.uuid, "poll", "", verdict)
            if verdict in (FATAL, DRAIN):
                self.fault(gpu.uuid, verdict, why, now)
            self._trouble(gpu, verdict, why, now)
        self.last_verdicts = dict(self.verdicts)
        actions.recover(self.ctx, self.policy, self.healthy_since, self.verdicts, self._labels(), now)
        if now >= self.next_prune:
            self.next_prune = now + PRUNE_EVERY_S
            with self.ctx.open_state() as state:
                monitoring.prune_trouble(state, now - max(self.policy.health.demote_window_seconds, PRUNE_EVERY_S))
        self._tell(ping=True)
        return True

    def on_event(self, event):
        """Act on one NVML event."""
        if event.uuid is None:  # the wait failed: which GPU is gone, a poll tells
            actions.say(WARNING, f"the driver's event wait failed ({event.kind}): polling every GPU now")
            self.poll()
            return
        verdict, why = classify_event(event, self.policy.health)
        self._count_fault(event.uuid, event.kind, str(event.data) if event.kind == "xid" else "", verdict)
        if verdict == IGNORE:
            actions.say(NOTICE, f"{self._label(event.uuid)}: {why}: nothing to do")
            return
        now = time.time()
        if verdict == TROUBLE:
            with self.ctx.open_state() as state:
                monitoring.record_trouble(state, event.uuid, "xid", 1, str(event.data))
            actions.say(NOTICE, f"{self._label(event.uuid)}: {why}: not fatal (fatal_xids); demoted for a while")
            return
        self.fault(event.uuid, verdict, why, now)
        self._tell(ping=False)

    def fault(self, uuid, verdict, why, now):
        """Drain UUID; for a fatal fault, act on the units that lease it."""
        label = self._label(uuid)
        with self.ctx.open_state() as state:
            actions.drain(state, self.policy, uuid, label, verdict, why, now)
        if verdict == FATAL:
            children = {g.uuid for g in self.gpus.values() if g.parent_uuid == uuid}
            actions.act_on_units(self.ctx, self.policy, uuid, children, label, why, self.units, now)

    def _pick_up(self):
        """After a restart: act on units still leasing a GPU this monitor drained as fatal."""
        with self.ctx.open_state() as state:
            mine = monitoring.monitor_drains(state)
        for found in mine:
            if self.verdicts.get(found.uuid) != DRAIN:
                children = {g.uuid for g in self.gpus.values() if g.parent_uuid == found.uuid}
                actions.act_on_units(self.ctx, self.policy, found.uuid, children, self._label(found.uuid),
                                     found.detail, self.units, time.time())

    def _trouble(self, gpu, verdict, why, now):
        """Non-fatal trouble a poll sees: new corrected ECC errors, and a GPU turning too hot."""
        rows = []
        count = gpu.ecc_volatile_corrected
        before = self.corrected.get(gpu.uuid)
        if count is not None:
            self.corrected[gpu.uuid] = count
            if before is not None and count > before:
                rows.append(("corrected_ecc", count - before, ""))
        if verdict == TROUBLE and gpu.uuid not in self.hot:
            self.hot.add(gpu.uuid)
            rows.append(("throttle", 1, why))
        elif verdict != TROUBLE:
            self.hot.discard(gpu.uuid)
        if rows:
            with self.ctx.open_state() as state:
                for kind, n, detail in rows:
                    monitoring.record_trouble(state, gpu.uuid, kind, n, detail)

    def _count_fault(self, uuid, kind, xid, verdict):
        with self.ctx.open_state() as state:
            tallies.add(state, "cortex_hook_monitor_faults_total",
                        {"UUID": uuid, "kind": kind, "xid": xid, "verdict": verdict})

    # -- what it says ----------------------------------------------------------------------------
    def _serve_metrics(self):
        """Serve /metrics where the policy says (`metrics: listen:`; read at start)."""
        metrics = self.policy.metrics
        if not metrics.listen_host:
            return
        from ..metrics.server import serve  # only a policy with `metrics: listen:` loads http.server

        try:
            self.metrics_server = serve(metrics.listen_host, metrics.listen_port, self.scrape,
                                        lambda exc: actions.say(ERR, f"a metrics scrape failed: {exc}"))
        except OSError as exc:
            actions.say(ERR, f"no metrics: cannot listen on {metrics.listen_host}:{metrics.listen_port}: "
                             f"{exc.strerror or exc}")
            return
        actions.say(NOTICE, f"metrics at http://{metrics.listen_host}:{metrics.listen_port}/metrics")

    def scrape(self):
        """The exposition text of one scrape (the GPUs of the last poll; the state read afresh)."""
        from ..files import monitorstatus
        from ..metrics.collect import families
        from ..metrics.exposition import render

        policy, gpus = self.policy, list(self.gpus.values())
        with self.ctx.open_state() as state:
            snapshot = state.snapshot(policy.health.demote_window_seconds)
            status = monitorstatus.read(self.ctx.runtime_dir, policy.health.poll_seconds)
            return render(families(policy, self.ctx.plugins(), gpus, self.driver_problem is None, state,
                                   snapshot, status))

    def describe(self):
        """The STATUS= line: `watching 8 GPUs (8 by events), 1 drained (GPU 3: XID 79)`."""
        if self.driver_problem:
            return f"driver problem: {self.driver_problem}"
        registered = len(self.events.registered) if self.events else 0
        polled = len(self.gpus) - registered
        line = f"watching {len(self.gpus)} GPUs ({registered} by events" + (f", {polled} polled only)" if polled > 0 else ")")
        drained = self._drained()
        if drained:
            first = next(iter(drained.items()))
            line += f", {len(drained)} drained ({self._label(first[0])}: {first[1]})"
        return line

    def _drained(self):
        try:
            with self.ctx.open_state() as state:
                return {d.uuid: d.detail for d in monitoring.monitor_drains(state)}
        except CortexError:
            return {}

    def _tell(self, ping):
        """STATUS= (and WATCHDOG=1 when PING), and the status file `status` reads."""
        line = self.describe()
        self.notify.status(line)
        if ping:
            self.notify.watchdog()
            self.last_ping = time.monotonic()
        if trusted(self.ctx.runtime_dir):
            data = {"pid": os.getpid(), "at": time.time(), "poll_seconds": self.policy.health.poll_seconds,
                    "gpus": len(self.gpus), "registered": sorted(self.events.registered) if self.events else [],
                    "polled": dict(self.events.polled) if self.events else {}, "drained": self._drained(),
                    "driver_problem": self.driver_problem, "status": line}
            write_atomic(os.path.join(self.ctx.runtime_dir, MONITOR_STATUS), json.dumps(data, sort_keys=True) + "\n")

    def _load_policy(self):
        """Re-read the policy; a broken one keeps the last good one in force (said once)."""
        try:
            self.policy = load_policy(self.ctx.policy_path)
            self.policy_error = None
        except CortexError as exc:
            if self.policy_error is None or str(exc) != str(self.policy_error):
                actions.say(ERR, f"policy unusable, keeping the last good one: {exc}")
            self.policy_error = exc

    def _label(self, uuid):
        gpu = self.gpus.get(uuid)
        return gpu.label if gpu is not None else uuid

    def _labels(self):
        return {uuid: gpu.label for uuid, gpu in self.gpus.items()}


def _sleep(seconds):
    time.sleep(seconds)
    return None
