"""The README's "Write a plugin" example, installed with pip exactly as a user would (into its own
target directory), is found through its entry point and changes the plan."""

import os
import shutil
import subprocess
import sys

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import REPO

EXAMPLE = os.path.join(REPO, "examples", "cortex-hook-maintenance")


def test_example_plugin_installs_and_takes_part(box, tmp_path):
    target = tmp_path / "site"
    source = tmp_path / "example"  # pip builds in its source tree: keep the checkout clean
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(target), str(source)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    maint = tmp_path / "maintenance"
    maint.write_text(f"# our list\n{uuid_of(0)} fan replacement on Tuesday\n")
    env = box.env(PYTHONPATH=str(target), CORTEX_HOOK_MAINTENANCE=str(maint))
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n")

    plugins = box.json("plugins", env=env)["plugins"]
    assert plugins["maintenance"] == ["cortex_check_gpu"]
    out = box.json("plan", "chat", env=env)
    assert out["gpus"] == [uuid_of(1)]
    assert out["verdicts"][1]["reasons"] == [{"code": "maintenance",
                                              "text": "under maintenance: fan replacement on Tuesday"}]
    blocked = box.json("plan", "chat", env=box.env(PYTHONPATH=str(target), CORTEX_HOOK_MAINTENANCE=str(maint),
                                                   CORTEX_HOOK_DISABLE_PLUGINS="maintenance"))
    assert blocked["gpus"] == [uuid_of(0)]
