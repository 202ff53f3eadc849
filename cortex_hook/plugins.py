"""The plugin manager: built-ins first, then every `cortex_hook` entry point, minus a block list.

The rest of the code calls the typed methods of `Plugins`, never `pm.hook` directly: behind them
is pluggy, or on the start path the plan pluggy made earlier for the same plugins
(cortex_hook/hookplan.py), which spares importing pluggy. Entry points are found by reading `entry_points.txt` of the distributions on `sys.path`
(what importlib.metadata does) without importing importlib.metadata, which alone costs more
than the whole decision on the start path.
"""

import os
import sys

from .errors import CortexError, EXIT_SOFTWARE

ENTRY_POINT_GROUP = "cortex_hook"
BUILTIN_PLUGINS = (
    "cortex_hook.builtin.simulated",
    "cortex_hook.builtin.nvml",
    "cortex_hook.builtin.health",
    "cortex_hook.builtin.availability",
    "cortex_hook.builtin.memory",
    "cortex_hook.builtin.scoring",
    "cortex_hook.builtin.topology",
    "cortex_hook.builtin.cuda_env",
    "cortex_hook.builtin.generic",
)


class PluginError(CortexError):
    """A plugin failed to load or raised inside a hook."""

    exit_code = EXIT_SOFTWARE


def disabled_plugins():
    """Names blocked by CORTEX_HOOK_DISABLE_PLUGINS (comma separated)."""
    raw = os.environ.get("CORTEX_HOOK_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def distributions(path=None):
    """[(directory, metadata dir name, normalised distribution name)] on PATH (default sys.path);
    a distribution found twice counts once (the first wins), as in importlib.metadata."""
    seen, out = set(), []
    for entry in (sys.path if path is None else path):
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            dist = name.rsplit(".", 1)[0].split("-")[0].lower().replace("-", "_").replace(".", "_")
            if dist not in seen:
                seen.add(dist)
                out.append((entry or ".", name, dist))
    return out


def iter_entry_points(group=ENTRY_POINT_GROUP, path=None, dists=None):
    """Yield (name, value, distribution) for every entry point of GROUP in DISTS (default: the
    distributions on PATH)."""
    for directory, name, dist in (distributions(path) if dists is None else dists):
        try:
            with open(os.path.join(directory, name, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        yield from ((n, v, dist) for n, v in _parse_entry_points(text, group))


def _version_of(dists, wanted):
    """The metadata dir name of distribution WANTED (it carries the version), or None."""
    return next((name for _, name, dist in dists if dist == wanted), None)


def _parse_entry_points(text, group):
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, value = line.split("=", 1)
            yield name.strip(), value.strip()


def _import(module_name):
    __import__(module_name)
    return sys.modules[module_name]


def _load_entry_point(value):
    module_name, _, attr = value.partition(":")
    obj = _import(module_name.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


class Plugins:
    """Typed access to every hook. Create with `load_plugins()`.

    HOOK is pluggy's `pm.hook`, or the memoised plan's stand-in for it (cortex_hook/hookplan.py);
    PLUGINS is [(name, object)] in registration order."""

    def __init__(self, hook, plugins, pm=None):
        self.hook = hook
        self.plugins = plugins
        self.pm = pm

    def names(self):
        """Every registered plugin name, in registration order."""
        return [name for name, _ in self.plugins]

    def server_names(self):
        """Every `server:` name some plugin handles."""
        return sorted({n for names in self.hook.cortex_server_names() for n in names})

    def validate_options(self, service):
        """[(key, message)] problems with SERVICE's options, or None if no plugin checks them."""
        answers = [a for a in self.hook.cortex_validate_options(service=service) if a is not None]
        if not answers:
            return None
        return [problem for answer in answers for problem in answer]

    def discover_gpus(self, policy, detail=frozenset()):
        """The GPUs the policy's inventory sees, or None if no plugin provides that inventory."""
        return self.hook.cortex_discover_gpus(policy=policy, detail=frozenset(detail))

    def check_gpu(self, request, gpu):
        """Every reason any plugin gives against GPU (empty when it is acceptable)."""
        return _flatten(self.hook.cortex_check_gpu(request=request, gpu=gpu))

    def score_gpu(self, request, gpu):
        """Every score term any plugin gives for GPU."""
        return _flatten(self.hook.cortex_score_gpu(request=request, gpu=gpu))

    def select_gpus(self, request, ranked, count):
        """The first plugin's Selection of COUNT verdicts from RANKED."""
        return self.hook.cortex_select_gpus(request=request, ranked=ranked, count=count)

    def prepare_launch(self, request, decision, launch):
        """Let every plugin add to LAUNCH (cuda env first, then server plugins)."""
        self.hook.cortex_prepare_launch(request=request, decision=decision, launch=launch)

    def readiness_probe(self, request, launch):
        """The first plugin's readiness probe for the server about to run, or None."""
        return self.hook.cortex_readiness_probe(request=request, launch=launch)

    def decision_made(self, request, decision):
        """Tell every plugin about a committed decision."""
        self.hook.cortex_decision_made(request=request, decision=decision)

    def implementations(self):
        """{plugin name: [hook names it implements]} for `cortex-hook plugins` (asks pluggy)."""
        pm = self.pm or _register(self.plugins)
        return {name: sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
                for name, plugin in self.plugins}


def _flatten(results):
    out = []
    for r in results:
        if isinstance(r, (list, tuple)):
            out.extend(x for x in r if x is not None)
        elif r is not None:
            out.append(r)
    return out


_cached = None


def load_plugins(entry_points=True, cache_dir=None):
    """The plugins (once per process): built-ins, then entry points, minus the blocked ones.

    With CACHE_DIR (the trusted runtime dir), a plan pluggy made earlier for exactly these
    plugins is used instead of pluggy, and pluggy's plan is recorded there when it was not."""
    global _cached
    if _cached is not None:
        return _cached
    dists = distributions() if entry_points else []
    plugins = _import_plugins(dists)
    tracing = bool(os.environ.get("CORTEX_HOOK_TRACE_PLUGINS"))
    key = None
    if cache_dir is not None and not tracing:
        from . import hookplan, hookspecs
        key = hookplan.fingerprint(plugins, hookspecs, _version_of(dists, "pluggy"))
        hook = hookplan.load(cache_dir, key, plugins) if key is not None else None
        if hook is not None:
            _cached = Plugins(hook, plugins)
            return _cached
    pm = _register(plugins)
    if key is not None:
        hookplan.record(cache_dir, key, pm, plugins)
    if tracing:
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    _cached = Plugins(pm.hook, plugins, pm)
    return _cached


def _import_plugins(dists):
    """[(name, plugin object)]: the built-ins, then the entry points of DISTS, minus blocked."""
    blocked = disabled_plugins()
    out, names = [], set(blocked)
    for modname in BUILTIN_PLUGINS:
        if modname.rsplit(".", 1)[1] in blocked or modname in blocked:
            continue
        out.append((modname, _import(modname)))
        names.add(modname)
    for name, value, dist in iter_entry_points(dists=dists):
        if name in names:
            continue
        names.add(name)
        try:
            out.append((name, _load_entry_point(value)))
        except Exception as exc:  # a broken third-party plugin must not look like our bug
            raise PluginError(f"plugin {name!r} ({value}, from {dist}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
    return out


def _register(plugins):
    """A pluggy PluginManager with PLUGINS registered (PluginError if pluggy refuses one)."""
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            raise PluginError(f"plugin {name!r} was refused: {type(exc).__name__}: {exc}") from exc
    try:
        pm.check_pending()
    except Exception as exc:  # an implementation of a hook nobody specifies (a misspelt name)
        raise PluginError(f"a plugin was refused: {type(exc).__name__}: {exc}") from exc
    return pm
