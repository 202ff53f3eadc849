"""What an admin looks at (cli/views.py, cli/render.py): `status` and `priority list` with a broken
policy, cells never cut, bus id / power / processes, `leases` columns, that only `status`
asks the driver for the facts only it shows, and what the monitor did: who drained each GPU,
whether the monitor runs, its rows in `history`."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from cortex_hook.state import State, monitoring

from ..helpers.box import assert_one_line_error, gpu_desc, gpus_box, uuid_of
from ..helpers.monitorfile import write_status

A, B = uuid_of(0), uuid_of(1)
ONE_GPU = "services:\n  - match: '*'\n"
BROKEN = "services:\n  - match: '*'\n    class: important\n"  # line 5 after `version:`, `inventory: nvml`


def table(stdout):
    """The lines of the GPU table `status` prints first (the header, then one per GPU)."""
    lines = stdout.splitlines()
    return lines[: lines.index("")] if "" in lines else lines


# -- a broken policy: the GPUs are still shown ------------------------------------------------------
@pytest.mark.nvml
def test_status_with_a_broken_policy_shows_the_gpus_nvml_reports(nvml_box):
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(BROKEN, inventory="nvml")
    r = nvml_box.cli("status")
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert A in r.stdout and B in r.stdout and "NVIDIA L4" in r.stdout
    assert_one_line_error(r.stderr, f"{nvml_box.policy}:5:", "services[0].class", "policy broken",
                          "as NVML reports them")
    out = json.loads(nvml_box.cli("status", "--json").stdout)
    assert out["inventory"] == "nvml" and "services[0].class" in out["policy_error"]
    assert [(g["uuid"], g["present"], g["health"]) for g in out["gpus"]] == [(A, True, []), (B, True, [])]


@pytest.mark.nvml
def test_status_and_priority_list_with_a_broken_policy_and_no_driver_show_the_gpus_seen(nvml_box):
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(ONE_GPU, inventory="nvml")
    assert nvml_box.cli("priority", "order", "1", "0").returncode == 0  # (the state sees both GPUs)
    nvml_box.write_gpus([gpu_desc(0)], init_error="DRIVER_NOT_LOADED").write_policy(BROKEN, inventory="nvml")
    r = nvml_box.cli("status")
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, f"{nvml_box.policy}:5:", "policy broken", "last seen in the state",
                          "Driver Not Loaded")
    rows = [line.split() for line in table(r.stdout)[1:]]
    assert [(row[1], row[-3]) for row in rows] == [(A, "1"), (B, "0")]  # UUID and rank of each
    assert all("unknown" in line for line in table(r.stdout)[1:])
    out = json.loads(nvml_box.cli("status", "--json").stdout)
    assert out["inventory"] == "state" and {g["present"] for g in out["gpus"]} == {None}
    r = nvml_box.cli("priority", "list")
    assert r.returncode == 78
    assert_one_line_error(r.stderr, f"{nvml_box.policy}:5:", "policy broken")
    ranked = [line.split()[:2] for line in r.stdout.splitlines()[1:]]
    assert ranked == [["0", "GPU"], ["1", "GPU"]] and B in r.stdout.splitlines()[1]


def test_status_with_a_good_policy_exits_0_and_says_nothing(box):
    box.write_gpus([gpu_desc(0)]).write_policy(ONE_GPU)
    r = box.cli("status")
    assert (r.returncode, r.stderr) == (0, "")


# -- nothing cut; bus id, power, processes ----------------------------------------------------------
LONG_NAME = "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
MIG = "MIG-00000000-0000-4000-8000-000000000100"
REASON = "fan bearing noise, replacement ordered (ticket 4711)"


def test_status_and_plan_cut_no_name_and_no_drain_reason(box):
    box.write_gpus([gpu_desc(0, name="NVIDIA A100-SXM4-80GB", memory_total="80GiB", mig_mode=1,
                             mig_devices=[{"uuid": MIG, "name": LONG_NAME, "memory_total": "40GiB"}]),
                    gpu_desc(1)])
    box.write_policy(ONE_GPU)
    assert box.cli("drain", "1", "--reason", REASON).returncode == 0
    status = box.cli("status").stdout
    assert LONG_NAME in status and REASON in status
    lines = table(status)
    assert {line.index("NVIDIA") for line in lines[1:]} == {lines[0].index("NAME")}  # columns line up
    assert LONG_NAME in box.cli("plan", "a").stdout


def test_status_shows_bus_id_power_and_the_processes_on_each_gpu(box):
    """`parent` in a simulated process list is the process that runs cortex-hook: this test."""
    box.write_gpus([gpu_desc(0, power_usage_mw=71234, power_limit_mw=300000,
                             processes=[{"pid": "parent", "used_memory": "3GiB"}]), gpu_desc(1)])
    box.write_policy(ONE_GPU)
    r = box.cli("status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "BUS ID" in lines[0] and "POWER" in lines[0]
    assert "00000000:10:00.0" in lines[1] and "71W/300W" in lines[1]
    assert "00000000:11:00.0" in lines[2] and " ? " in lines[2]  # power not reported: unknown
    with open(f"/proc/{os.getpid()}/comm") as f:
        me = f.read().strip()
    (proc,) = [l.split() for l in lines if l.split()[:2] == ["0", str(os.getpid())]]
    assert proc[2:4] == ["3.0GiB", me]
    (row, _) = json.loads(box.cli("status", "--json").stdout)["gpus"]
    assert row["power_mw"] == 71234 and row["pci_bus_id"] == "00000000:10:00.0"
    assert [(p["pid"], p["used_memory"], p["command"]) for p in row["processes"]] == [(os.getpid(), 3 * 1024**3, me)]


@pytest.mark.nvml
def test_only_status_asks_the_driver_for_power_and_processes(nvml_box):
    """Reading more for `status` must not slow the start path: `allocate` never asks."""
    nvml_box.write_gpus([gpu_desc(0, power_usage_mw=50000)]).write_policy(ONE_GPU, inventory="nvml")
    asked = ("nvmlDeviceGetPowerUsage", "nvmlDeviceGetComputeRunningProcesses")
    r = nvml_box.cli("allocate", "a", env=nvml_box.env(FAKE_NVML_DEBUG=2))
    assert r.returncode == 0, r.stderr
    assert "nvmlDeviceGetMemoryInfo" in r.stderr  # (the log is there)
    assert not [name for name in asked if name in r.stderr]
    r = nvml_box.cli("status", env=nvml_box.env(FAKE_NVML_DEBUG=2))
    assert r.returncode == 0
    assert all(name in r.stderr for name in asked)


# -- leases -----------------------------------------------------------------------------------------
def test_leases_columns_fit_long_unit_names(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(ONE_GPU)
    long_unit = "vllm@qwen2.5-72b-instruct-awq-with-a-long-instance-name.service"
    for unit in (long_unit, "b.service"):
        assert box.cli("allocate", unit).returncode == 0
    lines = box.cli("leases").stdout.splitlines()
    assert lines[0].split()[:2] == ["UNIT", "GPU"]
    assert sorted(line.index("GPU-") for line in lines[1:]) == [len(long_unit) + 2] * 2


def test_a_process_name_reaches_the_terminal_only_as_printable_text(box):
    """Any user names their own processes (/proc/PID/comm): an escape sequence or a newline in
    it is shown escaped, never sent to the terminal of root running `status`."""
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "open('/proc/self/comm', 'w').write('x\\x1b[2Jy\\nz')\n"
                              "print('named', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "named\n"
        box.write_gpus([gpu_desc(0, processes=[{"pid": child.pid, "used_memory": "1GiB"}])])
        box.write_policy(ONE_GPU)
        r = box.cli("status")
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "x\\x1b[2Jy\\x0az" in r.stdout
    finally:
        child.kill()
        child.wait()


# -- the monitor: who drained what, whether it runs, what it did -------------------------------------
def monitor_drain(box, uuid, detail, ago):
    """Drain UUID as the monitor does, AGO seconds ago."""
    with State.open(box.state) as state:
        assert monitoring.drain_by_monitor(state, uuid, f"{detail} at 12:00:00", detail)
        with state.write() as c:
            c.execute("UPDATE drain SET since = ? WHERE uuid = ?", (time.time() - ago, uuid))


def test_status_says_who_drained_each_gpu_and_why(box):
    gpus_box(box, 3)
    assert box.cli("drain", "0", "--reason", "maintenance").returncode == 0
    monitor_drain(box, B, "XID 79", ago=185)
    r = box.cli("status")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in table(r.stdout)[1:]}
    assert "drained by admin: maintenance" in rows["0"]
    assert "drained by monitor: XID 79, 3 min ago" in rows["1"]
    assert "drained" not in rows["2"]
    gpus = {g["uuid"]: g for g in box.json("status")["gpus"]}
    assert (gpus[A]["drain"], gpus[A]["drain_source"], gpus[A]["drain_detail"]) == ("maintenance", "admin", "")
    assert (gpus[B]["drain_source"], gpus[B]["drain_detail"]) == ("monitor", "XID 79")
    assert gpus[B]["drain_text"] == "drained by monitor: XID 79, 3 min ago"
    assert gpus[uuid_of(2)]["drain_source"] is None
    plan = {v["index"]: v for v in box.json("plan", "a", expect=0)["verdicts"]}
    assert plan[1]["reasons"][0]["text"] == "drained by the monitor: XID 79 at 12:00:00"
    assert plan[0]["reasons"][0]["text"] == "drained by the admin: maintenance"


def test_status_says_whether_the_monitor_runs(box):
    gpus_box(box, 1)
    os.makedirs(box.runtime, mode=0o755)
    last = box.cli("status").stdout.splitlines()[-1]
    assert last == "monitor: not running"
    assert box.json("status")["monitor"]["running"] is False

    write_status(box.runtime, pid=os.getpid(), at=time.time() - 4, poll_seconds=10.0, gpus=1, drained={},
                 status="watching 1 GPUs (1 by events)")
    last = box.cli("status").stdout.splitlines()[-1]
    assert re.fullmatch(rf"monitor: running \(pid {os.getpid()}, last poll [4-9] s ago\): watching 1 GPUs \(1 by "
                        r"events\)", last), last
    shown = box.json("status")["monitor"]
    assert (shown["running"], shown["pid"], shown["gpus"], shown["why"]) == (True, os.getpid(), 1, None)

    write_status(box.runtime, pid=os.getpid(), at=time.time() - 95, poll_seconds=10.0)
    last = box.cli("status").stdout.splitlines()[-1]
    assert last.startswith("monitor: not running (no poll for 3 polling intervals; last poll 1 min ago")
    assert box.json("status")["monitor"]["running"] is False

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_status(box.runtime, pid=gone.pid, at=time.time(), poll_seconds=10.0)
    assert f"monitor: not running (pid {gone.pid} is gone" in box.cli("status").stdout


def test_history_shows_what_the_monitor_did(box):
    gpus_box(box, 1)
    assert box.cli("allocate", "a").returncode == 0
    with State.open(box.state) as state:
        state.record(A, "fault-drain", [A], {"gpu": A, "why": "XID 79", "source": "monitor"})
        state.record("a.service", "fault-restart", [A],
                     {"gpu": A, "why": "XID 79", "source": "monitor", "note": "on_gpu_fault: restart"})
    lines = box.cli("history").stdout.splitlines()
    restart = next(line for line in lines if "fault-restart" in line)
    assert restart.endswith(f"monitor: XID 79 on {A} (on_gpu_fault: restart)"), restart
    allocated = next(line for line in lines if " allocate " in line)
    assert allocated.index("a.service") == restart.index("a.service")  # the columns still line up
    (drained,) = box.cli("history", A).stdout.splitlines()  # a GPU's own rows, by its UUID
    assert "fault-drain" in drained and drained.endswith("monitor: XID 79")
    assert [r["action"] for r in box.json("history", "a")["history"]] == ["allocate", "fault-restart"]

