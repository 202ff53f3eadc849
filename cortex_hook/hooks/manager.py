"""The plugin manager: built-ins first, then every `cortex_hook` entry point, minus a block list.

The rest of the code calls the typed methods of `Plugins`, never a hook directly. Behind them is
pluggy, or on the start path the call plan pluggy made earlier for the same plugins
(hooks/callplan.py), which spares importing pluggy. Either way a server plugin's server hooks
(specs.SERVER_HOOKS) are called only for services of its own servers.
"""

import os
import sys

from ..errors import EXIT_SOFTWARE, CortexError
from . import callplan, entrypoints, specs
from .markers import IMPL_OPTIONS, PROJECT, SPEC_OPTIONS

BUILTIN_PLUGINS = tuple(f"cortex_hook.hooks.builtin.{name}" for name in (
    "simulated", "nvml", "health", "availability", "memory", "scoring", "topology", "cuda_env",
    "readiness", "generic",
))


class PluginError(CortexError):
    """A plugin failed to load or was refused."""

    exit_code = EXIT_SOFTWARE


def disabled_plugins():
    """Names blocked by CORTEX_HOOK_DISABLE_PLUGINS (comma separated)."""
    raw = os.environ.get("CORTEX_HOOK_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def tracing():
    """True when CORTEX_HOOK_TRACE_PLUGINS asks for every hook call to be traced (through pluggy)."""
    return bool(os.environ.get("CORTEX_HOOK_TRACE_PLUGINS"))


class Plugins:
    """Typed access to every hook. Create with `load_plugins()`.

    CALLER is pluggy's `pm.hook` or the recorded plan's `PlannedHooks`; PLUGINS is [(name, object)]
    in registration order; PM is pluggy's PluginManager when pluggy was used."""

    def __init__(self, caller, plugins, pm=None):
        self._caller = caller
        self.plugins = plugins
        self._pm = pm
        self._servers = None
        self._scoped = {}

    # -- asking pluggy or the plan -----------------------------------------------------------------
    def _implementations(self, hook_name):
        """[(plugin name, function)] of HOOK_NAME in call order."""
        if self._pm is not None:
            return [(i.plugin_name, i.function) for i in getattr(self._pm.hook, hook_name).get_hookimpls()][::-1]
        return self._caller.implementations(hook_name)

    def servers_by_plugin(self):
        """{plugin name: frozenset of the `server:` names it serves} for every server plugin."""
        if self._servers is None:
            self._servers = {name: frozenset(function() or ())
                             for name, function in self._implementations("cortex_server_names")}
        return self._servers

    def _for(self, hook_name, server):
        """The caller of HOOK_NAME without the server plugins of servers other than SERVER."""
        key = (hook_name, server)
        if key not in self._scoped:
            others = [name for name, names in self.servers_by_plugin().items() if server not in names]
            if self._pm is not None:
                caller = self._pm.subset_hook_caller(hook_name, [self._pm.get_plugin(n) for n in others])
            else:
                caller = self._caller.without(hook_name, others)
            self._scoped[key] = caller
        return self._scoped[key]

    # -- the hooks ---------------------------------------------------------------------------------
    def server_names(self):
        """Every `server:` name some plugin serves, sorted."""
        return sorted({n for names in self.servers_by_plugin().values() for n in names})

    def validate_options(self, service):
        """[(key, message)] problems with SERVICE's options, or None if no plugin checks them."""
        answers = self._for("cortex_validate_options", service.server)(service=service)
        if not answers:
            return None
        return [problem for answer in answers for problem in answer]

    def tensor_parallel(self, service):
        """True when SERVICE's server plugin runs it tensor parallel over its GPUs."""
        return bool(self._for("cortex_tensor_parallel", service.server)(service=service))

    def discover_gpus(self, policy, detail=frozenset()):
        """The GPUs the policy's inventory sees, or None if no plugin provides that inventory."""
        return self._caller.cortex_discover_gpus(policy=policy, detail=frozenset(detail))

    def gpu_faults(self, policy, gpu):
        """Every fault any plugin finds with GPU, whatever the service (empty when healthy)."""
        return _flatten(self._caller.cortex_gpu_faults(policy=policy, gpu=gpu))

    def check_gpu(self, request, gpu):
        """Every reason any plugin gives against GPU for REQUEST (empty when it is acceptable)."""
        return _flatten(self._caller.cortex_check_gpu(request=request, gpu=gpu))

    def score_gpu(self, request, gpu):
        """Every score term any plugin gives for GPU."""
        return _flatten(self._caller.cortex_score_gpu(request=request, gpu=gpu))

    def select_gpus(self, request, ranked, count):
        """The first plugin's Selection of COUNT verdicts from RANKED."""
        return self._caller.cortex_select_gpus(request=request, ranked=ranked, count=count)

    def prepare_launch(self, request, decision, launch):
        """Let every plugin add to LAUNCH (cuda env first, then the service's server plugin)."""
        self._for("cortex_prepare_launch", request.service.server)(request=request, decision=decision,
                                                                    launch=launch)

    def readiness_probe(self, request, launch):
        """The first readiness probe for the server about to run, or None."""
        return self._for("cortex_readiness_probe", request.service.server)(request=request, launch=launch)

    def decision_made(self, request, decision):
        """Tell every plugin about a committed decision."""
        self._caller.cortex_decision_made(request=request, decision=decision)

    def implementations(self):
        """{plugin name: [hook names it implements]} for `cortex-hook plugins` (asks pluggy)."""
        pm = self._pm or _register(self.plugins)
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


def load_plugins(cache_dir=None):
    """The plugins: built-ins, then entry points, minus the blocked ones.

    With CACHE_DIR (the trusted runtime dir), a call plan pluggy made earlier for exactly these
    plugins is used instead of pluggy, and pluggy's plan is recorded there when it was not."""
    dists = entrypoints.distributions()
    plugins = _import_plugins(dists)
    key = None
    if cache_dir is not None and not tracing():
        key = callplan.fingerprint(plugins, specs, entrypoints.metadata_name(dists, "pluggy"))
        planned = callplan.load(cache_dir, key, plugins) if key is not None else None
        if planned is not None:
            return Plugins(planned, plugins)
    pm = _register(plugins)
    if key is not None:
        callplan.record(cache_dir, key, pm, plugins, specs)
    if tracing():
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return Plugins(pm.hook, plugins, pm)


def _import_plugins(dists):
    """[(name, plugin object)]: the built-ins, then the entry points of DISTS, minus blocked."""
    blocked = disabled_plugins()
    out, names = [], set(blocked)
    for modname in BUILTIN_PLUGINS:
        if modname.rsplit(".", 1)[1] in blocked or modname in blocked:
            continue
        __import__(modname)
        out.append((modname, sys.modules[modname]))
        names.add(modname)
    for name, value, dist in entrypoints.iter_entry_points(dists=dists):
        if name in names:
            continue
        names.add(name)
        try:
            out.append((name, entrypoints.load(value)))
        except Exception as exc:  # a broken third-party plugin must not look like our bug
            raise PluginError(f"plugin {name!r} ({value}, from {dist}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
    return out


def _register(plugins):
    """A pluggy PluginManager with PLUGINS registered (PluginError if pluggy refuses one)."""
    import pluggy

    class Manager(pluggy.PluginManager):
        """pluggy, reading cortex-hook's markers (hooks/markers.py) without changing them."""

        def parse_hookimpl_opts(self, plugin, name):
            found = super().parse_hookimpl_opts(plugin, name)
            return None if found is None else {k: found.get(k, d) for k, d in IMPL_OPTIONS.items()}

        def parse_hookspec_opts(self, module_or_class, name):
            found = super().parse_hookspec_opts(module_or_class, name)
            return None if found is None else {k: found.get(k, d) for k, d in SPEC_OPTIONS.items()}

    pm = Manager(PROJECT)
    pm.add_hookspecs(specs)
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
