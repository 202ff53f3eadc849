"""Writing a file so that no reader ever sees half of it, and removing one quietly."""

import os

from ..errors import OutputError


def write_atomic(path, text, mode=0o644):
    """Write TEXT (str or bytes) to PATH via a temp file in the same directory, fsync, rename;
    never half a file.

    The temp file is created with O_EXCL|O_NOFOLLOW and the final name is replaced by rename(2),
    which does not follow a symlink planted at PATH.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    data = text.encode("utf-8") if isinstance(text, str) else text
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        os.unlink(tmp)  # left by a killed run with our pid: it is ours to replace
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def remove_quietly(path):
    """Remove PATH if it exists; True if something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot remove {path}: {exc.strerror}") from None
