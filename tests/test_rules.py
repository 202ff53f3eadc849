"""The GPU facts every layer asks (cortex_hook/rules.py), and that blocking a built-in plugin
removes its rule everywhere at once: from `plan`, from `allocate` and from `status`."""

import pytest

from cortex_hook import rules
from cortex_hook.hooks.manager import load_plugins
from cortex_hook.model import Drain, HealthPolicy, Policy, Process, Snapshot
from cortex_hook.planner import plan

from .helpers.box import gpu_desc, uuid_of
from .helpers.builders import GiB, make_gpu, make_request, uuid


# -- blocking a built-in removes its rule, and nothing else speaks for it ---------------------------
def test_without_availability_a_normal_service_is_not_told_it_borrows_a_reserved_gpu(monkeypatch):
    """The planner used to note "usable because this service is critical" on a reserved GPU for a
    `class: normal` service once the availability plugin (which enforces reservations) was blocked."""
    monkeypatch.setenv("CORTEX_HOOK_DISABLE_PLUGINS", "availability")
    plugins = load_plugins()
    policy = Policy(reservations={uuid(0): ("triton.service",)})
    decision = plan(plugins, make_request([make_gpu(0), make_gpu(1)], policy=policy, gpus=2))
    assert decision.ok
    notes = [n for v in decision.verdicts for n in v.notes]
    assert not any("critical" in n for n in notes), notes
    assert all(v.tier == 0 for v in decision.verdicts)


def test_a_critical_service_is_still_told_it_borrows_a_reserved_gpu(plugins):
    policy = Policy(reservations={uuid(0): ("triton.service",)})
    decision = plan(plugins, make_request([make_gpu(0), make_gpu(1)], policy=policy, gpus=2, klass="critical"))
    borrowed = next(v for v in decision.verdicts if v.gpu.index == 0)
    assert borrowed.tier == 1 and "usable because this service is critical" in borrowed.notes[0]
    assert [g.index for g in decision.chosen] == [1, 0]  # the reserved GPU ranks after the free one


def test_without_health_status_and_plan_agree_that_a_hot_gpu_is_usable(box):
    """`status` used to show `too-hot` from its own copy of the health rules while `plan`, with
    the health plugin blocked, accepted the GPU."""
    box.write_gpus([gpu_desc(0, temperature=95)])
    box.write_policy("services:\n  - match: '*'\n")
    hot = box.env()
    assert box.json("status", env=hot)["gpus"][0]["health"] == ["too-hot"]
    assert box.cli("plan", "a", env=hot).returncode == 69
    blocked = box.env(CORTEX_HOOK_DISABLE_PLUGINS="health")
    assert box.json("status", env=blocked)["gpus"][0]["health"] == []
    assert box.json("plan", "a", env=blocked)["gpus"] == [uuid_of(0)]


# -- the rules themselves -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("18:00.0", "00000000:18:00.0"), ("0000:18:00.0", "00000000:18:00.0"), ("00000000:c1:00.1", "00000000:C1:00.1"),
    ("18:00", "00000000:18:00.0"), ("GPU-1", None), ("1", None), ("18:00.8", None), ("", None),
])
def test_normalize_pci(text, expected):
    assert rules.normalize_pci(text) == expected


@pytest.mark.parametrize("text, allowed, stopped", [
    ("1,0", {1, 0}, False),
    ("1,9,0", {1}, True),                  # an entry naming nothing ends the list, as in CUDA
    ("²", set(), True),                    # a digit to str.isdigit, not to int(): names nothing
    ("GPU-00000000-0000-4000-8000-000000000001", {1}, False),  # a UUID
    ("GPU-00000000", set(), True),         # not unique
    ("", set(), False),
])
def test_inherited_visible_devices_read_as_cuda_reads_them(text, allowed, stopped):
    gpus = [make_gpu(0), make_gpu(1)]
    rules.assign_cuda_indices(gpus)
    uuids, notes = rules.parse_visible(text, gpus)
    assert uuids == {uuid(i) for i in allowed}
    assert bool(notes) == stopped


def test_our_own_env_file_is_no_outer_restriction():
    env = {"CUDA_VISIBLE_DEVICES": "0", "CORTEX_HOOK_UNIT": "a.service"}
    assert rules.inherited_visible("a.service", env) is None
    assert rules.inherited_visible("b.service", env) == "0"


def test_faults_follow_the_health_policy():
    gpu = make_gpu(0, temperature=90, ecc_volatile_uncorrected=2, remapped_rows_failure=True)
    assert [r.code for r in rules.faults(HealthPolicy(), gpu)] == ["ecc", "remap-failure", "too-hot"]
    relaxed = HealthPolicy(max_temperature=None, volatile_uncorrectable_ecc=False)
    assert [r.code for r in rules.faults(relaxed, gpu)] == ["remap-failure"]  # never switchable
    assert [r.code for r in rules.faults(HealthPolicy(), make_gpu(1, lost=True))] == ["lost"]


def test_free_memory_counts_the_units_own_processes():
    gpu = make_gpu(0, free=4, processes=(Process(10, 8 * GiB), Process(11, 2 * GiB)))
    request = make_request([gpu], own_pids=frozenset({10}))
    assert rules.free_for(request, gpu) == 12 * GiB
    assert rules.free_for(make_request([gpu]), gpu) == 4 * GiB


def test_a_mig_instance_takes_its_parents_rank_drain_and_reservation():
    parent = make_gpu(0, mig_enabled=True)
    instance = make_gpu(1, parent_uuid=parent.uuid, mig_index=0)
    snapshot = Snapshot(priorities={parent.uuid: 3}, drains={parent.uuid: Drain(parent.uuid, "swap", 0)})
    policy = Policy(reservations={parent.uuid: ("a.service",)})
    assert rules.priority_of(snapshot, instance) == 3
    assert rules.drain_of(snapshot, instance).reason == "swap"
    assert rules.reserved_for_others(policy, "b.service", instance) == ("a.service",)
    assert rules.reserved_for_others(policy, "a.service", instance) is None
    assert rules.is_mig_parent(parent) and not rules.is_mig_parent(instance)


# -- one ranking rule (MIG) and UUIDs as a person types them ---------------------------------------
def test_rank_of_a_mig_instance_is_its_own_else_its_parents():
    parent = make_gpu(0, mig_enabled=True)
    first, second = (make_gpu(0, parent_uuid=parent.uuid, mig_index=j) for j in range(2))
    first.uuid, second.uuid = "MIG-00000000-0000-4000-8000-000000000100", "MIG-00000000-0000-4000-8000-000000000101"
    priorities = {parent.uuid: 0, first.uuid: 2}
    assert rules.rank_of(priorities, parent) == (0, parent.uuid)
    assert rules.rank_of(priorities, first) == (2, first.uuid)  # its own rank wins
    assert rules.rank_of(priorities, second) == (0, parent.uuid)  # its parent's
    assert rules.rank_of({}, second) == (None, None)
    assert rules.describe_rank(0, parent.uuid, second.uuid, 0) == "0 from GPU 0"
    assert rules.describe_rank(2, first.uuid, first.uuid, 0) == "2"
    assert rules.describe_rank(None, None, second.uuid, 0) == "-"


def test_rank_order_ranked_first_then_a_whole_gpu_before_a_slice():
    whole, slice_ = make_gpu(1), make_gpu(0, parent_uuid=uuid(0), mig_index=0)
    assert rules.rank_order(0, slice_) < rules.rank_order(1, whole)  # the admin's rank first
    assert rules.rank_order(None, whole) < rules.rank_order(None, slice_)  # then whole before slice
    assert rules.rank_order(5, slice_) < rules.rank_order(None, whole)  # ranked before unranked


REALISTIC = ["GPU-1a2b3c4d-5e6f-4a1b-8c2d-0123456789ab", "GPU-1a2b3c4d-9999-4a1b-8c2d-0123456789ab",
             "GPU-77aa0000-5e6f-4a1b-8c2d-0123456789ab", "MIG-1a2b3c4d-5e6f-4a1b-8c2d-0123456789ab"]


def test_unique_prefixes_name_one_uuid_each():
    prefixes = rules.unique_prefixes(REALISTIC)
    assert prefixes[REALISTIC[2]] == "GPU-77aa0000"  # the shortest shown: GPU- and 8 hex digits
    assert prefixes[REALISTIC[0]] == "GPU-1a2b3c4d-5"
    for uuid_, prefix in prefixes.items():
        assert rules.uuids_with_prefix(prefix, REALISTIC) == [uuid_]
    assert rules.uuids_with_prefix("GPU-1a2b", REALISTIC) == REALISTIC[:2]
    assert rules.uuids_with_prefix("1a2b", REALISTIC) == []  # not a UUID prefix at all
