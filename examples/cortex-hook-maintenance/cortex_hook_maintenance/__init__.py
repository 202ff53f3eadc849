"""Keep GPUs under maintenance out of every plan.

The file (default /etc/cortex-hook/maintenance, or $CORTEX_HOOK_MAINTENANCE) lists one GPU UUID
per line, optionally followed by why; `#` starts a comment. A listed GPU is rejected with that
reason, which `cortex-hook plan` and the journal then show.
"""

import os

from cortex_hook import hookimpl
from cortex_hook.model import Reason


def maintenance():
    """{uuid: why} from the maintenance file (empty if there is none)."""
    path = os.environ.get("CORTEX_HOOK_MAINTENANCE", "/etc/cortex-hook/maintenance")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except FileNotFoundError:
        return {}
    return {uuid: why.strip() or "listed" for uuid, _, why in (l.partition(" ") for l in lines if l)}


@hookimpl
def cortex_check_gpu(request, gpu):
    """Reject a GPU listed in the maintenance file."""
    why = maintenance().get(gpu.uuid)
    return Reason("maintenance", f"under maintenance: {why}") if why else None
