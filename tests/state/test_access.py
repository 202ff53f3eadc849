"""Who may open the state. The database and its WAL files are root's alone: another user cannot
open them, so cannot hold a lock on them that would stop every start. Everyone may still look:
`status`, `leases`, `history`, `plan` and `priority list` read the view root publishes after each
change, and a change asked by someone else is refused in one line (exit 77). Commands run here as
the user nobody, through the system Python's venv that units use."""

import json
import os
import subprocess

import pytest

from ..helpers.box import Box, assert_one_line_error, gpus_box, uuid_of
from ..helpers.sandbox import host_root

NOBODY = 65534


@pytest.fixture
def shared_box(service_venv):
    """A Box in a directory every user may read (pytest's own temp dirs are root's alone)."""
    with host_root() as root:
        box = gpus_box(Box(root), 3)
        box.python = os.path.join(service_venv, "bin", "python")
        yield box


def as_nobody(box, *args, env=None):
    """`cortex-hook ARGS` run by the user nobody; -> CompletedProcess."""
    return subprocess.run([box.python, "-m", "cortex_hook", *args], env=env or box.env(), user=NOBODY,
                          group=NOBODY, extra_groups=[], cwd="/", capture_output=True, text=True, timeout=120)


def test_nobody_else_can_open_the_state_or_its_wal(shared_box):
    box = shared_box
    assert box.cli("drain", "2", "--reason", "fan").returncode == 0
    assert box.cli("allocate", "a", "--holder-pid", str(os.getpid())).returncode == 0  # leaves its WAL
    for name in (box.state, box.state + "-wal", box.state + "-shm"):
        assert os.stat(name).st_mode & 0o077 == 0, name
        probe = subprocess.run([box.python, "-c", f"open({name!r}, 'rb')"], user=NOBODY, group=NOBODY,
                               extra_groups=[], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, name


def test_everyone_may_look_through_the_view(shared_box):
    box = shared_box
    assert box.cli("priority", "order", "1", "0").returncode == 0
    assert box.cli("allocate", "a", "--holder-pid", str(os.getpid())).returncode == 0
    assert box.cli("drain", "2", "--reason", "fan noise").returncode == 0
    root = {cmd: box.json(*cmd.split()) for cmd in ("leases", "priority list", "history")}
    for cmd, expected in root.items():
        r = as_nobody(box, *cmd.split(), "--json")
        assert r.returncode == 0, (cmd, r.stderr)
        assert json.loads(r.stdout) == expected, cmd
    r = as_nobody(box, "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["waits"] == []
    rows = {g["index"]: g for g in json.loads(r.stdout)["gpus"]}
    assert rows[1]["leased_by"] == ["a.service"] and rows[1]["priority"] == 0
    assert rows[2]["drain"] == "fan noise"
    r = as_nobody(box, "plan", "b", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gpus"] == [uuid_of(0)]  # 1 is leased, 2 drained: as root would plan
    r = as_nobody(box, "metrics")  # (the counters are root's: the view has none)
    assert r.returncode == 0, r.stderr
    assert f'cortex_hook_lease_info{{gpu="1",UUID="{uuid_of(1)}",unit="a.service"' in r.stdout


def test_a_change_by_someone_else_needs_root(shared_box):
    box = shared_box
    assert box.cli("allocate", "a", "--holder-pid", str(os.getpid())).returncode == 0
    before = box.json("leases")
    for args in (("drain", "0", "--reason", "x"), ("priority", "order", "0"), ("release", "a"),
                 ("allocate", "b"), ("leases", "--reap")):
        r = as_nobody(box, *args)
        assert r.returncode == 77, (args, r.stderr)
        assert_one_line_error(r.stderr, "needs root")
    assert box.json("leases") == before


def test_a_user_with_a_state_of_their_own_needs_no_root(shared_box):
    """A state path the user may write (a laptop, the demo) is opened as ever, not viewed."""
    box = shared_box
    mine = os.path.join(box.root, "mine")
    os.mkdir(mine)
    os.chown(mine, NOBODY, NOBODY)
    env = box.env(CORTEX_HOOK_STATE=os.path.join(mine, "state.db"), CORTEX_HOOK_RUNTIME_DIR=os.path.join(mine, "run"))
    r = as_nobody(box, "allocate", "a", "--holder-pid", str(os.getpid()), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(mine, "state.db")).st_uid == NOBODY
