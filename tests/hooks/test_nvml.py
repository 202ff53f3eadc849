"""The `nvml` inventory, end to end: the real nvidia-ml-py (pynvml) against the fake
libnvidia-ml.so.1 (../shared/tools/fake-nvml), driven through the real `cortex-hook` CLI in a
subprocess. Nothing in pynvml or cortex_hook is patched: every fault comes from the fake
driver's JSON (`errors`, `lost`, `init_error`, missing symbols, a config file that never opens).
"""

import json
import os
import subprocess
import sys

import pytest

from ..helpers.box import assert_one_line_error, gpu_desc, uuid_of

pytestmark = pytest.mark.nvml

GiB = 1024**3
MiB = 1024**2
UNIT = "llm@a.service"

ONE_GPU = """\
services:
  - match: "llm@*.service"
    gpus: 1
"""

# Runs the real inventory plugins (whatever the box's policy names) in a fresh process and prints
# every fact of every Gpu as JSON: the facts `status --json` does not show (minor number, power,
# compute capability, NUMA node, health counters, NVLink peers, PCIe levels, processes).
_DUMP = r"""
import json, sys
from cortex_hook.inventory import discover
from cortex_hook.hooks.manager import load_plugins
from cortex_hook.policy.load import load_policy

def plain(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if hasattr(v, "as_dict"):
        return {k: plain(x) for k, x in v.as_dict().items()}
    return v

gpus = discover(load_plugins(), load_policy(), frozenset(sys.argv[1:]))
print(json.dumps([plain(g) for g in gpus]))
"""


def dump(box, *detail, env=None):
    """Every Gpu the box's inventory reports, as dicts (one fresh process, real plugins)."""
    r = subprocess.run([sys.executable, "-c", _DUMP, *detail], env=env or box.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def rows(box):
    """`cortex-hook status --json` rows."""
    return box.json("status")["gpus"]


def row_of(rows_, uuid):
    (found,) = [r for r in rows_ if r["uuid"] == uuid]
    return found


def verdict(decision, uuid):
    (found,) = [v for v in decision["verdicts"] if v["uuid"] == uuid]
    return found


def codes(v):
    return [r["code"] for r in v["reasons"]]


def by_uuid(gpus):
    return {g["uuid"]: g for g in gpus}


# -- basic facts -----------------------------------------------------------------------------------
def h100(i, **kw):
    """A GPU whose every fact differs from gpu_desc's defaults, so a fact lost in transit shows."""
    facts = dict(name="NVIDIA H100 80GB HBM3", pci_bus_id="0000:3b:00.0", minor_number=7,
                 memory_total="80GiB", memory_used="5GiB", memory_reserved="512MiB",
                 utilization_gpu=37, temperature=55, power_usage_mw=72000, power_limit_mw=250000,
                 compute_capability=[9, 0], numa_node=1)
    facts.update(kw)
    return gpu_desc(i, **facts)


def test_status_reports_the_drivers_facts(nvml_box):
    """status --json shows index, UUID, name, bus id, v2 memory (reserved apart), util, temp."""
    nvml_box.write_gpus([h100(0), gpu_desc(1)]).write_policy(ONE_GPU, inventory="nvml")
    r = rows(nvml_box)
    assert [x["index"] for x in r] == [0, 1]
    a, b = row_of(r, uuid_of(0)), row_of(r, uuid_of(1))
    assert a["name"] == "NVIDIA H100 80GB HBM3"
    assert a["pci_bus_id"] == "00000000:3B:00.0"
    assert a["memory_total"] == 80 * GiB
    assert a["memory_used"] == 5 * GiB            # v2: reserved is NOT in used ...
    assert a["memory_free"] == 80 * GiB - 512 * MiB - 5 * GiB   # ... but is not free either
    assert a["utilization"] == 37 and a["temperature"] == 55
    assert a["health"] == [] and a["problems"] == [] and a["present"] is True
    assert b["name"] == "NVIDIA L4" and b["pci_bus_id"] == "00000000:11:00.0"
    assert b["memory_free"] == b["memory_total"] == 24 * GiB and b["memory_used"] == 0


def test_discovery_reads_minor_power_compute_capability_numa(nvml_box):
    """The facts status does not print (minor, power, limit, CC, NUMA, ECC) come from the driver."""
    nvml_box.write_gpus([h100(0), gpu_desc(1)]).write_policy(ONE_GPU, inventory="nvml")
    g = by_uuid(dump(nvml_box, "full"))
    a, b = g[uuid_of(0)], g[uuid_of(1)]
    assert (a["minor"], a["power_mw"], a["power_limit_mw"]) == (7, 72000, 250000)
    assert (a["compute_capability"], a["numa_node"]) == ("9.0", 1)
    assert (b["minor"], b["compute_capability"], b["numa_node"]) == (1, "8.9", 0)
    assert a["ecc_volatile_uncorrected"] == 0
    # absent from the description = NOT_SUPPORTED by the board = unknown, and not a problem
    assert a["retired_pages_pending"] is None and a["remapped_rows_pending"] is None
    assert a["mig_enabled"] is None
    assert a["processes"] is None          # not asked for: no detail "processes"
    assert a["problems"] == [] and b["problems"] == []
    # PCI bus order: 0x11 (GPU 1) before 0x3B (GPU 0)
    assert (b["cuda_index"], a["cuda_index"]) == (0, 1)


def test_old_memory_struct_counts_reserved_as_used(nvml_box):
    """A driver without nvmlDeviceGetMemoryInfo_v2: the v1 fallback's used includes reserved,
    and free is still total - reserved - used."""
    nvml_box.write_gpus([h100(0, errors={"nvmlDeviceGetMemoryInfo_v2": "FUNCTION_NOT_FOUND"})])
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    (a,) = rows(nvml_box)
    assert a["memory_used"] == 5 * GiB + 512 * MiB
    assert a["memory_free"] == 80 * GiB - 512 * MiB - 5 * GiB
    assert a["problems"] == []


def test_plan_json_decision_object(nvml_box):
    """plan --json: unit, chosen UUIDs, env, and a verdict per GPU with reasons and score."""
    nvml_box.write_gpus([gpu_desc(0, memory_used="20GiB"), gpu_desc(1, memory_used="2GiB")])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: 1
            min_free_memory: 10GiB
        """, inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert d["unit"] == UNIT and d["ok"] is True and d["fallback"] is None
    assert d["gpus"] == [uuid_of(1)]
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(1)
    assert d["env"]["CORTEX_GPU_COUNT"] == "1"
    assert d["env"]["CORTEX_GPU_UUIDS"] == uuid_of(1)
    assert d["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert d["service"]["gpus"] == 1
    good, full = verdict(d, uuid_of(1)), verdict(d, uuid_of(0))
    assert good["selected"] is True and good["reasons"] == [] and good["index"] == 1
    assert good["score"] > 0
    assert good["memory_free"] == 22 * GiB and good["memory_total"] == 24 * GiB
    assert full["selected"] is False and codes(full) == ["memory"] and full["score"] is None
    assert full["memory_free"] == 4 * GiB
    assert all(r["text"] for r in full["reasons"])


# -- the simulated inventory says the same as the driver --------------------------------------------
COMPARED = ("index", "uuid", "name", "pci_bus_id", "minor", "memory_total", "memory_used", "memory_free",
            "utilization", "temperature", "power_mw", "power_limit_mw", "compute_capability", "numa_node",
            "ecc_volatile_uncorrected", "retired_pages_pending", "remapped_rows_pending",
            "remapped_rows_failure", "lost", "mig_enabled", "parent_uuid", "mig_index", "nvlink_peers",
            "topology", "processes", "cuda_index", "problems")
STATUS_COMPARED = ("index", "mig_index", "label", "uuid", "name", "pci_bus_id", "memory_used", "memory_total",
                   "memory_free", "utilization", "temperature", "health", "mig_parent", "problems")


def fully_specified():
    """Three GPUs, every fact both inventories know given explicitly; two with faults; one MIG."""
    return [
        h100(0, uuid=uuid_of(0), ecc_errors={"volatile_uncorrected": 0}, memory_used="1GiB",
             remapped_rows={"correctable": 2, "uncorrectable": 0, "pending": 0, "failure": 0},
             mig_mode=0, nvlink={"peers": {"1": 4}}, topology={"2": "SYS"},
             processes=[{"pid": 4242, "used_memory": "1GiB"}]),
        h100(1, uuid=uuid_of(1), pci_bus_id="0000:9a:00.0", minor_number=3, ecc_errors={"volatile_uncorrected": 2},
             memory_used=0, remapped_rows={"correctable": 0, "uncorrectable": 1, "pending": 1, "failure": 0},
             mig_mode=0, numa_node=1, processes=[{"pid": 4343}]),   # memory not attributable
        gpu_desc(2, name="NVIDIA A100-SXM4-40GB", memory_total="40GiB", memory_used="4GiB",
                 power_usage_mw=50000, power_limit_mw=400000, compute_capability="8.0", numa_node=0,
                 utilization_gpu=0, temperature=61, ecc_errors={"volatile_uncorrected": 0},
                 retired_pages={"pending": 1}, mig_mode=1,
                 mig_devices=[
                     {"uuid": "MIG-11111111-2222-4333-8444-000000000001", "name": "NVIDIA A100 MIG 3g.20gb",
                      "memory_total": "20GiB", "memory_used": "3GiB"},
                     {"uuid": "MIG-11111111-2222-4333-8444-000000000002", "name": "NVIDIA A100 MIG 3g.20gb",
                      "memory_total": "20GiB", "memory_used": "1GiB"}]),
    ]


AGREE_POLICY = """\
services:
  - match: "llm@*.service"
    gpus: 1
    min_free_memory: 15GiB
  - match: "tp@*.service"
    gpus: 2
    topology: prefer-nvlink
"""


def decisions(box):
    """(unit, chosen, [(uuid, reason codes, score)]) for a 1-GPU and a 2-GPU NVLink service."""
    out = []
    for unit in ("llm@a.service", "tp@a.service"):
        r = box.cli("plan", unit, "--json")
        assert r.returncode in (0, 69), r.stderr
        d = json.loads(r.stdout)
        out.append((unit, d["gpus"], [(v["uuid"], codes(v), v["score"]) for v in d["verdicts"]]))
    return out


def test_simulated_and_nvml_inventories_agree(nvml_box):
    """The same fully specified description gives the same GPUs through the driver as through
    `inventory: {simulated: gpus.json}`: every fact both know, in discovery, status and plan."""
    nvml_box.write_gpus(fully_specified())
    nvml_box.write_policy(AGREE_POLICY, inventory="nvml")
    via_driver = dump(nvml_box, "topology", "processes", "full")
    driver_rows = rows(nvml_box)
    driver_plans = decisions(nvml_box)
    nvml_box.write_policy(AGREE_POLICY, inventory="simulated")
    simulated = dump(nvml_box, "topology", "processes", "full")
    simulated_rows = rows(nvml_box)
    assert decisions(nvml_box) == driver_plans

    assert len(via_driver) == len(simulated) == 5      # 3 GPUs + 2 MIG instances
    assert [g["uuid"] for g in via_driver] == [g["uuid"] for g in simulated]
    for d, s in zip(via_driver, simulated):
        for key in COMPARED:
            assert d[key] == s[key], (d["uuid"], key, d[key], s[key])
    for d, s in zip(driver_rows, simulated_rows):
        for key in STATUS_COMPARED:
            assert d[key] == s[key], (d["uuid"], key, d[key], s[key])
    # and the description really exercised something: faults, NVLink, MIG, processes
    g = by_uuid(via_driver)
    assert g[uuid_of(0)]["nvlink_peers"] == [uuid_of(1)]
    assert g[uuid_of(0)]["topology"][uuid_of(2)] == 50
    assert g[uuid_of(0)]["processes"] == [{"pid": 4242, "used_memory": GiB}]
    assert g[uuid_of(1)]["processes"] == [{"pid": 4343, "used_memory": None}]
    assert g[uuid_of(1)]["remapped_rows_pending"] is True and g[uuid_of(1)]["ecc_volatile_uncorrected"] == 2
    assert g[uuid_of(2)]["retired_pages_pending"] is True and g[uuid_of(2)]["mig_enabled"] is True
    assert g["MIG-11111111-2222-4333-8444-000000000001"]["memory_free"] == 17 * GiB
    (single, pair) = driver_plans
    assert single[1] == [uuid_of(0)]
    assert pair[1] == []          # GPU 1 (ECC, row remap pending) cannot join GPU 0
    assert [c for u, c, _ in pair[2] if u == uuid_of(1)] == [["ecc", "remapped-rows"]]


def test_simulated_mig_parent_memory_default_agrees(nvml_box):
    """A MIG parent without `memory_used`: the driver reports its instances' memory as used
    (fake README: "for a MIG parent, plus its instances"); the simulated inventory must too,
    and both must list the instances' processes on the parent."""
    parent = gpu_desc(0, memory_total="80GiB", mig_mode=1, mig_devices=[
        {"uuid": MIG_A, "memory_total": "40GiB", "processes": [{"pid": 77, "used_memory": "2GiB"}]}])
    del parent["memory_used"]
    nvml_box.write_gpus([parent])
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    driver = by_uuid(dump(nvml_box, "processes"))
    nvml_box.write_policy(ONE_GPU, inventory="simulated")
    simulated = by_uuid(dump(nvml_box, "processes"))
    assert driver[uuid_of(0)]["memory_used"] == 2 * GiB
    for key in ("memory_used", "memory_free", "processes"):
        assert simulated[uuid_of(0)][key] == driver[uuid_of(0)][key], key


def test_simulated_honours_count_like_the_driver(nvml_box):
    """Top-level `count` larger than the list repeats the last GPU (fake README); one description
    must give the same number of GPUs through both inventories."""
    nvml_box.write_gpus([gpu_desc(0)], count=3)
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    driver = dump(nvml_box)
    assert len(driver) == 3
    nvml_box.write_policy(ONE_GPU, inventory="simulated")
    simulated = dump(nvml_box)
    assert [g["uuid"] for g in simulated] == [g["uuid"] for g in driver]


# -- a lost GPU ------------------------------------------------------------------------------------
def test_lost_gpu_is_excluded_and_status_survives(nvml_box):
    """A GPU answering GPU_IS_LOST is shown as lost, rejected with `lost`, never selected."""
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1, lost=True), gpu_desc(2)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: all
        """, inventory="nvml")
    r = rows(nvml_box)
    (lost,) = [x for x in r if x["index"] == 1]
    assert lost["health"] == ["lost"] and lost["present"] is True
    assert any("GPU_IS_LOST" in p for p in lost["problems"])
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(0), uuid_of(2)]
    (v,) = [v for v in d["verdicts"] if v["index"] == 1]
    assert codes(v) == ["lost"] and v["selected"] is False and v["score"] is None


def test_gpus_the_driver_gives_one_uuid_are_unidentified_not_an_internal_error(nvml_box):
    """Two GPUs reporting the same UUID: neither can be named safely in CUDA_VISIBLE_DEVICES, so
    both are rejected as unidentified, saying why (it was exit 74, UNIQUE constraint failed)."""
    twin = uuid_of(9)
    nvml_box.write_gpus([gpu_desc(0, uuid=twin), gpu_desc(1, uuid=twin), gpu_desc(2)])
    nvml_box.write_policy("services:\n  - match: 'pair*'\n    gpus: 2\n  - match: '*'\n", inventory="nvml")
    r = nvml_box.cli("allocate", "pair", "--json")
    assert r.returncode == 69, r.stderr
    verdicts = {v["index"]: v for v in json.loads(r.stdout)["verdicts"]}
    for i, other in ((0, "GPU 1"), (1, "GPU 0")):
        (reason,) = [x for x in verdicts[i]["reasons"] if x["code"] == "unidentified"]
        assert f"the UUID of {other} ({twin})" in reason["text"]
    assert nvml_box.json("leases")["leases"] == []
    assert nvml_box.cli("allocate", "one").returncode == 0  # GPU 2 is fine


def test_lost_gpu_is_skipped_even_when_ranked_first(nvml_box):
    """The admin ranked GPU 1 first; once the driver reports it lost, GPU 0 (rank 1) is chosen."""
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2)]).write_policy(ONE_GPU, inventory="nvml")
    r = nvml_box.cli("priority", "order", "1", "0", "2")
    assert r.returncode == 0, r.stderr
    assert nvml_box.json("plan", UNIT)["gpus"] == [uuid_of(1)]
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1, lost=True), gpu_desc(2)])
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(0)]
    assert [codes(v) for v in d["verdicts"] if v["index"] == 1] == [["lost"]]
    r = nvml_box.cli("status")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "lost" in r.stdout


# -- MIG -------------------------------------------------------------------------------------------
MIG_A = "MIG-aaaaaaaa-0000-4000-8000-000000000001"
MIG_B = "MIG-aaaaaaaa-0000-4000-8000-000000000002"


def a100_mig(i, **kw):
    return gpu_desc(i, name="NVIDIA A100-SXM4-80GB", memory_total="80GiB", mig_mode=1, mig_devices=[
        {"uuid": MIG_A, "name": "NVIDIA A100 MIG 3g.40gb", "memory_total": "40GiB", "memory_used": "30GiB"},
        {"uuid": MIG_B, "name": "NVIDIA A100 MIG 3g.40gb", "memory_total": "40GiB", "memory_used": "1GiB"},
    ], **kw)


def test_mig_instances_are_candidates_and_parent_is_not(nvml_box):
    """With MIG on, each instance is a candidate (its MIG- UUID, its own memory); the parent is
    rejected as mig-parent; CUDA_VISIBLE_DEVICES gets the MIG UUID."""
    nvml_box.write_gpus([a100_mig(0)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: 1
            min_free_memory: 20GiB
        """, inventory="nvml")
    r = rows(nvml_box)
    assert [(x["uuid"], x["mig_index"], x["mig_parent"]) for x in r] == [
        (uuid_of(0), None, True), (MIG_A, 0, False), (MIG_B, 1, False)]
    assert row_of(r, MIG_B)["memory_total"] == 40 * GiB
    assert row_of(r, MIG_B)["memory_free"] == 39 * GiB
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [MIG_B]
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == MIG_B
    assert codes(verdict(d, uuid_of(0))) == ["mig-parent"]
    assert codes(verdict(d, MIG_A)) == ["memory"]          # 10 GiB free on instance A
    assert verdict(d, MIG_B)["mig_index"] == 1


def test_mig_instances_cannot_serve_a_multi_gpu_service(nvml_box):
    """A service asking for 2 GPUs cannot take MIG instances (mig-multi): the whole GPUs serve it,
    and with only MIG instances it is refused (69)."""
    nvml_box.write_gpus([a100_mig(0), gpu_desc(1), gpu_desc(2)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: 2
        """, inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(1), uuid_of(2)]
    assert "mig-multi" in codes(verdict(d, MIG_A)) and "mig-multi" in codes(verdict(d, MIG_B))
    nvml_box.write_gpus([a100_mig(0)])
    d = nvml_box.json("plan", UNIT, expect=69)
    assert d["gpus"] == [] and d["ok"] is False
    assert codes(verdict(d, MIG_A)) == ["mig-multi"]


def test_mig_uuid_even_with_visible_devices_index(nvml_box):
    """`visible_devices: index` cannot name a MIG instance by number: the MIG UUID is used."""
    nvml_box.write_gpus([a100_mig(0)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            visible_devices: index
        """, inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [MIG_B]                # more free memory than instance A
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == MIG_B
    assert d["env"]["CORTEX_GPU_INDICES"] == "0"   # its parent's PCI-ordered index
    assert any("MIG instances are always named by UUID" in n for n in d["notes"])


@pytest.mark.parametrize("old_driver", [False, True], ids=["count-query-fails", "old-driver"])
def test_mig_listing_failure_is_reported(nvml_box, fake_nvml_old_lib, old_driver):
    """MIG is on but its instances cannot be listed (nvmlDeviceGetMaxMigDeviceCount fails, or an
    old driver lacks it): the parent is still rejected, and status must say why no instance
    shows up (a problem naming MIG), instead of listing nothing at all."""
    errors = {} if old_driver else {"nvmlDeviceGetMaxMigDeviceCount": "UNKNOWN"}
    if old_driver:
        nvml_box.lib = fake_nvml_old_lib
    nvml_box.write_gpus([a100_mig(0, errors=errors)]).write_policy(ONE_GPU, inventory="nvml")
    (parent,) = rows(nvml_box)                 # no instance could be listed
    assert parent["mig_parent"] is True
    d = nvml_box.json("plan", UNIT, expect=69)
    assert codes(verdict(d, uuid_of(0))) == ["mig-parent"]
    assert any("MIG" in p for p in parent["problems"]), parent["problems"]


# -- NOT_SUPPORTED and failing queries --------------------------------------------------------------
UNSUPPORTED = {fn: "NOT_SUPPORTED" for fn in (
    "nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetMinorNumber", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetMigMode")}


def test_not_supported_facts_are_unknown_not_problems(nvml_box):
    """NOT_SUPPORTED leaves a fact null: no crash, no problem, no health verdict, still usable."""
    nvml_box.write_gpus([gpu_desc(0, errors=UNSUPPORTED)])
    nvml_box.write_policy("""\
        health:
          max_temperature: 80
        services:
          - match: "llm@*.service"
            gpus: 1
        """, inventory="nvml")
    (r,) = rows(nvml_box)
    assert r["temperature"] is None and r["utilization"] is None
    assert r["memory_total"] == 24 * GiB
    assert r["problems"] == [] and r["health"] == []
    (g,) = dump(nvml_box, "processes")
    for key in ("power_mw", "power_limit_mw", "compute_capability", "numa_node", "minor",
                "ecc_volatile_uncorrected", "mig_enabled"):
        assert g[key] is None, key
    assert g["problems"] == []
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(0)]
    assert "unknown" in " ".join(t["detail"] for t in verdict(d, uuid_of(0))["terms"])


def test_status_text_shows_unknown_facts(nvml_box):
    """The status table prints `?` for unknown temperature/util instead of crashing."""
    nvml_box.write_gpus([gpu_desc(0, errors=UNSUPPORTED)]).write_policy(ONE_GPU, inventory="nvml")
    r = nvml_box.cli("status")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("0 ")]
    assert line and "?" in line[0]


def test_memory_not_supported_is_unknown_without_problem(nvml_box):
    """Memory NOT_SUPPORTED: a service needing free memory rejects it as memory-unknown, yet no
    problem is reported; a service with no memory need still takes it."""
    nvml_box.write_gpus([gpu_desc(0, errors={"nvmlDeviceGetMemoryInfo": "NOT_SUPPORTED"})])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            min_free_memory: 1GiB
          - match: "any@*.service"
        """, inventory="nvml")
    (r,) = rows(nvml_box)
    assert r["memory_total"] is None and r["memory_free"] is None and r["problems"] == []
    d = nvml_box.json("plan", UNIT, expect=69)
    assert codes(verdict(d, uuid_of(0))) == ["memory-unknown"]
    assert nvml_box.json("plan", "any@a.service")["gpus"] == [uuid_of(0)]


def test_memory_query_failure_is_a_problem_and_memory_unknown(nvml_box):
    """Memory query fails with UNKNOWN: status lists the problem; a service needing free memory
    rejects the GPU (memory-unknown, naming the failure) and takes the healthy one."""
    nvml_box.write_gpus([gpu_desc(0, errors={"nvmlDeviceGetMemoryInfo": "UNKNOWN"}), gpu_desc(1)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            min_free_memory: 1GiB
        """, inventory="nvml")
    r = rows(nvml_box)
    bad = row_of(r, uuid_of(0))
    assert bad["memory_free"] is None
    assert any(p.startswith("memory") for p in bad["problems"])
    assert row_of(r, uuid_of(1))["problems"] == []
    r2 = nvml_box.cli("priority", "order", "0", "1")
    assert r2.returncode == 0, r2.stderr
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(1)]
    (reason,) = verdict(d, uuid_of(0))["reasons"]
    assert reason["code"] == "memory-unknown" and "memory:" in reason["text"]


@pytest.mark.parametrize("errors, code", [
    ({"nvmlDeviceGetHandleByIndex": "UNKNOWN"}, "unidentified"),
    ({"nvmlDeviceGetUUID": "UNKNOWN"}, "unidentified"),
    ({"nvmlDeviceGetHandleByIndex": "GPU_IS_LOST"}, "lost"),
], ids=["no-handle", "no-uuid", "lost-at-handle"])
def test_gpu_without_identity_is_rejected(nvml_box, errors, code):
    """A GPU whose handle or UUID query fails cannot be leased (no UUID): it is listed, rejected
    with its code, and the other GPU serves; nothing crashes."""
    nvml_box.write_gpus([gpu_desc(0, errors=errors), gpu_desc(1)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: all
        """, inventory="nvml")
    r = rows(nvml_box)
    (bad,) = [x for x in r if x["index"] == 0]
    assert bad["uuid"] is None and bad["health"] == [code] and bad["problems"]
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(1)]
    assert [codes(v) for v in d["verdicts"] if v["index"] == 0] == [[code]]


def test_device_count_failure_is_one_line_69(nvml_box):
    """nvmlDeviceGetCount fails: exit 69, one line naming the failure."""
    nvml_box.write_gpus([gpu_desc(0)], errors={"nvmlDeviceGetCount": "UNKNOWN"})
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    r = nvml_box.cli("plan", UNIT)
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "count", "Unknown Error")


# -- health faults ---------------------------------------------------------------------------------
FAULTS = [
    pytest.param({"ecc_errors": {"volatile_uncorrected": 3}}, "ecc", {"volatile_uncorrectable_ecc": "false"},
                 id="ecc"),
    pytest.param({"retired_pages": {"pending": 1}}, "retired-pages", {"retired_pages_pending": "false"},
                 id="retired-pages"),
    pytest.param({"retired_pages_pending": 1}, "retired-pages", {"retired_pages_pending": "false"},
                 id="retired-pages-flat-key"),
    pytest.param({"remapped_rows": {"pending": 1}}, "remapped-rows", {"remapped_rows_pending": "false"},
                 id="remapped-rows"),
    pytest.param({"temperature": 82}, "too-hot", {"max_temperature": "null"}, id="too-hot"),
]


def health_policy(**health):
    """A one-GPU service under a `health:` block (max_temperature 80 unless told)."""
    block = dict({"max_temperature": "80"}, **health)
    return ("health:\n" + "".join(f"  {k}: {v}\n" for k, v in block.items())
            + 'services:\n  - match: "llm@*.service"\n')


@pytest.mark.parametrize("fault, code, switch_off", FAULTS)
def test_fault_rejects_gpu_and_policy_can_switch_it_off(nvml_box, fault, code, switch_off):
    """Each fault the driver reports rejects the GPU with its code (status shows it too); turning
    that check off in `health:` makes the same GPU acceptable."""
    nvml_box.write_gpus([gpu_desc(0, **fault)])
    nvml_box.write_policy(health_policy(), inventory="nvml")
    (r,) = rows(nvml_box)
    assert code in r["health"]
    d = nvml_box.json("plan", UNIT, expect=69)
    v = verdict(d, uuid_of(0))
    assert codes(v) == [code] and v["selected"] is False
    assert code in d["summary"]

    nvml_box.write_policy(health_policy(**switch_off), inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(0)] and verdict(d, uuid_of(0))["reasons"] == []


def test_remap_failure_cannot_be_switched_off(nvml_box):
    """A failed row remap means the GPU needs service: switching off the *pending* check (which
    an admin may accept until the next reset) must not let it back in."""
    nvml_box.write_gpus([gpu_desc(0, remapped_rows={"failure": 1})])
    nvml_box.write_policy(health_policy(remapped_rows_pending="false"), inventory="nvml")
    d = nvml_box.json("plan", UNIT, expect=69)
    assert codes(verdict(d, uuid_of(0))) == ["remap-failure"]


def test_healthy_gpu_is_chosen_over_faulty_ones(nvml_box):
    """Among a faulty set, the one healthy GPU is chosen even if ranked last by the admin."""
    nvml_box.write_gpus([gpu_desc(0, ecc_errors={"volatile_uncorrected": 1}),
                         gpu_desc(1, retired_pages={"pending": 1}),
                         gpu_desc(2, remapped_rows={"pending": 0, "failure": 1}),
                         gpu_desc(3, temperature=95),
                         gpu_desc(4)])
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    assert nvml_box.cli("priority", "order", "0", "1", "2", "3", "4").returncode == 0
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(4)]
    assert [codes(verdict(d, uuid_of(i))) for i in range(4)] == [
        ["ecc"], ["retired-pages"], ["remap-failure"], ["too-hot"]]


# -- the driver cannot be used ---------------------------------------------------------------------
@pytest.mark.parametrize("init_error, text", [("DRIVER_NOT_LOADED", "Driver Not Loaded"),
                                              ("LIB_RM_VERSION_MISMATCH", "version mismatch")])
def test_init_error_fails_plan_with_one_line(nvml_box, init_error, text):
    """nvmlInit fails: plan and status exit 69 with one line naming the failure."""
    nvml_box.write_gpus([gpu_desc(0)], init_error=init_error).write_policy(ONE_GPU, inventory="nvml")
    r = nvml_box.cli("plan", UNIT)
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "NVML", text)
    r = nvml_box.cli("status")
    assert r.returncode == 69
    assert_one_line_error(r.stderr, text)


def test_init_error_with_cpu_fallback_starts_on_cpu(nvml_box):
    """nvmlInit fails and the service has on_unavailable: cpu: plan succeeds with no GPU."""
    nvml_box.write_gpus([gpu_desc(0)], init_error="DRIVER_NOT_LOADED")
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            on_unavailable: cpu
        """, inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert d["ok"] is True and d["fallback"] == "cpu" and d["gpus"] == []
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == "-1"
    assert d["env"]["CORTEX_GPU_COUNT"] == "0"
    assert any("Driver Not Loaded" in n for n in d["notes"])


def _real_nvml_installed():
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False
    return "libnvidia-ml" in out


def test_missing_library_is_one_line_69(nvml_box, tmp_path):
    """No libnvidia-ml.so.1 anywhere: exit 69 with one line that names the library."""
    if _real_nvml_installed():
        pytest.skip("a real libnvidia-ml is installed (ldconfig -p): cannot test its absence")
    empty = tmp_path / "empty-lib"
    empty.mkdir()
    nvml_box.write_gpus([gpu_desc(0)]).write_policy(ONE_GPU, inventory="nvml")
    env = nvml_box.env(LD_LIBRARY_PATH=str(empty))
    r = nvml_box.cli("plan", UNIT, env=env)
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "libnvidia-ml.so.1")
    r = nvml_box.cli("status", env=env)
    assert r.returncode == 69
    assert_one_line_error(r.stderr, "libnvidia-ml.so.1")


def test_hung_driver_times_out(nvml_box, tmp_path):
    """nvmlInit blocks (its config is a FIFO nobody writes): with discovery_timeout: 1s, plan
    exits 75 with one line about the timeout; a cpu-fallback service still starts, on CPU."""
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    nvml_box.write_policy("""\
        discovery_timeout: 1s
        services:
          - match: "llm@*.service"
          - match: "cpu@*.service"
            on_unavailable: cpu
        """, inventory="nvml")
    env = nvml_box.env(FAKE_NVML_CONFIG=str(fifo))
    r = nvml_box.cli("plan", UNIT, env=env)
    assert r.returncode == 75, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "1s", "did not answer")
    d = nvml_box.json("plan", "cpu@a.service", env=env)
    assert d["fallback"] == "cpu" and d["env"]["CUDA_VISIBLE_DEVICES"] == "-1"
    assert any("did not answer" in n for n in d["notes"])
    r = nvml_box.cli("status", env=env)
    assert r.returncode == 75
    assert_one_line_error(r.stderr, "did not answer")


# -- an old driver: symbols missing ----------------------------------------------------------------
def test_old_driver_missing_symbols_still_works(nvml_box, fake_nvml_old_lib):
    """A driver exporting only core.map: status and plan work; NUMA node and power limit are
    null; nothing crashes."""
    nvml_box.lib = fake_nvml_old_lib
    nvml_box.write_gpus([h100(0), gpu_desc(1)]).write_policy(ONE_GPU, inventory="nvml")
    r = rows(nvml_box)
    assert [x["uuid"] for x in r] == [uuid_of(0), uuid_of(1)]
    assert row_of(r, uuid_of(0))["memory_free"] == 80 * GiB - 512 * MiB - 5 * GiB
    assert row_of(r, uuid_of(0))["temperature"] == 55
    assert any("not provided by this driver" in p for p in row_of(r, uuid_of(0))["problems"])
    g = by_uuid(dump(nvml_box, "full"))
    assert g[uuid_of(0)]["numa_node"] is None and g[uuid_of(0)]["power_limit_mw"] is None
    assert g[uuid_of(0)]["power_mw"] == 72000 and g[uuid_of(0)]["compute_capability"] == "9.0"
    d = nvml_box.json("plan", UNIT)
    assert d["ok"] is True and len(d["gpus"]) == 1


def test_old_driver_nvlink_unknown(nvml_box, fake_nvml_old_lib):
    """Without nvmlDeviceGetP2PStatus, NVLink is unknown: prefer-nvlink still places 2 GPUs and
    says NVLink is unknown; require-nvlink refuses (69) for the same reason."""
    nvml_box.lib = fake_nvml_old_lib
    nvml_box.write_gpus([gpu_desc(0, nvlink={"peers": {"1": 4}}), gpu_desc(1)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            gpus: 2
            topology: prefer-nvlink
          - match: "req@*.service"
            gpus: 2
            topology: require-nvlink
        """, inventory="nvml")
    d = nvml_box.json("plan", UNIT)
    assert sorted(d["gpus"]) == [uuid_of(0), uuid_of(1)]
    assert any("NVLink is unknown" in n for n in d["notes"]), d["notes"]
    d = nvml_box.json("plan", "req@a.service", expect=69)
    assert "NVLink is unknown" in d["summary"]


# -- processes -------------------------------------------------------------------------------------
MISMATCH = {"nvmlDeviceGetComputeRunningProcesses": "FUNCTION_NOT_FOUND"}


def test_fault_injection_really_raises_library_mismatch(nvml_box):
    """Ground truth for the next tests: with this injection, pynvml's version-checked wrapper
    (which calls nvmlDeviceGetComputeRunningProcesses_v3) raises NVMLLibraryMismatchError,
    which is not an NVMLError."""
    nvml_box.write_gpus([gpu_desc(0, errors=MISMATCH)])
    code = ("import pynvml as N\n"
            "N.nvmlInit()\n"
            "h = N.nvmlDeviceGetHandleByIndex(0)\n"
            "try:\n"
            "    N.nvmlDeviceGetComputeRunningProcesses(h)\n"
            "except N.NVMLLibraryMismatchError as e:\n"
            "    print('mismatch', isinstance(e, N.NVMLError))\n"
            "try:\n"
            "    N.nvmlDeviceGetComputeRunningProcesses_v3(h)\n"
            "except N.NVMLError_FunctionNotFound:\n"
            "    print('v3 function-not-found')\n")
    r = subprocess.run([sys.executable, "-c", code], env=nvml_box.env(), capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split("\n")[:2] == ["mismatch False", "v3 function-not-found"], (r.stdout, r.stderr)


def test_library_mismatch_on_processes_is_handled(nvml_box):
    """status asks for processes: the mismatch becomes a problem, not a traceback; plan, which
    does not need processes, does not even ask, and reports nothing."""
    nvml_box.write_gpus([gpu_desc(0, errors=MISMATCH), gpu_desc(1)]).write_policy(ONE_GPU, inventory="nvml")
    r = nvml_box.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    st = json.loads(r.stdout)["gpus"]
    assert any("processes" in p and "versions do not match" in p for p in row_of(st, uuid_of(0))["problems"])
    assert row_of(st, uuid_of(1))["problems"] == []
    r = nvml_box.cli("status")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    # only fetched when needed
    (plain, _) = dump(nvml_box)
    assert plain["processes"] is None and plain["problems"] == []
    (with_procs, _) = dump(nvml_box, "processes")
    assert with_procs["processes"] is None and with_procs["problems"]
    d = nvml_box.json("plan", UNIT)
    assert d["ok"] is True


def test_restart_counts_own_processes_memory_as_free(nvml_box):
    """A unit's previous instance holds 20 GiB (the driver lists the lease holder's pid): a replan
    for the same unit counts it as free; another unit does not."""
    nvml_box.write_gpus([gpu_desc(0)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            min_free_memory: 10GiB
        """, inventory="nvml")
    r = nvml_box.cli("allocate", UNIT, "--holder-pid", str(os.getpid()))
    assert r.returncode == 0, r.stderr
    nvml_box.write_gpus([gpu_desc(0, memory_used="20GiB",
                                  processes=[{"pid": os.getpid(), "used_memory": "20GiB"}])])
    d = nvml_box.json("plan", UNIT)
    assert d["gpus"] == [uuid_of(0)]
    d = nvml_box.json("plan", "llm@b.service", expect=69)
    assert set(codes(verdict(d, uuid_of(0)))) == {"leased", "memory"}


def test_restart_with_library_mismatch_does_not_crash(nvml_box):
    """Same restart, but the process query raises NVMLLibraryMismatchError: no traceback; the
    own memory cannot be identified so it is not counted as free (refused, 69)."""
    nvml_box.write_gpus([gpu_desc(0)])
    nvml_box.write_policy("""\
        services:
          - match: "llm@*.service"
            min_free_memory: 10GiB
        """, inventory="nvml")
    assert nvml_box.cli("allocate", UNIT, "--holder-pid", str(os.getpid())).returncode == 0
    nvml_box.write_gpus([gpu_desc(0, memory_used="20GiB", errors=MISMATCH,
                                  processes=[{"pid": os.getpid(), "used_memory": "20GiB"}])])
    r = nvml_box.cli("plan", UNIT, "--json")
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert codes(verdict(json.loads(r.stdout), uuid_of(0))) == ["memory"]


# -- NVLink and PCIe topology ----------------------------------------------------------------------
TOPO_POLICY = """\
services:
  - match: "tp@*.service"
    gpus: 2
    topology: prefer-nvlink
  - match: "req@*.service"
    gpus: 2
    topology: require-nvlink
  - match: "any@*.service"
    gpus: 2
"""


def nvlink_box(box):
    """4 GPUs; only 2 and 3 are NVLink peers; the admin ranks 0, 1, 2, 3."""
    box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2, nvlink={"peers": {"3": 4}}), gpu_desc(3)])
    box.write_policy(TOPO_POLICY, inventory="nvml")
    r = box.cli("priority", "order", "0", "1", "2", "3")
    assert r.returncode == 0, r.stderr
    return box


def test_driver_reports_nvlink_peers(nvml_box):
    """nvmlDeviceGetP2PStatus(NVLINK) tells 2<->3 apart from 0/1, mirrored on both sides."""
    g = by_uuid(dump(nvlink_box(nvml_box), "topology"))
    assert g[uuid_of(2)]["nvlink_peers"] == [uuid_of(3)]
    assert g[uuid_of(3)]["nvlink_peers"] == [uuid_of(2)]
    assert g[uuid_of(0)]["nvlink_peers"] == [] and g[uuid_of(1)]["nvlink_peers"] == []


def test_prefer_nvlink_beats_admin_priority(nvml_box):
    """prefer-nvlink picks the NVLink pair 2+3 though the admin ranks 0 and 1 first; with
    topology: any the admin's 0 and 1 win."""
    nvlink_box(nvml_box)
    d = nvml_box.json("plan", "tp@a.service")
    assert d["gpus"] == [uuid_of(2), uuid_of(3)]
    assert any("NVLink" in n for n in d["notes"])
    assert [verdict(d, uuid_of(i))["priority"] for i in range(4)] == [0, 1, 2, 3]
    assert nvml_box.json("plan", "any@a.service")["gpus"] == [uuid_of(0), uuid_of(1)]


def test_require_nvlink_refused_when_pair_is_leased(nvml_box):
    """require-nvlink: with 2 and 3 leased by another unit, no NVLink pair is free: exit 69."""
    nvlink_box(nvml_box)
    assert nvml_box.json("plan", "req@b.service")["gpus"] == [uuid_of(2), uuid_of(3)]
    r = nvml_box.cli("allocate", "tp@first.service", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gpus"] == [uuid_of(2), uuid_of(3)]
    d = nvml_box.json("plan", "req@b.service", expect=69)
    assert d["gpus"] == [] and d["ok"] is False
    assert codes(verdict(d, uuid_of(2))) == ["leased"] and codes(verdict(d, uuid_of(3))) == ["leased"]
    assert "require-nvlink" in d["summary"]
    r = nvml_box.cli("plan", "req@b.service")
    assert r.returncode == 69


def test_p2p_failure_on_one_gpu_keeps_known_nvlink(nvml_box):
    """The NVLink query fails only for pairs with GPU 0: the 2<->3 link the driver did report
    must still count, so require-nvlink and prefer-nvlink pick 2+3."""
    nvml_box.write_gpus([gpu_desc(0, errors={"nvmlDeviceGetP2PStatus": "UNKNOWN"}), gpu_desc(1),
                         gpu_desc(2, nvlink={"peers": {"3": 4}}), gpu_desc(3)])
    nvml_box.write_policy(TOPO_POLICY, inventory="nvml")
    r = nvml_box.cli("plan", "req@a.service", "--json")
    assert "Traceback" not in r.stderr
    d = json.loads(r.stdout)
    assert r.returncode == 0, d["summary"]
    assert d["gpus"] == [uuid_of(2), uuid_of(3)]
    assert nvml_box.json("plan", "tp@a.service")["gpus"] == [uuid_of(2), uuid_of(3)]


def test_pcie_topology_from_driver_groups_gpus(nvml_box):
    """No NVLink: prefer-nvlink falls back to the PCIe tree the driver reports: 1 and 3 share a
    switch (PXB), every other pair is SYSTEM apart, so 1+3 win over the admin's 0+1."""
    nvml_box.write_gpus([gpu_desc(0, numa_node=0), gpu_desc(1, numa_node=1, topology={"3": "PXB"}),
                         gpu_desc(2, numa_node=2), gpu_desc(3, numa_node=3)])
    nvml_box.write_policy(TOPO_POLICY, inventory="nvml")
    assert nvml_box.cli("priority", "order", "0", "1", "2", "3").returncode == 0
    g = by_uuid(dump(nvml_box, "topology"))
    assert g[uuid_of(1)]["topology"][uuid_of(3)] == 20 and g[uuid_of(3)]["topology"][uuid_of(1)] == 20
    assert g[uuid_of(0)]["topology"][uuid_of(1)] == 50
    d = nvml_box.json("plan", "tp@a.service")
    assert d["gpus"] == [uuid_of(1), uuid_of(3)]
    assert any("PCIe switch" in n for n in d["notes"]), d["notes"]
    assert nvml_box.json("plan", "req@a.service", expect=69)["gpus"] == []


# -- PCI bus ordering --------------------------------------------------------------------------------
def test_visible_devices_index_uses_pci_bus_order(nvml_box):
    """NVML index order is not PCI bus order: `visible_devices: index` names GPUs by their
    PCI-bus-ordered index, in the admin's order, in CUDA_VISIBLE_DEVICES and CORTEX_GPU_INDICES."""
    nvml_box.write_gpus([gpu_desc(0, pci_bus_id="0000:c1:00.0"), gpu_desc(1, pci_bus_id="0000:41:00.0"),
                         gpu_desc(2, pci_bus_id="0000:01:00.0")])
    nvml_box.write_policy("""\
        services:
          - match: "idx@*.service"
            gpus: 2
            visible_devices: index
          - match: "uid@*.service"
            gpus: 2
        """, inventory="nvml")
    assert nvml_box.cli("priority", "order", "0", "1", "2").returncode == 0
    d = nvml_box.json("plan", "idx@a.service")
    assert d["gpus"] == [uuid_of(0), uuid_of(1)]
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == "2,1"
    assert d["env"]["CORTEX_GPU_INDICES"] == "2,1"
    assert d["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert [verdict(d, uuid_of(i))["cuda_index"] for i in range(3)] == [2, 1, 0]
    assert any("CUDA index differs" in n for n in d["notes"])
    d = nvml_box.json("plan", "uid@a.service")
    assert d["env"]["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(0)},{uuid_of(1)}"
    assert d["env"]["CORTEX_GPU_INDICES"] == "2,1"


def test_a_decision_asks_the_driver_only_what_it_uses(nvml_box):
    """Power and compute capability are asked for by `status`, never by a decision: a failing
    power query shows in status but is not even made on the start path."""
    nvml_box.write_gpus([gpu_desc(0, errors={"nvmlDeviceGetPowerUsage": "UNKNOWN",
                                              "nvmlDeviceGetCudaComputeCapability": "UNKNOWN"})])
    nvml_box.write_policy(ONE_GPU, inventory="nvml")
    (lean,) = dump(nvml_box)
    (full,) = dump(nvml_box, "full")
    assert lean["problems"] == []
    assert sorted(full["problems"]) == ["compute capability: Unknown Error", "power: Unknown Error"]
    assert any(p == "power: Unknown Error" for p in rows(nvml_box)[0]["problems"])
