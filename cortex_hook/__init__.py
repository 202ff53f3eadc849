"""cortex-hook: picks the GPUs an inference server gets each time systemd starts it.

Plugins write ``from cortex_hook import hookimpl``: pluggy's marker, made without importing pluggy
(cortex_hook/markers.py), resolved lazily so commands that need no plugins load nothing for it.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "hookimpl":
        from .markers import hookimpl
        return hookimpl
    raise AttributeError(f"module 'cortex_hook' has no attribute {name!r}")
