"""Refuse files that decide what root does when someone else could have changed them.

Like sshd's StrictModes: the file and every directory on the way to it must be owned by root (or
by the user running cortex-hook) and not writable by group or others. A world-writable directory
on the way is accepted with the sticky bit (as /tmp), because then nobody else can replace the
root-owned entry in it, which is checked in turn. The file itself never: in a sticky runtime dir
another user could plant UNIT.env.

The path is checked as given, one component at a time from `/`, each opened with O_NOFOLLOW and
checked through its descriptor (`fstat`), so what is checked is what is used: a symlink on the
way is followed only when the directory holding it passed and root (or we) owns the link. A file
is then read from the descriptor that was checked (`open_trusted`), never opened again by name.
"""

import os
import stat

from ..errors import UnsafeFileError

MAX_SYMLINKS = 40  # as the kernel's ELOOP limit


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
    """Raise UnsafeFileError unless PATH and every directory on the way to it are safe; a PATH
    that does not exist is left to the caller to report in its own words."""
    try:
        fd, _ = _walk(path, what, os.O_PATH)
    except FileNotFoundError:
        return
    os.close(fd)


def open_trusted(path, what):
    """A read-only descriptor of PATH, a regular file, and its fstat result, after the checks of
    the module docstring (UnsafeFileError; FileNotFoundError when it does not exist)."""
    fd, st = _walk(path, what, os.O_RDONLY | os.O_NONBLOCK)  # (NONBLOCK: a FIFO must not hang us)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{what} {path}: not a regular file")
    return fd, st


def _walk(path, what, final_flags):
    """Open PATH component by component (see the module docstring): -> (fd, fstat of it)."""
    todo = list(reversed(os.path.abspath(path).split("/")))
    where, links = "/", 0
    dirfd = _open_checked(None, "/", os.O_PATH | os.O_DIRECTORY, path, what, "/", sticky_ok=True)
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            last = not any(n not in ("", ".") for n in todo)
            shown = os.path.join(where, name)
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)  # FileNotFoundError: the caller's
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in trusted_owners():
                    raise UnsafeFileError(f"{what} {path} ({shown}): a symlink owned by uid {st.st_uid}; "
                                          "refusing to follow it")
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafeFileError(f"{what} {path}: more than {MAX_SYMLINKS} symlinks on the way")
                target = os.readlink(name, dir_fd=dirfd)
                todo.extend(reversed(target.split("/")))
                if target.startswith("/"):
                    os.close(dirfd)
                    where = "/"
                    dirfd = _open_checked(None, "/", os.O_PATH | os.O_DIRECTORY, path, what, "/", True)
                continue
            flags = final_flags if last else os.O_PATH | os.O_DIRECTORY
            fd = _open_checked(dirfd, name, flags, path, what, shown, sticky_ok=not last)
            os.close(dirfd)
            dirfd, where = fd, shown
        return dirfd, os.fstat(dirfd)
    except BaseException:
        os.close(dirfd)
        raise


def _open_checked(dirfd, name, flags, original, what, shown, sticky_ok):
    """Open NAME (in DIRFD) without following a symlink and check what was opened."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFileError(f"{what} {original} ({shown}): cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = _problem(st, sticky_ok)
    if problem is not None:
        os.close(fd)
        where = original if shown == original else f"{original} ({shown})"
        if problem == "owner":
            raise UnsafeFileError(f"{what} {where}: owned by uid {st.st_uid}, not root; refusing it "
                                  f"(chown root {shown})")
        raise UnsafeFileError(f"{what} {where}: writable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); refusing it (chmod go-w {shown})")
    return fd
