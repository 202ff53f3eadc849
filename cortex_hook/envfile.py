"""Env files in systemd's EnvironmentFile= syntax, and atomic writes (temp file + rename).

Every value is double-quoted; inside, systemd (env-file.c) turns `\\"`, `\\\\`, `\\$` and `\\``
back into the bare character and keeps a literal newline, so any valid UTF-8 string without
NUL reaches the service byte for byte. Names must be valid shell variable names.
"""

import os
import re

from .errors import OutputError, UsageError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"})


def check_env(env):
    """Raise UsageError for a name or value systemd would refuse or alter."""
    for name, value in env.items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"environment variable name {name!r} is not valid")
        if not isinstance(value, str):
            raise UsageError(f"environment variable {name}: value must be text, got {type(value).__name__}")
        if "\0" in value:
            raise UsageError(f"environment variable {name}: value contains a NUL byte")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"environment variable {name}: value is not valid UTF-8") from None


def render_env(env, header=None):
    """The text of an env file for ENV (an ordered mapping)."""
    check_env(env)
    # systemd < 254 continues a comment after a trailing backslash, swallowing the next variable
    lines = [f"# {line.rstrip(chr(92))}" for line in (header or "").splitlines()]
    lines += [f'{name}="{value.translate(_ESCAPE)}"' for name, value in env.items()]
    return "\n".join(lines) + "\n"


def write_atomic(path, text, mode=0o644):
    """Write TEXT (str or bytes) to PATH via a temp file in the same directory, fsync, rename;
    never half a file.

    The temp file is created with O_EXCL|O_NOFOLLOW and the final name is replaced by rename(2),
    which does not follow a symlink planted at PATH.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        os.unlink(tmp)  # left by a killed run with our pid: it is ours to replace
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
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
