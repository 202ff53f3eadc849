"""Built-in plugins: the inventories, checks, scoring, selection and environment cortex-hook ships.

Each is a thin hook implementation over cortex_hook.rules, registered like any other plugin (see
cortex_hook.hooks.manager.BUILTIN_PLUGINS) and blocked by name with CORTEX_HOOK_DISABLE_PLUGINS:
blocking one removes its rule from `plan`, `allocate` and `status` alike.
"""
