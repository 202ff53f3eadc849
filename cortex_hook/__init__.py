"""cortex-hook: picks the GPUs an inference server gets each time systemd starts it.

Plugins write ``from cortex_hook import hookimpl``; that import is resolved lazily so that
commands which need no plugins (release, priority, leases) never pay for importing pluggy.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "hookimpl":
        from .hookspecs import hookimpl
        return hookimpl
    raise AttributeError(f"module 'cortex_hook' has no attribute {name!r}")
