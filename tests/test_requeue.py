"""A unit requeued by a preemption (state: `preempted`, mode requeue) waits for a GPU whatever its
own `on_unavailable:` says, shows who preempted it, and takes the GPU once it is given back. Its
start takes the mark: a later start is an ordinary one."""

import sqlite3
import subprocess
import sys
import time

from .helpers.box import gpu_desc, uuid_of
from .helpers.poll import wait_until

POLICY = """\
services:
  - match: "v*"
    class: batch
    on_unavailable: cpu
  - match: "*"
"""


def mark_requeued(box, unit, by, age=0.0):
    """What a preemption leaves for its victim UNIT (AGE seconds ago)."""
    conn = sqlite3.connect(box.state)
    with conn:
        conn.execute("INSERT INTO preempted (unit, by_unit, since, mode) VALUES (?, ?, ?, 'requeue')",
                     (unit, by, time.time() - age))
    conn.close()


def preempted_rows(box):
    conn = sqlite3.connect(box.state)
    try:
        return conn.execute("SELECT unit, by_unit, mode FROM preempted").fetchall()
    finally:
        conn.close()


def start_waiting(box, unit):
    """`allocate UNIT` in the background, once it waits: (its Popen, the waits `status` shows)."""
    proc = subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", unit], env=box.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return proc, wait_until(lambda: box.json("status")["waits"], f"{unit} to wait", proc=proc)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def test_a_requeued_unit_waits_for_a_gpu_instead_of_its_cpu_fallback(box):
    box.write_gpus([gpu_desc(0)]).write_policy(POLICY)
    assert box.cli("allocate", "x").returncode == 0
    mark_requeued(box, "v.service", "chat.service")
    proc, waits = start_waiting(box, "v")
    try:
        assert [w["unit"] for w in waits] == ["v.service"]
        assert waits[0]["summary"].startswith("preempted by chat.service: v.service needs 1 GPU"), waits
        assert box.cli("release", "x").returncode == 0
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert [(l["unit"], l["uuid"]) for l in box.json("leases")["leases"]] == [("v.service", uuid_of(0))]
    assert preempted_rows(box) == []


def test_an_unmarked_unit_with_cpu_fallback_starts_on_the_cpu(box):
    """(The same start without the mark does not wait.)"""
    box.write_gpus([gpu_desc(0)]).write_policy(POLICY)
    assert box.cli("allocate", "x").returncode == 0
    r = box.cli("allocate", "v")
    assert r.returncode == 0, r.stderr
    assert "starting on CPU" in r.stdout


def test_a_requeued_unit_that_may_preempt_says_why_it_waits(box):
    """(A `preempt: lower` service adds its own note after the planner's refusal: the wait still
    shows the refusal.)"""
    box.write_gpus([gpu_desc(0)]).write_policy("""\
services:
  - match: "v*"
    class: normal
    preempt: lower
    on_unavailable: cpu
  - match: "*"
    class: batch
""")
    assert box.cli("allocate", "x").returncode == 0
    mark_requeued(box, "v.service", "chat.service")
    proc, waits = start_waiting(box, "v")
    proc.kill()
    proc.communicate()
    assert waits[0]["summary"].startswith("preempted by chat.service: v.service needs 1 GPU"), waits


def test_a_requeue_mark_is_honoured_only_by_the_start_its_preemption_caused(box):
    """A mark older than the victim's grace and the margin (its restart never came: an admin's
    start much later) is taken and ignored: the start is an ordinary one."""
    box.write_gpus([gpu_desc(0)]).write_policy(POLICY)
    assert box.cli("allocate", "x").returncode == 0
    mark_requeued(box, "v.service", "chat.service", age=3600)
    r = box.cli("allocate", "v")
    assert r.returncode == 0 and "starting on CPU" in r.stdout, (r.stdout, r.stderr)
    assert preempted_rows(box) == []
