"""pluggy's call plan, memoised, so the start path calls the hook implementations without pluggy.

Importing pluggy (it pulls in inspect and typing) and registering every plugin costs ~17 ms, a
third of what `allocate` adds to a bare NVML query. For a given set of plugins the outcome never
changes: for each hook, which functions run, in which order, and which arguments each takes. So
once pluggy has registered a plugin set, `record()` stores that outcome in the runtime dir (see
cortex_hook/files/memo.py), keyed by a fingerprint of the plugins: every marked function's
plugin, name, marker options and parameters, the hook specs, and pluggy's version. `load()`
fingerprints the plugins just imported and returns the recorded plan only on an exact match;
any change (a plugin installed, upgraded, blocked or edited) means pluggy runs again.

Only pluggy's public API is read: `get_hookimpls()` and the HookImpl attributes; the hook kinds
come from our own specs. The plan covers plain implementations only: a hook wrapper anywhere, a
plugin that is not a module of plain functions, or a historic spec or one with default
arguments, and nothing is recorded (pluggy always runs). `PlannedHooks` calls with pluggy's
rules for plain implementations: arguments bound by name, None results dropped, a firstresult
hook stops at its first answer, exceptions propagate.
"""

import types

from ..files import memo
from .markers import IMPL_ATTR, SPEC_ATTR

MEMO_NAME = "hookplan.cache"
FORMAT = 2


def fingerprint(plugins, specs, pluggy_version):
    """A marshal-able key for PLUGINS ([(name, module)] in registration order), the SPECS module
    and PLUGGY_VERSION; None when the set is not one a plan can describe."""
    parts = [FORMAT, pluggy_version, _marked(specs, SPEC_ATTR)]
    for name, plugin in plugins:
        marked = _marked(plugin, IMPL_ATTR)
        if marked is None:
            return None
        parts.append((name, marked))
    return tuple(parts)


def _marked(module, attr):
    """((name, options, signature), ...) of MODULE's functions carrying ATTR, sorted by name (the
    order pluggy finds them in); None if MODULE is not a module or a marked value is not a plain
    function."""
    if not isinstance(module, types.ModuleType):
        return None
    namespace = vars(module)
    out = []
    for name in sorted(namespace):
        value = namespace[name]
        opts = getattr(value, attr, None)
        if opts is None:
            continue
        if type(value) is not types.FunctionType or not isinstance(opts, dict):
            return None
        out.append((name, tuple(sorted(opts.items())), _signature(value)))
    return tuple(out)


def _signature(func):
    while hasattr(func, "__wrapped__"):  # pluggy reads the signature of what a decorator wraps
        func = func.__wrapped__
    code = func.__code__
    return (code.co_varnames[:code.co_argcount + code.co_kwonlyargcount], code.co_argcount,
            code.co_kwonlyargcount, len(getattr(func, "__defaults__", None) or ()), code.co_flags & 0x0C)


def plan_of(pm, plugins, specs):
    """{hook: (firstresult, ((plugin index, attribute, argnames, kwargnames), ...) in call order)}
    from pluggy's registrations of PLUGINS, or None if some hook needs pluggy itself."""
    index = {name: i for i, (name, _) in enumerate(plugins)}
    plan = {}
    for hook_name, spec in sorted(vars(specs).items()):
        opts = getattr(spec, SPEC_ATTR, None)
        if not isinstance(opts, dict) or not isinstance(spec, types.FunctionType):
            continue
        if opts.get("historic") or spec.__defaults__:
            return None
        calls = []
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # pluggy calls the last first
            if impl.wrapper or impl.hookwrapper or impl.plugin_name not in index:
                return None
            attr = _attribute_of(impl.plugin, impl.function)
            if attr is None:
                return None
            calls.append((index[impl.plugin_name], attr, tuple(impl.argnames), tuple(impl.kwargnames)))
        plan[hook_name] = (bool(opts.get("firstresult")), tuple(calls))
    return plan


def _attribute_of(plugin, function):
    for name, value in vars(plugin).items():
        if value is function:
            return name
    return None


def record(cache_dir, key, pm, plugins, specs):
    """Store pluggy's plan for PLUGINS under KEY; False when it cannot be expressed as a plan."""
    plan = plan_of(pm, plugins, specs)
    if plan is None:
        return False
    memo.store(cache_dir, MEMO_NAME, key, plan)
    return True


def load(cache_dir, key, plugins):
    """PlannedHooks for PLUGINS if a plan for KEY is stored, else None."""
    plan = memo.load(cache_dir, MEMO_NAME, key)
    if not isinstance(plan, dict):
        return None
    try:
        return PlannedHooks(plan, plugins)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


class PlannedHooks:
    """Stands in for pluggy's `pm.hook`: one attribute per hook, called with keyword arguments.

    CALLS of a hook: ((plugin name, function, argnames, kwargnames), ...) in call order."""

    def __init__(self, plan, plugins):
        self._calls = {}
        for hook_name, (firstresult, calls) in plan.items():
            bound = tuple((plugins[i][0], getattr(plugins[i][1], attr), argnames, kwargnames)
                          for i, attr, argnames, kwargnames in calls)
            self._calls[hook_name] = (firstresult, bound)
            setattr(self, hook_name, _Call(firstresult, bound))

    def implementations(self, hook_name):
        """[(plugin name, function)] of HOOK_NAME in call order."""
        return [(name, function) for name, function, _, _ in self._calls[hook_name][1]]

    def without(self, hook_name, plugin_names):
        """A caller of HOOK_NAME that skips the plugins named in PLUGIN_NAMES."""
        firstresult, calls = self._calls[hook_name]
        skip = set(plugin_names)
        return _Call(firstresult, tuple(c for c in calls if c[0] not in skip))


class _Call:
    __slots__ = ("firstresult", "calls")

    def __init__(self, firstresult, calls):
        self.firstresult = firstresult
        self.calls = calls

    def __call__(self, **kwargs):
        results = []
        for _, function, argnames, kwargnames in self.calls:
            args = [kwargs[name] for name in argnames]
            if kwargnames:
                res = function(*args, **{name: kwargs[name] for name in kwargnames if name in kwargs})
            else:
                res = function(*args)
            if res is not None:
                if self.firstresult:
                    return res
                results.append(res)
        return None if self.firstresult else results
