"""The systemd generator: at boot and on every daemon-reload, drop-ins from the policy alone.

systemd runs it as `GENERATOR NORMAL_DIR EARLY_DIR LATE_DIR`. For every service with `install:`
(a unit name, or `NAME@*.service` meaning the template) it writes the same drop-in as
`cortex-hook install` into NORMAL_DIR, so a drop-in in /etc/systemd/system still wins, and the
lease unit template they need.

It never asks the driver, and it never fails: its exit status could fail the boot.

What it writes never changes a unit that is running (systemd lists an invocation for it): a new
mode, notify or kill setting under a running server would kill it (a supervised server whose unit
turns Type=simple has its READY and watchdog pings refused). Such a unit keeps the drop-in of the
last good run until it is stopped and systemd reloads; `generator.status` lists it as pending.
With a broken policy every unit of the last good run keeps that drop-in: a running one is left
alone, and a new start fails in its lease unit with the policy error, instead of starting on
unplanned GPUs. The last good run (`.generated-units` beside the policy, JSON) is read only when
root (or we) owns it and nobody else can write it, and only its valid unit names are used.

It parses the policy anyway, so it leaves the parsed copy in the runtime dir (policy/load.py)
beside its status: the units starting at boot, all at once, then read it instead of each
parsing the YAML again.
"""

import json
import os
import time

from ..errors import CortexError
from ..files.atomic import write_atomic
from ..files.rundir import GENERATOR_STATUS, trusted
from ..files.trust import open_trusted
from . import isolation, leaseunit
from .dropin import DROPIN_NAME, MARKER, render, validate_target
from .program import Options
from .unitname import is_template

UNITS_FILE = ".generated-units"
MAX_UNITS_FILE = 1 << 20
RUNNING_DIR = "/run/systemd/units"  # `invocation:NAME` for every active unit
SCRIPT = """#!{python} -I
# The cortex-hook systemd generator, written by `cortex-hook install-generator`.
# systemd runs it at boot and on every daemon-reload; it writes drop-ins for the
# policy's services that have `install:`. It never asks the GPU driver and never fails.
import sys
from cortex_hook.cli import main
sys.exit(main({argv!r} + sys.argv[1:]))
"""


def script(python, argv):
    """The generator script: PYTHON runs `cortex-hook ARGV generate DIRS…`."""
    return SCRIPT.format(python=python, argv=list(argv))


def target_unit(svc):
    """The unit (or template) a service's drop-in goes to."""
    if svc.match.endswith("@*.service"):
        return svc.match[: -len("*.service")] + ".service"
    return svc.match


def generate(ctx, normal_dir, options, root="/", running_dir=RUNNING_DIR, control_dir=isolation.CONTROL_DIR):
    """Write the drop-ins into NORMAL_DIR (and, with `isolate: true`, the lockdown placeholders into
    CONTROL_DIR: systemd/isolation.py). Returns a status dict (also written to the runtime dir).
    The parsed policy is left in the runtime dir when it is trusted (ctx.memo_dir)."""
    last_good_path = os.path.join(os.path.dirname(os.path.abspath(ctx.policy_path)), UNITS_FILE)
    last_good = read_last_good(last_good_path)
    status = {"at": time.time(), "policy": ctx.policy_path, "ok": True, "error": None, "units": {},
              "skipped": {}, "pending": {}}
    try:
        wanted = _wanted(ctx.policy(), options, root, status)
    except CortexError as exc:
        status.update(ok=False, error=str(exc))
        wanted = last_good  # allocate will fail in the lease unit, saying why
    running = _running(running_dir)
    written = {}
    for unit in sorted(set(wanted) | set(last_good)):
        entry, before = wanted.get(unit), last_good.get(unit)
        if before and (entry is None or before["dropin"] != entry["dropin"]) and _is_running(unit, running):
            status["pending"][unit] = f"keeps its {before['mode']} drop-in while it runs"
            entry = before
        if entry is None:
            continue
        _write(os.path.join(normal_dir, unit + ".d", DROPIN_NAME), entry["dropin"])
        status["units"][unit] = entry["mode"]
        written[unit] = entry
    if written:
        _write(os.path.join(normal_dir, leaseunit.TEMPLATE), leaseunit.render(options))
    if status["ok"] and ctx.policy().isolate:
        for unit in written:
            try:
                isolation.prepare(unit, control_dir)
            except OSError as exc:
                log_kmsg(f"{unit}: no lockdown placeholder ({exc}): systemd will call it changed on disk")
    if status["ok"]:
        write_last_good(last_good_path, written)
    return status


def _wanted(policy, options, root, status):
    """{unit: {"mode", "dropin"}} for the policy's services with `install:`."""
    wanted = {}
    for svc in policy.services:
        unit = target_unit(svc) if svc.install else None
        if unit is None or unit in wanted:
            continue
        mode = svc.install
        try:
            text = render(unit, mode, options, root=root, service=svc)
        except CortexError as exc:
            status["skipped"][unit] = str(exc)
            mode, text = "env", render(unit, "env", options, root=root, service=svc)  # still leased
        wanted[unit] = {"mode": mode, "dropin": text}
    return wanted


def _running(running_dir):
    """The names of the units systemd lists as active."""
    try:
        return {n[len("invocation:"):] for n in os.listdir(running_dir) if n.startswith("invocation:")}
    except OSError:
        return set()


def _is_running(unit, running):
    """UNIT is active, or (a template `NAME@.service`) one of its instances is."""
    if is_template(unit):
        prefix = unit[: -len(".service")]
        return any(name.startswith(prefix) and name.endswith(".service") for name in running)
    return unit in running


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, text)


def read_last_good(path):
    """{unit: {"mode", "dropin"}} of the last good run, or {} when there is none, it cannot be read,
    someone else could have written it, or it is not what this generator writes."""
    try:
        fd, _ = open_trusted(path, "generated units")
    except (CortexError, OSError):
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(MAX_UNITS_FILE))
    except (OSError, ValueError):
        return {}
    units = data.get("units") if isinstance(data, dict) else None
    out = {}
    for unit, entry in (units.items() if isinstance(units, dict) else ()):
        try:
            valid = validate_target(unit) == unit
        except CortexError:
            valid = False
        if valid and isinstance(entry, dict) and isinstance(entry.get("mode"), str) \
                and isinstance(entry.get("dropin"), str) and entry["dropin"].startswith(MARKER):
            out[unit] = {"mode": entry["mode"], "dropin": entry["dropin"]}
    return out


def write_last_good(path, units):
    """Remember this good run's drop-ins (best effort: at early boot the root file system may be
    read-only, and the next daemon-reload writes it)."""
    text = json.dumps({"comment": "the drop-ins of the cortex-hook generator's last good run",
                       "units": units}, indent=1, sort_keys=True) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except OSError:
        pass
    try:
        write_atomic(path, text)
    except (CortexError, OSError):
        pass


def log_kmsg(message):
    """Generators' stderr reaches neither journal nor console: use /dev/kmsg if we can."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"<4>cortex-hook-generator: {message}\n")
    except OSError:
        pass


def main(ctx, dirs, program=None):
    """`cortex-hook generate NORMAL [EARLY LATE]`: write the drop-ins; always returns 0."""
    try:
        options = Options(program, policy=ctx.policy_given, state=ctx.state_given, runtime_dir=ctx.runtime_dir)
        try:
            os.makedirs(ctx.runtime_dir, mode=0o755, exist_ok=True)
        except OSError:
            pass
        status = generate(ctx, dirs[0], options)
        if not status["ok"]:
            log_kmsg(f"policy unusable, units kept from starting: {status['error']}")
        for unit, why in status["skipped"].items():
            log_kmsg(f"{unit}: env mode instead: {why}")
        for unit, why in status["pending"].items():
            log_kmsg(f"{unit}: {why}")
        if trusted(ctx.runtime_dir):
            write_atomic(os.path.join(ctx.runtime_dir, GENERATOR_STATUS),
                         json.dumps(status, indent=1, sort_keys=True) + "\n")
    except Exception as exc:  # never fail the boot
        log_kmsg(f"internal error: {type(exc).__name__}: {exc}")
    return 0
