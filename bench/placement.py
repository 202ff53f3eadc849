#!/usr/bin/env python3
"""Placement quality (issue 16): how many requests each placement policy serves at arrival, on
four 8-GPU topologies, replaying the same traces through the real planner in-process.

Policies, side by side on every topology and trace:
- cortex-hook spread / pack (the default) / pack with `placement: spread` for the shared services: the real
  planner (cortex_hook.planner.plan with the built-in plugins and a parsed policy). Before the
  planner knew `placement:`, only its default runs ("cortex-hook (no placement key)").
- first-fit: the lowest free indices that satisfy the request's rule (a baseline written here).
- most-free-memory: the GPUs with the most free memory first, as nvitop's `nvisel` picks.
  Both baselines keep the planner's rules: an exclusive request takes idle GPUs only, a shared
  one GPUs without an exclusive holder and with its memory free; `require-nvlink` takes the
  first NVLink-joined set in their order or nothing, `prefer-nvlink` that set if there is one,
  else the first GPUs in their order; `same_model` (every multi-GPU service here) one model at a
  time, like the planner.
- the clairvoyant bound (small traces only): the most requests any policy could serve at
  arrival knowing the whole trace in advance, rejecting any subset, honouring the same rules
  (prefer-nvlink is no constraint for it). Computed exactly (see `bound`): a depth-first search
  over the arrivals in order, each given each of its feasible GPU sets and also rejected; the
  box's state is canonical (per GPU the arrival that finds each tenant gone, and its memory,
  with GPUs the box's symmetry makes interchangeable sorted), so equivalent placements are one
  branch, and a state met again at the same arrival with no more served is cut; a branch is
  cut when the requests served so far plus those still to come that would each fit beside the
  tenants running at their arrival cannot beat the best found. A search that outgrows
  --bound-states reports no bound. Checked against brute force on 60 traces of 9 requests.

Requests never wait: a refusal is final (acceptance = served at arrival). A departure frees its
GPUs before an arrival at the same time.

Figures per topology and policy: acceptance on the large trace; the share of the multi-GPU
requests served that got an NVLink-joined set (of those whose size an NVLink set of the box can
hold); fragmented groups (the mean, over arrivals, of the number of groups partly in use: on the
built-in boxes the four 2-GPU groups, i.e. the NVLink pairs, or the PCIe switch pairs where NVLink
joins all GPUs or none; on an --inventory box its NVLink sets, else its PCIe switch groups); for
the shared services, max/mean tenants per GPU over the GPUs no exclusive request holds, and the
max alone, both averaged over the arrivals that find a shared tenant running (the mean counts
idle GPUs, so a perfect spread of 2 tenants over 6 open GPUs scores 3); and the requests served
on the small traces next to the bound. `class` goes into the policy but changes nothing here (no
reservations).

Trace format (JSON: a list of events, or {"events": [...]}); one event per request:
    {"t": 0.42,              arrival time (any unit; duration in the same unit)
     "unit": "r2n-0007.service",   its name (only kept: the replay makes one service per
                             kind + class + memory and names units after it)
     "kind": "r2n",          label: r|s (exclusive|shared), GPU count, x|a|p|n (1 GPU|any|prefer|require)
     "gpus": 2, "sharing": "exclusive", "topology": "require-nvlink", "class": "normal",
     "duration": 1.3,        holding time; null: to the end of the trace
     "memory_gib": 8}        optional: min_free_memory per GPU (shared tenants hold that much)

Generated traces (fixed seeds: the large trace --seed, the small ones --seed+100 on): Poisson
arrivals at the rate that offers --load x 8 GPUs, kinds and holding times from MIX, classes from
CLASSES. On every box, a request it could never serve even idle is fitted first (fit_box:
require-nvlink becomes prefer-nvlink, then the count is halved), for replayed traces too.
bench/traces/example-history*.json: a real `history --json` of a 4-GPU simulated box, with its
policy and inventory (README: 2026-12-07: placement).

    python3 bench/placement.py [--markdown] [--n 2000] [--small 20] [--small-n 24] [--seed 1]
    python3 bench/placement.py --trace FILE [--topology pairs] [--inventory GPUS.yaml]
        (replay your own trace; --inventory: on your box, described as for `inventory: simulated:`)
    python3 bench/placement.py --from-history HISTORY.json [--policy policy.yaml] [--save-trace OUT]
        (HISTORY.json: `cortex-hook history -n 100000 --json`; allocate/refuse rows are arrivals,
        release/reap rows departures; --policy gives each unit its service's sharing, topology
        and class, else exclusive, prefer-nvlink for several GPUs)

Standard library only beyond cortex_hook; run by `python3` it re-runs itself under bench/.venv
(common.ensure_venv: cortex-hook installed from a snapshot of this checkout).
"""

import argparse
import bisect
import heapq
import json
import math
import os
import random
import re
import statistics
import sys
import time
from itertools import combinations

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def _bootstrap():
    """Import cortex_hook, or re-exec under bench/.venv (made or refreshed first) once."""
    try:
        import cortex_hook  # noqa: F401
        return
    except ImportError:
        if os.environ.get("CORTEX_BENCH_PLACEMENT_REEXEC"):
            raise SystemExit("bench/placement.py: cortex_hook is not importable even under bench/.venv")
    sys.path.insert(0, BENCH_DIR)
    import common as C
    C.ensure_venv(want_nvitop=False)
    env = C.bench_env(CORTEX_BENCH_PLACEMENT_REEXEC="1")
    sys.stdout.flush()
    os.execve(C.VENV_PY, [C.VENV_PY, os.path.abspath(__file__), *sys.argv[1:]], env)


_bootstrap()

import cortex_hook  # noqa: E402
from cortex_hook.allocation import make_request  # noqa: E402
from cortex_hook.errors import PolicyError  # noqa: E402
from cortex_hook.hooks.manager import load_plugins  # noqa: E402
from cortex_hook.model import Gpu, Lease, Snapshot  # noqa: E402
from cortex_hook.planner import plan  # noqa: E402
from cortex_hook.policy.parse import parse_policy  # noqa: E402

GIB = 1 << 30
BASE_USED = GIB // 2  # what an idle GPU shows in use (driver, context of nothing)
SHARED_GIB = 8  # what a generated shared request asks for and holds per GPU

# -- topologies ---------------------------------------------------------------------------------
# NVML common-ancestor levels: 10 one PCIe switch, 20 several switches, 30 one host bridge,
# 40 one NUMA node (CPU), 50 across the CPUs' interconnect.
SAME_SWITCH, SAME_NUMA, CROSS_NUMA = 10, 40, 50
MODELS = {
    "H100-SXM": ("NVIDIA H100 80GB HBM3", 80, "9.0"),
    "A100-PCIe": ("NVIDIA A100 80GB PCIe", 80, "8.0"),
    "L40S": ("NVIDIA L40S", 48, "8.9"),
    "L4": ("NVIDIA L4", 24, "8.9"),
    "H100-PCIe": ("NVIDIA H100 PCIe", 80, "9.0"),
}


class Box:
    """One topology: per GPU its model, memory, NVLink peers and PCIe levels to the others; its
    groups (the fragmentation metric: NVLink sets, else PCIe switch groups) and its symmetry tree
    (the bound's canonical form: children of a node are interchangeable; None: no symmetry)."""

    def __init__(self, key, title, models, total, cc, uuids, numa, levels, link, groups, tree):
        self.key, self.title = key, title
        self.n = len(models)
        self.models, self.total, self.cc, self.uuids, self.numa = models, total, cc, uuids, numa
        self.levels, self.link = levels, link  # levels[i][j]: NVML level or None; link[i][j]: NVLink
        self.groups, self.tree = groups, tree
        self.has_nvlink = any(any(row) for row in link)
        self._linkable = {}

    def joined(self, idxs):
        return all(self.link[a][b] for a, b in combinations(idxs, 2))

    def linkable(self, count):
        """True if COUNT GPUs of one model can be NVLink-joined on this box (found greedily)."""
        if count not in self._linkable:
            same = lambda a, b: self.link[a][b] and self.models[a] == self.models[b]  # noqa: E731
            self._linkable[count] = greedy(self, list(range(self.n)), count, same) is not None
        return self._linkable[count]


def builtin(key, title, models, nvlink_sets, tree):
    """An 8-GPU box: two GPUs per PCIe switch (level 10), four per NUMA node (40 within, 50
    across); NVLINK_SETS: lists of GPUs joined pairwise."""
    n = len(models)
    switch, numa = [i // 2 for i in range(n)], [i // 4 for i in range(n)]
    levels = [[None if i == j else SAME_SWITCH if switch[i] == switch[j] else SAME_NUMA if numa[i] == numa[j]
               else CROSS_NUMA for j in range(n)] for i in range(n)]
    linked = {(a, b) for g in nvlink_sets for a in g for b in g if a != b}
    link = [[(i, j) in linked for j in range(n)] for i in range(n)]
    groups = [(2 * k, 2 * k + 1) for k in range(n // 2)]  # the NVLink pair or the PCIe switch pair
    return Box(key, title, [MODELS[m][0] for m in models], [MODELS[m][1] * GIB for m in models],
               [MODELS[m][2] for m in models],
               [f"GPU-{0xc0de0000 + i:08x}-0000-4000-8000-{sum(map(ord, key)):012x}" for i in range(n)],
               numa, levels, link, groups, tree)


def box_from_inventory(path):
    """A Box from a simulated-inventory file (cortex-hook's `inventory: {simulated: FILE}`)."""
    from cortex_hook.hooks.builtin.simulated import load_simulated
    gpus = [g for g in load_simulated(path) if not g.is_mig and g.uuid]
    n = len(gpus)
    uuids = [g.uuid for g in gpus]
    link = [[i != j and bool(a.nvlink_peers) and b.uuid in a.nvlink_peers for j, b in enumerate(gpus)]
            for i, a in enumerate(gpus)]
    levels = [[None if i == j else a.topology.get(b.uuid) for j, b in enumerate(gpus)] for i, a in enumerate(gpus)]
    if any(any(row) for row in link):
        joined = lambda i, j: link[i][j]  # noqa: E731
    else:
        joined = lambda i, j: levels[i][j] is not None and levels[i][j] <= 20  # noqa: E731
    groups, seen = [], set()
    for i in range(n):
        if i in seen:
            continue
        members, todo = {i}, [i]
        while todo:
            a = todo.pop()
            for b in range(n):
                if b not in members and joined(a, b):
                    members.add(b)
                    todo.append(b)
        seen |= members
        if len(members) > 1:
            groups.append(tuple(sorted(members)))
    names = [g.name for g in gpus]
    title = f"{path}: " + ", ".join(f"{names.count(m)}x {m}" for m in dict.fromkeys(names))
    return Box("inventory", title, [g.name for g in gpus], [g.memory_total or 0 for g in gpus],
               [g.compute_capability for g in gpus], uuids, [g.numa_node for g in gpus], levels, link, groups, None)


def boxes():
    return [
        builtin("nvswitch", "8x H100 SXM on NVSwitch (all NVLinked; 2 per PCIe switch, 4 per NUMA node)",
                ["H100-SXM"] * 8, [list(range(8))], ("flat", list(range(8)))),
        builtin("pairs", "8x A100 PCIe as 4 NVLink pairs (a pair per PCIe switch, 2 pairs per NUMA node)",
                ["A100-PCIe"] * 8, [[0, 1], [2, 3], [4, 5], [6, 7]],
                ("box", [("pair", [0, 1]), ("pair", [2, 3]), ("pair", [4, 5]), ("pair", [6, 7])])),
        builtin("pcie", "8x L40S PCIe, no NVLink (2 per PCIe switch, 2 NUMA nodes of 4)",
                ["L40S"] * 8, [], ("flat", list(range(8)))),
        builtin("mixed", "mixed: 4x L4 24 GiB PCIe (NUMA 0) + 4x H100 PCIe 80 GiB as 2 NVLink pairs (NUMA 1)",
                ["L4"] * 4 + ["H100-PCIe"] * 4, [[4, 5], [6, 7]],
                ("box", [("L4", [0, 1, 2, 3]), ("H100", [("pair", [4, 5]), ("pair", [6, 7])])])),
    ]


# -- occupancy ----------------------------------------------------------------------------------
class Occupancy:
    """Who runs where: per GPU {unit: (sharing, bytes held)}."""

    def __init__(self, box):
        self.box = box
        self.tenants = [dict() for _ in range(box.n)]

    def used(self, i):
        return BASE_USED + sum(mem for _, mem in self.tenants[i].values())

    def free(self, i):
        return self.box.total[i] - self.used(i)

    def exclusive(self, i):
        return any(s == "exclusive" for s, _ in self.tenants[i].values())

    def eligible(self, i, ev):
        if ev["sharing"] == "exclusive":
            return not self.tenants[i]
        return not self.exclusive(i) and self.free(i) >= ev_memory(ev)

    def hold(self, unit, idxs, ev):
        for i in idxs:
            mem = int(0.9 * self.box.total[i]) if ev["sharing"] == "exclusive" else ev_memory(ev)
            self.tenants[i][unit] = (ev["sharing"], mem)

    def drop(self, unit, idxs):
        for i in idxs:
            self.tenants[i].pop(unit, None)


def ev_memory(ev):
    return int((ev.get("memory_gib") or 0) * GIB)


# -- the policies -------------------------------------------------------------------------------
def greedy(box, order, count, joined):
    """The first COUNT GPUs of ORDER pairwise JOINED, greedily: the planner's topology hook's own
    greedy_set, on GPU indices."""
    from cortex_hook.hooks.builtin.topology import greedy_set

    return greedy_set(list(order), count, joined)


def rule_select(box, order, ev):
    """Take EV's GPUs from ORDER (eligible GPU indices, best first) under its rules; None: refused."""
    count = ev["gpus"]
    groups = {}
    for i in order:  # same_model for every multi-GPU service here: one model at a time
        groups.setdefault(box.models[i] if count > 1 else "", []).append(i)
    for group in groups.values():
        if len(group) < count:
            continue
        if count == 1 or ev["topology"] == "any":
            return group[:count]
        linked = greedy(box, group, count, lambda a, b: box.link[a][b])
        if linked:
            return linked
        if ev["topology"] == "prefer-nvlink":
            return group[:count]
    return None


def first_fit(occ, ev, unit, t):
    return rule_select(occ.box, [i for i in range(occ.box.n) if occ.eligible(i, ev)], ev)


def most_free(occ, ev, unit, t):
    order = sorted((i for i in range(occ.box.n) if occ.eligible(i, ev)), key=lambda i: (-occ.free(i), i))
    return rule_select(occ.box, order, ev)


class Cortex:
    """The real planner with POLICY (a parsed Policy)."""

    def __init__(self, plugins, policy, box):
        self.plugins, self.policy, self.box = plugins, policy, box
        self.index = {u: i for i, u in enumerate(box.uuids)}
        self.plans, self.seconds = 0, 0.0

    def gpus(self, occ):
        box, out = self.box, []
        for i in range(box.n):
            t = occ.tenants[i]
            util = 90 if occ.exclusive(i) else min(100, 35 * len(t))
            used = occ.used(i)
            out.append(Gpu(index=i, uuid=box.uuids[i], name=box.models[i],
                           pci_bus_id=f"00000000:{(0x18 + 0x10 * i) % 256:02X}:00.0",
                           memory_total=box.total[i], memory_used=used, memory_free=box.total[i] - used,
                           utilization=util, temperature=35 + util // 3, compute_capability=box.cc[i],
                           numa_node=box.numa[i], cuda_index=i, processes=(),
                           nvlink_peers=frozenset(box.uuids[j] for j in range(box.n) if box.link[i][j]),
                           topology={box.uuids[j]: box.levels[i][j] for j in range(box.n)
                                     if box.levels[i][j] is not None}))
        return out

    def __call__(self, occ, ev, unit, t):
        leases = [Lease(unit=u, uuid=self.box.uuids[i], sharing=s)
                  for i in range(self.box.n) for u, (s, _) in occ.tenants[i].items()]
        svc = self.policy.service_for(unit)
        request, _ = make_request(unit, svc, self.policy, Snapshot(leases=leases), self.gpus(occ), {}, frozenset())
        start = time.perf_counter()
        decision = plan(self.plugins, request, now=1.0e9 + t)
        self.seconds += time.perf_counter() - start
        self.plans += 1
        if not decision.ok or not decision.chosen:
            return None
        return [self.index[g.uuid] for g in decision.chosen]


# -- services and the policy text ---------------------------------------------------------------
TOPO_LETTER = {"any": "a", "prefer-nvlink": "p", "require-nvlink": "n"}


def kind_of(ev):
    g, topo = ev["gpus"], ev["topology"]
    if ev["sharing"] == "shared":
        return f"s{g}" + ("" if g == 1 else TOPO_LETTER[topo])
    return f"r{g}" + ("x" if g == 1 else TOPO_LETTER[topo])


def service_name(ev):
    return f"{kind_of(ev)}-{ev['class']}-{int(ev.get('memory_gib') or 0)}g"


def policy_text(events, mode, shared_mode=None):
    """The policy for EVENTS' services; MODE: None (no `placement:` key) | pack | spread;
    SHARED_MODE: a per-service `placement:` for the shared services."""
    seen = {}
    for ev in events:
        seen.setdefault(service_name(ev), ev)
    lines = ["version: 1"] + ([f"placement: {mode}"] if mode else [])
    lines.append("services:")
    for name, ev in sorted(seen.items()):
        lines += [f'  - match: "{name}-*.service"', f"    gpus: {ev['gpus']}", f"    sharing: {ev['sharing']}",
                  f"    topology: {ev['topology']}", f"    class: {ev['class']}"]
        if ev["gpus"] > 1:
            lines.append("    same_model: true")
        if ev.get("memory_gib"):
            lines.append(f"    min_free_memory: {int(ev['memory_gib'])}GiB")
        if shared_mode and ev["sharing"] == "shared":
            lines.append(f"    placement: {shared_mode}")
    return "\n".join(lines) + "\n"


def describe_source():
    """Which cortex_hook runs: its path and the source hash + git HEAD (bench/.venv's stamp, or
    the checkout's when it runs from the checkout)."""
    where = os.path.dirname(cortex_hook.__file__)
    sys.path.insert(0, BENCH_DIR)
    import common as C
    stamp = None
    if where.startswith(C.VENV + os.sep):
        try:
            with open(C.SOURCE_STAMP) as f:
                stamp = json.load(f)
        except (OSError, ValueError):
            pass
    if stamp is None:
        dirty = bool(C._git("status", "--porcelain", "--", *C.SOURCE_PARTS))
        stamp = {"hash": C.source_hash(), "head": C._git("rev-parse", "--short", "HEAD"), "dirty": dirty}
    return (f"{where}, source {stamp.get('hash', '?')[:12]} (HEAD {stamp.get('head') or '?'}"
            f"{' + uncommitted changes' if stamp.get('dirty') else ''})")


def placement_support():
    """(top-level `placement:` parses, per-service `placement:` parses)."""
    ok = []
    for text in ("version: 1\nplacement: pack\nservices:\n  - match: 'a-*.service'\n",
                 "version: 1\nservices:\n  - match: 'a-*.service'\n    placement: pack\n"):
        try:
            parse_policy(text)
            ok.append(True)
        except PolicyError:
            ok.append(False)
    return tuple(ok)


# -- replay -------------------------------------------------------------------------------------
class Result:
    def __init__(self):
        self.arrivals = self.accepted = 0
        self.multi = self.multi_nvlink = 0
        self.frag = []
        self.balance = []
        self.max_tenants = []


def replay(box, events, chooser):
    occ = Occupancy(box)
    res = Result()
    departures = []  # (end, seq, unit, idxs)
    for seq, ev in enumerate(sorted(events, key=lambda e: e["t"])):
        t = ev["t"]
        while departures and departures[0][0] <= t:
            _, _, unit, idxs = heapq.heappop(departures)
            occ.drop(unit, idxs)
        busy = [bool(occ.tenants[i]) for i in range(box.n)]
        res.frag.append(sum(1 for g in box.groups if 0 < sum(busy[i] for i in g) < len(g)))
        tenants = [sum(1 for s, _ in occ.tenants[i].values() if s == "shared") for i in range(box.n)
                   if not occ.exclusive(i)]
        if tenants and sum(tenants):
            res.balance.append(max(tenants) / (sum(tenants) / len(tenants)))
            res.max_tenants.append(max(tenants))
        unit = f"{service_name(ev)}-{seq:05d}.service"
        res.arrivals += 1
        idxs = chooser(occ, ev, unit, t)
        if idxs is None:
            continue
        assert len(idxs) == ev["gpus"] and all(occ.eligible(i, ev) for i in idxs), (unit, idxs)
        res.accepted += 1
        if ev["gpus"] > 1 and box.linkable(ev["gpus"]):
            res.multi += 1
            res.multi_nvlink += box.joined(idxs)
        occ.hold(unit, idxs, ev)
        end = math.inf if ev.get("duration") is None else t + ev["duration"]
        heapq.heappush(departures, (end, seq, unit, idxs))
    return res


# -- the clairvoyant bound ----------------------------------------------------------------------
class TooBig(Exception):
    pass


def feasible_sets(box, state, ev):
    """Every GPU set EV could take in STATE (per GPU: a tuple of (end, exclusive, bytes) tenants)."""
    need = ev_memory(ev)
    elig = []
    for i, ten in enumerate(state):
        if ev["sharing"] == "exclusive":
            ok = not ten
        else:
            ok = not any(x for _, x, _ in ten) and box.total[i] - BASE_USED - sum(m for _, _, m in ten) >= need
        if ok:
            elig.append(i)
    count = ev["gpus"]
    for idxs in combinations(elig, count):
        if count > 1 and len({box.models[i] for i in idxs}) > 1:
            continue
        if ev["topology"] == "require-nvlink" and count > 1 and not box.joined(idxs):
            continue
        yield idxs


def canon(box, state):
    if box.tree is None:
        return state

    def walk(node):
        if isinstance(node, int):
            return state[node]
        label, children = node
        return (label, tuple(sorted(walk(c) for c in children)))
    return walk(box.tree)


def bound(box, events, max_states):
    """(the most of EVENTS any policy could serve at arrival, knowing them all; states searched);
    None instead of the most when the search passed MAX_STATES.

    Depth-first over the arrivals in time order: each is given each feasible GPU set (sets that
    leave the box in the same canonical state are one branch) and then rejected. A tenant is kept
    as (the first arrival that finds it gone, exclusive, bytes): all that the future can tell.
    Pruned when the requests served so far plus those of the remaining ones that would each fit
    beside the tenants still running at their arrival cannot beat the best found, and when the
    same canonical state was reached at the same arrival with as many served already."""
    evs = sorted(events, key=lambda e: e["t"])
    n = len(evs)
    times = [e["t"] for e in evs]
    gone_at = [n if e.get("duration") is None else bisect.bisect_left(times, e["t"] + e["duration"]) for e in evs]
    tenant_of = []
    for i, e in enumerate(evs):
        exclusive = e["sharing"] == "exclusive"
        tenant_of.append((gone_at[i], exclusive, 0 if exclusive else ev_memory(e)))
    seen = {}
    best = [0]

    def fits(state, j):
        alive = tuple(tuple(x for x in ten if x[0] > j) for ten in state)
        return next(feasible_sets(box, alive, evs[j]), None) is not None

    def dfs(i, state, served):
        if i == n:
            best[0] = max(best[0], served)
            return
        if served + (n - i) <= best[0]:
            return
        state = tuple(tuple(x for x in ten if x[0] > i) for ten in state)
        key = (i, canon(box, state))
        if seen.get(key, -1) >= served:
            return
        seen[key] = served
        if len(seen) > max_states:
            raise TooBig
        if served + sum(1 for j in range(i, n) if fits(state, j)) <= best[0]:
            return
        children = {}
        for idxs in feasible_sets(box, state, evs[i]):
            new = list(state)
            for k in idxs:
                new[k] = tuple(sorted(state[k] + (tenant_of[i],)))
            new = tuple(new)
            children.setdefault(canon(box, new), new)
        for child in children.values():
            dfs(i + 1, child, served + 1)
        dfs(i + 1, state, served)

    try:
        dfs(0, tuple(() for _ in range(box.n)), 0)
    except TooBig:
        return None, len(seen)
    return best[0], len(seen)


# -- traces -------------------------------------------------------------------------------------
# (gpus, sharing, topology, share of arrivals, mean holding time): shared servers (chat endpoints)
# stay longer than the exclusive jobs
MIX = [
    (1, "exclusive", "any", 0.30, 1.0),
    (1, "shared", "any", 0.22, 4.0),
    (2, "exclusive", "require-nvlink", 0.13, 1.0),
    (2, "exclusive", "prefer-nvlink", 0.13, 1.0),
    (4, "exclusive", "require-nvlink", 0.08, 1.0),
    (4, "exclusive", "prefer-nvlink", 0.06, 1.0),
    (8, "exclusive", "any", 0.03, 1.0),
]
CLASSES = [("critical", 0.1), ("normal", 0.7), ("batch", 0.2)]


def fit_box(box, ev):
    """EV as this box can ever serve it: require-nvlink where no NVLink set is that large becomes
    prefer-nvlink; a count no model has enough of is halved (what an admin would write here)."""
    empty = tuple(() for _ in range(box.n))
    while next(feasible_sets(box, empty, ev), None) is None:
        if ev["topology"] == "require-nvlink":
            ev["topology"] = "prefer-nvlink"
        else:
            ev["gpus"] //= 2
    return ev


def mean_demand():
    """GPU-time per arrival (a shared tenant counted as a quarter GPU)."""
    total = sum(m[3] for m in MIX)
    return sum(g * (0.25 if s == "shared" else 1.0) * w * hold for g, s, _, w, hold in MIX) / total


def generate(box, n, seed, load):
    """N requests: Poisson arrivals at the rate that offers LOAD x 8 GPUs (mean_demand), kinds
    from MIX with exponential holding times, classes from CLASSES, fitted to BOX (fit_box)."""
    rng = random.Random(seed)
    rate = load * box.n / mean_demand()
    t, events = 0.0, []
    weights = [m[3] for m in MIX]
    for k in range(n):
        t += rng.expovariate(rate)
        g, sharing, topo, _, hold = rng.choices(MIX, weights)[0]
        cls = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
        ev = {"t": round(t, 4), "gpus": g, "sharing": sharing, "topology": topo, "class": cls,
              "duration": round(rng.expovariate(1.0 / hold), 4)}
        if sharing == "shared":
            ev["memory_gib"] = SHARED_GIB
        fit_box(box, ev)
        ev["kind"] = kind_of(ev)
        ev["unit"] = f"{ev['kind']}-{k:04d}.service"
        events.append({key: ev[key] for key in ("t", "unit", "kind", "gpus", "sharing", "topology", "class",
                                                "duration", "memory_gib") if key in ev})
    return events


def load_trace(path):
    with open(path) as f:
        data = json.load(f)
    events = data["events"] if isinstance(data, dict) else data
    out = []
    for k, ev in enumerate(events):
        e = {"t": float(ev["t"]), "gpus": int(ev.get("gpus", 1)), "sharing": ev.get("sharing", "exclusive"),
             "topology": ev.get("topology") or ("prefer-nvlink" if int(ev.get("gpus", 1)) > 1 else "any"),
             "class": ev.get("class", "normal"),
             "duration": None if ev.get("duration") is None else float(ev["duration"])}
        if ev.get("memory_gib"):
            e["memory_gib"] = float(ev["memory_gib"])
        elif e["sharing"] == "shared":
            e["memory_gib"] = SHARED_GIB
        e["kind"] = kind_of(e)
        e["unit"] = ev.get("unit") or f"{e['kind']}-{k:04d}.service"
        out.append(e)
    return out


def from_history(path, policy_path=None):
    """A trace from `cortex-hook history --json`: allocate and refuse rows are arrivals (a refused
    start's GPU count is read from its summary), release/reap rows end the unit's allocation (a
    new allocate of the same unit ends the one before); times in seconds from the first row. A
    refused or never-released start gets the median holding time seen (never released: to the
    end). POLICY_PATH: each unit's service gives sharing, topology, class and memory."""
    with open(path) as f:
        data = json.load(f)
    rows = data["history"] if isinstance(data, dict) else data
    rows = sorted(rows, key=lambda r: (r["at"], r.get("id", 0)))
    policy = None
    if policy_path:
        with open(policy_path) as f:
            policy = parse_policy(f.read(), policy_path)
    t0 = rows[0]["at"] if rows else 0.0
    events, open_ = [], {}
    for row in rows:
        action, unit, at = row["action"], row["unit"], row["at"] - t0
        if action in ("release", "reap") or (action == "allocate" and unit in open_):
            ev = open_.pop(unit, None)
            if ev is not None:
                ev["duration"] = round(at - ev["t"], 3)
        if action not in ("allocate", "refuse"):
            continue
        summary = (row.get("detail") or {}).get("summary") or ""
        if action == "allocate":
            if (row.get("detail") or {}).get("fallback") or not row.get("gpus"):
                continue
            count = len(row["gpus"])
        else:
            m = re.search(r"needs (\d+) GPU", summary)
            if not m:
                continue
            count = int(m.group(1))
        ev = {"t": round(at, 3), "unit": unit, "gpus": count, "sharing": "exclusive",
              "topology": "prefer-nvlink" if count > 1 else "any", "class": "normal", "duration": None}
        svc = policy.service_for(unit) if policy else None
        if svc is not None:
            ev.update(sharing=svc.sharing, topology=svc.topology, **{"class": svc.klass})
            if svc.min_free_memory:
                ev["memory_gib"] = round(svc.min_free_memory / GIB, 3)
        if ev["sharing"] == "shared" and not ev.get("memory_gib"):
            ev["memory_gib"] = SHARED_GIB
        ev["kind"] = kind_of(ev)
        events.append(ev)
        if action == "allocate":
            open_[unit] = ev
        else:
            ev["refused"] = True
    known = [e["duration"] for e in events if e["duration"] is not None]
    typical = statistics.median(known) if known else None
    for ev in events:
        if ev.pop("refused", False):
            ev["duration"] = typical
    return events


# -- the run ------------------------------------------------------------------------------------
def policies(plugins, events, box, support):
    """[(label, chooser)] in table order."""
    top, per_service = support
    out = []
    if top:
        out.append(("cortex-hook spread", Cortex(plugins, parse_policy(policy_text(events, "spread")), box)))
        out.append(("cortex-hook pack (the default)", Cortex(plugins, parse_policy(policy_text(events, "pack")), box)))
        if per_service and any(e["sharing"] == "shared" for e in events):
            out.append(("cortex-hook pack, shared: spread",
                        Cortex(plugins, parse_policy(policy_text(events, "pack", "spread")), box)))
    else:
        out.append(("cortex-hook (no placement key)", Cortex(plugins, parse_policy(policy_text(events, None)), box)))
    out.append(("first-fit by index", first_fit))
    out.append(("most free memory (nvisel)", most_free))
    return out


def pct(a, b):
    return f"{100.0 * a / b:.1f}%" if b else "-"


def mean(xs, fmt="{:.2f}"):
    return fmt.format(sum(xs) / len(xs)) if xs else "-"


def print_table(title, header, rows, markdown):
    print()
    if markdown:
        print(f"**{title}**\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if k == 0 else "---:" for k in range(len(header))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        def line(r):
            return "  ".join(str(x).ljust(w) if k == 0 else str(x).rjust(w) for k, (x, w) in enumerate(zip(r, widths)))
        print(line(header))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print(line(r))


def run_box(plugins, box, large, smalls, support, args):
    labels = [label for label, _ in policies(plugins, large, box, support)] if large else \
        [label for label, _ in policies(plugins, smalls[0], box, support)]
    big, plan_ms = {}, []
    if large:
        for label, chooser in policies(plugins, large, box, support):
            big[label] = replay(box, large, chooser)
            if isinstance(chooser, Cortex) and chooser.plans:
                plan_ms.append(1000.0 * chooser.seconds / chooser.plans)
    small = {label: [0, 0] for label in labels}
    bound_sum, bound_ok, states = 0, True, 0
    for events in smalls:
        small_runs = []
        for label, chooser in policies(plugins, events, box, support):
            r = replay(box, events, chooser)
            small[label][0] += r.accepted
            small[label][1] += r.arrivals
            small_runs.append(r.accepted)
        if bound_ok:
            b, s = bound(box, events, args.bound_states)
            states = max(states, s)
            if b is None:
                bound_ok = False
            else:
                bound_sum += b
                most = max(small_runs)
                assert b >= most, f"the bound ({b}) is below a policy ({most}): a bug in bench/placement.py"
    total_small = sum(len(e) for e in smalls)
    header = ["policy"]
    if large:
        header += [f"served (n={len(large)})", "multi-GPU on NVLink", "fragmented groups", "tenants max/mean",
                   "tenants max"]
    if smalls:
        header += [f"served, {len(smalls)} small trace{'s' if len(smalls) != 1 else ''} (n={total_small})"]
    rows = []
    for label in labels:
        row = [label]
        if large:
            r = big[label]
            row += [pct(r.accepted, r.arrivals), pct(r.multi_nvlink, r.multi) if box.has_nvlink else "- (none)",
                    mean(r.frag), mean(r.balance), mean(r.max_tenants)]
        if smalls:
            a, n = small[label]
            row.append(f"{a} ({pct(a, n)})")
        rows.append(row)
    if smalls:
        row = ["clairvoyant bound"] + (["-"] * 5 if large else [])
        row.append(f"{bound_sum} ({pct(bound_sum, total_small)})" if bound_ok else
                   f"not computed (over {args.bound_states} states)")
        rows.append(row)
    return header, rows, states, plan_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="requests in the large trace per topology (default 2000)")
    ap.add_argument("--load", type=float, default=0.7, help="offered load of the large trace (default 0.7)")
    ap.add_argument("--small", type=int, default=20, help="small traces per topology (default 20)")
    ap.add_argument("--small-n", type=int, default=24, help="requests per small trace (default 24)")
    ap.add_argument("--small-load", type=float, default=1.2, help="offered load of the small traces (default 1.2)")
    ap.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("--topology", action="append", choices=[b.key for b in boxes()],
                    help="only this topology (repeatable)")
    ap.add_argument("--inventory", metavar="FILE",
                    help="replay on this box instead (a simulated-inventory YAML/JSON, as `inventory: simulated:`)")
    ap.add_argument("--trace", help="replay this trace file instead of generated ones")
    ap.add_argument("--from-history", metavar="FILE", help="replay `cortex-hook history --json` output")
    ap.add_argument("--policy", help="with --from-history: the policy.yaml that gives units their services")
    ap.add_argument("--save-trace", metavar="PATH", help="write the (first) trace used here as JSON")
    ap.add_argument("--bound-states", type=int, default=400000, help="give up the bound past this many states")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    wall = time.monotonic()
    support = placement_support()
    plugins = load_plugins()
    if args.inventory:
        chosen = [box_from_inventory(args.inventory)]
    else:
        chosen = [b for b in boxes() if not args.topology or b.key in args.topology]
    own = None
    if args.trace:
        own = load_trace(args.trace)
    elif args.from_history:
        own = from_history(args.from_history, args.policy)
    if own is not None and args.save_trace:
        with open(args.save_trace, "w") as f:
            json.dump(own, f, indent=1)
    print(f"cortex_hook: {describe_source()}; Python {sys.version.split()[0]}; `placement:` "
          + ("known (top level and per service)" if all(support) else
             "known at top level only" if support[0] else "NOT known yet: only the planner's default runs"))
    if own is None:
        print(f"traces: per topology, a large one (n={args.n}, load {args.load}, seed {args.seed}) and "
              f"{args.small} small ones (n={args.small_n}, load {args.small_load}, seeds "
              f"{args.seed + 100}..{args.seed + 100 + args.small - 1}); arrivals Poisson, holding times "
              "exponential, kinds: " + ", ".join(f"{g} GPU {s} {t} {w:.0%} (mean hold {h:g})" for g, s, t, w, h in MIX)
              + "; classes " + ", ".join(f"{c} {w:.0%}" for c, w in CLASSES)
              + f"; shared tenants need and hold {SHARED_GIB} GiB")
    else:
        print(f"trace: {args.trace or args.from_history}, {len(own)} requests"
              + ("" if len(own) <= args.small_n else f" (no bound: more than {args.small_n} requests)"))
    for box in chosen:
        if own is not None:
            events = [fit_box(box, dict(e)) for e in own]
            for e in events:
                e["kind"] = kind_of(e)
            large, smalls = (events, [events] if len(events) <= args.small_n else [])
        else:
            large = generate(box, args.n, args.seed, args.load)
            smalls = [generate(box, args.small_n, args.seed + 100 + k, args.small_load) for k in range(args.small)]
        if args.save_trace and own is None and box is chosen[0]:
            with open(args.save_trace, "w") as f:
                json.dump(large, f, indent=1)
        t0 = time.monotonic()
        header, rows, states, plan_ms = run_box(plugins, box, large, smalls, support, args)
        print_table(f"{box.title} [{box.key}]", header, rows, args.markdown)
        print(f"\n({time.monotonic() - t0:.1f} s; the planner: {mean(plan_ms)} ms a plan; the bound's largest "
              f"search: {states} states)")
    print()
    print("Method: each policy replays the same traces on the same simulated box, from idle; a request "
          "is served at arrival or refused (no waiting), its GPUs freed at arrival + duration. The "
          "cortex-hook rows call the real planner (cortex_hook.planner.plan, built-in plugins, a parsed "
          "policy with one service per request kind) with a Snapshot of the running requests' leases; "
          "the baselines keep the same rules (exclusive/shared, memory, require/prefer-nvlink, same "
          "model). The bound is an exact search over every accept/reject and placement choice with the "
          "whole trace known (depth-first, memoised on the canonical occupancy, cut by a fit-alone "
          "upper bound), so no online policy can serve more of the small traces. "
          f"Wall time {time.monotonic() - wall:.0f} s.")


if __name__ == "__main__":
    main()
