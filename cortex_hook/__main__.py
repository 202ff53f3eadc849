"""`python -m cortex_hook` = `cortex-hook`."""

import sys

from .cli import main

sys.exit(main())
