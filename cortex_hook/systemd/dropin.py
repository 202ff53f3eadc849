"""The drop-in cortex-hook puts next to a unit, in one of three modes, and its installation.

Every mode takes the lease as root before the server starts and gives it back however it ends:

    ExecStartPre=+cortex-hook allocate %n          (root, even with User=)
    EnvironmentFile=-/run/cortex-hook/%n.env        (the `-`: the file is read before ExecStartPre too)
    ExecStopPost=+cortex-hook release %n           (runs on stop, crash, kill -9, timeout, watchdog)

`exec` and `supervise` also reset ExecStart= and re-declare the unit's own command behind the
wrapper, with its prefixes; `supervise` makes the unit Type=notify with NotifyAccess=exec.
"""

import os
import shutil
import sys

from ..errors import UsageError
from ..files.atomic import write_atomic
from ..files.rundir import runtime_dir as default_runtime_dir
from .unitfile import UnitFiles, exec_word, plain_path, split_prefixes, split_words
from .unitname import normalize_unit

MODES = ("env", "exec", "supervise")
DROPIN_NAME = "zz-cortex-hook.conf"  # sorts after the admin's drop-ins: our ExecStart= reset comes last
MARKER = "# Written by cortex-hook"


def program_path():
    """The absolute path of the installed `cortex-hook` program (next to this Python)."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "cortex-hook")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("cortex-hook")
    if not found:
        raise UsageError("cannot find the `cortex-hook` program; pass --program PATH")
    return os.path.abspath(found)


def validate_target(unit):
    """A unit name for install: a service or a template (`vllm@.service` covers every instance)."""
    if unit.endswith("@") or unit.endswith("@.service"):
        stem = unit[: -len(".service")] if unit.endswith(".service") else unit
        normalize_unit(stem + "x.service")  # validate the rest of the grammar with a dummy instance
        return stem + ".service"
    return normalize_unit(unit)


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

    Commands run as `PYTHON -I PROGRAM`: the root ExecStartPre=+/ExecStopPost=+ lines inherit the
    unit's environment, and isolated mode keeps a PYTHONPATH set there for the server from
    deciding what root imports.
    """

    def __init__(self, program=None, policy=None, state=None, runtime_dir=None, root="/"):
        self.program = plain_path(program or program_path(), "program")
        python = interpreter_of(self.program, root)
        self.python = plain_path(python, "interpreter") if python else None
        self.policy = policy
        self.state = state
        self.runtime_dir = plain_path(runtime_dir or default_runtime_dir(None), "runtime dir")

    def command(self, *words):
        """A command line: the program, the baked flags, then WORDS (`%n` passes as a specifier)."""
        out = [exec_word(self.python), "-I", exec_word(self.program)] if self.python else [exec_word(self.program)]
        for flag, value in (("--policy", self.policy), ("--state", self.state),
                            ("--runtime-dir", self.runtime_dir)):
            if value:
                out += [flag, exec_word(os.path.abspath(value))]
        out += [w if w == "%n" else exec_word(w) for w in words]
        return " ".join(out)


def wrapped_exec_start(unit, mode, files, options):
    """The re-declared ExecStart= value for exec/supervise, or UsageError with a one-line reason."""
    starts = files.exec_start()
    if not starts:
        raise UsageError(f"{unit}: has no ExecStart= to wrap (is it installed? files: "
                         f"{', '.join(files.files()) or 'none'})")
    if len(starts) > 1:
        raise UsageError(f"{unit}: has {len(starts)} ExecStart= lines; only one command can be wrapped "
                         "(use --mode env)")
    unit_type = files.service_setting("Type") or "simple"
    if unit_type in ("oneshot", "forking", "dbus") or (mode == "supervise" and unit_type == "notify"):
        raise UsageError(f"{unit}: Type={unit_type} cannot be wrapped by `{mode}`"
                         + (" (it already talks sd_notify: use --mode exec or env)" if unit_type == "notify"
                            else " (use --mode env)"))
    value, path, line = starts[0]
    prefixes, command = split_prefixes(value)
    words = split_words(command)
    if any(os.path.basename(w.strip("\"'")) == "cortex-hook" for w in words[:3]):
        raise UsageError(f"{unit}: ExecStart= in {path}:{line} is already wrapped by cortex-hook")
    head = options.command(mode, "--unit", "%n")
    if "@" in prefixes:  # `@/usr/bin/x NAME args`: NAME is argv[0]; the wrapper does that now
        if len(words) < 2:
            raise UsageError(f"{unit}: ExecStart=@ in {path}:{line} needs a path and an argv[0]")
        head += f" --argv0 {words[1]}"  # kept as written: it may hold specifiers or quotes
        words = [words[0]] + words[2:]
        prefixes = prefixes.replace("@", "")
    return f"{prefixes}{head} -- {' '.join(words)}"


def render(unit, mode, options, root="/", files=None, service=None):
    """The drop-in text for UNIT in MODE."""
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    lines = [f"{MARKER} (mode {mode}) for {unit}.",
             f"# `cortex-hook uninstall {unit}` removes it; `cortex-hook plan %n` explains the choice.",
             "[Service]",
             f"ExecStartPre=+{options.command('allocate', '%n')}",
             f"EnvironmentFile=-{options.runtime_dir}/%n.env",
             f"ExecStopPost=+{options.command('release', '%n')}"]
    if mode in ("exec", "supervise"):
        files = files or UnitFiles(unit, root, skip_dropin=DROPIN_NAME)
        lines += ["ExecStart=", f"ExecStart={wrapped_exec_start(unit, mode, files, options)}"]
    if mode == "supervise":
        # NotifyAccess=exec: the wrapper and ExecStartPre= (STATUS= while waiting for a GPU) may
        # notify, the server and its children may not (a stray READY=1 is ignored).
        # KillMode=mixed: SIGTERM goes to the wrapper only, which passes it on once (a second
        # SIGTERM makes some servers skip their graceful shutdown); SIGKILL still reaches all.
        lines += ["Type=notify", "NotifyAccess=exec", "KillMode=mixed"]
        if service is not None and getattr(service, "watchdog_seconds", None):
            lines.append(f"WatchdogSec={service.watchdog_seconds:g}s")
    return "\n".join(lines) + "\n"


def dropin_path(root, unit, base="/etc/systemd/system"):
    """Where cortex-hook writes UNIT's drop-in under ROOT."""
    return os.path.join(root, base.lstrip("/"), unit + ".d", DROPIN_NAME)


def install(unit, mode, options, root="/", dry_run=False, service=None):
    """Write (or with DRY_RUN return) UNIT's drop-in; idempotent. Returns (path, text).

    SERVICE (the policy's entry for the unit, if known) adds its `watchdog:` as WatchdogSec=.
    """
    unit = validate_target(unit)
    files = UnitFiles(unit, root, skip_dropin=DROPIN_NAME)
    if files.main is None:
        raise UsageError(f"{unit}: no unit file found under {root} (systemd's search path)")
    text = render(unit, mode, options, root, files, service)
    path = dropin_path(root, unit)
    if dry_run:
        return path, text
    _refuse_foreign(path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_atomic(path, text)
    return path, text


def uninstall(unit, root="/"):
    """Remove the drop-in cortex-hook wrote for UNIT (and its directory if now empty)."""
    unit = validate_target(unit)
    path = dropin_path(root, unit)
    if not os.path.exists(path):
        return None
    _refuse_foreign(path)
    os.unlink(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # the admin's own drop-ins are still there
    return path


def _refuse_foreign(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except FileNotFoundError:
        return
    if not first.startswith(MARKER):
        raise UsageError(f"{path} exists and was not written by cortex-hook; refusing to touch it")
