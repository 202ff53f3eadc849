"""The plugin manager: built-ins first, then every `cortex_hook` entry point, minus a block list.

The rest of the code calls the typed methods of `Plugins`, never `pm.hook` directly.
Entry points are found by reading `entry_points.txt` of the distributions on `sys.path`
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


def iter_entry_points(group=ENTRY_POINT_GROUP, path=None):
    """Yield (name, value, distribution) for every entry point of GROUP on sys.path.

    A distribution found twice on the path counts once (the first wins), as in importlib.metadata.
    """
    seen = set()
    for entry in (sys.path if path is None else path):
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            dist = name.rsplit(".", 1)[0].split("-")[0].lower().replace("-", "_").replace(".", "_")
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            yield from ((n, v, dist) for n, v in _parse_entry_points(text, group))


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


def _load_entry_point(value):
    module_name, _, attr = value.partition(":")
    obj = __import__(module_name.strip(), fromlist=["_"])
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


class Plugins:
    """Typed access to every hook. Create with `load_plugins()`."""

    def __init__(self, pm):
        self.pm = pm

    def names(self):
        """Every registered plugin name, in registration order."""
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]

    def server_names(self):
        """Every `server:` name some plugin handles."""
        return sorted({n for names in self.pm.hook.cortex_server_names() for n in names})

    def validate_options(self, service):
        """[(key, message)] problems with SERVICE's options, or None if no plugin checks them."""
        answers = [a for a in self.pm.hook.cortex_validate_options(service=service) if a is not None]
        if not answers:
            return None
        return [problem for answer in answers for problem in answer]

    def discover_gpus(self, policy, detail=frozenset()):
        """The GPUs the policy's inventory sees, or None if no plugin provides that inventory."""
        return self.pm.hook.cortex_discover_gpus(policy=policy, detail=frozenset(detail))

    def check_gpu(self, request, gpu):
        """Every reason any plugin gives against GPU (empty when it is acceptable)."""
        return _flatten(self.pm.hook.cortex_check_gpu(request=request, gpu=gpu))

    def score_gpu(self, request, gpu):
        """Every score term any plugin gives for GPU."""
        return _flatten(self.pm.hook.cortex_score_gpu(request=request, gpu=gpu))

    def select_gpus(self, request, ranked, count):
        """The first plugin's Selection of COUNT verdicts from RANKED."""
        return self.pm.hook.cortex_select_gpus(request=request, ranked=ranked, count=count)

    def prepare_launch(self, request, decision, launch):
        """Let every plugin add to LAUNCH (cuda env first, then server plugins)."""
        self.pm.hook.cortex_prepare_launch(request=request, decision=decision, launch=launch)

    def readiness_probe(self, request, launch):
        """The first plugin's readiness probe for the server about to run, or None."""
        return self.pm.hook.cortex_readiness_probe(request=request, launch=launch)

    def decision_made(self, request, decision):
        """Tell every plugin about a committed decision."""
        self.pm.hook.cortex_decision_made(request=request, decision=decision)

    def implementations(self):
        """{plugin name: [hook names it implements]} for `cortex-hook plugins`."""
        out = {}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked: pluggy keeps the name with no plugin
                continue
            out[name] = sorted(
                impl_hook.name for impl_hook in self.pm.get_hookcallers(plugin) or []
            )
        return out


def _flatten(results):
    out = []
    for r in results:
        if isinstance(r, (list, tuple)):
            out.extend(x for x in r if x is not None)
        elif r is not None:
            out.append(r)
    return out


_cached = None


def load_plugins(entry_points=True):
    """Build (once per process) the plugin manager: built-ins, then entry points, minus blocked."""
    global _cached
    if _cached is not None:
        return _cached
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    for modname in BUILTIN_PLUGINS:
        short = modname.rsplit(".", 1)[1]
        if short in blocked or modname in blocked:
            pm.set_blocked(modname)
            continue
        pm.register(__import__(modname, fromlist=["_"]), name=modname)
    if entry_points:
        for name, value, dist in iter_entry_points():
            if name in blocked:
                pm.set_blocked(name)
                continue
            if pm.get_plugin(name) is not None or pm.is_blocked(name):
                continue
            try:
                pm.register(_load_entry_point(value), name=name)
            except Exception as exc:  # a broken third-party plugin must not look like our bug
                raise PluginError(
                    f"plugin {name!r} ({value}, from {dist}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
    pm.check_pending()
    if os.environ.get("CORTEX_HOOK_TRACE_PLUGINS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    _cached = Plugins(pm)
    return _cached

