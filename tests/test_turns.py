"""Whose turn (turns.py): starts waiting for a GPU get it in class order, then in the order they
began to wait, whichever of them happens to poll first when it is given back."""

import subprocess
import sys

from .helpers.box import gpu_desc, uuid_of
from .helpers.poll import wait_until

POLICY = """\
services:
  - match: "b*"
    class: batch
    on_unavailable: wait 2m
  - match: "n*"
    class: normal
    on_unavailable: wait 2m
  - match: "*"
"""


def holder_of(box):
    leases = box.json("leases")["leases"]
    return leases[0]["unit"] if leases else None


def waiting(box):
    return [w["unit"] for w in box.json("status")["waits"]]


def test_a_freed_gpu_goes_to_the_highest_class_then_the_longest_waiting(box):
    """One GPU, held; b1 (batch), n1 (normal) and b2 (batch) begin to wait in that order. Each
    release gives the GPU to n1, then b1, then b2: never to whoever polled first."""
    box.write_gpus([gpu_desc(0)]).write_policy(POLICY)
    assert box.cli("allocate", "x").returncode == 0
    procs = []
    try:
        for unit in ("b1", "n1", "b2"):
            procs.append(subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", unit], env=box.env(),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            wait_until(lambda: f"{unit}.service" in waiting(box), f"{unit} to wait")
        order = []
        for previous in ("x", "n1", "b1"):
            assert box.cli("release", previous).returncode == 0
            wait_until(lambda: holder_of(box) not in (None, f"{previous}.service"), f"the GPU to go on from {previous}")
            order.append(holder_of(box))
        assert order == ["n1.service", "b1.service", "b2.service"]
        assert box.json("leases")["leases"][0]["uuid"] == uuid_of(0)
        assert waiting(box) == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
