"""The parsed policy, cached in the runtime dir so the start path does not import YAML.

Importing PyYAML and parsing costs more than the rest of a decision. The cache holds the parsed
Policy as marshal data (cortex_hook/memo.py), keyed by the policy file's identity (device,
inode, size, mtime, ctime: any edit, rename or chmod changes it) and cortex-hook's version.
"""

import os

from . import __version__, memo
from .model import HealthPolicy, Policy, ScoringPolicy, ServicePolicy

CACHE_NAME = "policy.cache"
FORMAT = 1


def key_of(path, st):
    return (FORMAT, __version__, os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def load(cache_dir, key):
    """The cached Policy for KEY, or None (no cache, stale, unsafe, unreadable)."""
    data = memo.load(cache_dir, CACHE_NAME, key)
    if data is None:
        return None
    try:
        return from_plain(data)
    except (KeyError, TypeError):
        return None


def store(cache_dir, key, policy):
    """Write the cache (best effort: a failure only costs the next start a parse)."""
    memo.store(cache_dir, CACHE_NAME, key, to_plain(policy))


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
