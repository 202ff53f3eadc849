"""The `hookimpl` and `hookspec` markers, without importing pluggy.

`hookimpl` records its options (only those given) in the function's `cortex_hook_impl`
attribute, `hookspec` in `cortex_hook_spec`. The plugin manager (hooks/manager.py) turns them
into pluggy's options when it registers a plugin; pluggy's own `HookimplMarker("cortex_hook")`
sets the same attribute and works as well. Importing pluggy would cost the start path ~12 ms even
when the recorded call plan (hooks/callplan.py) means pluggy is not needed.
"""

PROJECT = "cortex_hook"
IMPL_ATTR = PROJECT + "_impl"
SPEC_ATTR = PROJECT + "_spec"
IMPL_OPTIONS = {"wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
                "trylast": False, "specname": None}
SPEC_OPTIONS = {"firstresult": False, "historic": False, "warn_on_impl": None, "warn_on_impl_args": None}


def hookimpl(function=None, **options):
    """Mark FUNCTION as a hook implementation. OPTIONS as pluggy's HookimplMarker: tryfirst,
    trylast, wrapper, hookwrapper, optionalhook, specname."""
    return _marker(IMPL_ATTR, IMPL_OPTIONS, function, options)


def hookspec(function=None, **options):
    """Mark FUNCTION as a hook specification. OPTIONS as pluggy's HookspecMarker: firstresult,
    historic, warn_on_impl, warn_on_impl_args."""
    if options.get("historic") and options.get("firstresult"):
        raise ValueError("cannot have a historic firstresult hook")
    return _marker(SPEC_ATTR, SPEC_OPTIONS, function, options)


def _marker(attr, known, function, options):
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown marker option {unknown[0]!r} (known: {', '.join(known)})")

    def mark(func):
        setattr(func, attr, dict(options))
        return func

    return mark if function is None else mark(function)

