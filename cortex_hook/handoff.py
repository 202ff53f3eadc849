"""The handoff: a start is told "go" only when the GPUs it leased really have the memory it needs.

A server's process can be gone from systemd's view (its unit stopped, its lease released) while
the driver still lists it on the GPU and still holds its memory: CUDA tears the context down
after the process has ended (llama-swap #97, #100). The planner counts that memory as free
(rules.free_for: `leaving_pids`), so the start takes the lease at once and no other unit can take
the GPU; then `wait_for_memory` asks the driver until those processes are gone and the service's
`min_free_memory` is free, for at most the policy's `handoff_timeout`. It applies to every start:
after a preemption, after a wait, after a restart.
"""

import time

from . import rules
from .errors import DriverError, TimeoutExpired
from .holders import process_ended
from .quantities import format_duration, format_size

POLL_S = 0.25


def leaving_pids(gpus, own, handed):
    """Pids the driver lists on the GPUS whose UUID is in HANDED (given back or promised lately)
    that are not OWN and have already ended (no such process, or a zombie): their memory is on
    its way back. (A pid on any other GPU that is no process here is not taken for one leaving:
    nothing says its memory is coming back.)"""
    listed = {p.pid for gpu in gpus if gpu.uuid in handed or gpu.parent_uuid in handed
              for p in (gpu.processes or ())}
    return frozenset(pid for pid in listed - set(own) if process_ended(pid))


def holding(request, gpu):
    """Why GPU is not yet free for REQUEST's start ("" when it is): the ended processes the driver
    still lists on it, and the memory short of what the service needs."""
    own = request.own_pids
    ended = [p for p in gpu.processes or () if p.pid in request.leaving_pids]
    why = [f"pid {p.pid} has ended, but the driver still lists it"
           + (f" holding {format_size(p.used_memory)}" if p.used_memory else "") for p in ended]
    need = rules.memory_needed(request.service, gpu)
    free = rules.free_for(request, gpu, leaving=False)  # (what is free now: the ended ones' not yet)
    if need and free is not None and free < need:
        running = [f"pid {p.pid} holds {format_size(p.used_memory)}" for p in gpu.processes or ()
                   if p.pid not in own and p.pid not in request.leaving_pids and p.used_memory]
        why.append(f"{format_size(free)} free, needs {format_size(need)}"
                   + (f" ({', '.join(running)})" if running and not ended else ""))
    return "; ".join(why)


def pending(request, decision, gpus):
    """[(gpu, why)] of DECISION's GPUs that GPUS (the driver's latest answer) shows still held."""
    chosen = {g.uuid for g in decision.chosen}
    return [(g, why) for g in gpus if g.uuid in chosen for why in [holding(request, g)] if why]


def wait_for_memory(request, decision, rediscover, timeout, on_wait=None):
    """Return once DECISION's GPUs are free for REQUEST's start (REQUEST.gpus first, then
    REDISCOVER() every POLL_S); TimeoutExpired naming the GPU and the process after TIMEOUT
    seconds. A driver that fails or hangs meanwhile is asked again (what it last said stands).
    ON_WAIT(text) says what it waits for. Returns the seconds waited."""
    started = time.monotonic()
    left = pending(request, decision, request.gpus)
    while left:
        waited = time.monotonic() - started
        gpu, why = left[0]
        if waited >= timeout:
            raise TimeoutExpired(f"{request.unit}: {gpu.label} ({gpu.uuid}) is still not free after "
                                 f"{format_duration(timeout)} (handoff_timeout): {why}")
        if on_wait:
            on_wait(f"waiting for the memory of {gpu.label} ({format_duration(timeout - waited)} left): {why}")
        time.sleep(POLL_S)
        try:
            left = pending(request, decision, rediscover())
        except (DriverError, TimeoutExpired) as exc:
            left = [(gpu, f"{why} (then the driver failed: {exc})")]
    return time.monotonic() - started
