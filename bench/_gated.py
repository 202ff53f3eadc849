"""Run one `cortex-hook` command, released by a gate shared with other processes (bootstorm.py).

usage: VENV_PYTHON _gated.py READY_FILE GATE_FIFO warm|cold -- CORTEX-HOOK-ARGS...

Like tests/helpers/gated_allocate.py, but it runs the INSTALLED cortex-hook (the bench venv's):
`warm` imports cortex-hook, the modules `allocate` imports lazily and its libraries (yaml,
pluggy, pynvml: import only, nvmlInit stays after the gate) before the gate, so the storm
measures the driver calls and the contention for the state database; `cold` passes the gate first and imports after,
as 64 units starting at boot would. It prints `gate-passed MONOTONIC` on stderr once through.
"""

import os
import sys
import time


def main(argv):
    ready, gate, mode = argv[0], argv[1], argv[2]
    if argv[3] != "--":
        sys.stderr.write("usage: _gated.py READY_FILE GATE_FIFO warm|cold -- ARGS...\n")
        return 2
    args = argv[4:]
    if mode == "warm":
        import cortex_hook.cli  # noqa: F401
        for name in ("cli.allocate", "cli.release", "state", "policy.parse"):  # what allocate imports
            __import__(f"cortex_hook.{name}")
        # the storm's runtime dir starts empty, as /run after a boot: no parsed policy and no hook
        # plan yet, so every process parses the policy and asks pluggy
        import pluggy  # noqa: F401
        import pynvml  # noqa: F401
        import yaml  # noqa: F401
    with open(ready + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(ready + ".tmp", ready)  # the ready file appears complete or not at all
    fd = os.open(gate, os.O_RDONLY)  # blocks until the bench opens the FIFO for writing
    os.close(fd)
    sys.stderr.write(f"gate-passed {time.monotonic():.6f}\n")
    sys.stderr.flush()
    from cortex_hook.cli import run
    run(args)  # as the console script: ends the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
