"""`cortex-hook example`: the example policy and unit files shipped in this package (beside this
module), printed so that an installed cortex-hook needs no source checkout to start from them.

    cortex-hook example                       what there is
    cortex-hook example policy                policy.yaml, for the three example units
    cortex-hook example unit vllm@.service    one unit file
"""

import os
import sys

from ...errors import UsageError, did_you_mean

HERE = os.path.dirname(os.path.abspath(__file__))
POLICY = "policy.yaml"


def units():
    """The names of the example unit files, sorted."""
    return sorted(f for f in os.listdir(HERE) if f.endswith(".service"))


def unit_file(name):
    """The example unit NAME (`vllm@`, `vllm@.service`, `llama-server`... as systemctl would
    complete it), or UsageError naming those there are."""
    for candidate in (name, name + ".service", name + "@.service"):
        if candidate in units():
            return candidate
    raise UsageError(f"no example unit {name!r}{did_you_mean(name, units())}; there are: {', '.join(units())}")


def listing():
    """What `cortex-hook example` offers, one line each."""
    rows = [("policy", "the policy for the example units")] + [(f"unit {name}", "a unit file") for name in units()]
    width = max(len(command) for command, _ in rows)
    return "".join(f"cortex-hook example {command:<{width}}   # {what}\n" for command, what in rows)


def example(ctx, args):
    """Print an example policy or unit file (or, with no argument, the list of them)."""
    if args.what is None or (args.what == "unit" and args.name is None):
        sys.stdout.write(listing())
        return 0
    if args.what == "policy":
        if args.name is not None:
            raise UsageError("example policy: takes no NAME")
        name = POLICY
    else:
        name = unit_file(args.name)
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        sys.stdout.write(f.read())
    return 0
