"""Helpers for server plugins: read the server's own flags, set ours without fighting the admin's,
check the service's options, and find where its health endpoint listens.

A server plugin (one that answers `cortex_server_names`) is asked about its own services only
(hooks/specs.py). When the admin's command already sets a flag we would set, the service's
`options.flags` decides: `theirs` (the default) keeps the admin's value and notes the
disagreement; `ours` replaces it. Either way the plan shows what happened, and a flag is never
given twice.
"""

import os
import re

from . import rules
from .errors import did_you_mean
from .quantities import parse_size
from .systemd.envfile import STEERING


def for_server(request, name):
    """True when REQUEST's service is served by NAME (a server plugin is only asked about its own
    services; this is for plugins that are not server plugins)."""
    return request.service.server == name


def free_memory(request, gpu):
    """Free memory on GPU for this request (memory this unit's previous processes hold counts as
    free, as when GPUs are chosen); None if unknown."""
    return rules.free_for(request, gpu)


def option(request, key, default=None):
    """The service's `options: {KEY: …}` value, or DEFAULT."""
    return request.service.options.get(key, default)


def flag_value(argv, *names):
    """The value of the last `--flag VALUE` / `--flag=VALUE` / `-f VALUE` in ARGV, or None."""
    found = None
    i = 0
    while i < len(argv):
        word = argv[i]
        for name in names:
            if word == name and i + 1 < len(argv):
                found = argv[i + 1]
                i += 1
                break
            if word.startswith(name + "="):
                found = word[len(name) + 1:]
                break
        i += 1
    return found


def has_flag(argv, *names):
    """True if any of NAMES appears in ARGV (as `--flag`, `--flag=…`, `-f` or `-f=…`)."""
    return any(w in names or any(w.startswith(n + "=") for n in names) for w in argv)


def remove_flag(argv, *names):
    """ARGV without any occurrence of NAMES and their values."""
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word in names:
            i += 2
            continue
        if any(word.startswith(n + "=") for n in names):
            i += 1
            continue
        out.append(word)
        i += 1
    return out


def set_flag(request, launch, names, value, env_names=(), why="", env_text=None, needed=False):
    """Give the server `NAMES[0] VALUE`, honouring `options.flags` when the admin set it already.

    ENV_NAMES are environment variables that set the same thing (e.g. LLAMA_ARG_TENSOR_SPLIT).
    ENV_TEXT is how ExecStart= itself can say VALUE (e.g. `${CORTEX_GPU_COUNT}`); NEEDED: the
    server goes wrong without the flag. In env mode nothing rewrites the command, so it is only
    checked against them. Returns the value the server will use.
    """
    if not launch.wrapped:
        return _check_env_mode(launch, names, value, env_text, needed)
    if launch.argv is None:
        return value  # the lease unit: the wrapper sets it when it starts the server
    theirs = flag_value(launch.argv, *names)
    env_set = next((n for n in env_names if n in launch.env or _inherited_env(n)), None)
    if theirs is None and env_set is None:
        launch.argv = launch.argv + [names[0], str(value)]
        if why:
            launch.notes.append(f"{names[0]} {value}: {why}")
        return value
    mode = option(request, "flags", "theirs")
    current = theirs if theirs is not None else f"${env_set}"
    if mode == "ours":  # a command-line flag beats the server's own environment variable
        launch.argv = remove_flag(launch.argv, *names) + [names[0], str(value)]
        launch.notes.append(f"{names[0]} {value} replaces the command's {current} (options.flags: ours)")
        return value
    if str(current) not in (str(value), env_text):
        launch.notes.append(f"the command sets {names[0]} {current}; cortex-hook would set {value}"
                            f" (options.flags: {mode} keeps the command's)")
    return theirs if theirs is not None else value


def _check_env_mode(launch, names, value, env_text, needed):
    """Env mode: systemd runs the unit's own ExecStart=; say what it should carry."""
    theirs = flag_value(launch.argv, *names) if launch.argv is not None else None
    want = env_text or str(value)
    if theirs is None:
        if needed:
            launch.notes.append(f"env mode: pass {names[0]} {want} in ExecStart="
                                + (" (it does not set it)" if launch.argv is not None else ""))
        return value
    if theirs not in (str(value), env_text) and not (env_text and theirs == "$" + env_text.strip("${}")):
        launch.notes.append(f"env mode: ExecStart= sets {names[0]} {theirs}; with this plan it should be "
                            f"{value}" + (f" ({names[0]} {env_text})" if env_text else ""))
        return theirs
    return value


def _inherited_env(name):
    return name in os.environ


def probe_address(argv, env, host_flags, port_flags, default_host, default_port, env_host=(), env_port=()):
    """(host, port) the server listens on, from its flags, else env, else its defaults.

    A wildcard bind address is probed on loopback.
    """
    host = flag_value(argv or [], *host_flags) if host_flags else None
    port = flag_value(argv or [], *port_flags) if port_flags else None
    for name in env_host:
        host = host or env.get(name) or os.environ.get(name)
    for name in env_port:
        port = port or env.get(name) or os.environ.get(name)
    host = host or default_host
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    try:
        port = int(port) if port is not None else int(default_port)
    except ValueError:
        port = int(default_port)
    return host, port


def gpus_joined_by_nvlink(gpus):
    """True when every pair of GPUS is joined by NVLink (None when the driver does not say)."""
    if any(g.nvlink_peers is None for g in gpus):
        return None
    return all(b.uuid in a.nvlink_peers for i, a in enumerate(gpus) for b in gpus[i + 1:])


def check_keys(options, allowed):
    """Errors [(key, message)] for OPTIONS keys not in ALLOWED (a dict key -> check function)."""
    errors = []
    for key, value in options.items():
        if key not in allowed:
            hint = did_you_mean(key, allowed) or f" (known: {', '.join(sorted(allowed))})"
            errors.append((key, f"unknown option{hint}"))
            continue
        problem = allowed[key](value)
        if problem:
            errors.append((key, problem))
    return errors


def one_of(*choices):
    """An option check: the value is one of CHOICES (with a did-you-mean)."""
    def check(v):
        if v in choices:
            return None
        return f"expected one of {', '.join(map(str, choices))}, got {v!r}{did_you_mean(v, choices)}"
    return check


def gpus_text(n):
    """`1 GPU`, `2 GPUs`."""
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def parallel_size(argv, *names):
    """An integer flag such as --pipeline-parallel-size (1 when absent or not a positive number)."""
    text = flag_value(argv or [], *names)
    return int(text) if text and text.isdigit() and int(text) > 0 else 1


def is_bool(v):
    """An option check: a boolean."""
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def is_size(v):
    """An option check: a size such as 256MiB."""
    try:
        parse_size(v)
        return None
    except ValueError as exc:
        return str(exc)


def is_env_map(v):
    """An option check: a mapping of environment variable names to values (none that steers the
    loader, an interpreter or cortex-hook)."""
    if not isinstance(v, dict) or not all(isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)
                                          and isinstance(x, (str, int)) and not isinstance(x, bool)
                                          for k, x in v.items()):
        return "expected a mapping of environment variable names to values"
    steering = sorted(k for k in v if re.fullmatch(STEERING, k))  # CORTEX_HOOK_UNIT too: that one is ours
    if steering:
        return (f"{', '.join(steering)}: steers the dynamic loader, an interpreter or cortex-hook; "
                "cortex-hook never puts it into a server's environment")
    return None


COMMON_OPTIONS = {"flags": one_of("theirs", "ours")}
COUNT_TEXT = "${CORTEX_GPU_COUNT}"  # how an env-mode ExecStart= gives a server the GPU count
