"""`python -m cortex_hook` = `cortex-hook`."""

from .cli import run

run()
