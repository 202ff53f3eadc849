"""Where the policy file is, and how a command gets the `Policy` in it: parsed by policy/parse.py,
or from its parsed copy (a memo in the runtime dir, files/memo.py) while the file is unchanged.

Importing PyYAML and parsing cost more than the rest of a decision. The memo is keyed by the
policy file's identity (device, inode, size, mtime, ctime: any edit, rename or chmod changes it)
and cortex-hook's version.
"""

import os

from .. import __version__
from ..files import memo
from ..files.trust import check_trusted
from ..model import Policy

DEFAULT_POLICY = "/etc/cortex-hook/policy.yaml"
MEMO_NAME = "policy.cache"
FORMAT = 2


def policy_path(explicit=None):
    """The policy file to read: --policy, else $CORTEX_HOOK_POLICY, else the default."""
    return explicit or os.environ.get("CORTEX_HOOK_POLICY") or DEFAULT_POLICY


def load_policy(path=None, check_owner=True, cache_dir=None):
    """Read and check the policy file; raise PolicyError (exit 78) or UnsafeFileError (77).

    With CACHE_DIR (the trusted runtime dir), an unchanged policy is read from its memo there.
    """
    path = policy_path(path)
    if check_owner:
        check_trusted(path, "policy")
    key = None
    if cache_dir:
        try:
            key = key_of(path, os.stat(path))
        except OSError:
            key = None
        cached = load_memo(cache_dir, key) if key else None
        if cached is not None:
            return cached
    from .parse import read_policy  # PyYAML and the schema: only when the memo is missing or stale
    policy = read_policy(path)
    if key:
        memo.store(cache_dir, MEMO_NAME, key, policy.to_plain())
    return policy


def key_of(path, st):
    """The memo key of the policy file at PATH with stat result ST."""
    return (FORMAT, __version__, os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def load_memo(cache_dir, key):
    """The memoised Policy for KEY, or None (no memo, stale, unsafe, unreadable)."""
    data = memo.load(cache_dir, MEMO_NAME, key)
    if data is None:
        return None
    try:
        return Policy.from_plain(data)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
