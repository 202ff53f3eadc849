"""Marshal files in the runtime dir that spare later commands work whose answer is known.

Each holds {"key": KEY, "value": VALUE}; `load` returns VALUE only when KEY matches exactly. They
live in the runtime dir, which only root can change, and are refused unless owned by root (or us)
and not writable by others: what they hold decides what root does. `store` is best effort, for
caches (a failure only costs the next start the work again); a file that must exist is written
with `encode` and write_atomic, which raise.
"""

import marshal
import os

from ..errors import CortexError
from .atomic import write_atomic
from .trust import stat_is_trusted


def load(cache_dir, name, key):
    """The value stored under NAME for KEY, or None (missing, stale, unsafe or unreadable)."""
    try:
        fd = os.open(os.path.join(cache_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat_is_trusted(os.fstat(fd)):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            data = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        if fd is not None:
            os.close(fd)
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data.get("value")


def encode(key, value):
    """The bytes of a memo file holding VALUE for KEY."""
    return marshal.dumps({"key": key, "value": value})


def store(cache_dir, name, key, value):
    """Write VALUE under NAME for KEY (atomically; errors ignored)."""
    try:
        write_atomic(os.path.join(cache_dir, name), encode(key, value), mode=0o644)
    except (CortexError, OSError, ValueError):
        pass
