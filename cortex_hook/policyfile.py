"""Where the policy file is, and how a command gets the `Policy` in it: parsed by
cortex_hook.policy, or from its parsed copy in the runtime dir while the file is unchanged.

Importing PyYAML (and the parser) and parsing cost more than the rest of a decision. The copy
is marshal data (cortex_hook/memo.py), keyed by the policy file's identity (device, inode, size,
mtime, ctime: any edit, rename or chmod changes it) and cortex-hook's version.
"""

import os

from . import __version__, memo
from .model import HealthPolicy, Policy, ScoringPolicy, ServicePolicy

DEFAULT_POLICY = "/etc/cortex-hook/policy.yaml"
CACHE_NAME = "policy.cache"
FORMAT = 1


def policy_path(explicit=None):
    """The policy file to read: --policy, else $CORTEX_HOOK_POLICY, else the default."""
    return explicit or os.environ.get("CORTEX_HOOK_POLICY") or DEFAULT_POLICY


def load_policy(path=None, check_owner=True, cache_dir=None):
    """Read and check the policy file; raise PolicyError (exit 78) or UnsafeFileError (77).

    With CACHE_DIR (the runtime dir), an unchanged policy is read from its parsed copy there.
    """
    path = policy_path(path)
    if check_owner:
        from .safety import check_trusted
        check_trusted(path, "policy")
    key = None
    if cache_dir:
        try:
            key = key_of(path, os.stat(path))
        except OSError:
            key = None
        cached = load(cache_dir, key) if key else None
        if cached is not None:
            return cached
    from .policy import read_policy
    policy = read_policy(path)
    if key:
        store(cache_dir, key, policy)
    return policy


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
