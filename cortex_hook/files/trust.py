"""Refuse files that decide what root does when someone else could have changed them.

Like sshd's StrictModes: the file and every directory above it must be owned by root (or by the
user running cortex-hook) and not writable by group or others. A world-writable directory ABOVE
it is accepted with the sticky bit (as /tmp), because then nobody else can replace the root-owned
entry below it, which is checked in turn. The path itself never: in a sticky runtime dir another
user could plant UNIT.env, which systemd hands to ExecStartPre=+ (LD_PRELOAD=...) as root.
"""

import os
import stat

from ..errors import UnsafeFileError


def trusted_owners():
    """The owners a file root acts on may have: root, and the user running cortex-hook."""
    return {0, os.geteuid()}


def _problem(st, sticky_ok):
    """"owner", "mode" or None for a stat result (STICKY_OK: a sticky dir may be world-writable)."""
    if st.st_uid not in trusted_owners():
        return "owner"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
            sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return "mode"
    return None


def stat_is_trusted(st):
    """True when ST (a file or directory cortex-hook reads or writes) is owned by root (or us) and
    not writable by group or others."""
    return _problem(st, sticky_ok=False) is None


def check_trusted(path, what):
    """Raise UnsafeFileError unless PATH (resolved) and its parent directories are safe."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return  # the caller reports a missing file in its own words
    except OSError as exc:
        raise UnsafeFileError(f"{what} {path}: cannot stat: {exc.strerror}") from None
    _check_one(real, st, what, path, real, sticky_ok=False)
    parent = os.path.dirname(real)
    while True:
        try:
            pst = os.stat(parent)
        except OSError as exc:
            raise UnsafeFileError(f"{what} {path}: cannot stat {parent}: {exc.strerror}") from None
        _check_one(parent, pst, what, path, real, sticky_ok=True)
        if parent == "/":
            break
        parent = os.path.dirname(parent)


def _check_one(p, st, what, original, real, sticky_ok):
    shown = original if p == real == original else f"{original} ({p})"
    problem = _problem(st, sticky_ok)
    if problem == "owner":
        raise UnsafeFileError(
            f"{what} {shown}: owned by uid {st.st_uid}, not root; refusing it "
            f"(chown root {p})"
        )
    if problem == "mode":
        raise UnsafeFileError(
            f"{what} {shown}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing it (chmod go-w {p})"
        )
