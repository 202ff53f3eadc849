"""A throw-away host for one test (policy, simulated GPUs, state, runtime dir in one temp
directory, `cortex-hook` run against it), and the assertions every suite makes about results."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

from .fakegpu import gpu_desc, uuid_of  # noqa: F401  (for the tests: one import for a box and its GPUs)


class Box:
    """A throw-away host: policy, simulated GPUs, state and runtime dir in one temp directory."""

    def __init__(self, root):
        self.root = str(root)
        os.chmod(self.root, 0o755)
        self.policy = os.path.join(self.root, "policy.yaml")
        self.gpus_file = os.path.join(self.root, "gpus.json")
        self.state = os.path.join(self.root, "state", "state.db")
        self.runtime = os.path.join(self.root, "run")
        self.lib = None

    def write_gpus(self, gpus, **top):
        """Describe the GPUs (list of gpu_desc dicts); used by simulated and fake NVML alike. Written
        to a temp file and renamed over, as FAKE_NVML_LIVE=1 needs to see a whole new file."""
        with open(self.gpus_file + ".tmp", "w") as f:
            json.dump(dict(top, gpus=gpus), f, indent=1)
        os.replace(self.gpus_file + ".tmp", self.gpus_file)
        return self

    def write_policy(self, body, inventory="simulated"):
        """Write a policy: BODY is YAML for everything after version/inventory."""
        head = "version: 1\n"
        if inventory == "simulated":
            head += "inventory:\n  simulated: gpus.json\n"
        elif inventory:
            head += f"inventory: {inventory}\n"
        with open(self.policy, "w") as f:
            f.write(head + textwrap.dedent(body))
        os.chmod(self.policy, 0o644)
        return self

    def env(self, **extra):
        env = dict(os.environ)
        for k in ("CUDA_VISIBLE_DEVICES", "CORTEX_HOOK_UNIT", "JOURNAL_STREAM", "CORTEX_HOOK_DISABLE_PLUGINS",
                  "INVOCATION_ID"):
            env.pop(k, None)
        env.update(CORTEX_HOOK_POLICY=self.policy, CORTEX_HOOK_STATE=self.state,
                   CORTEX_HOOK_RUNTIME_DIR=self.runtime)
        if self.lib:
            env.update(LD_LIBRARY_PATH=self.lib, FAKE_NVML_CONFIG=self.gpus_file)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cli(self, *args, env=None, **kw):
        """Run `python -m cortex_hook ARGS` against this box; returns CompletedProcess (text)."""
        return subprocess.run([sys.executable, "-m", "cortex_hook", *args], env=env or self.env(),
                              capture_output=True, text=True, timeout=120, **kw)

    def json(self, *args, expect=0, env=None):
        r = self.cli(*args, "--json", env=env)
        assert r.returncode == expect, (r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def env_file(self, unit):
        return os.path.join(self.runtime, unit + ".env")


def assert_state_intact(state_path):
    """The state database passes SQLite's integrity check and is still in WAL mode."""
    import sqlite3
    conn = sqlite3.connect(state_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def assert_one_line_error(stderr, *needles):
    """The error output is exactly one line, no traceback, and mentions every NEEDLE."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def fingerprint(path):
    """(sha256, size) of a file: to show that a command left it untouched."""
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), len(data)


def query(path, sql, args=()):
    """The rows of SQL run on the database at PATH, opened directly (not through cortex-hook)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def gpus_box(box, n=3, policy="services:\n  - match: '*'\n", **kw):
    """BOX with N simulated GPUs (each gpu_desc(i, **KW)) and POLICY's services."""
    box.write_gpus([gpu_desc(i, **kw) for i in range(n)])
    box.write_policy(policy)
    return box
