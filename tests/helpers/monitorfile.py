"""The monitor's status file (`monitor.status` in the runtime dir) as a test writes it."""
import json
import os

from cortex_hook.files.rundir import MONITOR_STATUS


def write_status(directory, **fields):
    """Write the status file into DIRECTORY as the monitor does: JSON of FIELDS (pid, at, ...)."""
    with open(os.path.join(directory, MONITOR_STATUS), "w") as f:
        json.dump(fields, f)
