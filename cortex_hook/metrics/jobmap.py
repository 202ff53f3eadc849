"""dcgm-exporter's HPC job mapping, kept by every command that changes the leases.

dcgm-exporter (`--hpc-job-mapping-dir DIR`) reads, at every scrape, the files of DIR whose names
are GPU indexes; each line of a file is a job, and every DCGM series of that GPU is repeated once
per job with the label `hpc_job`. Here a job is the systemd unit leasing the GPU (or one of its
MIG instances, which dcgm-exporter counts under the parent's index). A GPU nobody leases has no
file: an empty file would make dcgm-exporter drop that GPU's series altogether (it repeats a
series once per line, so zero lines leave none). Files are replaced atomically (files/atomic.py,
whose temp names are not numbers, so dcgm-exporter never reads half a file) and only when their
text changes.
"""

import os

from ..errors import CortexError
from ..files.atomic import remove_quietly, write_atomic
from ..files.trust import check_trusted
from ..systemd.journal import WARNING, log


def expected(leases, seen):
    """{file name: text} for LEASES, with SEEN the state's {uuid: (index, ...)}."""
    units = {}
    for lease in leases:
        row = seen.get(lease.uuid)
        if row and row[0] is not None:
            units.setdefault(str(row[0]), set()).add(lease.unit)
    return {index: "".join(f"{unit}\n" for unit in sorted(names)) for index, names in units.items()}


def publish(state, directory):
    """Bring DIRECTORY in line with STATE's leases (best effort: a problem is logged, and never
    fails the command that changed the leases)."""
    try:
        check_trusted(os.path.dirname(directory), "metrics.job_mapping_dir")  # before root creates anything there
        os.makedirs(directory, mode=0o755, exist_ok=True)
        check_trusted(directory, "metrics.job_mapping_dir")
        sync(directory, expected(state.leases(), state.seen_gpus()))
    except (OSError, CortexError) as exc:
        log(WARNING, f"cortex-hook: warning: job mapping not updated: {exc}")


def sync(directory, files):
    """Write FILES ({name: text}) into DIRECTORY and remove the other GPU-index files there."""
    for name in os.listdir(directory):
        if name.isdigit() and name not in files:
            remove_quietly(os.path.join(directory, name))
    for name, text in sorted(files.items()):
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        write_atomic(path, text)


def retire(directory):
    """Remove the GPU-index files of a directory the policy no longer names (best effort)."""
    try:
        check_trusted(directory, "metrics.job_mapping_dir")
        if os.path.isdir(directory):
            sync(directory, {})
    except (OSError, CortexError) as exc:
        log(WARNING, f"cortex-hook: warning: old job mapping not emptied: {exc}")
