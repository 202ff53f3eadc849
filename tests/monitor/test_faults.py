"""What the monitor makes of what it sees (monitor/faults.py), and its NVML event set against the fake
driver (monitor/events.py), and its polling outside systemd (`monitor --once`)."""

import json
import subprocess
import sys

import pytest

from cortex_hook.model import Gpu, HealthPolicy
from cortex_hook.monitor.events import Event
from cortex_hook.monitor.faults import DRAIN, FATAL, IGNORE, TROUBLE, classify_event, classify_gpu

from ..helpers.box import gpu_desc, uuid_of

HEALTH = HealthPolicy()


@pytest.mark.parametrize("event, verdict, why", [
    (Event("GPU-x", "xid", 79), FATAL, "XID 79"),
    (Event("GPU-x", "xid", 48), FATAL, "XID 48"),
    (Event("GPU-x", "xid", 13), IGNORE, "XID 13 (an application's error: ignore_xids)"),
    (Event("GPU-x", "xid", 31), IGNORE, "XID 31 (an application's error: ignore_xids)"),
    (Event("GPU-x", "xid", 94), TROUBLE, "XID 94"),  # neither list: demotes, never drains
    (Event("GPU-x", "dbe", 0), FATAL, "double-bit ECC error"),
    (Event("GPU-x", "gpu-unavailable", 0), FATAL, "the driver reports the GPU unavailable"),
    (Event("GPU-x", "recovery-action", 1), FATAL, "the driver asks for a GPU reset"),
    (Event("GPU-x", "recovery-action", 0), IGNORE, "no recovery action needed"),
])
def test_events_by_the_default_lists(event, verdict, why):
    assert classify_event(event, HEALTH) == (verdict, why)


def test_the_policys_lists_replace_the_defaults():
    health = HealthPolicy(fatal_xids=(13,), ignore_xids=(79,))
    assert classify_event(Event("GPU-x", "xid", 13), health)[0] == FATAL
    assert classify_event(Event("GPU-x", "xid", 79), health)[0] == IGNORE


@pytest.mark.parametrize("facts, verdict", [
    ({}, IGNORE),
    ({"lost": True}, FATAL),
    ({"ecc_volatile_uncorrected": 2}, FATAL),
    ({"remapped_rows_failure": True}, FATAL),
    ({"retired_pages_pending": True}, DRAIN),  # needs a reset; the server using it is not broken
    ({"remapped_rows_pending": True}, DRAIN),
    ({"temperature": 95}, TROUBLE),  # allocate avoids it while hot; the monitor only demotes it
    ({"temperature": 95, "ecc_volatile_uncorrected": 1}, FATAL),  # the worst one wins
])
def test_a_polled_gpu_by_its_worst_fault(facts, verdict):
    gpu = Gpu(index=0, uuid="GPU-x", temperature=40, **{k: v for k, v in facts.items() if k != "temperature"})
    if "temperature" in facts:
        gpu.temperature = facts["temperature"]
    assert classify_gpu(HEALTH, gpu)[0] == verdict


EVENTS = """
import json, sys
import pynvml as N
from cortex_hook.monitor.events import EventSet
N.nvmlInit()
events = EventSet(N)
for i in range(N.nvmlDeviceGetCount()):
    device = N.nvmlDeviceGetHandleByIndex(i)
    events.register(N.nvmlDeviceGetUUID(device), device)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"gpu": 1, "type": "xid", "data": 79}) + "\\n")
    f.write(json.dumps({"gpu": 0, "type": "dbe"}) + "\\n")
got = [events.wait(2000), events.wait(2000), events.wait(100)]
print(json.dumps({"registered": sorted(events.registered), "polled": events.polled,
                  "got": [e and e.to_plain() for e in got]}))
"""


@pytest.mark.nvml
def test_the_event_set_sees_xids_and_ecc_and_polls_a_gpu_that_cannot_register(nvml_box, tmp_path):
    """The real nvidia-ml-py against the fake driver: events reach the set with their GPU; a GPU
    that supports no fault event is polled only, and says why; a quiet wait is None."""
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2, supported_events=["pstate"])])
    events = tmp_path / "events.jsonl"
    events.write_text("")
    r = subprocess.run([sys.executable, "-c", EVENTS, str(events)], capture_output=True, text=True, timeout=60,
                       env=nvml_box.env(FAKE_NVML_EVENTS=str(events)))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["registered"] == [uuid_of(0), uuid_of(1)]
    assert out["polled"] == {uuid_of(2): "it supports none of the fault events"}
    assert out["got"] == [{"uuid": uuid_of(1), "kind": "xid", "data": 79},
                          {"uuid": uuid_of(0), "kind": "dbe", "data": 0}, None]


@pytest.mark.nvml
def test_monitor_once_drains_what_a_poll_finds_and_says_whose_drain_it_is(nvml_box):
    """Outside systemd, `monitor --once`: a GPU with volatile uncorrectable ECC is drained by the
    monitor (with what it saw), a healthy one is not, and an admin's drain stays the admin's."""
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1, ecc_errors={"volatile_uncorrected": 1}),
                         gpu_desc(2, ecc_errors={"volatile_uncorrected": 1})])
    nvml_box.write_policy("services:\n  - match: '*'\n", inventory="nvml")
    assert nvml_box.cli("drain", "2", "--reason", "maintenance").returncode == 0
    r = nvml_box.cli("monitor", "--once")
    assert r.returncode == 0, r.stderr
    assert "GPU 1 drained: 1 volatile uncorrectable ECC error(s)" in r.stderr
    rows = {g["uuid"]: g for g in nvml_box.json("status")["gpus"]}
    assert rows[uuid_of(0)]["drain"] is None
    assert (rows[uuid_of(1)]["drain_source"], rows[uuid_of(2)]["drain_source"]) == ("monitor", "admin")
    assert "volatile uncorrectable ECC" in rows[uuid_of(1)]["drain_detail"]
    actions = [h["action"] for h in nvml_box.json("history")["history"]]
    assert actions.count("fault-drain") == 1
