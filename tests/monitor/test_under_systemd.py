"""The GPU health monitor (`cortex-hook monitor`, cortex-hook-monitor.service) under the real
systemd 252 (sd-sandbox), GPUs from the fake NVML driver with live changes (FAKE_NVML_LIVE=1)
and events (FAKE_NVML_EVENTS): a GPU that fails under a running server is drained and the server
moves; application XIDs change nothing; faults without an event are polled; drains come back;
a flapping GPU cannot loop a unit; a killed monitor picks up where it was; a hung driver meets
the watchdog."""

import json
import os
import time

import pytest

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import REPO
from ..helpers.sandbox import PORT

pytestmark = pytest.mark.systemd
MONITOR = "cortex-hook-monitor.service"
FOUR = [gpu_desc(i, minor_number=i) for i in range(4)]


def policy(extra_health="", services=None):
    """Two supervised stand-ins, a and b, on ports PORT and PORT+1; the monitor polls every second
    and brings a GPU back after 2 s (unless EXTRA_HEALTH says otherwise)."""
    services = services or "".join(
        f"  - match: {name}.service\n    readiness: http://127.0.0.1:{PORT + i}/health\n{more}"
        for i, (name, more) in enumerate((("a", "    class: critical\n"), ("b", ""))))
    recover = "" if "recover:" in extra_health else "  recover: 2s\n"
    return f"health:\n  poll: 1s\n{recover}{extra_health}services:\n{services}"


class Watched:
    """A host with the monitor running (and its driver's events and live GPUs in the test's hands)."""

    def __init__(self, host, body, gpus=FOUR, units=("a", "b")):
        self.host, self.sb = host, host.sb
        self.gpus = [dict(g) for g in gpus]
        host.setup(body, gpus=self.gpus)
        self.events = host.out / "events.jsonl"
        self.events.write_text("")
        self.sb.set_environment(FAKE_NVML_LIVE="1", FAKE_NVML_EVENTS=str(self.events))
        for i, name in enumerate(units):
            host.standin_unit(f"{name}.service", "User=nobody\n", port=PORT + i)
            host.install(f"{name}.service", "supervise")
        host.cortex("install-monitor", "--program", self.sb.program)
        self.sb.write_unit(f"{MONITOR}.d/test.conf", "[Service]\nRestartSec=1s\n")
        self.sb.daemon_reload()
        for name in units:
            self.sb.systemctl("start", f"{name}.service", check=True)
        self.sb.systemctl("start", MONITOR, check=True)  # returns at READY=1: registered and polled once

    def gpu_of(self, unit):
        return self.host.decision(unit)["launch"]["env"]["CUDA_VISIBLE_DEVICES"]

    def index_of(self, unit):
        return [uuid_of(i) for i in range(len(self.gpus))].index(self.gpu_of(unit))

    def event(self, **event):
        with open(self.events, "a") as f:
            f.write(json.dumps(event) + "\n")

    def change(self, index, **facts):
        self.gpus[index].update(facts)
        self.host.box.write_gpus(self.gpus)

    def status(self):
        return self.host.cortex_json("status")

    def drains(self):
        """{uuid: {"source", "detail"}} of the drained GPUs, as `status --json` shows them."""
        return {g["uuid"]: {"source": g["drain_source"], "detail": g["drain_detail"]}
                for g in self.status()["gpus"] if g.get("drain")}

    def history(self, *actions):
        rows = self.host.cortex_json("history", "-n", "500")["history"]
        return [r for r in rows if not actions or r["action"] in actions]

    def journal(self):
        self.sb.run("journalctl", "--sync")
        return self.sb.run("journalctl", "-u", MONITOR, "--no-pager", "-o", "cat").stdout


@pytest.fixture
def watched(host):
    return lambda body=None, **kw: Watched(host, body or policy(), **kw)


def test_xid_79_moves_the_server_to_a_healthy_gpu_and_leaves_the_other_alone(watched):
    """XID 79 plus the GPU lost, under unit a: the GPU is drained with its XID, a runs again on a
    spare GPU within seconds, b keeps its MainPID."""
    w = watched()
    dead, b_pid = w.index_of("a.service"), w.sb.prop("b.service", "MainPID")
    a_pid = w.sb.prop("a.service", "MainPID")
    t0 = time.monotonic()
    w.event(gpu=dead, type="xid", data=79)
    w.change(dead, lost=True)
    w.sb.wait_for(lambda: w.sb.prop("a.service", "MainPID") not in ("0", a_pid)
                  and w.sb.prop("a.service", "ActiveState") == "active", "a active again on another GPU",
                  unit="a.service")
    took = time.monotonic() - t0
    assert w.gpu_of("a.service") != uuid_of(dead)
    assert w.sb.prop("b.service", "MainPID") == b_pid
    drain = w.drains()[uuid_of(dead)]
    assert drain["source"] == "monitor" and "XID 79" in drain["detail"]
    assert [r["unit"] for r in w.history("fault-restart")] == ["a.service"]
    print(f"\nXID 79 -> a.service active on a healthy GPU: {took:.1f} s")


def test_an_application_xid_changes_nothing(watched):
    """XID 13 (an application's error, in ignore_xids by default): no drain, no restart."""
    w = watched()
    gpu, a_pid = w.index_of("a.service"), w.sb.prop("a.service", "MainPID")
    w.event(gpu=gpu, type="xid", data=13)
    w.sb.wait_for(lambda: "XID 13" in w.journal(), "the monitor to see XID 13")
    assert w.drains() == {}
    assert w.sb.prop("a.service", "MainPID") == a_pid
    assert w.history("fault-restart", "fault-drain") == []


def test_a_fault_without_an_event_is_caught_by_polling(watched):
    """Volatile uncorrectable ECC appears with no event at all: the poll drains the GPU and moves a."""
    w = watched()
    gpu, a_pid = w.index_of("a.service"), w.sb.prop("a.service", "MainPID")
    w.change(gpu, ecc_errors={"volatile_uncorrected": 2})
    w.sb.wait_for(lambda: uuid_of(gpu) in w.drains(), "the poll to drain the GPU")
    assert "uncorrectable ECC" in w.drains()[uuid_of(gpu)]["detail"]
    w.sb.wait_for(lambda: w.sb.prop("a.service", "MainPID") not in ("0", a_pid)
                  and w.sb.prop("a.service", "ActiveState") == "active", "a moved", unit="a.service")
    assert w.gpu_of("a.service") != uuid_of(gpu)


def test_a_recovered_gpu_comes_back_and_an_admins_drain_never_does(watched):
    """XID 74 (NVLink) drains the GPU; it stays healthy for `recover: 2s` and is back in service;
    the GPU an admin drained is still drained after the same wait."""
    w = watched(units=("a",))
    gpu = w.index_of("a.service")
    spare = next(i for i in range(4) if i != gpu)
    w.host.cortex("drain", str(spare), "--reason", "maintenance")
    w.event(gpu=gpu, type="xid", data=74)
    w.sb.wait_for(lambda: uuid_of(gpu) in w.drains(), "the XID 74 drain")
    w.sb.wait_for(lambda: w.history("fault-recover"), "the recovery", timeout=30)
    drains = w.drains()
    assert uuid_of(gpu) not in drains
    assert drains[uuid_of(spare)]["source"] == "admin"
    assert w.history("fault-recover")[0]["detail"]["why"].startswith("healthy for ")
    assert w.history("fault-recover")[0]["detail"]["why"].endswith("after XID 74")


def test_a_flapping_gpu_cannot_loop_a_unit(watched):
    """max_fault_restarts: 2: the third fatal fault under unit a in the window is not acted on."""
    w = watched(policy("  max_fault_restarts: 2\n  recover: never\n"), units=("a",))
    for round_ in range(3):
        gpu, pid = w.index_of("a.service"), w.sb.prop("a.service", "MainPID")
        w.event(gpu=gpu, type="xid", data=79)
        w.sb.wait_for(lambda: len(w.history("fault-restart", "fault-limited")) == round_ + 1,
                      f"the monitor to act on fault {round_ + 1}")
        if round_ < 2:
            w.sb.wait_for(lambda: w.sb.prop("a.service", "MainPID") not in ("0", pid)
                          and w.sb.prop("a.service", "ActiveState") == "active", "a moved", unit="a.service")
    assert [r["action"] for r in w.history("fault-restart", "fault-limited")] == \
        ["fault-restart", "fault-restart", "fault-limited"]
    assert w.sb.prop("a.service", "ActiveState") == "active"


def test_a_killed_monitor_comes_back_and_picks_up_its_drains(watched):
    """kill -9: systemd restarts the monitor; its drain is still its own (and recovers later),
    and the unit it already restarted is not restarted twice."""
    w = watched(policy("  recover: 4s\n"), units=("a",))
    gpu = w.index_of("a.service")
    w.event(gpu=gpu, type="xid", data=79)
    w.sb.wait_for(lambda: w.history("fault-restart"), "the restart")
    first = w.sb.prop(MONITOR, "MainPID")
    w.sb.systemctl("kill", "--signal=KILL", MONITOR, check=True)
    w.sb.wait_for(lambda: w.sb.prop(MONITOR, "MainPID") not in ("0", first)
                  and w.sb.prop(MONITOR, "ActiveState") == "active", "the monitor restarted by systemd")
    assert int(w.sb.prop(MONITOR, "NRestarts")) == 1
    assert w.drains()[uuid_of(gpu)]["source"] == "monitor"
    w.sb.wait_for(lambda: w.history("fault-recover"), "the recovery after the restart", timeout=30)
    assert len(w.history("fault-restart")) == 1


def test_a_hung_driver_meets_the_watchdog(watched, tmp_path):
    """The driver stops answering (its config becomes a FIFO nobody writes: every call blocks):
    no WATCHDOG=1 reaches systemd, which kills and restarts the monitor, never a frozen daemon."""
    w = watched(units=())
    w.sb.write_unit(f"{MONITOR}.d/watchdog.conf", "[Service]\nWatchdogSec=3s\n")
    w.sb.daemon_reload()
    w.sb.systemctl("restart", MONITOR, check=True)
    good = w.host.box.gpus_file + ".good"
    os.replace(w.host.box.gpus_file, good)
    fifo = w.host.box.gpus_file + ".fifo"
    os.mkfifo(fifo)
    os.replace(fifo, w.host.box.gpus_file)
    try:
        w.sb.wait_for(lambda: "Watchdog timeout" in w.journal(), "systemd's watchdog to end the monitor",
                      timeout=60)
    finally:
        os.replace(good, w.host.box.gpus_file)
    w.sb.wait_for(lambda: w.sb.prop(MONITOR, "ActiveState") == "active", "the monitor back", timeout=60)
    assert int(w.sb.prop(MONITOR, "NRestarts")) >= 1


def test_status_says_whether_the_monitor_runs(watched):
    w = watched(units=())
    assert w.status()["monitor"]["running"] is True
    w.sb.systemctl("stop", MONITOR, check=True)
    assert w.status()["monitor"]["running"] is False
    assert "monitor: not running" in w.host.cortex("status").stdout


def test_corrected_ecc_the_monitor_counts_demotes_a_gpu_for_a_while(watched):
    """A burst of corrected ECC errors on the GPU the next start would get: the monitor records it,
    the next start goes to an equal untroubled GPU and says why; after `demote_window` it no longer does."""
    w = watched(policy("  demote_window: 4s\n  demote_corrected_ecc: 10\n"), units=("a",))

    def next_gpu():
        decision = w.host.cortex_json("plan", "b.service")
        return decision["gpus"][0], json.dumps(decision)

    first, _ = next_gpu()
    index = [uuid_of(i) for i in range(4)].index(first)
    w.change(index, ecc_errors={"volatile_corrected": 14})
    w.sb.wait_for(lambda: next_gpu()[0] != first, "the next start to avoid the troubled GPU")
    assert "demoted: 14 corrected ECC errors" in next_gpu()[1]
    w.sb.wait_for(lambda: next_gpu()[0] == first, "the demotion to end with its window", timeout=30)


def test_the_monitor_unit_verifies_and_is_the_shipped_example(host):
    """What install-monitor writes passes `systemd-analyze verify` silently, and is the shipped
    systemd/cortex-hook-monitor.service but for the paths in ExecStart=."""
    host.setup(policy())
    host.cortex("install-monitor", "--program", host.sb.program)
    r = host.sb.run("systemd-analyze", "verify", f"/etc/systemd/system/{MONITOR}")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")

    def directives(text):
        return [line for line in text.splitlines() if line and not line.startswith(("#", "ExecStart="))]
    written = open(os.path.join(host.sb.unit_dir, MONITOR)).read()
    shipped = open(os.path.join(REPO, "systemd", MONITOR)).read()
    assert directives(written) == directives(shipped)
    assert "ExecStart=" in written and written.split("ExecStart=")[1].split("\n")[0].endswith(" monitor")
