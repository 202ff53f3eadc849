"""Env files in systemd's EnvironmentFile= syntax.

Every value is double-quoted; inside, systemd (env-file.c) turns `\\"`, `\\\\`, `\\$` and `\\``
back into the bare character and keeps a literal newline, so any valid UTF-8 string without
NUL reaches the service byte for byte. Names must be valid shell variable names.
"""

import re

from ..errors import UsageError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # patterns, compiled (and cached) by re at first use: not at every start
# names no env file of cortex-hook may set: they steer the dynamic loader (LD_*), what an
# interpreter runs (PATH, PYTHON*), or cortex-hook itself (CORTEX_HOOK_*; CORTEX_HOOK_UNIT is ours)
STEERING = r"LD_[A-Z0-9_]*|PATH|PYTHON[A-Z0-9_]*|CORTEX_HOOK_[A-Z0-9_]*"
OWN_VARIABLES = ("CORTEX_HOOK_UNIT",)


def steers_execution(name):
    """True for an environment variable an env file must never set (STEERING, not ours)."""
    return bool(re.fullmatch(STEERING, name)) and name not in OWN_VARIABLES
_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"})


def check_env(env):
    """Raise UsageError for a name or value systemd would refuse or alter."""
    for name, value in env.items():
        if not re.fullmatch(_NAME, name):
            raise UsageError(f"environment variable name {name!r} is not valid")
        if steers_execution(name):
            raise UsageError(f"environment variable {name}: steers the dynamic loader, an interpreter or "
                             "cortex-hook; never written into an env file")
        if not isinstance(value, str):
            raise UsageError(f"environment variable {name}: value must be text, got {type(value).__name__}")
        if "\0" in value:
            raise UsageError(f"environment variable {name}: value contains a NUL byte")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"environment variable {name}: value is not valid UTF-8") from None


def assignment(name, value):
    """One line of an env file: `NAME="VALUE"`, escaped for systemd (NAME and VALUE checked already)."""
    return f'{name}="{value.translate(_ESCAPE)}"'


def render_env(env, header=None):
    """The text of an env file for ENV (an ordered mapping)."""
    check_env(env)
    # systemd < 254 continues a comment after a trailing backslash, swallowing the next variable
    lines = [f"# {line.rstrip(chr(92))}" for line in (header or "").splitlines()]
    lines += [assignment(name, value) for name, value in env.items()]
    return "\n".join(lines) + "\n"
