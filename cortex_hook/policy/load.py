"""Where the policy file is, and how a command gets the `Policy` in it: parsed by policy/parse.py,
or from its parsed copy (a memo in the runtime dir, files/memo.py) while the file is unchanged.

The file is opened once, through a walk that checks every component of its path as given
(files/trust.py), and both the memo's key and the parsed text come from that one descriptor: a
path through a symlink someone else can flip can neither pass the check nor poison the memo.
Importing PyYAML and parsing cost more than the rest of a decision. The memo is keyed by the
policy file's identity (device, inode, size, mtime, ctime: any edit, rename or chmod changes it)
and cortex-hook's version.
"""

import os

from .. import __version__
from ..errors import PolicyError
from ..files import memo
from ..files.trust import open_trusted
from ..model import Policy

DEFAULT_POLICY = "/etc/cortex-hook/policy.yaml"
MEMO_NAME = "policy.cache"
FORMAT = 3
MAX_POLICY_BYTES = 1 << 20


def policy_path(explicit=None):
    """The policy file to read: --policy, else $CORTEX_HOOK_POLICY, else the default."""
    return explicit or os.environ.get("CORTEX_HOOK_POLICY") or DEFAULT_POLICY


def load_policy(path=None, check_owner=True, cache_dir=None):
    """Read and check the policy file; raise PolicyError (exit 78) or UnsafeFileError (77).

    With CACHE_DIR (the trusted runtime dir), an unchanged policy is read from its memo there.
    """
    path = policy_path(path)
    fd, st = _open(path, check_owner)
    try:
        key = key_of(path, st) if cache_dir else None
        cached = load_memo(cache_dir, key) if key else None
        if cached is not None:
            return cached
        data = _read(fd, path)
    finally:
        os.close(fd)
    from .parse import parse_policy_file  # PyYAML and the schema: only when the memo is missing or stale
    policy = parse_policy_file(data, path)
    if key:
        memo.store(cache_dir, MEMO_NAME, key, policy.to_plain())
    return policy


def _open(path, check_owner):
    try:
        if check_owner:
            return open_trusted(path, "policy")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        return fd, os.fstat(fd)
    except FileNotFoundError:
        raise PolicyError(path, 0, 0, None, "no such file (write one, or pass --policy FILE)") from None
    except OSError as exc:
        raise PolicyError(path, 0, 0, None, f"cannot read: {exc.strerror}") from None


def _read(fd, path):
    chunks, size = [], 0
    try:
        while size <= MAX_POLICY_BYTES:
            chunk = os.read(fd, MAX_POLICY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PolicyError(path, 0, 0, None, f"cannot read: {exc.strerror}") from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, 0, None, f"larger than {MAX_POLICY_BYTES} bytes; is this the policy?")
    return b"".join(chunks)


def key_of(path, st):
    """The memo key of the policy file named PATH whose descriptor's fstat is ST."""
    return (FORMAT, __version__, path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_memo(cache_dir, key):
    """The memoised Policy for KEY, or None (no memo, stale, unsafe, unreadable)."""
    data = memo.load(cache_dir, MEMO_NAME, key)
    if data is None:
        return None
    try:
        return Policy.from_plain(data)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
