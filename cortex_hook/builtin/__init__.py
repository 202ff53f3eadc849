"""Built-in plugins: the inventories, checks, scoring, selection and environment cortex-hook ships.

Each module is registered like any other plugin (see cortex_hook.plugins.BUILTIN_PLUGINS) and can
be blocked by name with CORTEX_HOOK_DISABLE_PLUGINS.
"""
