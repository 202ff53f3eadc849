"""The systemd generator: at boot and on every daemon-reload, drop-ins from the policy alone.

systemd runs it as `GENERATOR NORMAL_DIR EARLY_DIR LATE_DIR`. For every service with `install:`
(a unit name, or `NAME@*.service` meaning the template) it writes the same drop-in as
`cortex-hook install` into NORMAL_DIR, so a drop-in in /etc/systemd/system still wins.

It never asks the driver, and it never fails: its exit status could fail the boot. When the
policy is broken it still writes drop-ins for the units of the last good run (kept beside the
policy): their `ExecStartPre=+cortex-hook allocate` then fails with the policy error, so those
units refuse to start, saying why, instead of starting on unplanned GPUs.

It parses the policy anyway, so it leaves the parsed copy in the runtime dir (policy/load.py)
beside its status: the units starting at boot, all at once, then read it instead of each
parsing the YAML again.
"""

import json
import os
import time

from ..errors import CortexError
from ..files.atomic import write_atomic
from ..files.rundir import GENERATOR_STATUS
from .dropin import DROPIN_NAME, Options, render

UNITS_FILE = ".generated-units"
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


def generate(ctx, normal_dir, options, root="/"):
    """Write the drop-ins into NORMAL_DIR. Returns a status dict (also written to the runtime dir).
    The parsed policy is left in the runtime dir when it is trusted (ctx.memo_dir)."""
    cache = os.path.join(os.path.dirname(os.path.abspath(ctx.policy_path)), UNITS_FILE)
    status = {"at": time.time(), "policy": ctx.policy_path, "ok": True, "error": None, "units": {},
              "skipped": {}}
    try:
        policy = ctx.policy()
        wanted = {}
        for svc in policy.services:
            if svc.install:
                wanted.setdefault(target_unit(svc), (svc.install, svc))
    except CortexError as exc:
        status.update(ok=False, error=str(exc))
        wanted = {unit: ("env", None) for unit in _read_cache(cache)}  # allocate will fail, saying why
    for unit, (mode, svc) in sorted(wanted.items()):
        try:
            text = render(unit, mode, options, root=root, service=svc)
        except CortexError as exc:
            status["skipped"][unit] = str(exc)
            text = render(unit, "env", options, root=root, service=svc)  # still leased and released
            mode = "env"
        directory = os.path.join(normal_dir, unit + ".d")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, DROPIN_NAME), "w", encoding="utf-8") as f:
            f.write(text)
        status["units"][unit] = mode
    if status["ok"]:
        _write_cache(cache, sorted(wanted))
    return status


def _read_cache(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def _write_cache(path, units):
    try:
        existing = _read_cache(path)
        if existing == units and os.path.exists(path):
            return
        write_atomic(path, "# units the cortex-hook generator managed at its last good run\n"
                     + "".join(u + "\n" for u in units))
    except Exception:
        pass  # e.g. a read-only root at early boot: the next daemon-reload writes it


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
        try:
            with open(os.path.join(ctx.runtime_dir, GENERATOR_STATUS), "w", encoding="utf-8") as f:
                json.dump(status, f, indent=1, sort_keys=True)
        except OSError:
            pass
    except Exception as exc:  # never fail the boot
        log_kmsg(f"internal error: {type(exc).__name__}: {exc}")
    return 0
