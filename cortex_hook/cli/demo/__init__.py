"""The embedded demo: a simulated box (gpus.yaml) and a sample policy (policy.yaml)."""

from .run import run_demo


def demo(ctx, args):
    """Run the main job on a simulated 6-GPU box with a sample policy."""
    return run_demo(args.keep)
