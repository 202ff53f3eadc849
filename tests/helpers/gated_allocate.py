"""Run one `cortex-hook` command in-process, released by a gate shared with other processes.

usage: gated_allocate.py READY_FILE GATE_FIFO -- CORTEX-HOOK-ARGS...

Imports cortex-hook (and the modules `allocate` needs) first, so the import time is paid before
the gate; then creates READY_FILE and blocks opening GATE_FIFO for reading. The test opens the
FIFO for writing once every process is ready, which wakes them all at once. Exits with the
return code of `cortex_hook.cli.main(ARGS)`.
"""

import os
import sys


# the checkout these tests belong to, not whatever cortex_hook happens to be installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import cortex_hook.cli  # noqa: E402

# the module of `allocate`/`release` (commands are imported when they run): load it now so every
# process leaves the gate warm
import cortex_hook.cli.allocate  # noqa: F401,E402
import cortex_hook.cli.release  # noqa: F401,E402
import cortex_hook.state  # noqa: F401,E402


def main(argv):
    ready, gate = argv[0], argv[1]
    if argv[2] != "--":
        sys.stderr.write("usage: gated_allocate.py READY_FILE GATE_FIFO -- ARGS...\n")
        return 2
    args = argv[3:]
    with open(ready + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(ready + ".tmp", ready)  # the ready file appears complete or not at all
    fd = os.open(gate, os.O_RDONLY)  # blocks until the test opens the FIFO for writing
    os.close(fd)
    return cortex_hook.cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
