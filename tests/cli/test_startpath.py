"""What the start path loads. `allocate` and `release`, as ExecStartPre=+ and ExecStopPost=+ run
them once the runtime dir holds its memos, import only the modules on these lists: a module that
joins the start path joins a list here, on purpose. This is the guard of the start path's speed
(bench/startpath.py measures it); everything else imports at the top of its module."""

import ast
import subprocess
import sys

import pytest

from ..helpers.box import gpu_desc

# every module of ours `release` (the stop path) imports: no policy, no plugins, no planner
STOP_PATH = {
    "cortex_hook", "cortex_hook.context", "cortex_hook.errors", "cortex_hook.model", "cortex_hook.records",
    "cortex_hook.quantities",
    "cortex_hook.release",
    "cortex_hook.cli", "cortex_hook.cli.commands", "cortex_hook.cli.fastargs", "cortex_hook.cli.release",
    "cortex_hook.files", "cortex_hook.files.atomic", "cortex_hook.files.memo", "cortex_hook.files.record",
    "cortex_hook.files.rundir", "cortex_hook.files.trust",
    "cortex_hook.policy", "cortex_hook.policy.load",
    "cortex_hook.state", "cortex_hook.state.db", "cortex_hook.state.jsonsql",
    "cortex_hook.state.schema", "cortex_hook.state.tallies", "cortex_hook.state.preemption", "cortex_hook.state.view", "cortex_hook.holders",
    "cortex_hook.systemd", "cortex_hook.systemd.envfile", "cortex_hook.systemd.journal",
    "cortex_hook.systemd.leaseunit", "cortex_hook.systemd.unitname",
}
# and what `allocate` adds: the decision
START_PATH = STOP_PATH - {"cortex_hook.cli.release"} | {
    "cortex_hook.systemd.isolation", "cortex_hook.systemd.systemctl",
    "cortex_hook.allocation", "cortex_hook.planner", "cortex_hook.preemption", "cortex_hook.handoff",
    "cortex_hook.turns", "cortex_hook.inventory", "cortex_hook.servercommand", "cortex_hook.placement", "cortex_hook.rules",
    "cortex_hook.serverkit", "cortex_hook.cli.allocate", "cortex_hook.cli.render",
    "cortex_hook.hooks", "cortex_hook.hooks.callplan", "cortex_hook.hooks.entrypoints",
    "cortex_hook.hooks.manager", "cortex_hook.hooks.markers", "cortex_hook.hooks.specs",
    "cortex_hook.hooks.builtin", "cortex_hook.hooks.builtin.availability", "cortex_hook.hooks.builtin.cuda_env",
    "cortex_hook.hooks.builtin.generic", "cortex_hook.hooks.builtin.health", "cortex_hook.hooks.builtin.memory",
    "cortex_hook.hooks.builtin.nvml", "cortex_hook.hooks.builtin.readiness", "cortex_hook.hooks.builtin.scoring",
    "cortex_hook.hooks.builtin.simulated", "cortex_hook.hooks.builtin.topology",
}
# what the start path needs beyond what asking the driver through pynvml loads anyway
OTHERS = {"sqlite3", "sqlite3.dbapi2", "_sqlite3", "datetime", "_datetime", "gc"}
# what was taken off the start path, each for a measured reason (README, "Measured")
NEVER = {"pluggy", "yaml", "argparse", "json", "importlib.metadata", "typing", "inspect", "dataclasses",
         "http.client", "ssl", "difflib", "shlex", "sdnotify", "cortex_hook.policy.parse",
         "cortex_hook.cli.parser", "cortex_hook.probe"}

PROBE = """
import sys
from cortex_hook.cli import main
rc = main(sys.argv[1:], exit_fast=True)
print(sorted(sys.modules), file=sys.stderr)
sys.exit(rc)
"""  # (not json: it must not load what it looks for)
FLOOR = "import sys, pynvml; pynvml.nvmlInit(); print(sorted(sys.modules))"  # asking the driver at all


def _modules(box, *args):
    r = subprocess.run([sys.executable, "-I", "-c", PROBE, *args], env=box.env(), capture_output=True,
                       text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    return set(ast.literal_eval(r.stderr.strip().splitlines()[-1]))


@pytest.fixture
def warm_box(nvml_box):
    """A box whose runtime dir holds the memos (the policy's and the call plan), as after a first start."""
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy("services:\n  - match: '*'\n", inventory="nvml")
    for _ in range(2):
        assert nvml_box.cli("allocate", "warm-up").returncode == 0
        assert nvml_box.cli("release", "warm-up").returncode == 0
    return nvml_box


@pytest.mark.nvml
@pytest.mark.parametrize("command, listed", [(("allocate", "a"), START_PATH), (("release", "a"), STOP_PATH)])
def test_the_start_path_loads_only_what_is_listed(warm_box, command, listed):
    floor = set(ast.literal_eval(subprocess.run([sys.executable, "-I", "-c", FLOOR], env=warm_box.env(),
                                                capture_output=True, text=True, timeout=120, cwd="/").stdout))
    loaded = _modules(warm_box, *command)
    ours = {m for m in loaded if m.split(".")[0] == "cortex_hook"}
    plugins = {m for m in loaded if m.startswith("cortex_hook_")}
    unexpected = loaded - floor - OTHERS - listed - plugins
    assert not unexpected, f"new on the start path: {sorted(unexpected)} (add them to a list above, on purpose)"
    assert not loaded & NEVER, sorted(loaded & NEVER)
    assert ours == listed, sorted(listed - ours)  # the list is exact: no stale entries
    if command[0] == "release":
        assert not plugins and "pynvml" not in loaded  # the stop path never asks the driver
