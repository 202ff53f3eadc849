"""The pure planner: verdicts, ranking, selection. Unit tests plus hypothesis properties:
never a rejected GPU, never more than asked, the admin order exactly, inside an inherited set."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cortex_hook.model import Drain, Gpu, Lease, Policy, Process, Snapshot
from cortex_hook.planner import plan
from cortex_hook.rules import assign_cuda_indices, parse_visible

from .helpers.builders import GiB, make_gpu, make_request, uuid


def decide(plugins, devices, **kw):
    return plan(plugins, make_request(devices, **kw))


def codes(decision, i):
    for v in decision.verdicts:
        if v.gpu.index == i and v.gpu.mig_index is None:
            return [r.code for r in v.reasons]
    raise KeyError(i)


def chosen(decision):
    return [g.index for g in decision.chosen]


# -- checks --------------------------------------------------------------------------------------
def test_every_reason_that_applies_is_listed(plugins):
    """A GPU that is hot, drained, short of memory and leased gets all four reasons, not the first."""
    gpus = [make_gpu(0, free=2, temperature=95), make_gpu(1)]
    snap = Snapshot(drains={uuid(0): Drain(uuid(0), "fan noise", 0)},
                    leases=[Lease("other.service", uuid(0))])
    d = decide(plugins, gpus, snapshot=snap, min_free_memory=8 * GiB)
    assert sorted(codes(d, 0)) == ["drained", "leased", "memory", "too-hot"]
    assert chosen(d) == [1]
    texts = " | ".join(r.text for r in d.verdicts[1].reasons)
    assert "fan noise" in texts and "other.service" in texts and "95°C" in texts


@pytest.mark.parametrize("field, value, code", [
    ("lost", True, "lost"), ("ecc_volatile_uncorrected", 3, "ecc"),
    ("retired_pages_pending", True, "retired-pages"), ("remapped_rows_pending", True, "remapped-rows"),
    ("remapped_rows_failure", True, "remap-failure"), ("mig_enabled", True, "mig-parent"),
])
def test_faults_reject(plugins, field, value, code):
    g = make_gpu(0)
    setattr(g, field, value)
    d = decide(plugins, [g, make_gpu(1)])
    assert code in codes(d, 0)
    assert chosen(d) == [1]


@pytest.mark.parametrize("switch, field, value", [
    ("retired_pages_pending", "retired_pages_pending", True),
    ("remapped_rows_pending", "remapped_rows_pending", True),
    ("volatile_uncorrectable_ecc", "ecc_volatile_uncorrected", 1),
])
def test_fault_checks_can_be_switched_off(plugins, switch, field, value):
    g = make_gpu(0)
    setattr(g, field, value)
    pol = Policy()
    setattr(pol.health, switch, False)
    assert codes(decide(plugins, [g], policy=pol), 0) == []


def test_unknown_facts_are_not_faults_but_unknown_memory_is_not_enough(plugins):
    g = make_gpu(0, temperature=None, utilization=None)
    g.retired_pages_pending = None
    assert codes(decide(plugins, [g]), 0) == []
    g.memory_free = None
    d = decide(plugins, [g], min_free_memory=GiB)
    assert codes(d, 0) == ["memory-unknown"]
    assert codes(decide(plugins, [g]), 0) == []  # no memory asked for: unknown is fine


def test_fraction_of_gpu_memory(plugins):
    d = decide(plugins, [make_gpu(0, free=70, total=80), make_gpu(1, free=79, total=80)], min_free_fraction=0.9)
    assert codes(d, 0) == ["memory"] and chosen(d) == [1]
    assert "90%" in d.verdicts[1].reasons[0].text


def test_own_previous_processes_count_as_free(plugins):
    """A restarting unit does not compete with its own old instance's memory."""
    g = make_gpu(0, free=4)
    g.processes = (Process(pid=4242, used_memory=20 * GiB), Process(pid=99, used_memory=GiB))
    assert codes(decide(plugins, [g], min_free_memory=16 * GiB), 0) == ["memory"]
    assert codes(decide(plugins, [g], min_free_memory=16 * GiB, own_pids=frozenset({4242})), 0) == []


def test_leases_exclusive_and_shared(plugins):
    gpus = [make_gpu(0), make_gpu(1), make_gpu(2)]
    snap = Snapshot(leases=[Lease("a.service", uuid(0), "exclusive"), Lease("b.service", uuid(1), "shared"),
                            Lease("u.service", uuid(2), "exclusive")])
    excl = decide(plugins, gpus, snapshot=snap, gpus="all")
    assert codes(excl, 0) == ["leased"] and codes(excl, 1) == ["leased"]
    assert codes(excl, 2) == []  # this unit's own (previous) lease never blocks it
    shared = decide(plugins, gpus, snapshot=snap, gpus="all", sharing="shared")
    assert codes(shared, 0) == ["leased"] and codes(shared, 1) == [] and chosen(shared) == [1, 2]


def test_reservations_and_critical(plugins):
    """Reserved GPUs are kept for their units; a critical service may borrow one, ranked last."""
    pol = Policy(reservations={uuid(0): ("triton.service",)})
    gpus = [make_gpu(0), make_gpu(1, free=20)]
    normal = decide(plugins, gpus, policy=pol, gpus="all")
    assert codes(normal, 0) == ["reserved"] and chosen(normal) == [1]
    owner = decide(plugins, gpus, policy=Policy(reservations=pol.reservations), unit="triton.service")
    assert chosen(owner) == [0]  # better score, and it is theirs
    critical = decide(plugins, gpus, policy=Policy(reservations=pol.reservations), klass="critical")
    assert chosen(critical) == [1]  # unreserved first, although GPU 0 scores higher
    critical2 = decide(plugins, gpus, policy=Policy(reservations=pol.reservations), klass="critical", gpus=2)
    assert chosen(critical2) == [1, 0]
    assert any("usable because this service is critical" in n for n in critical2.verdicts[1].notes)


def test_mig_instances(plugins):
    parent = make_gpu(0, mig_enabled=True)
    mig = [Gpu(index=0, uuid=f"MIG-00000000-0000-4000-8000-00000000010{j}", name="1g.10gb",
               memory_total=10 * GiB, memory_free=10 * GiB, parent_uuid=uuid(0), mig_index=j) for j in range(2)]
    d = decide(plugins, [parent] + mig)
    assert codes(d, 0) == ["mig-parent"]
    assert d.chosen[0].uuid.startswith("MIG-")
    assert d.launch.env == {}  # prepare happens in allocation, not in plan()
    two = decide(plugins, [parent] + mig, gpus=2)
    assert not two.ok
    assert all("mig-multi" in [r.code for r in v.reasons] for v in two.verdicts if v.gpu.is_mig)


def test_gpus_all_takes_every_acceptable_gpu(plugins):
    d = decide(plugins, [make_gpu(0), make_gpu(1, lost=True), make_gpu(2)], gpus="all")
    assert sorted(chosen(d)) == [0, 2]


def test_unavailable_explains_and_cpu_fallback(plugins):
    gpus = [make_gpu(0, free=1), make_gpu(1, temperature=99)]
    d = decide(plugins, gpus, min_free_memory=8 * GiB)
    assert not d.ok and d.chosen == []
    assert "0 of 2 qualify" in d.summary and "memory" in d.summary and "too-hot" in d.summary
    cpu = decide(plugins, gpus, min_free_memory=8 * GiB, on_unavailable="cpu")
    assert cpu.ok and cpu.fallback == "cpu" and cpu.chosen == []


# -- ranking and topology --------------------------------------------------------------------------
def test_priority_ranks_before_score(plugins):
    gpus = [make_gpu(0, free=24), make_gpu(1, free=5)]
    d = decide(plugins, gpus, snapshot=Snapshot(priorities={uuid(1): 0}))
    assert chosen(d) == [1]  # the admin said so, whatever the score
    unranked = decide(plugins, gpus)
    assert chosen(unranked) == [0]  # no priority: the better score wins


def test_unranked_gpus_come_after_ranked_ones(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    d = decide(plugins, gpus, snapshot=Snapshot(priorities={uuid(3): 0, uuid(1): 1}), gpus=4)
    assert chosen(d)[:2] == [3, 1]


def nvlink(gpus, *pairs):
    for a, b in pairs:
        gpus[a].nvlink_peers = (gpus[a].nvlink_peers or frozenset()) | {gpus[b].uuid}
        gpus[b].nvlink_peers = (gpus[b].nvlink_peers or frozenset()) | {gpus[a].uuid}
    for g in gpus:
        if g.nvlink_peers is None:
            g.nvlink_peers = frozenset()


def test_prefer_nvlink_passes_over_better_ranked_unjoined_gpus(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    nvlink(gpus, (2, 3))
    snap = Snapshot(priorities={uuid(0): 0, uuid(1): 1, uuid(2): 2, uuid(3): 3})
    d = decide(plugins, gpus, snapshot=snap, gpus=2, topology="prefer-nvlink")
    assert chosen(d) == [2, 3]
    assert any("passed over GPU 0, GPU 1" in n for n in d.notes)
    plain = decide(plugins, gpus, snapshot=snap, gpus=2, topology="any")
    assert chosen(plain) == [0, 1]


def test_require_nvlink_fails_without_a_joined_set(plugins):
    gpus = [make_gpu(i) for i in range(3)]
    nvlink(gpus, (0, 1))
    snap = Snapshot(leases=[Lease("other.service", uuid(1))])
    d = decide(plugins, gpus, snapshot=snap, gpus=2, topology="require-nvlink")
    assert not d.ok and "require-nvlink" in d.summary
    prefer = decide(plugins, gpus, snapshot=snap, gpus=2, topology="prefer-nvlink")
    assert prefer.ok and sorted(chosen(prefer)) == [0, 2]


def test_prefer_nvlink_falls_back_to_pcie_locality(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    nvlink(gpus)
    for g in gpus:  # 0,1 far apart (SYSTEM); 2,3 under one PCIe switch
        g.topology = {o.uuid: (20 if {g.index, o.index} == {2, 3} else 50) for o in gpus if o is not g}
    d = decide(plugins, gpus, gpus=2, topology="prefer-nvlink")
    assert chosen(d) == [2, 3]
    assert any("PCIe switch" in n for n in d.notes)


def test_four_gpu_clique_on_an_eight_gpu_box(plugins):
    gpus = [make_gpu(i) for i in range(8)]
    nvlink(gpus, *[(a, b) for a in (4, 5, 6, 7) for b in (4, 5, 6, 7) if a < b], (0, 1), (2, 3))
    d = decide(plugins, gpus, gpus=4, topology="require-nvlink")
    assert sorted(chosen(d)) == [4, 5, 6, 7]


# -- inherited CUDA_VISIBLE_DEVICES ----------------------------------------------------------------
def test_parse_visible_like_cuda():
    gpus = [make_gpu(i) for i in range(4)]
    gpus[0].pci_bus_id, gpus[3].pci_bus_id = gpus[3].pci_bus_id, gpus[0].pci_bus_id  # NVML 3 is PCI-first
    assign_cuda_indices(gpus)
    allowed, notes = parse_visible("0,GPU-00000000-0000-4000-8000-00000000000", gpus)
    assert uuid(3) in allowed  # index 0 in PCI bus order is NVML index 3
    assert len(allowed) == 1 and "names no GPU" in notes[0]  # an ambiguous prefix ends the list
    gpus[2].uuid = "GPU-abcdef00-0000-4000-8000-000000000002"
    allowed, _ = parse_visible("GPU-abcd", gpus)  # CUDA accepts a unique UUID prefix
    assert allowed == {gpus[2].uuid}
    gpus[2].uuid = uuid(2)
    allowed, notes = parse_visible("1,7,2", gpus)
    assert allowed == {uuid(1)} and "'7'" in notes[0]  # CUDA stops at the first bad entry
    assert parse_visible("", gpus)[0] == frozenset()
    assert parse_visible("-1", gpus)[0] == frozenset()


def test_inherited_set_confines_the_choice(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    d = decide(plugins, gpus, visible=frozenset({uuid(2)}))
    assert chosen(d) == [2]
    assert codes(d, 0) == ["not-visible"]


# -- properties ------------------------------------------------------------------------------------
@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    gpus = []
    for i in range(n):
        g = make_gpu(i, free=draw(st.integers(0, 24)),
                     temperature=draw(st.sampled_from([30, 60, 90, None])),
                     utilization=draw(st.sampled_from([0, 50, 100, None])))
        g.retired_pages_pending = draw(st.sampled_from([None, False, True]))
        g.lost = draw(st.booleans()) and draw(st.booleans())
        gpus.append(g)
    peers = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=6))
    nvlink(gpus, *[(a, b) for a, b in peers if a != b])
    order = draw(st.permutations(list(range(n))))
    ranked = draw(st.integers(0, n))
    snap = Snapshot(
        priorities={uuid(order[k]): k for k in range(ranked)},
        drains={uuid(i): Drain(uuid(i), "x", 0) for i in draw(st.sets(st.integers(0, n - 1), max_size=2))},
        leases=[Lease(f"o{i}.service", uuid(i), draw(st.sampled_from(["exclusive", "shared"])))
                for i in draw(st.sets(st.integers(0, n - 1), max_size=3))],
    )
    reserved = draw(st.sets(st.integers(0, n - 1), max_size=2))
    policy = Policy(reservations={uuid(i): ("r.service",) for i in reserved})
    visible = draw(st.one_of(st.none(), st.sets(st.integers(0, n - 1)).map(lambda s: frozenset(uuid(i) for i in s))))
    svc = dict(gpus=draw(st.one_of(st.integers(1, 4), st.just("all"))),
               min_free_memory=draw(st.sampled_from([0, 8 * GiB, 20 * GiB])),
               sharing=draw(st.sampled_from(["exclusive", "shared"])),
               topology=draw(st.sampled_from(["any", "prefer-nvlink", "require-nvlink"])),
               klass=draw(st.sampled_from(["critical", "normal", "batch"])))
    return gpus, snap, policy, visible, svc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_never_rejected_never_more_than_asked_inside_visible(plugins, case):
    gpus, snap, policy, visible, svc = case
    d = decide(plugins, gpus, snapshot=snap, policy=policy, visible=visible, **svc)
    rejected = {v.gpu.uuid for v in d.verdicts if not v.accepted}
    accepted = [v for v in d.verdicts if v.accepted]
    picked = [g.uuid for g in d.chosen]
    assert not set(picked) & rejected
    assert len(set(picked)) == len(picked)
    want = len(accepted) if svc["gpus"] == "all" else svc["gpus"]
    assert len(picked) in (0, want)
    assert d.ok == bool(picked)
    if visible is not None:
        assert set(picked) <= visible
    assert all(v.selected == (v.gpu.uuid in picked) for v in d.verdicts)
    assert len(d.verdicts) == len(gpus)  # every GPU gets a verdict


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.permutations(list(range(n))), st.integers(1, n))))
def test_property_follows_the_admin_order_exactly(plugins, case):
    """With every GPU acceptable, the chosen GPUs are the first N of the admin's order, in that order
    (never sorted: unsloth#11029), and CUDA_VISIBLE_DEVICES lists them in that order too."""
    order, n = case
    gpus = [make_gpu(i, free=24 - i) for i in range(len(order))]  # scores disagree with the order
    snap = Snapshot(priorities={uuid(i): rank for rank, i in enumerate(order)})
    request = make_request(gpus, snapshot=snap, gpus=n)
    d = plan(plugins, request)
    assert chosen(d) == order[:n]
    plugins.prepare_launch(request, d, d.launch)
    assert d.launch.env["CUDA_VISIBLE_DEVICES"] == ",".join(uuid(i) for i in order[:n])


# -- MIG slices and whole GPUs: one ranking rule (rules.rank_of / rules.rank_order) -----------------
def _slices(parent_index, n=2, free=20):
    return [Gpu(index=parent_index, uuid=f"MIG-00000000-0000-4000-8000-0000000002{j:02x}",
                name="NVIDIA A100 MIG 2g.20gb", memory_total=free * GiB, memory_free=free * GiB,
                temperature=40, parent_uuid=uuid(parent_index), mig_index=j) for j in range(n)]


def test_unranked_whole_gpu_comes_before_an_unranked_slice(plugins):
    """No rank anywhere: the whole GPU is taken although the slice scores higher (more free memory
    than the busy whole GPU)."""
    parent = make_gpu(0, mig_enabled=True, total=80, free=80)
    busy_whole = make_gpu(1, free=4, utilization=90)
    d = decide(plugins, [parent, busy_whole] + _slices(0, 1))
    slice_verdict = next(v for v in d.verdicts if v.gpu.is_mig)
    assert slice_verdict.score > next(v for v in d.verdicts if v.gpu.index == 1).score
    assert chosen(d) == [1] and not d.chosen[0].is_mig


def test_slice_taken_before_a_whole_gpu_says_why(plugins):
    """The admin ranked the MIG parent first: its slices take rank 0, so a slice is taken while
    the whole GPU 1 (rank 1) is free, and the plan says so, naming both ranks."""
    parent = make_gpu(0, mig_enabled=True, total=80, free=80)
    snap = Snapshot(priorities={uuid(0): 0, uuid(1): 1})
    d = decide(plugins, [parent, make_gpu(1, total=48, free=48)] + _slices(0), snapshot=snap)
    assert d.chosen[0].is_mig and d.chosen[0].label == "GPU 0 MIG 0"
    (note,) = [n for n in d.notes if "MIG slice" in n]
    assert "GPU 0 MIG 0" in note and "whole GPU 1" in note
    assert "ranks 0 from GPU 0" in note and "GPU 1 ranks 1" in note
    assert "priority 0 from GPU 0" in d.summary
    picked = d.verdicts[0]
    assert (picked.priority, picked.priority_from) == (0, uuid(0))


def test_a_slice_with_its_own_rank_keeps_it(plugins):
    parent = make_gpu(0, mig_enabled=True, total=80, free=80)
    slices = _slices(0)
    snap = Snapshot(priorities={uuid(1): 0, slices[1].uuid: 1, uuid(0): 2})
    d = decide(plugins, [parent, make_gpu(1)] + slices, snapshot=snap, gpus=1)
    order = [(v.gpu.label, v.priority) for v in d.verdicts if v.accepted]
    assert order == [("GPU 1", 0), ("GPU 0 MIG 1", 1), ("GPU 0 MIG 0", 2)]
    assert not [n for n in d.notes if "MIG slice" in n]  # a whole GPU was taken: nothing to explain
