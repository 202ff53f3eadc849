"""cortex-hook: picks the GPUs an inference server gets each time systemd starts it.

Plugins write ``from cortex_hook import hookimpl`` (cortex_hook/hooks/markers.py: pluggy's
marker, without importing pluggy). The plugin API is this package plus `cortex_hook.model`,
`cortex_hook.serverkit`, `cortex_hook.probe`, `cortex_hook.quantities` and `cortex_hook.errors`.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """`cortex_hook.hookimpl`, imported on first use (most commands load no plugin)."""
    if name == "hookimpl":
        from .hooks.markers import hookimpl
        return hookimpl
    raise AttributeError(f"module 'cortex_hook' has no attribute {name!r}")
