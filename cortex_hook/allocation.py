"""One start of one unit: policy + state + inventory -> plan -> lease -> env file.

`plan_unit` is the dry run; `allocate` is the real thing. Both build the same Request and call the
same pure planner (and its victim choice, preemption.py). `allocate` asks the driver outside the
lock (it can be slow), then re-reads the leases, plans, inserts its leases (or promises and stops
its victims) and writes the env file inside one BEGIN IMMEDIATE transaction; it waits its turn
(turns.py) and for the GPUs' memory (handoff.py). release.py undoes it.
"""

import os
import sqlite3
import time

from . import handoff, rules, turns
from .errors import CortexError, PolicyError, TimeoutExpired, UnavailableError, UsageError, did_you_mean, one_line
from .files import record as records
from .files import rundir
from .holders import current_holder, invocation_of, lease_alive, unit_pids
from .inventory import detail_for, discover, discover_for, own_pids
from .model import Request
from .planner import refusal_reason, without_fallback
from .preemption import MARGIN_S, describe, plan_with_preemption
from .quantities import format_duration
from .release import reap
from .servercommand import shape
from .release import release as release_start
from .state import preemption as preempted_state
from .state import tallies
from .systemd import isolation
from .systemd.journal import NOTICE, WARNING, log, tell_unit

WAIT_POLL_S = 0.25
WAIT_REDISCOVER_S = 15.0
RELEASE_GRACE_S = 10.0  # how long a start that would fail waits for a stopped unit's release


def service_for(policy, unit):
    """The policy's service for UNIT, or PolicyError naming the unit."""
    svc = policy.service_for(unit)
    if svc is None:
        patterns = ", ".join(repr(s.match) for s in policy.services) or "none"
        raise PolicyError(policy.path, 0, 0, "services",
                          f"no service matches unit {unit!r} (patterns: {patterns}); "
                          "add one, or remove cortex-hook from this unit")
    return svc


def check_server(plugins, policy, svc):
    """PolicyError unless some plugin serves the service's `server:` and accepts its options."""
    names = plugins.server_names()
    if svc.server not in names:
        raise PolicyError(policy.path, svc.line, 0, f"services[{svc.position}].server",
                          f"no installed plugin provides server {svc.server!r}"
                          f"{did_you_mean(svc.server, names)}; available: {', '.join(names)}")
    if not svc.options:
        return
    problems = plugins.validate_options(svc)
    if problems is None:
        key = next(iter(svc.options))
        problems = [(key, f"server {svc.server!r} takes no options")]
    if problems:
        key, message = problems[0]
        line, column = svc.option_marks.get(key, (svc.line, 0))
        raise PolicyError(policy.path, line, column, f"services[{svc.position}].options.{key}", message)


def make_request(unit, svc, policy, snapshot, gpus, environ, pids, state=None):
    """The Request every hook sees; returns (request, notes about the inherited devices). With
    STATE, the processes that have ended on GPUs handed over lately (or promised to UNIT) count
    as leaving (handoff.py)."""
    text = rules.inherited_visible(unit, environ)
    visible, notes = (None, [])
    if text is not None:
        visible, notes = rules.parse_visible(text, gpus, environ.get("CUDA_DEVICE_ORDER"))
    leaving = frozenset()
    if state is not None and any(g.processes for g in gpus):
        handed = _handed(state, policy, unit)
        leaving = handoff.leaving_pids(gpus, pids, handed) if handed else frozenset()
    others = {}
    if svc.preempt == "lower":
        others = {l.unit: frozenset(unit_pids(l.unit)) for l in snapshot.leases if l.unit != unit and l.holder_unit}
    return Request(unit=unit, service=svc, policy=policy, snapshot=snapshot, gpus=gpus, visible=visible,
                   visible_text=text, own_pids=pids, leaving_pids=leaving, unit_pids=others), notes


def _handed(state, policy, unit):
    """The GPUs given back within `handoff_timeout`, and those promised to UNIT (handoff.py)."""
    return preempted_state.handed_back(state, time.time() - policy.handoff_timeout_seconds, unit)


def _decide(plugins, request, notes, problem):
    """The planner's Decision for REQUEST (with the victims it would preempt, if it may and must),
    with the notes about inherited devices and the driver."""
    decision = plan_with_preemption(plugins, request, time.time())
    decision.notes[:0] = notes
    if problem:
        decision.notes.insert(0, f"driver: {problem}")
        if not decision.ok:
            decision.summary += f" ({problem})"
    return decision


def plan_unit(ctx, unit, state, environ, argv=None, mode=None):
    """Dry run: the Decision `allocate` would make now, changing nothing (ARGV: the server command,
    for the plugins to show how they would rewrite it; MODE: Launch.mode)."""
    policy, plugins = ctx.policy(), ctx.plugins()
    svc = service_for(policy, unit)
    check_server(plugins, policy, svc)
    pids = own_pids(state.leases(unit))
    handed = not tallies.is_view(state) and bool(_handed(state, policy, unit))
    gpus, problem = discover_for(plugins, policy, svc, detail_for(svc, pids, handed))
    snapshot = state.snapshot(policy.health.demote_window_seconds)
    snapshot.leases = [l for l in snapshot.leases if l.unit == unit or lease_alive(l)]
    request, notes = make_request(unit, svc, policy, snapshot, gpus, environ, pids,
                                  None if tallies.is_view(state) else state)
    decision = _decide(plugins, request, notes, problem)
    if decision.ok:
        decision.launch = shape(plugins, request, decision, list(argv) if argv else None, mode)
    return decision


class _Start:
    """One start of one unit as allocate's loop drives it: what it was asked, and what it waits for
    (a recorded wait, the victims it preempted, its requeue)."""

    def __init__(self, unit, svc, holder, pids, environ, command, on_wait):
        self.unit, self.svc, self.holder, self.pids = unit, svc, holder, pids
        self.environ, self.command, self.on_wait = environ, command, on_wait
        self.detail = None  # what the driver is asked: set at each discovery (inventory.detail_for)
        self.waiting = False  # it recorded a wait (tallies.begin_wait)
        self.arrival = time.time()  # its place in the queue of its class (turns.py)
        self.turn = ((), 0, "")  # what its last refused plan could use (turns.py)
        self.gave_way = False  # its last plan fitted, but a start waiting ahead of it goes first
        self.requeued_by = None  # the unit that preempted it, when it was requeued
        self.stopping = None  # the victims it preempted (systemd/victims.Stopping)

    def tell(self, decision, text):
        """STATUS= through ON_WAIT: what it waits for."""
        if self.on_wait:
            self.on_wait(decision, text)


def allocate(ctx, unit, state, environ, holder_pid=None, on_wait=None, argv=None, mode=None):
    """Choose GPUs for UNIT, lease them, write its runtime files; wait if the policy says so.

    Returns (decision, request). ARGV (wrapper modes) is the server command the plugins may
    rewrite; MODE is Launch.mode (the lease unit knows whether a wrapper will rewrite it). Raises
    UnavailableError (exit 69) when nothing fits, TimeoutExpired (75) when `wait` runs out, when
    preempted units do not give their GPUs back, or when the GPUs' previous holder does not free
    their memory in `handoff_timeout`. ON_WAIT(decision, text) is called while it waits (TEXT: what
    for, a status line). A `preempt: lower` service that fits nothing preempts (preemption.py);
    a unit requeued by a preemption waits for a GPU, however long it takes.
    """
    rundir.prepare(ctx.runtime_dir)  # first: the policy and plugins may then leave their memos there
    policy, plugins = ctx.policy(), ctx.plugins()
    svc = service_for(policy, unit)
    check_server(plugins, policy, svc)
    holder = current_holder(unit, holder_pid)
    start = _Start(unit, svc, holder, own_pids(state.leases(unit), holder), environ, (argv, mode), on_wait)
    start.requeued_by = preempted_state.take_requeue(state, unit, svc.preempt_grace_seconds + MARGIN_S)
    try:
        decision, request = _allocate_loop(ctx, state, start)
    except BaseException:
        if start.waiting or start.stopping:  # an error or a signal while it waited or preempted
            _forget_wait(state, unit)
        raise
    if decision.chosen:
        _hand_over(ctx, state, start, decision, request)
    plugins.decision_made(request, decision)
    return decision, request


def _hand_over(ctx, state, start, decision, request):
    """Wait until the leased GPUs really have the memory (handoff.py); on a timeout or a signal,
    give the lease back before the error goes on."""
    policy, plugins = ctx.policy(), ctx.plugins()
    try:
        handoff.wait_for_memory(request, decision, lambda: discover(plugins, policy, start.detail),
                                policy.handoff_timeout_seconds, lambda text: start.tell(decision, text))
    except BaseException as exc:
        try:
            release_start(start.unit, state, ctx.runtime_dir, ended=f"handoff: {one_line(exc) or type(exc).__name__}")
        except (CortexError, OSError, sqlite3.Error) as undo:
            log(WARNING, f"cortex-hook: warning: {start.unit}: could not give back its lease: {undo}")
        raise


def _allocate_loop(ctx, state, start):
    plugins, policy = ctx.plugins(), ctx.policy()
    unit, svc = start.unit, start.svc
    deadline = grace = None
    gpus, discovered_at, first = None, 0.0, True
    while True:
        if gpus is None or time.monotonic() - discovered_at > WAIT_REDISCOVER_S:
            start.detail = detail_for(svc, start.pids, bool(_handed(state, policy, unit)))
            (gpus, problem), discovered_at = discover_for(plugins, policy, svc, start.detail), time.monotonic()
        decision, request = _attempt(ctx, state, start, gpus, problem, record_refusal=first)
        first = first and start.gave_way  # (giving way is not a refusal worth a history row)
        if decision.ok:
            return decision, request
        now = time.monotonic()
        if decision.victims:  # promised to this start in the transaction that chose them: stop them
            from .systemd.victims import Stopping  # systemctl: only a start that preempts

            start.stopping, gpus = Stopping(unit, decision.victims, now), None
            continue
        if start.stopping:
            stopping = start.stopping
            stopping.escalate(lambda victim: {l.uuid for l in state.leases(victim.unit)} & set(victim.gpus), now)
            if now >= stopping.deadline:
                _count_end(state, unit, svc, "timeout", "preempt")
                raise TimeoutExpired(f"{unit}: preempted {', '.join(v.unit for v in stopping.victims)}, which did "
                                     f"not give their GPUs back within {format_duration(stopping.deadline - stopping.since)}"
                                     f": {decision.summary}")
            words = "; ".join(describe(v, time.time() - (now - stopping.since)) for v in stopping.victims)
            start.tell(decision, f"preempting {words}: waiting for them to stop")
            if _wait_for_change(state, min(stopping.deadline, now + 1.0)):
                gpus = None  # a victim gave its GPUs back: what does the driver say about them now
            continue
        if svc.on_unavailable != "wait" and not start.requeued_by:
            if grace is None and (start.gave_way or _releasing(request.snapshot.leases)):
                grace = now + RELEASE_GRACE_S
            if grace is not None and now < grace and _wait_for_change(state, grace):
                continue  # a stopped unit gave its GPUs back: plan again
            _count_end(state, unit, svc, "refused", refusal_reason(decision))
            raise UnavailableError(decision.summary, decision)
        if start.requeued_by:
            deadline = float("inf")  # a requeued unit waits for its turn, however long
        deadline = deadline or now + svc.wait_seconds
        if now >= deadline:
            _count_end(state, unit, svc, "timeout", refusal_reason(decision))
            start.waiting = False  # its wait is over, counted
            raise TimeoutExpired(f"gave up after waiting {format_duration(svc.wait_seconds)}: {decision.summary}")
        if not start.waiting:
            _begin_wait(state, start, decision)
        if start.requeued_by:
            start.tell(decision, f"waiting for a GPU (preempted by {start.requeued_by}): {decision.summary}")
        else:
            start.tell(decision, f"waiting for a GPU ({deadline - now:.0f}s left): {decision.summary}")
        if _wait_for_change(state, min(deadline, now + WAIT_REDISCOVER_S)):
            continue  # leases changed: replan with the GPUs we have
        gpus = None  # nothing changed for a while: ask the driver again (memory may have been freed)


def _begin_wait(state, start, decision):
    """Record that START waits (a requeued one says so in its unit's journal too)."""
    summary = decision.summary
    if start.requeued_by:
        summary = f"preempted by {start.requeued_by}: {summary}"
        tell_unit(start.unit, NOTICE, f"{start.unit} waits for a GPU: preempted by {start.requeued_by} (requeued)")
    with state.write():
        tallies.begin_wait(state, start.unit, start.svc.match, start.svc.klass, summary, os.getpid(), start.turn,
                           start.arrival)
    start.waiting = True


def _count_end(state, unit, svc, result, reason):
    """Count a start that ends without GPUs (its wait, if it waited, ends with it)."""
    with state.write():
        tallies.count_start(state, svc.match, result, reason)
        tallies.wait_over(state, unit, svc.match, result)


def _forget_wait(state, unit):
    """A start that ends by an error or a signal while it waits: its wait is over (best effort),
    and so are its promises."""
    try:
        with state.write():
            tallies.end_wait(state, unit)
            preempted_state.end_promises(state, unit)  # what it preempted goes back to the queue
    except (CortexError, OSError, sqlite3.Error):
        pass


def _attempt(ctx, state, start, gpus, problem, record_refusal):
    """One planning run inside the state's write lock: the lease and runtime files on success, and
    no runtime file of this start when its transaction does not commit (a full disk)."""
    written = []
    try:
        with state.write():
            return _plan_and_lease(ctx, state, start, gpus, problem, record_refusal, written)
    except BaseException:
        if written:
            try:
                records.clear_start(ctx.runtime_dir, start.unit)
                if start.svc.cdi:
                    from .containers import cdispec

                    cdispec.remove(start.unit)
            except (CortexError, OSError):
                pass  # (a read-only runtime dir: nothing was written either) the first error is the one
        raise


def _plan_and_lease(ctx, state, start, gpus, problem, record_refusal, written):
    policy, plugins = ctx.policy(), ctx.plugins()
    unit, svc, holder = start.unit, start.svc, start.holder
    if state.history_limit() != policy.history_limit:
        state.set_history_limit(policy.history_limit)
    job_map = state.setting("job_mapping_dir")
    if job_map != policy.metrics.job_mapping_dir:
        if job_map:
            from .metrics import jobmap  # the policy moved or dropped the directory: empty the old one

            jobmap.retire(job_map)
        state.set_setting("job_mapping_dir", policy.metrics.job_mapping_dir)
    for trouble in reap(state, ctx.runtime_dir, lease_alive, policy.history_limit, exclude_unit=unit)[1]:
        log(WARNING, f"cortex-hook: warning: {trouble}")
    tallies.drop_dead_waits(state)
    preempted_state.drop_dead_promises(state)
    state.drop_leases(unit)  # this start supersedes whatever the unit held before
    snapshot = state.snapshot(policy.health.demote_window_seconds)
    _refuse_env_file_clash(unit, snapshot)
    request, notes = make_request(unit, svc, policy, snapshot, gpus, start.environ, start.pids, state)
    decision = _decide(plugins, request, notes, problem)
    if decision.fallback and start.requeued_by:  # a requeued unit waits for GPUs, not on the CPU
        without_fallback(decision)
    turns.take_turn(state, start, decision)
    detail = {"summary": decision.summary, "service": svc.position, "server": svc.server}
    if decision.victims:  # promised in this transaction: no third unit can take them now
        preempted_state.promise(state, unit, decision.promised, decision.victims, os.getpid())
        state.record(unit, "preempt", decision.promised,
                     dict(detail, victims=[v.to_plain() for v in decision.victims]), policy.history_limit)
        for victim in decision.victims:
            tallies.add(state, tallies.PREEMPTIONS, {"service": svc.match, "victim_class": victim.klass})
    if not decision.ok:
        if record_refusal and not decision.victims:
            state.record(unit, "refuse", [], detail, policy.history_limit)
        records.clear_start(ctx.runtime_dir, unit)
        return decision, request
    if decision.chosen:
        state.add_leases(unit, decision.uuids, svc.sharing, holder)
    preempted_state.end_promises(state, unit)
    argv, mode = start.command
    decision.launch = shape(plugins, request, decision, argv, mode)
    state.remember_gpus(gpus)
    state.record(unit, "allocate", decision.uuids,
                 dict(detail, fallback=decision.fallback, env=decision.launch.env), policy.history_limit)
    result = "cpu" if decision.fallback else "ok"
    tallies.count_start(state, svc.match, result)
    tallies.wait_over(state, unit, svc.match, result, decision.uuids)
    start.waiting = False
    under_systemd = bool(holder.cgroup or holder.unit)
    isolated = bool(policy.isolate and under_systemd)  # a CPU fallback is locked out of every GPU
    if policy.isolate and not under_systemd:
        decision.notes.append("isolate: not applied (not running inside the unit under systemd)")
    written.append(unit)  # from here on, a failure removes what this start wrote
    records.write_start(ctx.runtime_dir, decision, holder, isolated)  # (an OutputError rolls back)
    if svc.cdi:
        from .containers import cdispec, rewrite  # only a service with a CDI device of its own

        cdispec.write(unit, decision.chosen, rewrite.inside_env(decision.launch.env, decision.chosen))
    if isolated:
        isolation.apply(unit, decision.chosen)
        allowed = [e.split()[0] for e in isolation.allow_list(decision.chosen)]
        decision.notes.append("isolate: the unit's device cgroup allows only " + ", ".join(allowed)
                              if allowed else "isolate: the unit's device cgroup allows no NVIDIA device")
    return decision, request


def _releasing(leases):
    """Leases whose unit has stopped while its lease unit has not yet given them back: `systemctl
    stop UNIT` returns once UNIT is down, and its lease unit's release runs just after."""
    return [l for l in leases if l.holder_unit and invocation_of(l.unit) is None and lease_alive(l)]


def _wait_for_change(state, until):
    """Poll until another process commits to the state (True) or UNTIL passes (False)."""
    c = state.conn
    start = c.execute("PRAGMA data_version").fetchone()[0]
    while time.monotonic() < until:
        time.sleep(min(WAIT_POLL_S, max(0.0, until - time.monotonic())))
        if c.execute("PRAGMA data_version").fetchone()[0] != start:
            return True
    return False


def _refuse_env_file_clash(unit, snapshot):
    """Two units whose names differ only in backslashes would read the same env file."""
    mine = rundir.env_file_name(unit)
    for lease in snapshot.leases:
        if lease.unit != unit and rundir.env_file_name(lease.unit) == mine:
            raise UsageError(f"{unit} and {lease.unit} would read the same env file {mine} (systemd reads "
                             "EnvironmentFile= as a glob, where a backslash escapes); rename one of them")
