"""The cortex-hook command lines installed units run: the program, the Python it runs under, and
the flags baked in (the policy, state and runtime dir this installation uses)."""

import os
import shutil
import sys

from ..errors import UsageError
from ..files.rundir import runtime_dir as default_runtime_dir
from .unitfile import exec_word, plain_path

SPECIFIERS = ("%n", "%i")  # passed to systemd as they are, for it to expand


def program_path():
    """The absolute path of the installed `cortex-hook` program (next to this Python)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "cortex-hook")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("cortex-hook")
    if not found:
        raise UsageError("cannot find the `cortex-hook` program; pass --program PATH")
    return os.path.abspath(found)


def interpreter_of(program, root="/"):
    """The Python in PROGRAM's `#!` line (read under ROOT), or None if it is not a Python script."""
    try:
        with open(os.path.join(root, program.lstrip("/")), "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    parts = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
    return parts[0] if parts and os.path.basename(parts[0]).startswith("python") else None


class Options:
    """Where the installed commands find their files (flags baked into every command line).

    Commands run as `PYTHON -I PROGRAM`: nothing in the environment (PYTHONPATH, PYTHONHOME...)
    decides what Python imports for root."""

    def __init__(self, program=None, policy=None, state=None, runtime_dir=None, root="/"):
        self.program = plain_path(program or program_path(), "program")
        python = interpreter_of(self.program, root)
        self.python = plain_path(python, "interpreter") if python else None
        self.policy = policy
        self.state = state
        self.runtime_dir = plain_path(runtime_dir or default_runtime_dir(None), "runtime dir")

    def command(self, *words):
        """A command line: the program, the baked flags, then WORDS (specifiers pass as they are)."""
        out = [exec_word(self.python), "-I", exec_word(self.program)] if self.python else [exec_word(self.program)]
        for flag, value in (("--policy", self.policy), ("--state", self.state),
                            ("--runtime-dir", self.runtime_dir)):
            if value:
                out += [flag, exec_word(os.path.abspath(value))]
        out += [w if w in SPECIFIERS else exec_word(w) for w in words]
        return " ".join(out)
