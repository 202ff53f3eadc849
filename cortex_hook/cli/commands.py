"""Which module runs which command: imported only when that command runs.

Every command is a function `NAME(ctx, args)` returning the exit code; `ctx` is the Context
(context.py), `args` the parsed command line. The help text of each is in cli/parser.py.
"""

import importlib

COMMANDS = {
    "status": "views", "plan": "views", "leases": "views", "history": "views",
    "allocate": "allocate", "release": "release",
    "priority": "admin", "drain": "admin", "undrain": "admin",
    "validate": "config", "plugins": "config",
    "install": "install", "uninstall": "install", "install-generator": "install", "generate": "install",
    "exec": "wrap_exec", "supervise": "wrap_supervise",
    "demo": "demo", "example": "examples", "monitor": "monitor", "install-monitor": "monitor",
    "metrics": "metrics",
}
TAKES_SERVER_COMMAND = ("plan", "exec", "supervise")  # `... -- COMMAND...`


def find(name):
    """The function that runs command NAME."""
    module = importlib.import_module(f"{__package__}.{COMMANDS[name]}")
    return getattr(module, name.replace("-", "_"))
