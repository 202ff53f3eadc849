"""The drop-in cortex-hook puts next to a unit, in one of three modes, and its installation.

Every mode hands the lease to the unit's lease unit (systemd/leaseunit.py), which runs as root
with the service manager's environment, never the unit's:

    [Unit]
    Requires=cortex-hook-lease@%n.service        (the lease, taken before the unit starts ...
    After=cortex-hook-lease@%n.service           ... and given back after it stops)
    [Service]
    EnvironmentFile=-/run/cortex-hook/%n.env     (the `-`: a unit with no GPU variables starts too)

`exec` and `supervise` also reset ExecStart= and re-declare the unit's own command behind the
wrapper, with its prefixes; `supervise` makes the unit Type=notify.
"""

import os

from ..errors import UsageError
from ..files.atomic import write_atomic
from ..quantities import systemd_timespan
from . import leaseunit
from .unitfile import UnitFiles, split_prefixes, split_words
from .unitname import UNIT_NAME_MAX, is_template, normalize_unit

MODES = ("env", "exec", "supervise")
DROPIN_NAME = "zz-cortex-hook.conf"  # sorts after the admin's drop-ins: our ExecStart= reset comes last
MARKER = "# Written by cortex-hook"
GENERATOR_DIR = "/run/systemd/generator"  # where systemd has generators write (their NORMAL_DIR)


def validate_target(unit):
    """A unit name for install: a service or a template (`vllm@.service` covers every instance)."""
    if unit.endswith("@") or unit.endswith("@.service"):
        stem = unit[: -len(".service")] if unit.endswith(".service") else unit
        normalize_unit(stem + "x.service")  # validate the rest of the grammar with a dummy instance
        return stem + ".service"
    unit = normalize_unit(unit)
    if len(leaseunit.lease_unit_of(unit).encode()) > UNIT_NAME_MAX:
        raise UsageError(f"unit {unit!r}: its lease unit's name would be longer than {UNIT_NAME_MAX} bytes "
                         "(systemd's limit); give the unit a shorter name")
    return unit


def any_instance(unit):
    """UNIT as an admin types it in a command: a template `vllm@.service` as `vllm@INSTANCE.service`."""
    return unit[: -len("@.service")] + "@INSTANCE.service" if is_template(unit) else unit


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
    # a comment is never expanded: the real name, or for a template the form an admin fills in
    lines = [f"{MARKER} (mode {mode}) for {unit}.",
             f"# `cortex-hook uninstall {unit}` removes it; `cortex-hook plan {any_instance(unit)}` "
             "explains the choice.",
             "[Unit]",
             f"Requires={leaseunit.PREFIX}%n.service",
             f"After={leaseunit.PREFIX}%n.service",
             "[Service]",
             f"EnvironmentFile=-{options.runtime_dir}/%n.env"]
    if mode in ("exec", "supervise"):
        files = files or UnitFiles(unit, root, skip_dropin=DROPIN_NAME)
        lines += ["ExecStart=", f"ExecStart={wrapped_exec_start(unit, mode, files, options)}"]
    if mode == "supervise":
        # NotifyAccess=main: the wrapper may notify, the server and its children may not (a stray
        # READY=1 is ignored). KillMode=mixed: SIGTERM goes to the wrapper only, which passes it
        # on once (a second SIGTERM makes some servers skip their graceful shutdown); SIGKILL
        # still reaches all.
        lines += ["Type=notify", "NotifyAccess=main", "KillMode=mixed"]
        if service is not None and getattr(service, "watchdog_seconds", None):
            lines.append(f"WatchdogSec={systemd_timespan(service.watchdog_seconds)}")
    return "\n".join(lines) + "\n"


def dropin_path(root, unit, base="/etc/systemd/system"):
    """Where cortex-hook writes UNIT's drop-in under ROOT."""
    return os.path.join(root, base.lstrip("/"), unit + ".d", DROPIN_NAME)


def generated_dropins(unit, root="/"):
    """The drop-ins the generator wrote that systemd applies to UNIT (an instance also gets its
    template's), under ROOT: [path], empty when it wrote none."""
    names = [unit]
    if "@" in unit and not is_template(unit):
        names.append(unit[: unit.index("@") + 1] + ".service")
    found = []
    for name in names:
        path = dropin_path(root, name, GENERATOR_DIR)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.readline().startswith(MARKER):
                    found.append(path)
        except OSError:
            continue
    return found


def template_path(root, base="/etc/systemd/system"):
    """Where cortex-hook writes the lease unit template under ROOT."""
    return os.path.join(root, base.lstrip("/"), leaseunit.TEMPLATE)


def write_template(options, root="/", base="/etc/systemd/system"):
    """Write the lease unit template (idempotent); returns its path."""
    path = template_path(root, base)
    _refuse_foreign(path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_atomic(path, leaseunit.render(options))
    return path


def install(unit, mode, options, root="/", dry_run=False, service=None):
    """Write (or with DRY_RUN return) UNIT's drop-in, and the lease unit template beside it;
    idempotent. Returns (path, text) of the drop-in.

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
    write_template(options, root)
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
