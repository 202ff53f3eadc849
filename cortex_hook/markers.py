"""The `hookimpl` and `hookspec` decorators, without importing pluggy.

They set exactly the attributes pluggy's `HookimplMarker("cortex_hook")` and
`HookspecMarker("cortex_hook")` set (`cortex_hook_impl` / `cortex_hook_spec`, a dict of options
with the same keys), so pluggy's PluginManager finds and orders them as its own. A plugin may use
either these or pluggy's markers. Importing pluggy would cost the start path ~12 ms even when the
memoised hook plan (cortex_hook/hookplan.py) means pluggy is not needed.
"""

PROJECT = "cortex_hook"
IMPL_ATTR = PROJECT + "_impl"
SPEC_ATTR = PROJECT + "_spec"


def hookimpl(function=None, hookwrapper=False, optionalhook=False, tryfirst=False, trylast=False,
             specname=None, wrapper=False):
    """Mark FUNCTION as a hook implementation (same arguments as pluggy's HookimplMarker)."""

    def mark(func):
        setattr(func, IMPL_ATTR, {
            "wrapper": wrapper,
            "hookwrapper": hookwrapper,
            "optionalhook": optionalhook,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": specname,
        })
        return func

    return mark if function is None else mark(function)


def hookspec(function=None, firstresult=False, historic=False, warn_on_impl=None, warn_on_impl_args=None):
    """Mark FUNCTION as a hook specification (same arguments as pluggy's HookspecMarker)."""
    if historic and firstresult:
        raise ValueError("cannot have a historic firstresult hook")

    def mark(func):
        setattr(func, SPEC_ATTR, {
            "firstresult": firstresult,
            "historic": historic,
            "warn_on_impl": warn_on_impl,
            "warn_on_impl_args": warn_on_impl_args,
        })
        return func

    return mark if function is None else mark(function)
