"""Putting cortex-hook in front of units: `install`/`uninstall` a unit's drop-in, and the
systemd generator (`install-generator`, and `generate`, which systemd runs)."""

import json
import os
import sys

from ..errors import CortexError, PolicyError
from ..files.atomic import write_atomic
from ..files.rundir import GENERATOR_STATUS
from ..policy.load import load_policy
from ..systemd import access, generator, isolation
from ..systemd.dropin import DROPIN_NAME, any_instance, generated_dropins, validate_target
from ..systemd.dropin import install as install_dropin
from ..systemd.dropin import uninstall as uninstall_dropin
from ..systemd.journal import NOTICE, WARNING, log
from ..systemd.program import Options
from ..systemd.unitfile import UnitFiles
from ..systemd.unitname import is_template


def _options(ctx, args):
    """Where the installed commands find their files: what the command line or environment named
    is baked into the drop-in, the defaults are not."""
    return Options(getattr(args, "program", None), policy=ctx.policy_given, state=ctx.state_given,
                   runtime_dir=ctx.runtime_dir, root=getattr(args, "root", "/"))


def _note(message, level=NOTICE):
    log(level, f"cortex-hook: {'warning: ' if level == WARNING else ''}{message}")


def _services(policy, unit):
    """(the policy's service for UNIT, or for a template the one any instance gets, as
    `vllm@*.service`; or None, [for a template: the services that name some instances only])."""
    if not is_template(unit):
        return policy.service_for(unit), []
    stem = unit[: -len(".service")]
    anyone = policy.service_for(stem + "x.service")
    return anyone, [s for s in policy.services if s.match.startswith(stem) and s is not anyone]


def _policy_service(ctx, unit):
    """(the policy's service for UNIT (its `install:` and `watchdog:` shape the drop-in), the
    policy; or None, None when it cannot be read). A unit no
    service matches is refused: every start would fail (exit 78). An unreadable policy only warns:
    the drop-in does not depend on it, and an image is built before its policy exists."""
    try:
        policy = load_policy(ctx.policy_path)
    except CortexError as exc:
        _note(f"{unit}: the policy cannot be read, so it is not checked that a service matches {unit}; "
              f"every start fails until it can: {exc}", WARNING)
        return None, None
    service, some = _services(policy, unit)
    if service is None and not some:
        patterns = ", ".join(repr(s.match) for s in policy.services) or "none"
        raise PolicyError(policy.path, 0, 0, "services",
                          f"no service matches {unit} (patterns: {patterns}): every start would fail "
                          f"(exit 78); add a service for it (`- match: {unit.replace('@.', '@*.')}`) first")
    if service is None:
        _note(f"{unit}: only the instances {', '.join(s.match for s in some)} have a service in "
              f"{policy.path}; any other instance fails to start (exit 78)", WARNING)
    return service or some[0], policy


def _mode(args, unit, service):
    """--mode, else the service's `install:` in the policy, else env; said when not given."""
    if args.mode:
        return args.mode
    if service is not None and service.install:
        _note(f"{unit}: mode {service.install}, from `install: {service.install}` of its service in the "
              f"policy (line {service.line}); --mode chooses another")
        return service.install
    _note(f"{unit}: mode env, the default (no --mode, no `install:` for it in the policy): the server gets "
          "its GPUs through the env file; --mode exec|supervise runs it behind the wrapper")
    return "env"


def _check_wrapper_access(unit, options, root):
    """Warn when the unit's User= cannot run the wrapper exec/supervise put in its ExecStart=."""
    account = access.account_of(UnitFiles(unit, root, skip_dropin=DROPIN_NAME), root)
    if account is None:
        return
    needs = [(options.python, access.EXECUTE), (options.program, access.READ)] if options.python \
        else [(options.program, access.EXECUTE)]
    for path, what in needs:
        why = access.denied(path, account, what, root)
        if why:
            _note(f"{unit} runs as {account.name}, who cannot {what} {path}: {why}; every start would fail"
                  + (" with 203/EXEC" if what == access.EXECUTE else "")
                  + ". Install cortex-hook where that user can reach it (e.g. a venv in /opt), "
                    "or use --mode env (nothing of cortex-hook runs as User= then)", WARNING)
            return


def install(ctx, args):
    """Write (or with --dry-run print) a unit's drop-in, after checking that the policy has a
    service for it and (exec, supervise) that its User= can run the wrapper."""
    unit = validate_target(args.unit)
    service, policy = _policy_service(ctx, unit)
    mode = _mode(args, unit, service)
    options = _options(ctx, args)
    path, text = install_dropin(unit, mode, options, root=args.root, dry_run=args.dry_run, service=service)
    if mode in ("exec", "supervise"):
        _check_wrapper_access(unit, options, args.root)
    if args.dry_run:
        print(f"# {path}")
        print(text, end="")
        return 0
    if policy is not None and policy.isolate and os.path.abspath(args.root) == "/":
        _prepare_isolation(unit)
    restart = any_instance(unit)
    if restart != unit:
        restart += f" (each instance that runs: systemctl list-units '{unit[: -len('.service')]}*')"
    print(f"wrote {path}; now: systemctl daemon-reload && systemctl restart {restart}")
    return 0


def _prepare_isolation(unit):
    """Leave the lockdown placeholders for the daemon-reload to come (systemd/isolation.py)."""
    try:
        isolation.prepare(unit)
    except OSError as exc:
        _note(f"{unit}: no lockdown placeholder in {isolation.CONTROL_DIR} ({exc}): after its first "
              "isolated start `systemctl status` says it changed on disk until a daemon-reload", WARNING)


def uninstall(ctx, args):
    """Remove a unit's drop-in; say so when the generator's drop-in keeps cortex-hook in front of it."""
    unit = validate_target(args.unit)
    path = uninstall_dropin(unit, root=args.root)
    print(f"removed {path}; now: systemctl daemon-reload" if path else
          f"{unit}: no drop-in of `cortex-hook install` in /etc/systemd/system")
    generated = generated_dropins(unit, args.root)
    if generated:
        policy = _generator_policy(ctx)
        print(f"{unit}: {'still ' if path else ''}handled by the cortex-hook generator: its drop-in "
              f"{', '.join(generated)} comes from `install:` in {policy}. To stop that, remove `install:` "
              f"from that service (or the service) and run `systemctl daemon-reload`; while the policy "
              f"cannot be read, the generator keeps the units of its last good run, listed in "
              f"{os.path.join(os.path.dirname(os.path.abspath(policy)), generator.UNITS_FILE)}")
    return 0


def _generator_policy(ctx):
    """The policy the generator last read (its status file says), else this command's."""
    try:
        with open(os.path.join(ctx.runtime_dir, GENERATOR_STATUS), encoding="utf-8") as f:
            policy = json.load(f).get("policy")
    except (OSError, ValueError, AttributeError):
        policy = None
    return policy if isinstance(policy, str) and policy else ctx.policy_path


def install_generator(ctx, args):
    """Write the generator script into ROOT/etc/systemd/system-generators."""
    options = _options(ctx, args)
    argv = []
    for flag, value in (("--policy", options.policy), ("--state", options.state),
                        ("--runtime-dir", options.runtime_dir)):
        if value:
            argv += [flag, os.path.abspath(value)]
    argv += ["generate", "--program", options.program]
    directory = os.path.join(args.root, "etc/systemd/system-generators")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, "cortex-hook-generator")
    # sys.executable as is, not its realpath: a venv's bin/python is what makes the venv importable
    write_atomic(path, generator.script(os.path.abspath(sys.executable), argv), mode=0o755)
    print(f"wrote {path}; now: systemctl daemon-reload")
    return 0


def generate(ctx, args):
    """Run as a systemd generator (NORMAL_DIR EARLY_DIR LATE_DIR); always exits 0."""
    return generator.main(ctx, args.dirs, args.program)
