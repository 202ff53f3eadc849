"""What the monitor makes of what it sees, in four verdicts:

- FATAL: drain the GPU, and act on every unit leasing it (`on_gpu_fault`);
- DRAIN: keep new work off it, leave running servers alone (a page retirement or row remap that
  is pending a GPU reset does not break the server using it);
- TROUBLE: demote it for a while (dynamic priority), never drain;
- IGNORE: an application's own error (the GPU is fine), or nothing of note.
"""

from .. import rules

FATAL, DRAIN, TROUBLE, IGNORE = "fatal", "drain", "trouble", "ignore"
ORDER = (IGNORE, TROUBLE, DRAIN, FATAL)  # worst last

# the codes of rules.faults() that a poll sees
POLL_VERDICTS = {"lost": FATAL, "ecc": FATAL, "remap-failure": FATAL,
                 "retired-pages": DRAIN, "remapped-rows": DRAIN, "too-hot": TROUBLE}
RECOVERY_ACTIONS = {1: "a GPU reset", 2: "a node reboot", 3: "draining peer-to-peer traffic",
                    4: "draining peer-to-peer traffic and a GPU reset"}


def classify_event(event, health):
    """(verdict, why) for an NVML event under the policy's HEALTH."""
    if event.kind == "xid":
        xid = event.data
        if xid in health.ignore_xids:
            return IGNORE, f"XID {xid} (an application's error: ignore_xids)"
        if xid in health.fatal_xids:
            return FATAL, f"XID {xid}"
        return TROUBLE, f"XID {xid}"
    if event.kind == "dbe":
        return FATAL, "double-bit ECC error"
    if event.kind == "gpu-unavailable":
        return FATAL, "the driver reports the GPU unavailable"
    if event.kind == "recovery-action":
        action = RECOVERY_ACTIONS.get(event.data)
        return (FATAL, f"the driver asks for {action}") if action else (IGNORE, "no recovery action needed")
    return IGNORE, event.kind


def classify_gpu(health, gpu):
    """(verdict, why) for one polled GPU: its worst fault under HEALTH, or (IGNORE, "")."""
    worst, why = IGNORE, ""
    for reason in rules.faults(health, gpu):
        verdict = POLL_VERDICTS.get(reason.code, IGNORE)
        if ORDER.index(verdict) > ORDER.index(worst):
            worst, why = verdict, reason.text
    return worst, why
