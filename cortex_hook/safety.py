"""Refuse files that decide what root does when someone else could have changed them.

Like sshd's StrictModes: the file and every directory above it must be owned by root (or by the
user running cortex-hook) and not writable by group or others. A world-writable directory is
accepted only with the sticky bit (as /tmp), because then nobody else can replace the root-owned
entry below it, which is checked in turn.
"""

import os
import stat

from .errors import UnsafeFileError


def trusted_owners():
    return {0, os.geteuid()}


def check_trusted(path, what):
    """Raise UnsafeFileError unless PATH (resolved) and its parent directories are safe."""
    real = os.path.realpath(path)
    owners = trusted_owners()
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return  # the caller reports a missing file in its own words
    except OSError as exc:
        raise UnsafeFileError(f"{what} {path}: cannot stat: {exc.strerror}") from None
    _check_one(real, st, owners, what, path, real, is_dir=stat.S_ISDIR(st.st_mode))
    parent = os.path.dirname(real)
    while True:
        try:
            pst = os.stat(parent)
        except OSError as exc:
            raise UnsafeFileError(f"{what} {path}: cannot stat {parent}: {exc.strerror}") from None
        _check_one(parent, pst, owners, what, path, real, is_dir=True)
        if parent == "/":
            break
        parent = os.path.dirname(parent)


def _check_one(p, st, owners, what, original, real, is_dir):
    shown = original if p == real == original else f"{original} ({p})"
    if st.st_uid not in owners:
        raise UnsafeFileError(
            f"{what} {shown}: owned by uid {st.st_uid}, not root; refusing it "
            f"(chown root {p})"
        )
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not (is_dir and st.st_mode & stat.S_ISVTX):
        raise UnsafeFileError(
            f"{what} {shown}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing it (chmod go-w {p})"
        )
