"""Victim choice (preemption.py, pure): when nothing fits, which units of a lower class a
`preempt: lower` service would stop, in what order of preference, with what summary; the promises
the planner honours (availability: `promised`, Verdict.promised); and the handoff's view of the
memory a stopped unit's processes still hold (handoff.leaving_pids, handoff.holding)."""

import os
import subprocess
import time

import pytest

from cortex_hook import handoff
from cortex_hook.model import Drain, Lease, Policy, Process, Promise, Request, ServicePolicy, Snapshot, Victim
from cortex_hook.planner import plan
from cortex_hook.preemption import describe, plan_with_preemption
from cortex_hook.rules import assign_cuda_indices

from .helpers.builders import GiB, make_gpu, uuid

NOW = 1_700_000_000.0
ME = "llm.service"


def lease_unit(unit):
    return f"cortex-hook-lease@{unit}.service"


def held(unit, i, ago=600.0, systemd=True, sharing="exclusive"):
    """UNIT's lease of GPU I, taken AGO seconds before NOW, held by its lease unit (SYSTEMD) or not."""
    return Lease(unit, uuid(i), sharing, since=NOW - ago, holder_unit=lease_unit(unit) if systemd else None)


def services(me=None, **classes):
    """ServicePolicies: the preempting llm.service (critical, `preempt: lower`, then ME's fields),
    then one per entry of CLASSES, {unit: class} or {unit: {ServicePolicy fields}}."""
    mine = dict(klass="critical", preempt="lower")
    mine.update(me or {})
    out = [ServicePolicy(match=ME, **mine)]
    for unit, spec in classes.items():
        fields = {"klass": spec} if isinstance(spec, str) else dict(spec)
        out.append(ServicePolicy(match=unit, **fields))
    return out


def request(gpus, leases=(), me=None, others=None, promises=(), unit_pids=None, drains=None,
            leaving=frozenset(), unit=ME):
    """The Request of UNIT on GPUS with LEASES held by OTHERS ({unit: class or fields})."""
    assign_cuda_indices(gpus)
    policy = Policy(services=services(me, **(others or {})))
    snap = Snapshot(leases=list(leases), promises=list(promises), drains=drains or {})
    return Request(unit=unit, service=policy.service_for(unit), policy=policy, snapshot=snap, gpus=gpus,
                   leaving_pids=frozenset(leaving), unit_pids=dict(unit_pids or {}))


def preempt(plugins, req):
    return plan_with_preemption(plugins, req, NOW)


def victims(decision):
    return [v.unit for v in decision.victims]


def indices(uuids):
    return sorted(int(u.rsplit("-", 1)[1], 16) for u in uuids)


BATCH = {"a.service": "batch", "b.service": "batch", "c.service": "batch", "d.service": "batch"}


# -- when it preempts at all ------------------------------------------------------------------------
def test_no_preemption_when_a_gpu_fits_without_it(plugins):
    gpus = [make_gpu(i) for i in range(2)]
    d = preempt(plugins, request(gpus, [held("a.service", 1)], others=BATCH))
    assert d.ok and [g.index for g in d.chosen] == [0]
    assert d.victims == [] and d.promised == []
    # the same box with GPU 0 taken too: now it does preempt
    d = preempt(plugins, request([make_gpu(i) for i in range(2)],
                                 [held("b.service", 0), held("a.service", 1)], others=BATCH))
    assert not d.ok and victims(d)


def test_preempt_never_is_the_default_and_never_preempts(plugins):
    leases = [held("a.service", 0), held("b.service", 1)]
    default = request([make_gpu(i) for i in range(2)], leases, others=BATCH)
    default.service = default.policy.services[0] = ServicePolicy(match=ME, klass="critical")
    assert default.service.preempt == "never"
    explicit = request([make_gpu(i) for i in range(2)], leases, me={"preempt": "never"}, others=BATCH)
    for req in (default, explicit):
        d = preempt(plugins, req)
        assert not d.ok and d.victims == [] and d.promised == []
        assert d.summary == plan(plugins, req, NOW).summary  # the planner's refusal, untouched
        assert not any(n.startswith("preempt:") for n in d.notes)


def test_no_victim_of_equal_or_higher_class(plugins):
    gpus = [make_gpu(i) for i in range(2)]
    others = {"peer.service": "normal", "boss.service": "critical"}
    req = request(gpus, [held("peer.service", 0), held("boss.service", 1)], me={"klass": "normal"}, others=others)
    d = preempt(plugins, req)
    assert not d.ok and d.victims == []
    assert "preempt: no set of lower-class units would free GPUs that fit" in d.notes
    # a critical service does not preempt another critical one either; a normal one it does
    req = request([make_gpu(i) for i in range(2)], [held("boss.service", 0), held("peer.service", 1)],
                  others=others)
    d = preempt(plugins, req)
    assert victims(d) == ["peer.service"] and indices(d.promised) == [1]


def test_when_preempted_never_is_never_chosen_and_the_note_says_so(plugins):
    others = {"keep.service": {"klass": "batch", "when_preempted": "never"}, "a.service": "batch"}
    d = preempt(plugins, request([make_gpu(0)], [held("keep.service", 0, ago=5)], others=others))
    assert not d.ok and d.victims == []
    assert "preempt: keep.service is never preempted (when_preempted: never)" in d.notes
    # beside another batch unit (started earlier, so less preferred otherwise), that one is taken
    gpus = [make_gpu(i) for i in range(2)]
    d = preempt(plugins, request(gpus, [held("keep.service", 0, ago=5), held("a.service", 1, ago=3600)],
                                 others=others))
    assert victims(d) == ["a.service"] and indices(d.promised) == [1]


def test_a_lease_without_a_lease_unit_is_not_a_victim(plugins):
    d = preempt(plugins, request([make_gpu(0)], [held("a.service", 0, systemd=False)], others=BATCH))
    assert not d.ok and d.victims == []
    assert "preempt: a.service holds its GPUs outside systemd: it cannot be stopped" in d.notes
    gpus = [make_gpu(i) for i in range(2)]
    d = preempt(plugins, request(gpus, [held("a.service", 0, ago=5, systemd=False), held("b.service", 1, ago=900)],
                                 others=BATCH))
    assert victims(d) == ["b.service"]


def test_an_unmatched_unit_and_the_unit_itself_are_not_victims(plugins):
    gpus = [make_gpu(i) for i in range(2)]
    leases = [held("stray.service", 0), held(ME, 1)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=BATCH))
    assert not d.ok and d.victims == []


def test_a_unit_holding_promises_does_not_preempt_again(plugins):
    leases = [held("a.service", 0), held("b.service", 1)]
    fresh = preempt(plugins, request([make_gpu(i) for i in range(2)], leases, others=BATCH))
    assert victims(fresh)  # without a promise it would
    promise = Promise(uuid=uuid(0), unit=ME, victim="a.service", since=NOW, pid=os.getpid())
    d = preempt(plugins, request([make_gpu(i) for i in range(2)], leases, others=BATCH, promises=[promise]))
    assert not d.ok and d.victims == [] and d.promised == []


def test_a_unit_holding_promises_waits_for_its_victims_rather_than_fall_back_to_the_cpu(plugins):
    """(`on_unavailable: cpu`: before it preempted, the CPU was its fallback; once it holds
    promises, it waits for them: the refusal, not the fallback, and no note in place of the
    summary.)"""
    leases = [held("a.service", 0)]
    promise = Promise(uuid=uuid(0), unit=ME, victim="a.service", since=NOW, pid=os.getpid())
    d = preempt(plugins, request([make_gpu(0)], leases, me={"on_unavailable": "cpu"}, others=BATCH,
                                 promises=[promise]))
    assert not d.ok and d.fallback is None
    assert d.summary.startswith(f"{ME} needs 1 GPU") and d.summary not in d.notes
    alone = plan(plugins, request([make_gpu(0)], leases, me={"on_unavailable": "cpu"}, others=BATCH))
    assert alone.ok and alone.fallback == "cpu"  # (what the planner alone says)


def test_every_gpu_of_the_selection_is_promised_free_ones_too(plugins):
    """gpus: 2 on GPU 0 (free) and GPU 1 (batch a): both are promised, only a is a victim."""
    me = {"gpus": 2}
    d = preempt(plugins, request([make_gpu(i) for i in range(2)], [held("a.service", 1)], me=me, others=BATCH))
    assert victims(d) == ["a.service"] and indices(d.promised) == [0, 1]
    assert indices(d.victims[0].gpus) == [1]


# -- the order of preference ------------------------------------------------------------------------
def test_fewest_victims_first(plugins):
    """One batch unit holding 2 GPUs, over two units holding 1 each (started later: preferred on
    every other count)."""
    gpus = [make_gpu(i) for i in range(4)]
    leases = [held("a.service", 0, ago=7200), held("a.service", 1, ago=7200),
              held("b.service", 2, ago=10), held("c.service", 3, ago=20)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=BATCH))
    assert victims(d) == ["a.service"]
    assert indices(d.promised) == [0, 1] and indices(d.victims[0].gpus) == [0, 1]


def test_fewest_victims_before_lowest_classes(plugins):
    """One normal unit holding 2 GPUs, over two batch units holding 1 each."""
    others = {"chat.service": "normal", "b.service": "batch", "c.service": "batch"}
    gpus = [make_gpu(i) for i in range(4)]
    leases = [held("chat.service", 0, ago=60), held("chat.service", 1, ago=60),
              held("b.service", 2, ago=600), held("c.service", 3, ago=600)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=others))
    assert victims(d) == ["chat.service"] and indices(d.promised) == [0, 1]


def test_lowest_class_first(plugins):
    """A batch unit before a normal one, though the normal one started later."""
    others = {"chat.service": "normal", "embed.service": "batch"}
    gpus = [make_gpu(i) for i in range(2)]
    leases = [held("chat.service", 0, ago=5), held("embed.service", 1, ago=7200)]
    d = preempt(plugins, request(gpus, leases, others=others))
    assert victims(d) == ["embed.service"] and d.victims[0].klass == "batch"
    assert indices(d.promised) == [1]
    # with the batch unit gone, the normal one is the victim
    d = preempt(plugins, request([make_gpu(0)], [held("chat.service", 0)], others=others))
    assert victims(d) == ["chat.service"] and d.victims[0].klass == "normal"


def test_two_victims_lowest_classes_first(plugins):
    """Two GPUs, two of three holders to stop: the two batch ones, not the normal one that started last."""
    others = {"chat.service": "normal", "a.service": "batch", "b.service": "batch"}
    gpus = [make_gpu(i) for i in range(3)]
    leases = [held("chat.service", 0, ago=1), held("a.service", 1, ago=5000), held("b.service", 2, ago=6000)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=others))
    assert sorted(victims(d)) == ["a.service", "b.service"] and indices(d.promised) == [1, 2]


@pytest.mark.parametrize("older, newer", [(0, 1), (1, 0)])
def test_most_recently_started_first(plugins, older, newer):
    gpus = [make_gpu(i) for i in range(2)]
    leases = [held("a.service", older, ago=3600), held("b.service", newer, ago=60)]
    d = preempt(plugins, request(gpus, leases, others=BATCH))
    assert victims(d) == ["b.service"] and indices(d.promised) == [newer]
    assert d.victims[0].since == NOW - 60


def test_a_units_start_is_its_earliest_lease(plugins):
    """A unit holding two GPUs started when it took the first: b (one GPU 30 min ago, one 1 min
    ago) started before c (10 min ago)."""
    gpus = [make_gpu(i) for i in range(3)]
    leases = [held("b.service", 0, ago=1800), held("b.service", 1, ago=60), held("c.service", 2, ago=600)]
    d = preempt(plugins, request(gpus, leases, others=BATCH))
    assert victims(d) == ["c.service"]


def test_every_victim_gives_up_a_gpu_the_preemptor_gets(plugins):
    """c started last, but its GPU is too small for the service: stopping it would free nothing
    the start can use, so the victims are a and b."""
    gpus = [make_gpu(0), make_gpu(1), make_gpu(2, free=8, total=8)]
    leases = [held("a.service", 0, ago=3000), held("b.service", 1, ago=2000), held("c.service", 2, ago=10)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2, "min_free_memory": 16 * GiB}, others=BATCH))
    assert sorted(victims(d)) == ["a.service", "b.service"]
    assert indices(d.promised) == [0, 1]
    for v in d.victims:
        assert v.gpus and set(v.gpus) <= set(d.promised)


def test_a_victim_gives_up_only_what_the_start_gets(plugins):
    """A batch unit holding two GPUs for a one-GPU start: it is named for one, and only that
    one is promised."""
    gpus = [make_gpu(i) for i in range(2)]
    d = preempt(plugins, request(gpus, [held("a.service", 0), held("a.service", 1)], others=BATCH))
    (victim,) = d.victims
    assert len(victim.gpus) == 1 and victim.gpus == d.promised
    assert victim.labels == [f"GPU {indices(victim.gpus)[0]}"]


def test_free_gpus_and_freed_gpus_together(plugins):
    """One GPU free, one more needed: one victim, and the start is promised both."""
    gpus = [make_gpu(i) for i in range(3)]
    leases = [held("a.service", 1, ago=100), held("b.service", 2, ago=200)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=BATCH))
    assert victims(d) == ["a.service"] and indices(d.victims[0].gpus) == [1]
    assert indices(d.promised) == [0, 1]


def test_require_nvlink_victims_free_an_nvlink_pair(plugins):
    """GPU 0-1 and 2-3 are NVLink pairs; b (GPU 1) and c (GPU 2) started last but are not joined:
    the victims are c and d, whose GPUs are."""
    gpus = [make_gpu(i) for i in range(4)]
    for a, b in ((0, 1), (2, 3)):
        gpus[a].nvlink_peers = frozenset({uuid(b)})
        gpus[b].nvlink_peers = frozenset({uuid(a)})
    leases = [held("a.service", 0, ago=400), held("b.service", 1, ago=100),
              held("c.service", 2, ago=50), held("d.service", 3, ago=300)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2, "topology": "require-nvlink"}, others=BATCH))
    assert sorted(victims(d)) == ["c.service", "d.service"]
    got = indices(d.promised)
    assert got == [2, 3]
    assert uuid(got[1]) in gpus[got[0]].nvlink_peers
    # without the topology rule, the two latest starts are the victims
    d = preempt(plugins, request([make_gpu(i) for i in range(4)], leases, me={"gpus": 2}, others=BATCH))
    assert sorted(victims(d)) == ["b.service", "c.service"] and indices(d.promised) == [1, 2]


def test_victims_processes_memory_counts_as_free(plugins):
    """GPU 0 has 4 GiB free; the batch unit on it holds 20 GiB. A service needing 16 GiB fits only
    when the victim's processes' memory is counted as free (Request.unit_pids)."""
    gpu = make_gpu(0, free=4, processes=(Process(4242, 20 * GiB),))
    me = {"min_free_memory": 16 * GiB}
    blind = preempt(plugins, request([gpu], [held("a.service", 0)], me=me, others=BATCH))
    assert not blind.ok and blind.victims == []
    gpu = make_gpu(0, free=4, processes=(Process(4242, 20 * GiB),))
    d = preempt(plugins, request([gpu], [held("a.service", 0)], me=me, others=BATCH,
                                 unit_pids={"a.service": frozenset({4242})}))
    assert victims(d) == ["a.service"] and indices(d.promised) == [0]
    # another unit's processes do not count: that memory stays taken
    gpu = make_gpu(0, free=4, processes=(Process(4242, 20 * GiB),))
    d = preempt(plugins, request([gpu], [held("a.service", 0)], me=me, others=BATCH,
                                 unit_pids={"b.service": frozenset({4242})}))
    assert d.victims == []


def test_the_refusal_names_the_freed_gpus_in_their_verdicts(plugins):
    gpus = [make_gpu(i) for i in range(2)]
    d = preempt(plugins, request(gpus, [held("a.service", 0), held("b.service", 1, ago=60)], others=BATCH))
    assert not d.ok and d.chosen == [] and d.fallback is None
    notes = {v.gpu.index: v.notes for v in d.verdicts}
    assert "would be freed by preempting b.service" in notes[1]
    assert not any("preempting" in n for n in notes[0])


def test_a_cpu_fallback_preempts_instead_when_it_can(plugins):
    me = {"on_unavailable": "cpu"}
    d = preempt(plugins, request([make_gpu(0)], [held("a.service", 0)], me=me, others=BATCH))
    assert not d.ok and d.fallback is None and victims(d) == ["a.service"]
    # nothing to preempt (an equal class): the CPU fallback stands, with a note why
    d = preempt(plugins, request([make_gpu(0)], [held("a.service", 0)], me=me, others={"a.service": "critical"}))
    assert d.ok and d.fallback == "cpu" and d.victims == []
    assert "preempt: no set of lower-class units would free GPUs that fit" in d.notes


def test_greedy_beyond_the_budget_still_takes_the_latest_starts(plugins):
    """13 batch units on 13 GPUs, 3 needed: too many sets to try them all (PLAN_BUDGET); the
    greedy choice takes the three latest starts."""
    gpus = [make_gpu(i) for i in range(13)]
    units = {f"u{i:02}.service": "batch" for i in range(13)}
    leases = [held(f"u{i:02}.service", i, ago=100 * (i + 1)) for i in range(13)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 3}, others=units))
    assert sorted(victims(d)) == ["u00.service", "u01.service", "u02.service"]
    assert indices(d.promised) == [0, 1, 2]


@pytest.mark.parametrize("n", [4, 13], ids=["exact", "greedy"])
def test_the_search_passes_over_a_victim_whose_gpu_cannot_serve(plugins, n):
    """As above, but the latest start's GPU is drained: the next three latest are the victims,
    whether the exact search (4 units, under the budget) or the greedy one (13) finds them."""
    gpus = [make_gpu(i) for i in range(n)]
    units = {f"u{i:02}.service": "batch" for i in range(n)}
    leases = [held(f"u{i:02}.service", i, ago=100 * (i + 1)) for i in range(n)]
    drains = {uuid(0): Drain(uuid(0), "maintenance", NOW)}
    d = preempt(plugins, request(gpus, leases, me={"gpus": 3}, others=units, drains=drains))
    assert sorted(victims(d)) == ["u01.service", "u02.service", "u03.service"]


def test_an_exclusive_start_preempts_the_units_sharing_a_gpu(plugins):
    """3 GPUs, each shared by 4 batch units: an exclusive start needs the 4 of one GPU stopped.
    12 candidates, 4 victims: beyond the exact search's budget, so the greedy choice decides."""
    gpus = [make_gpu(i) for i in range(3)]
    units = {f"s{g}{k}.service": {"klass": "batch", "sharing": "shared"} for g in range(3) for k in range(4)}
    leases = [held(f"s{g}{k}.service", g, ago=10 * (3 * k + g + 1), sharing="shared")
              for g in range(3) for k in range(4)]
    d = preempt(plugins, request(gpus, leases, others=units))
    assert len(d.victims) == 4 and len(d.promised) == 1
    (gpu,) = indices(d.promised)
    assert sorted(victims(d)) == [f"s{gpu}{k}.service" for k in range(4)]


def test_an_exclusive_start_preempts_the_units_sharing_a_gpu_within_the_budget(plugins):
    """2 GPUs, each shared by 3 batch units (the exact search): the 3 of the GPU whose earliest
    sharer started last."""
    gpus = [make_gpu(i) for i in range(2)]
    units = {f"s{g}{k}.service": {"klass": "batch", "sharing": "shared"} for g in range(2) for k in range(3)}
    ago = {(0, 0): 50, (0, 1): 60, (0, 2): 900, (1, 0): 10, (1, 1): 20, (1, 2): 300}
    leases = [held(f"s{g}{k}.service", g, ago=ago[g, k], sharing="shared") for g in range(2) for k in range(3)]
    d = preempt(plugins, request(gpus, leases, others=units))
    assert sorted(victims(d)) == ["s10.service", "s11.service", "s12.service"]
    assert indices(d.promised) == [1]


# -- what it says -----------------------------------------------------------------------------------
def test_summary_names_the_victim_its_class_its_start_and_the_gpus(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    others = {"chat.service": "critical", "embed.service": "batch"}
    leases = [held("chat.service", 0), held("chat.service", 1),
              held("embed.service", 2, ago=12 * 60 + 5), held("embed.service", 3, ago=12 * 60 + 5)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=others))
    assert d.summary == "llm.service would preempt embed.service (batch, started 12 min ago) for GPU 2, GPU 3"
    assert d.victims[0].labels == ["GPU 2", "GPU 3"]


def test_summary_of_two_victims(plugins):
    gpus = [make_gpu(i) for i in range(2)]
    others = {"a.service": "batch", "chat.service": "normal"}
    leases = [held("chat.service", 0, ago=2 * 3600 + 5 * 60), held("a.service", 1, ago=42)]
    d = preempt(plugins, request(gpus, leases, me={"gpus": 2}, others=others))
    assert d.summary == ("llm.service would preempt a.service (batch, started 42 s ago) for GPU 1; "
                         "chat.service (normal, started 2h5m ago) for GPU 0")


def test_describe_words_the_victims_fields():
    v = Victim(unit="embed@nightly.service", klass="batch", since=NOW - 3599, labels=["GPU 2", "GPU 3 MIG 1"])
    assert describe(v, NOW) == "embed@nightly.service (batch, started 59 min ago) for GPU 2, GPU 3 MIG 1"


def test_victims_carry_their_policy(plugins):
    others = {"a.service": {"klass": "batch", "when_preempted": "stop", "preempt_grace_seconds": 7.0}}
    d = preempt(plugins, request([make_gpu(0)], [held("a.service", 0)], others=others))
    (v,) = d.victims
    assert (v.when_preempted, v.grace_seconds, v.klass) == ("stop", 7.0, "batch")


# -- promises ----------------------------------------------------------------------------------------
def test_a_gpu_promised_to_another_unit_is_rejected(plugins):
    promise = Promise(uuid=uuid(0), unit="other.service", victim="embed.service", since=NOW, pid=os.getpid())
    req = request([make_gpu(i) for i in range(2)], promises=[promise], others=BATCH)
    d = plan(plugins, req, NOW)
    by_index = {v.gpu.index: v for v in d.verdicts}
    assert [r.code for r in by_index[0].reasons] == ["promised"]
    assert by_index[0].reasons[0].text == "promised to other.service, which preempted embed.service for it"
    assert d.ok and [g.index for g in d.chosen] == [1]
    # plan() checks no liveness: the snapshot holds only live promises; a dead pid rejects all the same
    dead = Promise(uuid=uuid(0), unit="other.service", victim="embed.service", since=NOW, pid=2**31 - 1)
    d = plan(plugins, request([make_gpu(i) for i in range(2)], promises=[dead], others=BATCH), NOW)
    assert [r.code for r in d.verdicts[-1].reasons] == ["promised"] and d.verdicts[-1].gpu.index == 0


def test_a_gpu_promised_to_the_unit_itself_ranks_first(plugins):
    gpus = [make_gpu(i) for i in range(4)]
    promise = Promise(uuid=uuid(2), unit=ME, victim="embed.service", since=NOW, pid=os.getpid())
    req = request(gpus, promises=[promise], others=BATCH)
    req.snapshot.priorities = {uuid(0): 0, uuid(1): 1, uuid(2): 2, uuid(3): 3}
    d = plan(plugins, req, NOW)
    assert d.ok and [g.index for g in d.chosen] == [2]
    assert d.verdicts[0].promised and d.verdicts[0].gpu.index == 2
    assert not any(v.promised for v in d.verdicts[1:])
    assert not any(r.code == "promised" for v in d.verdicts for r in v.reasons)
    # without the promise, the admin's order decides
    plain = request([make_gpu(i) for i in range(4)], others=BATCH)
    plain.snapshot.priorities = dict(req.snapshot.priorities)
    assert [g.index for g in plan(plugins, plain, NOW).chosen] == [0]


def test_a_promise_on_a_mig_parent_covers_its_slices(plugins):
    parent = make_gpu(0, mig_enabled=True)
    slice_ = make_gpu(0, mig_index=1, parent_uuid=uuid(0), mig_enabled=None)
    slice_.uuid = "MIG-00000000-0000-4000-8000-000000000001"
    promise = Promise(uuid=uuid(0), unit="other.service", victim="embed.service", since=NOW, pid=os.getpid())
    d = plan(plugins, request([parent, slice_], promises=[promise], others=BATCH), NOW)
    codes = {v.gpu.uuid: [r.code for r in v.reasons] for v in d.verdicts}
    assert "promised" in codes[slice_.uuid] and not d.ok


# -- the handoff --------------------------------------------------------------------------------------
def ended_pid():
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leaving_pids_are_ended_processes_on_handed_gpus():
    dead, alive = ended_pid(), os.getpid()
    other_dead = ended_pid()
    gpus = [make_gpu(0, processes=(Process(dead, GiB), Process(alive, GiB))),
            make_gpu(1, processes=(Process(other_dead, GiB),))]
    assert handoff.leaving_pids(gpus, frozenset(), {uuid(0)}) == frozenset({dead})
    # a dead pid on a GPU not handed back is not taken for one leaving
    assert other_dead not in handoff.leaving_pids(gpus, frozenset(), {uuid(0)})
    assert handoff.leaving_pids(gpus, frozenset(), {uuid(0), uuid(1)}) == frozenset({dead, other_dead})
    # nothing handed: nothing leaving; the unit's own pids are never leaving
    assert handoff.leaving_pids(gpus, frozenset(), set()) == frozenset()
    assert handoff.leaving_pids(gpus, frozenset({dead}), {uuid(0)}) == frozenset()


def test_a_zombie_counts_as_leaving():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                data = f.read()
            if data[data.rfind(b")") + 2:][:1] == b"Z":
                break
            time.sleep(0.01)
        gpus = [make_gpu(0, processes=(Process(child.pid, GiB),))]
        assert handoff.leaving_pids(gpus, frozenset(), {uuid(0)}) == frozenset({child.pid})
    finally:
        child.wait()


def test_leaving_pids_on_a_mig_slice_of_a_handed_gpu():
    dead = ended_pid()
    slice_ = make_gpu(0, mig_index=1, parent_uuid=uuid(0), processes=(Process(dead, GiB),))
    slice_.uuid = "MIG-00000000-0000-4000-8000-000000000001"
    assert handoff.leaving_pids([slice_], frozenset(), {uuid(0)}) == frozenset({dead})
    assert handoff.leaving_pids([slice_], frozenset(), {uuid(1)}) == frozenset()


def hand_request(gpu, leaving=(), own=(), need=16 * GiB):
    req = request([gpu], me={"min_free_memory": need}, others=BATCH, leaving=leaving)
    req.own_pids = frozenset(own)
    return req


def test_holding_names_the_ended_process_and_the_memory_short():
    gpu = make_gpu(0, free=4, processes=(Process(1111, 6 * GiB), Process(2222, 2 * GiB)))
    why = handoff.holding(hand_request(gpu, leaving={1111}), gpu)
    assert why == ("pid 1111 has ended, but the driver still lists it holding 6.0 GiB; "
                   "4.0 GiB free, needs 16.0 GiB")


def test_holding_names_the_running_processes_when_none_has_ended():
    gpu = make_gpu(0, free=4, processes=(Process(2222, 2 * GiB), Process(3333, 3 * GiB)))
    why = handoff.holding(hand_request(gpu, own={3333}), gpu)
    # its own previous process's memory counts as free (7 GiB), the other one's does not
    assert why == "7.0 GiB free, needs 16.0 GiB (pid 2222 holds 2.0 GiB)"


def test_holding_is_empty_once_the_memory_is_there():
    gpu = make_gpu(0, free=20, processes=(Process(2222, 2 * GiB),))
    assert handoff.holding(hand_request(gpu), gpu) == ""
    # an ended process still listed holds the start back even when the memory is free
    gpu = make_gpu(0, free=20, processes=(Process(1111, 0),))
    assert handoff.holding(hand_request(gpu, leaving={1111}), gpu) == \
        "pid 1111 has ended, but the driver still lists it"


def test_pending_lists_only_the_decisions_gpus_still_held(plugins):
    gpus = [make_gpu(0, free=4, processes=(Process(1111, 20 * GiB),)), make_gpu(1, free=4)]
    req = request(gpus, me={"min_free_memory": 16 * GiB}, others=BATCH, leaving={1111})
    d = plan(plugins, req, NOW)
    assert d.ok and [g.index for g in d.chosen] == [0]  # the leaving memory counts as free
    (item,) = handoff.pending(req, d, gpus)
    assert item[0].index == 0 and "pid 1111 has ended" in item[1]
    freed = [make_gpu(0, free=24), make_gpu(1, free=4)]
    assert handoff.pending(req, d, freed) == []
