"""The monitor's status file as `status` reads it (files/monitorstatus.py): running only while
fresh and its pid alive; a missing, broken or foreign file means not running, never an error."""
import os

import pytest

from cortex_hook.files import monitorstatus
from cortex_hook.files.rundir import MONITOR_STATUS

from ..helpers.monitorfile import write_status

NOW = 1_000_000.0


@pytest.fixture
def rundir(tmp_path):
    path = tmp_path / "run"
    path.mkdir(mode=0o755)
    return str(path)


def test_fresh_with_a_live_pid_is_running_and_its_own_poll_judges_staleness(rundir):
    write_status(rundir, pid=os.getpid(), at=NOW - 120, poll_seconds=60.0, gpus=8, drained={"GPU-x": "XID 79"},
                 status="watching 8 GPUs (8 by events), 1 drained (GPU 3: XID 79)")
    info = monitorstatus.read(rundir, poll_seconds=10.0, now=NOW)  # 2 min old: fresh at a 60 s poll
    assert (info["running"], info["gpus"], info["drained"], info["age"]) == (True, 8, {"GPU-x": "XID 79"}, 120.0)
    assert monitorstatus.describe(info) == (f"monitor: running (pid {os.getpid()}, last poll 2 min ago): "
                                            "watching 8 GPUs (8 by events), 1 drained (GPU 3: XID 79)")
    assert monitorstatus.read(rundir, now=NOW + 61)["running"] is False  # past 3 x 60 s


@pytest.mark.parametrize("text", ["", "{", "[]", '{"pid": true, "at": 1}', '{"pid": 1}', '{"pid": -4, "at": 1}'])
def test_a_broken_file_means_not_running(rundir, text):
    with open(os.path.join(rundir, MONITOR_STATUS), "w") as f:
        f.write(text)
    info = monitorstatus.read(rundir, now=NOW)
    assert info["running"] is False and info["why"] == "status file unreadable"
    assert monitorstatus.describe(info) == "monitor: not running (status file unreadable)"


def test_no_file_or_no_runtime_dir_is_simply_not_running(rundir, tmp_path):
    assert monitorstatus.describe(monitorstatus.read(rundir)) == "monitor: not running"
    assert monitorstatus.describe(monitorstatus.read(str(tmp_path / "nowhere"))) == "monitor: not running"


def test_a_file_others_could_have_written_says_nothing(rundir):
    write_status(rundir, pid=os.getpid(), at=NOW)
    os.chmod(rundir, 0o777)
    try:
        info = monitorstatus.read(rundir, now=NOW)
    finally:
        os.chmod(rundir, 0o755)
    assert info["running"] is False and "is not root's" in info["why"]
