"""What a scrape shows, built from the same rows as `status --json` (statusrows.gpu_rows), the
leases, the waits and tallies in the state (state/tallies.py), and the monitor's status file.

Names follow Prometheus' conventions (base units: bytes, seconds; `_total` counters; `_info`
series of value 1 that carry names). Per-GPU series carry `gpu` (the index, as dcgm-exporter's
`gpu`) and `UUID` (as dcgm-exporter's), so they join with DCGM's series. Label sets are bounded:
GPUs, the policy's service patterns, leases and waits that exist now, reason codes, XIDs.
"""

import time

from ..statusrows import gpu_rows
from ..state import tallies as T
from .exposition import Family

GPU_STATES = ("free", "leased", "drained", "unhealthy", "absent")
HELP = {
    T.STARTS: ("counter", "Starts of a unit by how they ended: ok, cpu (the CPU fallback), refused (exit 69; "
                          "reason: the most common rejection code), timeout (gave up waiting, or its "
                          "victims did not stop: reason preempt; exit 75)."),
    T.WAIT: ("histogram", "How long a start waited for a GPU (on_unavailable: wait), by how the wait ended."),
    T.HANDOFF: ("histogram", "For a start that waited: from the release of the GPUs it got to its lease."),
    T.PREEMPTIONS: ("counter", "Units preempted (stopped or requeued) so that a start of a higher class got "
                               "their GPUs, by the preempting service and the victim's class."),
    "cortex_hook_monitor_faults_total": ("counter", "Faults the monitor saw: NVML events (kind xid, dbe, ...; "
                                                    "xid: the XID) and polled faults (kind poll), by verdict."),
    "cortex_hook_monitor_drains_total": ("counter", "GPUs the monitor drained after a fault."),
    "cortex_hook_monitor_recoveries_total": ("counter", "Monitor drains lifted after the GPU was healthy for "
                                                        "`recover:`."),
    "cortex_hook_monitor_fault_actions_total": ("counter", "What the monitor did to units on a failed GPU "
                                                           "(restart, stop, ignore, limited, failed)."),
}


def _gpu(row):
    return {"gpu": "" if row["index"] is None else str(row["index"]), "UUID": row["uuid"] or ""}


def gpu_families(rows, leases, policy):
    """The per-GPU and per-lease families, from status ROWS and LEASES."""
    f = {name: Family(name, kind, text) for name, kind, text in (
        ("cortex_hook_gpu_info", "gauge", "A GPU cortex-hook knows (1), with its model name."),
        ("cortex_hook_gpu_present", "gauge", "1 if the driver lists the GPU now, 0 if only the state knows it."),
        ("cortex_hook_gpu_leased", "gauge", "1 if some unit leases the GPU."),
        ("cortex_hook_gpu_drained", "gauge", "1 if the GPU is drained; source: admin or monitor."),
        ("cortex_hook_gpu_healthy", "gauge", "1 if the GPU passes the health checks `allocate` runs."),
        ("cortex_hook_gpu_demoted", "gauge", "1 if recent trouble the monitor saw demotes the GPU."),
        ("cortex_hook_gpu_priority_rank", "gauge", "The admin's rank of the GPU (0 first); absent if unranked."),
        ("cortex_hook_gpu_memory_total_bytes", "gauge", "The GPU's memory, as the driver says."),
        ("cortex_hook_gpu_memory_used_bytes", "gauge", "The GPU's memory in use, as the driver says."),
        ("cortex_hook_gpus", "gauge", "GPUs (and MIG instances) by state: free, leased, drained, unhealthy, "
                                      "absent (MIG parents are not counted)."),
        ("cortex_hook_lease_info", "gauge", "A lease (1): which unit holds the GPU, its service, class, sharing."),
        ("cortex_hook_lease_start_timestamp_seconds", "gauge", "When the lease was taken (Unix time)."),
        ("cortex_hook_lease_memory_needed_bytes", "gauge", "The free memory the holder's service asks for "
                                                           "(min_free_memory) on this GPU."),
    )}
    counts = dict.fromkeys(GPU_STATES, 0)
    by_uuid = {}
    for row in rows:
        g = _gpu(row)
        by_uuid[row["uuid"]] = row
        live = row.get("present") is not None
        f["cortex_hook_gpu_info"].add(dict(g, model_name=row["name"] or "?"), 1)
        if live:
            f["cortex_hook_gpu_present"].add(g, 1 if row["present"] else 0)
        f["cortex_hook_gpu_leased"].add(g, 1 if row["leased_by"] else 0)
        f["cortex_hook_gpu_drained"].add(dict(g, source=row["drain_source"] or ""), 1 if row["drain"] else 0)
        if row.get("present"):
            f["cortex_hook_gpu_healthy"].add(g, 0 if row["health"] else 1)
            f["cortex_hook_gpu_demoted"].add(g, 1 if row["demoted"] else 0)
        if row["priority"] is not None:
            f["cortex_hook_gpu_priority_rank"].add(g, row["priority"])
        for key in ("memory_total", "memory_used"):
            if row.get(key) is not None:
                f[f"cortex_hook_gpu_{key}_bytes"].add(g, row[key])
        if not row.get("mig_parent"):
            counts[_gpu_state(row)] += 1
    for state in GPU_STATES:
        f["cortex_hook_gpus"].add({"state": state}, counts[state])
    for lease in leases:
        row = by_uuid.get(lease.uuid)
        g = _gpu(row) if row else {"gpu": "", "UUID": lease.uuid}
        svc = policy.service_for(lease.unit)
        f["cortex_hook_lease_info"].add(dict(g, unit=lease.unit, service=svc.match if svc else "",
                                             **{"class": svc.klass if svc else ""}, sharing=lease.sharing), 1)
        f["cortex_hook_lease_start_timestamp_seconds"].add(dict(g, unit=lease.unit), lease.since)
        needed = _needed(svc, row)
        if needed is not None:
            f["cortex_hook_lease_memory_needed_bytes"].add(dict(g, unit=lease.unit), needed)
    return list(f.values())


def _gpu_state(row):
    if row.get("present") is False:
        return "absent"
    if row["drain"]:
        return "drained"
    if row["health"]:
        return "unhealthy"
    return "leased" if row["leased_by"] else "free"


def _needed(svc, row):
    if svc is None:
        return None
    if svc.min_free_memory is not None:
        return svc.min_free_memory
    if svc.min_free_fraction is not None and row and row.get("memory_total"):
        return int(svc.min_free_fraction * row["memory_total"])
    return None


def wait_families(waits, now):
    """The starts waiting for a GPU now."""
    count = Family("cortex_hook_waiting_starts", "gauge", "Starts waiting for a GPU now (on_unavailable: wait).")
    age = Family("cortex_hook_wait_age_seconds", "gauge", "How long each start waiting now has waited.")
    count.add({}, len(waits))
    for w in waits:
        age.add({"unit": w.unit, "service": w.service, "class": w.klass}, max(0.0, now - w.since))
    return [count, age]


def tally_families(found):
    """Families from the state's tallies (FOUND: tallies.tallies()), histograms grouped."""
    families = {}
    for series, samples in found.items():
        name, suffix = _split(series)
        kind, text = HELP.get(name, ("counter", series))
        family = families.setdefault(name, Family(name, kind, text))
        for labels, value in samples:
            family.add(labels, value, suffix)
    for family in families.values():
        family.samples.sort(key=_sample_order)
    return [families[name] for name in sorted(families)]


def _split(series):
    for suffix in ("_bucket", "_sum", "_count"):
        name = series[: -len(suffix)]
        if series.endswith(suffix) and HELP.get(name, ("",))[0] == "histogram":
            return name, suffix
    return series, ""


def _sample_order(sample):
    series, labels, _ = sample
    rest = sorted((k, v) for k, v in labels.items() if k != "le")
    le = labels.get("le")
    bound = float("inf") if le in (None, "+Inf") else float(le)
    return rest, series, bound


def monitor_families(status, now):
    """Whether the monitor runs, and when it last polled the driver successfully."""
    up = Family("cortex_hook_monitor_up", "gauge", "1 if the GPU health monitor runs (its status file is fresh).")
    last = Family("cortex_hook_monitor_last_poll_timestamp_seconds", "gauge",
                  "When the monitor last polled every GPU and the driver answered (Unix time).")
    running = bool(status and status.get("running"))
    up.add({}, 1 if running else 0)
    if status and status.get("at") and not status.get("driver_problem"):
        last.add({}, status["at"])
    return [up, last]


def families(policy, plugins, gpus, live, state, snapshot, monitor_status, now=None):
    """Every family of one scrape. GPUS: the inventory (LIVE: asked of the driver now, else the
    GPUs the state has seen); STATE: a State or StateView; SNAPSHOT: its snapshot within the
    policy's demote window; MONITOR_STATUS: files/monitorstatus.read()."""
    now = time.time() if now is None else now
    rows = gpu_rows(gpus, policy, plugins, snapshot, state.seen_gpus(), live=live, now=now)
    found = T.tallies(state)
    return (gpu_families(rows, snapshot.leases, policy) + wait_families(T.waits(state), now)
            + tally_families(found) + monitor_families(monitor_status, now))
