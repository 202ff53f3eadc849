"""The plugin system: markers and specs (what a plugin implements), the manager (how the rest of
cortex-hook calls every hook), the recorded call plan (the start path without pluggy), entry
points, and the built-in plugins."""
