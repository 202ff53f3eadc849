"""Checking the configuration: `validate` (a policy file) and `plugins` (what is loaded)."""

from ..allocation import check_server
from ..hooks.manager import disabled_plugins, load_plugins
from ..policy.load import load_policy
from .render import print_json


def validate(ctx, args):
    """Check a policy file, including that every server it names has a plugin."""
    policy = load_policy(args.file or ctx.policy_path)  # never the memo: validate reads the file itself
    plugins = ctx.plugins()
    for svc in policy.services:
        check_server(plugins, policy, svc)
    count = len(policy.services)
    print(f"{policy.path}: ok ({count} service{'s' if count != 1 else ''}, inventory {policy.inventory})")
    return 0


def plugins(ctx, args):
    """The loaded plugins and the hooks each implements."""
    impls = load_plugins().implementations()
    if args.json:
        print_json({"plugins": impls, "disabled": sorted(disabled_plugins())})
        return 0
    for name, hooks in impls.items():
        print(f"{name}: {', '.join(hooks)}")
    blocked = disabled_plugins()
    if blocked:
        print(f"disabled by CORTEX_HOOK_DISABLE_PLUGINS: {', '.join(sorted(blocked))}")
    return 0
