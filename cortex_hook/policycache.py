"""The parsed policy, cached in the runtime dir so the start path does not import YAML.

Importing PyYAML and parsing costs more than the rest of a decision. The cache holds the parsed
Policy as marshal data, keyed by the policy file's identity (device, inode, size, mtime, ctime:
any edit, rename or chmod changes it) and cortex-hook's version. It lives in the runtime dir,
which only root can change, and is itself refused unless owned by root (or us) and not writable
by others: it decides what root does as much as the policy does.
"""

import marshal
import os

from . import __version__
from .model import HealthPolicy, Policy, ScoringPolicy, ServicePolicy
from .safety import stat_is_trusted

CACHE_NAME = "policy.cache"
FORMAT = 1


def key_of(path, st):
    return (FORMAT, __version__, os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def load(cache_dir, key):
    """The cached Policy for KEY, or None (no cache, stale, unsafe, unreadable)."""
    path = os.path.join(cache_dir, CACHE_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
    try:
        return from_plain(data["policy"])
    except (KeyError, TypeError):
        return None


def store(cache_dir, key, policy):
    """Write the cache (best effort: a failure only costs the next start a parse)."""
    from .envfile import write_atomic
    from .errors import CortexError
    try:
        write_atomic(os.path.join(cache_dir, CACHE_NAME),
                     marshal.dumps({"key": key, "policy": to_plain(policy)}), mode=0o644)
    except (CortexError, OSError, ValueError):
        pass


def to_plain(policy):
    out = policy.as_dict()
    out["health"] = policy.health.as_dict()
    out["scoring"] = policy.scoring.as_dict()
    out["services"] = [s.as_dict() for s in policy.services]
    return out


def from_plain(data):
    data = dict(data)
    data["health"] = HealthPolicy(**data["health"])
    data["scoring"] = ScoringPolicy(**data["scoring"])
    data["services"] = [ServicePolicy(**s) for s in data["services"]]
    return Policy(**data)
