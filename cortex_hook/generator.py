"""The systemd generator: at boot and on every daemon-reload, drop-ins from the policy alone.

systemd runs it as `GENERATOR NORMAL_DIR EARLY_DIR LATE_DIR`. For every service with `install:`
(a unit name, or `NAME@*.service` meaning the template) it writes the same drop-in as
`cortex-hook install` into NORMAL_DIR, so a drop-in in /etc/systemd/system still wins.

It never asks the driver, and it never fails: its exit status could fail the boot. When the
policy is broken it still writes drop-ins for the units of the last good run (kept beside the
policy): their `ExecStartPre=+cortex-hook allocate` then fails with the policy error, so those
units refuse to start, saying why, instead of starting on unplanned GPUs.

It parses the policy anyway, so it leaves the parsed copy in the runtime dir (policyfile.py)
beside its status: the units starting at boot, all at once, then read it instead of each
parsing the YAML again.
"""

import json
import os
import time

STATUS_FILE = "generator.status"
UNITS_FILE = ".generated-units"


def target_unit(svc):
    """The unit (or template) a service's drop-in goes to."""
    if svc.match.endswith("@*.service"):
        return svc.match[: -len("*.service")] + ".service"
    return svc.match


def generate(normal_dir, policy_path, options, root="/", cache_dir=None):
    """Write the drop-ins into NORMAL_DIR. Returns a status dict (also written to the runtime dir).
    With CACHE_DIR (the trusted runtime dir), the parsed policy is left there."""
    from .dropin import DROPIN_NAME, render
    from .errors import CortexError
    from .policyfile import load_policy

    cache = os.path.join(os.path.dirname(os.path.abspath(policy_path)), UNITS_FILE)
    status = {"at": time.time(), "policy": policy_path, "ok": True, "error": None, "units": {}, "skipped": {}}
    try:
        policy = load_policy(policy_path, cache_dir=cache_dir)
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
        from .envfile import write_atomic
        write_atomic(path, "# units the cortex-hook generator managed at its last good run\n"
                     + "".join(u + "\n" for u in units))
    except Exception:
        pass  # e.g. a read-only root at early boot: the next daemon-reload writes it


def log_kmsg(message):
    """Generators' stderr reaches neither journal nor console (FACTS §1): use /dev/kmsg if we can."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"<4>cortex-hook-generator: {message}\n")
    except OSError:
        pass


def main(argv, options_factory):
    """Entry for `cortex-hook generate NORMAL [EARLY LATE]`; always returns 0."""
    try:
        from .runtime import trusted_runtime_dir
        normal_dir = argv[0]
        options, policy_path, runtime_dir = options_factory()
        try:
            os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
        except OSError:
            pass
        status = generate(normal_dir, policy_path, options, cache_dir=trusted_runtime_dir(runtime_dir))
        if not status["ok"]:
            log_kmsg(f"policy unusable, units kept from starting: {status['error']}")
        for unit, why in status["skipped"].items():
            log_kmsg(f"{unit}: env mode instead: {why}")
        try:
            with open(os.path.join(runtime_dir, STATUS_FILE), "w", encoding="utf-8") as f:
                json.dump(status, f, indent=1, sort_keys=True)
        except OSError:
            pass
    except Exception as exc:  # never fail the boot
        log_kmsg(f"internal error: {type(exc).__name__}: {exc}")
    return 0
