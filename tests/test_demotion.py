"""Dynamic priority from what the monitor saw (rules.demotion, the planner's order): recent
non-fatal trouble ranks a GPU after the untroubled GPUs of its admin rank, never before or after
another rank; the verdict says why; after the window it no longer does. Through the planner, and
through the fake NVML driver and the real command line."""
import sqlite3
import time

import pytest
from hypothesis import given, settings, strategies as st

from cortex_hook.model import Gpu, HealthPolicy, Snapshot, Trouble
from cortex_hook.planner import plan
from cortex_hook.rules import demotion

from .helpers.box import gpu_desc, uuid_of
from .helpers.builders import GiB, make_gpu, make_request, uuid

NOW = 1_000_000.0
HEALTH = HealthPolicy()  # demote_window 1h, demote_corrected_ecc 10


def troubled(*rows):
    """A Snapshot whose trouble is ROWS: (gpu index or uuid, seconds ago, kind, count, detail)."""
    snap = Snapshot()
    for who, ago, kind, count, detail in rows:
        key = uuid(who) if isinstance(who, int) else who
        snap.trouble.setdefault(key, []).append(Trouble(key, NOW - ago, kind, count, detail))
    return snap


# -- what counts, and how it is said ----------------------------------------------------------------
@pytest.mark.parametrize("rows, said", [
    ([(0, 600, "corrected_ecc", 9, ""), (0, 300, "corrected_ecc", 5, "")],
     "demoted: 14 corrected ECC errors in the last hour"),
    ([(0, 720, "xid", 1, "94")], "demoted: XID 94 12 min ago"),
    ([(0, 1800, "recovered", 1, "XID 79")], "demoted: recovered from XID 79 30 min ago"),
    ([(0, 90, "throttle", 1, "thermal")], "demoted: thermal throttling 1 min ago"),
    ([(0, 900, "xid", 1, "94"), (0, 120, "xid", 1, "94")], "demoted: XID 94 2 times, last 2 min ago"),
    ([(0, 60, "xid", 1, "94"), (0, 600, "corrected_ecc", 10, "")],
     "demoted: 10 corrected ECC errors in the last hour, XID 94 1 min ago"),
])
def test_demotion_says_why(rows, said):
    assert demotion(uuid(0), troubled(*rows), HEALTH, NOW) == said


@pytest.mark.parametrize("rows, health", [
    ([(0, 600, "corrected_ecc", 9, "")], HEALTH),                    # below demote_corrected_ecc
    ([(0, 3700, "xid", 1, "94")], HEALTH),                           # outside the window
    ([(1, 60, "xid", 1, "94")], HEALTH),                             # another GPU's
    ([(0, 60, "xid", 1, "94")], HealthPolicy(demote_window_seconds=0)),  # demotion off
])
def test_no_demotion(rows, health):
    assert demotion(uuid(0), troubled(*rows), health, NOW) is None


def test_the_window_and_threshold_are_the_policys():
    health = HealthPolicy(demote_window_seconds=1800, demote_corrected_ecc=3)
    assert demotion(uuid(0), troubled((0, 600, "corrected_ecc", 3, "")), health, NOW) == \
        "demoted: 3 corrected ECC errors in the last 30m"
    assert demotion(uuid(0), troubled((0, 2000, "corrected_ecc", 30, "")), health, NOW) is None


# -- the planner: inside a rank tie only -------------------------------------------------------------
def decide(plugins, devices, snapshot, **service):
    return plan(plugins, make_request(devices, snapshot=snapshot, **service), now=NOW)


def test_of_two_equal_unranked_gpus_the_untroubled_one_is_chosen_and_the_verdict_says_why(plugins):
    gpus = [make_gpu(0), make_gpu(1)]
    assert [g.index for g in decide(plugins, gpus, Snapshot()).chosen] == [0]  # equal: the index decides
    d = decide(plugins, gpus, troubled((0, 600, "corrected_ecc", 14, "")))
    assert [g.index for g in d.chosen] == [1]
    (gpu0,) = [v for v in d.verdicts if v.gpu.index == 0]
    assert gpu0.accepted and gpu0.demoted == "demoted: 14 corrected ECC errors in the last hour"
    assert any(n.startswith("demoted: 14 corrected ECC errors in the last hour") for n in gpu0.notes)
    assert not [v for v in d.verdicts if v.gpu.index == 1][0].demoted


def test_demotion_comes_before_the_score_within_a_tie(plugins):
    """Unranked: a troubled GPU with far more free memory still ranks after an untroubled one."""
    d = decide(plugins, [make_gpu(0, free=24), make_gpu(1, free=6)], troubled((0, 60, "xid", 1, "94")), gpus=2)
    assert [g.index for g in d.chosen] == [1, 0]


def test_demotion_never_outvotes_the_admins_rank(plugins):
    """Ranked GPUs keep the admin's exact order; a troubled rank-0 GPU is still taken first, and
    its verdict says it is demoted only among GPUs of its own rank."""
    snap = troubled((0, 60, "xid", 1, "94"))
    snap.priorities = {uuid(0): 0, uuid(1): 1}
    d = decide(plugins, [make_gpu(0), make_gpu(1), make_gpu(2)], snap)
    assert [g.index for g in d.chosen] == [0]
    assert "the admin's order stands" in d.verdicts[0].notes[-1]
    d = decide(plugins, [make_gpu(2), make_gpu(0)], snap)  # a troubled ranked GPU before an untroubled unranked one
    assert [g.index for g in d.chosen] == [0]


def test_slices_sharing_their_parents_rank_put_the_untroubled_slice_first(plugins):
    parent = make_gpu(0, mig_enabled=True, total=80, free=80)
    slices = [Gpu(index=0, uuid=f"MIG-00000000-0000-4000-8000-0000000002{j:02x}", name="NVIDIA A100 MIG 2g.20gb",
                  memory_total=20 * GiB, memory_free=20 * GiB, temperature=40, parent_uuid=uuid(0), mig_index=j)
              for j in range(2)]
    snap = troubled((slices[0].uuid, 60, "xid", 1, "94"))
    snap.priorities = {uuid(0): 0}
    d = decide(plugins, [parent] + slices, snap)
    assert d.chosen[0].uuid == slices[1].uuid
    whole = troubled((0, 60, "xid", 1, "94"))  # the parent's trouble is every slice's
    d = decide(plugins, [parent] + slices + [make_gpu(1)], whole)
    assert [g.index for g in d.chosen] == [1]
    assert all(v.demoted for v in d.verdicts if v.gpu.is_mig)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.permutations(list(range(n))), st.integers(1, n),
                                                     st.sets(st.integers(0, n - 1)))))
def test_property_the_admins_exact_order_stands_whatever_the_trouble(plugins, case):
    order, n, sick = case
    snap = troubled(*[(i, 60, "xid", 1, "94") for i in sick])
    snap.priorities = {uuid(i): rank for rank, i in enumerate(order)}
    d = decide(plugins, [make_gpu(i, free=24 - i) for i in range(len(order))], snap, gpus=n)
    assert [g.index for g in d.chosen] == order[:n]
    assert {v.gpu.index for v in d.verdicts if v.demoted} == sick


# -- through the fake NVML driver and the command line -----------------------------------------------
def _write(path, sql, args=()):
    """Run SQL on the database at PATH and commit (what the monitor would have recorded)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


def _demoted_note(decision, index):
    (v,) = [v for v in decision["verdicts"] if v["index"] == index]
    return [n for n in v["notes"] if n.startswith("demoted:")]


@pytest.mark.nvml
def test_a_burst_of_corrected_ecc_sends_the_next_start_to_the_other_gpu_until_the_window_ends(nvml_box):
    box = nvml_box
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy("services:\n  - match: '*'\n", inventory="nvml")
    assert box.json("plan", "a")["gpus"] == [uuid_of(0)]  # two equal unranked GPUs: the first
    ten_minutes_ago = time.time() - 600
    _write(box.state, "INSERT INTO trouble (uuid, at, kind, count) VALUES (?, ?, 'corrected_ecc', 14)",
           (uuid_of(0), ten_minutes_ago))
    first = box.json("allocate", "a")
    assert first["gpus"] == [uuid_of(1)]
    assert _demoted_note(first, 0) and _demoted_note(first, 0)[0].startswith(
        "demoted: 14 corrected ECC errors in the last hour")
    status = {g["uuid"]: g for g in box.json("status")["gpus"]}
    assert status[uuid_of(0)]["demoted"].startswith("demoted: 14") and status[uuid_of(1)]["demoted"] is None
    assert box.cli("release", "a").returncode == 0
    _write(box.state, "UPDATE trouble SET at = ?", (time.time() - 3700,))  # the burst is now over an hour old
    later = box.json("allocate", "b")
    assert later["gpus"] == [uuid_of(0)] and not _demoted_note(later, 0)
