"""Placement (placement.py, the planner's order): `pack` keeps whole NVLink groups free for the
services that need them, `spread` keeps shared services apart, and the admin's order wins over
both. Properties over random topologies, leases and ranks; then, per topology, a sequence where
first-fit by index leaves a `require-nvlink` request without a pair and pack serves it."""

import pytest
from hypothesis import given, settings, strategies as st

from cortex_hook.model import Lease, Policy, Snapshot
from cortex_hook.planner import plan
from cortex_hook.rules import rank_order

from .helpers.builders import make_gpu, make_request, uuid


def box(groups, numa=None, switch=None):
    """GPUs in NVLink GROUPS (lists of indices; a group of one is a GPU with no NVLink), each on
    NUMA node NUMA(i) (default 0) and, when SWITCH is given, sharing a PCIe switch (level 20) with
    the GPUs for which SWITCH returns the same value (else level 40 between all)."""
    n = sum(len(g) for g in groups)
    gpus = [make_gpu(i, numa_node=numa(i) if numa else 0) for i in range(n)]
    for group in groups:
        for i in group:
            gpus[i].nvlink_peers = frozenset(uuid(j) for j in group if j != i)
    for a in gpus:
        a.topology = {b.uuid: (20 if switch and switch(a.index) == switch(b.index) else
                               40 if a.numa_node == b.numa_node else 50) for b in gpus if b is not a}
    return gpus


def decide(plugins, devices, leases=(), priorities=None, mode="pack", **service):
    """The planner's Decision under the policy-wide `placement: MODE` (SERVICE: ServicePolicy fields)."""
    snap = Snapshot(leases=[Lease(unit, uuid(i), sharing) for unit, i, sharing in leases],
                    priorities={uuid(i): r for i, r in (priorities or {}).items()})
    policy = Policy(placement=mode)
    return plan(plugins, make_request(devices, snapshot=snap, policy=policy, **service))


# -- properties -------------------------------------------------------------------------------------
@st.composite
def situations(draw):
    """(groups, leased indices, {index: rank}) on 2..8 GPUs."""
    n = draw(st.integers(2, 8))
    sizes, left = [], n
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    groups, i = [], 0
    for size in sizes:
        groups.append(list(range(i, i + size)))
        i += size
    leased = draw(st.sets(st.integers(0, n - 1), max_size=n - 1))
    ranked = draw(st.dictionaries(st.integers(0, n - 1), st.integers(0, 2), max_size=n))
    return groups, sorted(leased), ranked


def _group_of(groups, i):
    return next(g for g in groups if i in g)


@settings(max_examples=200, deadline=None)
@given(situations())
def test_pack_never_breaks_a_whole_nvlink_group_when_an_equally_ranked_choice_keeps_it(plugins, situation):
    groups, leased, ranks = situation
    d = decide(plugins, box(groups), [(f"held{i}.service", i, "exclusive") for i in leased], ranks)
    (chosen,) = [v for v in d.verdicts if v.selected]
    free = [v for v in d.verdicts if v.accepted]

    def breaks_whole(i):
        group = _group_of(groups, i)
        return len(group) > 1 and not set(group) & set(leased)

    if breaks_whole(chosen.gpu.index):
        mine = rank_order(chosen.priority, chosen.gpu)
        assert not [v for v in free if rank_order(v.priority, v.gpu) == mine and not breaks_whole(v.gpu.index)], (
            groups, leased, ranks, chosen.gpu.index)


@settings(max_examples=200, deadline=None)
@given(situations(), st.sampled_from(["pack", "spread"]))
def test_the_admins_order_wins_over_placement(plugins, situation, mode):
    groups, leased, ranks = situation
    d = decide(plugins, box(groups), [(f"held{i}.service", i, "exclusive") for i in leased], ranks, mode=mode)
    (chosen,) = [v for v in d.verdicts if v.selected]
    best = min(rank_order(v.priority, v.gpu) for v in d.verdicts if v.accepted)
    assert rank_order(chosen.priority, chosen.gpu) == best


@settings(max_examples=200, deadline=None)
@given(situations(), st.lists(st.integers(0, 7), max_size=6))
def test_spread_never_puts_a_shared_service_beside_another_while_an_equally_ranked_gpu_is_idle(
        plugins, situation, tenants):
    groups, _, ranks = situation
    gpus = box(groups)
    shared = [(f"s{k}.service", i, "shared") for k, i in enumerate(tenants) if i < len(gpus)]
    d = decide(plugins, gpus, shared, ranks, mode="spread", sharing="shared")
    (chosen,) = [v for v in d.verdicts if v.selected]
    busy = {i for _, i, _ in shared}
    if chosen.gpu.index in busy:
        mine = rank_order(chosen.priority, chosen.gpu)
        idle = [v for v in d.verdicts if v.accepted and v.gpu.index not in busy
                and rank_order(v.priority, v.gpu) == mine]
        assert not idle, (groups, shared, ranks, chosen.gpu.index)


# -- explanations -----------------------------------------------------------------------------------
def test_the_chosen_gpu_says_why_placement_put_it_there(plugins):
    gpus = box([[0, 1], [2, 3]])
    d = decide(plugins, gpus, [("a.service", 0, "exclusive")])
    (chosen,) = [v for v in d.verdicts if v.selected]
    assert chosen.gpu.index == 1
    assert "packs next to a busy GPU (same NVLink set: 1 of 1 others in use)" in chosen.notes
    d = decide(plugins, gpus, [("a.service", 0, "exclusive")], mode="spread")
    (chosen,) = [v for v in d.verdicts if v.selected]
    assert chosen.gpu.index == 2 and "spreads onto an idle NVLink set" in chosen.notes
    ranked = decide(plugins, gpus, [("a.service", 0, "exclusive")], priorities={3: 0})
    (chosen,) = [v for v in ranked.verdicts if v.selected]
    assert chosen.gpu.index == 3 and not [n for n in chosen.notes if "packs" in n]  # the admin decided


def test_a_service_may_choose_its_own_placement(plugins):
    gpus = box([[0, 1], [2, 3]])
    held = [("a.service", 0, "exclusive")]
    assert [g.index for g in decide(plugins, gpus, held, mode="spread").chosen] == [2]
    assert [g.index for g in decide(plugins, gpus, held, mode="spread", placement="pack").chosen] == [1]
    assert [g.index for g in decide(plugins, gpus, held, mode="pack", placement="spread").chosen] == [2]


# -- first-fit leaves no pair, pack does --------------------------------------------------------------
def replay(plugins, gpus, events, mode):
    """Place 1-GPU units as EVENTS say (`+u` arrives, `-u` leaves), by MODE (`first-fit`: the
    lowest free index; else the planner's placement); returns {unit: index} still held."""
    held = {}
    for event in events:
        unit = event[1:]
        if event[0] == "-":
            held.pop(unit)
        elif mode == "first-fit":
            held[unit] = min(g.index for g in gpus if g.index not in held.values())
        else:
            leases = [(u + ".service", i, "exclusive") for u, i in held.items()]
            held[unit] = decide(plugins, gpus, leases, mode=mode, unit=unit + ".service").chosen[0].index
    return held


ARRIVE_7_LEAVE_3 = ["+a", "+b", "+c", "+d", "+e", "+f", "+g", "-a", "-b", "-f", "+h"]
SCENARIOS = {  # topology -> (GPUs, single-GPU events before a 2-GPU request)
    # pairs (0,1) (2,3) (4,5) (6,7); a, b and f leave: first-fit puts h on GPU 0, breaking the only
    # whole pair; pack puts it beside the busy GPU 4
    "4 NVLink pairs": (box([[0, 1], [2, 3], [4, 5], [6, 7]], numa=lambda i: i // 4, switch=lambda i: i // 2),
                       ARRIVE_7_LEAVE_3),
    # two H100 pairs first in PCI order, then four L4s standing alone: first-fit puts three singles
    # on the H100s; pack puts them on the L4s
    "mixed H100 pairs + L4": (box([[0, 1], [2, 3], [4], [5], [6], [7]], numa=lambda i: i // 4),
                              ["+a", "+b", "+c"]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_first_fit_refuses_a_require_nvlink_pair_that_pack_serves(plugins, name):
    gpus, events = SCENARIOS[name]
    for mode, served in (("first-fit", False), ("pack", True)):
        held = replay(plugins, gpus, events, mode)
        leases = [(u + ".service", i, "exclusive") for u, i in held.items()]
        d = decide(plugins, gpus, leases, gpus=2, topology="require-nvlink")
        assert d.ok is served, (name, mode, held, d.summary)


def test_without_nvlink_pack_keeps_a_pcie_switch_whole_where_first_fit_does_not(plugins):
    """2 NUMA nodes of 4 PCIe GPUs, two under each switch, no NVLink (on an NVSwitch box every
    set is NVLink-joined, so no order of arrivals can leave a pair unjoined): `prefer-nvlink`
    falls back to one switch, which pack kept whole."""
    gpus = box([[i] for i in range(8)], numa=lambda i: i // 4, switch=lambda i: i // 2)
    for mode, where in (("first-fit", "on one NUMA node"), ("pack", "under one PCIe switch tree")):
        held = replay(plugins, gpus, ARRIVE_7_LEAVE_3, mode)
        leases = [(u + ".service", i, "exclusive") for u, i in held.items()]
        d = decide(plugins, gpus, leases, gpus=2, topology="prefer-nvlink")
        assert d.ok and any(where in n for n in d.notes), (mode, held, d.notes)
