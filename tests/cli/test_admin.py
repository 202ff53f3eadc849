"""The admin's commands (cli/admin.py, cli/gpuref.py): the priority order and drains through the
command line, and GPUs named by UUID, index or PCI bus id."""
import pytest

from ..helpers.box import assert_one_line_error, gpu_desc, gpus_box, query, uuid_of


A, B, C, D = uuid_of(0), uuid_of(1), uuid_of(2), uuid_of(3)


# -- naming GPUs on the command line --------------------------------------------------------------
@pytest.mark.parametrize("ref", [uuid_of(2), "2", "0000:12:00.0", "12:00.0", "00000000:12:00.0"])
def test_gpu_named_by_uuid_index_or_pci_bus_id_is_stored_as_uuid(box, ref):
    gpus_box(box, 4)
    r = box.cli("priority", "set", ref, "0")
    assert r.returncode == 0, r.stderr
    assert query(box.state, "SELECT uuid, rank FROM priority") == [(C, 0)]
    r = box.cli("drain", ref, "--reason", "test")
    assert r.returncode == 0, r.stderr
    assert query(box.state, "SELECT uuid, reason FROM drain") == [(C, "test")]
    assert box.cli("undrain", ref).returncode == 0
    assert query(box.state, "SELECT uuid FROM drain") == []


@pytest.mark.parametrize("ref", ["7", uuid_of(0xFF), "0000:7f:00.0", "7f:00.0", "fast-one"])
def test_unknown_gpu_is_usage_error_one_line(box, ref):
    gpus_box(box, 4)
    for args in (["priority", "set", ref, "0"], ["drain", ref, "--reason", "x"], ["undrain", ref],
                 ["priority", "order", "0", ref]):
        r = box.cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "GPU", ref)
    assert query(box.state, "SELECT count(*) FROM priority") == [(0,)]
    assert query(box.state, "SELECT count(*) FROM drain") == [(0,)]


# -- drains -------------------------------------------------------------------------------------
def test_drain_rejects_with_reason_and_undrain_lifts_it(box):
    gpus_box(box, 2)
    assert box.cli("priority", "set", "1", "0").returncode == 0  # GPU 1 would be chosen first
    assert box.json("plan", "x")["gpus"] == [B]
    r = box.cli("drain", "1", "--reason", "fan noise")
    assert r.returncode == 0, r.stderr
    out = box.json("plan", "x")
    assert out["gpus"] == [A]
    by_index = {v["index"]: v for v in out["verdicts"]}
    assert [x["code"] for x in by_index[1]["reasons"]] == ["drained"]
    assert "fan noise" in by_index[1]["reasons"][0]["text"]
    assert by_index[0]["reasons"] == []
    assert {r["uuid"]: r["drain"] for r in box.json("status")["gpus"]} == {A: None, B: "fan noise"}
    r = box.cli("undrain", "1")
    assert r.returncode == 0 and "undrained" in r.stdout
    out = box.json("plan", "x")
    assert out["gpus"] == [B]
    assert all(v["reasons"] == [] for v in out["verdicts"])
    again = box.cli("undrain", "1")
    assert again.returncode == 0 and "was not drained" in again.stdout


def test_an_admins_drain_over_the_monitors_becomes_the_admins_and_undrain_lifts_either(box):
    from cortex_hook.state import State, monitoring
    gpus_box(box, 2)
    with State.open(box.state) as state:
        assert monitoring.drain_by_monitor(state, B, "XID 79 at 12:00:00", "XID 79")
        assert monitoring.drain_by_monitor(state, A, "XID 48 at 12:00:00", "XID 48")
    r = box.cli("drain", "1", "--reason", "RMA ticket 4711")
    assert r.returncode == 0 and "it was the monitor's drain, XID 79" in r.stdout, r.stdout
    assert query(box.state, "SELECT uuid, reason, source, detail FROM drain ORDER BY uuid") == [
        (A, "XID 48 at 12:00:00", "monitor", "XID 48"), (B, "RMA ticket 4711", "admin", "")]
    r = box.cli("undrain", "0")
    assert r.returncode == 0 and "undrained" in r.stdout and "drained by monitor" in r.stdout
    assert query(box.state, "SELECT uuid FROM drain") == [(B,)]


def test_drain_leaves_existing_leases(box):
    gpus_box(box, 1)
    assert box.cli("allocate", "a").returncode == 0
    assert box.cli("drain", "0", "--reason", "maintenance").returncode == 0
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["a.service"]
    r = box.cli("allocate", "b")
    assert r.returncode == 69
    assert_one_line_error(r.stderr, "b.service", "drained")


def test_cli_priority_order_by_index_stores_uuids(box):
    gpus_box(box, 4)
    r = box.cli("priority", "order", "2", "0", "1")
    assert r.returncode == 0, r.stderr
    out = box.json("priority", "list")
    assert [(p["rank"], p["uuid"], p["present"]) for p in out["priority"]] == \
        [(0, C, True), (1, A, True), (2, B, True)]
    assert out["unranked"] == [D]
    assert query(box.state, "SELECT uuid, rank FROM priority ORDER BY rank") == [(C, 0), (A, 1), (B, 2)]
    assert box.cli("priority", "set", "3", "1").returncode == 0
    assert [p["uuid"] for p in box.json("priority", "list")["priority"]] == [C, D, A, B]
    assert box.cli("priority", "clear", "0").returncode == 0
    assert [(p["rank"], p["uuid"]) for p in box.json("priority", "list")["priority"]] == [(0, C), (1, D), (2, B)]
    assert box.cli("priority", "clear").returncode == 0
    out = box.json("priority", "list")
    assert out["priority"] == [] and out["unranked"] == [A, B, C, D]


def test_cli_priority_order_naming_a_gpu_twice_is_usage(box):
    gpus_box(box, 3)
    assert box.cli("priority", "order", "1", "0").returncode == 0
    r = box.cli("priority", "order", "2", uuid_of(2))
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "twice")
    assert query(box.state, "SELECT uuid FROM priority ORDER BY rank") == [(B,), (A,)]


def test_unranked_gpus_rank_after_every_ranked_gpu(box):
    gpus_box(box, 3)
    plain = box.json("plan", "x")
    assert [v["index"] for v in plain["verdicts"]] == [0, 1, 2]  # equal GPUs: index breaks the tie
    assert box.cli("priority", "order", "2", "1").returncode == 0
    out = box.json("plan", "x")
    assert out["gpus"] == [C]
    assert [(v["index"], v["priority"]) for v in out["verdicts"]] == [(2, 0), (1, 1), (0, None)]
    assert len({v["score"] for v in out["verdicts"]}) == 1  # equal scores: the ranks decided


def test_unranked_gpu_loses_even_with_a_better_score(box):
    box.write_gpus([gpu_desc(0, utilization_gpu=0), gpu_desc(1, utilization_gpu=80)])
    box.write_policy("services:\n  - match: '*'\n")
    assert box.json("plan", "x")["gpus"] == [A]
    assert box.cli("priority", "set", "1", "0").returncode == 0
    out = box.json("plan", "x")
    assert out["gpus"] == [B]
    by_index = {v["index"]: v for v in out["verdicts"]}
    assert by_index[0]["score"] > by_index[1]["score"] and by_index[0]["priority"] is None


def test_gpu_that_disappears_keeps_its_rank_and_shows_as_absent(box):
    gpus_box(box, 3)
    assert box.cli("priority", "order", "2", "0", "1").returncode == 0
    box.write_gpus([gpu_desc(1), gpu_desc(2)])  # GPU 0 is gone (fell off the bus)
    out = box.json("priority", "list")
    assert [(p["rank"], p["uuid"], p["present"]) for p in out["priority"]] == \
        [(0, C, True), (1, A, False), (2, B, True)]
    assert out["priority"][1]["name"] == "NVIDIA L4"  # remembered from when it was seen
    assert query(box.state, "SELECT uuid FROM priority ORDER BY rank") == [(C,), (A,), (B,)]
    text = box.cli("priority", "list")
    assert text.returncode == 0
    assert any("absent" in line and A in line for line in text.stdout.splitlines())
    rows = box.json("status")["gpus"]
    absent = [r for r in rows if not r["present"]]
    assert [(r["uuid"], r["priority"], r["label"]) for r in absent] == [(A, 1, "absent")]
    assert sorted(r["uuid"] for r in rows if r["present"]) == [B, C]
    status = box.cli("status")
    assert status.returncode == 0
    assert any(line.startswith("absent") and "not present" in line for line in status.stdout.splitlines())
    assert box.json("plan", "x")["gpus"] == [C]


# -- MIG: one ranking rule in `priority list`, `status`, `plan` ------------------------------------
MIG0, MIG1 = "MIG-00000000-0000-4000-8000-000000000200", "MIG-00000000-0000-4000-8000-000000000201"


def mig_box(box):
    """GPU 0, 1 (an L40S), 3: whole GPUs; GPU 2: an A100 in MIG mode with two 2g.20gb slices."""
    slices = [{"uuid": u, "name": "NVIDIA A100-SXM4-80GB MIG 2g.20gb", "memory_total": "20GiB"} for u in (MIG0, MIG1)]
    box.write_gpus([gpu_desc(0), gpu_desc(1, name="NVIDIA L40S", memory_total="48GiB"),
                    gpu_desc(2, name="NVIDIA A100-SXM4-80GB", memory_total="80GiB", mig_mode=1, mig_devices=slices),
                    gpu_desc(3)])
    box.write_policy("services:\n  - match: 'crit*'\n    class: critical\n  - match: '*'\n")
    return box


def test_mig_instances_rank_alike_in_priority_list_status_and_plan(box):
    """After `priority order 2 3 0 1` the slices of GPU 2 take its rank 0 in every view; `priority
    list` used to call them unranked while `plan` and `status` said prio 0."""
    mig_box(box)
    assert box.cli("priority", "order", "2", "3", "0", "1").returncode == 0
    out = box.json("priority", "list")
    assert MIG0 not in out["unranked"] and MIG1 not in out["unranked"]
    assert [(i["label"], i["rank"], i["from"]) for i in out["inherited"]] == \
        [("GPU 2 MIG 0", 0, C), ("GPU 2 MIG 1", 0, C)]
    status = {r["uuid"]: (r["priority"], r["priority_from"]) for r in box.json("status")["gpus"]}
    assert status[MIG0] == status[MIG1] == (0, C)
    plan = {v["uuid"]: (v["priority"], v["priority_from"]) for v in box.json("plan", "crit")["verdicts"]}
    assert plan[MIG0] == (0, C)
    text = box.cli("priority", "list").stdout.splitlines()
    (line,) = [l for l in text if MIG0 in l]
    assert line.split()[:6] == ["0", "from", "GPU", "2", "GPU", "2"] and "GPU 2 MIG 0" in line
    plan_text = box.cli("plan", "crit").stdout
    assert "MIG slice" in plan_text and "ranks 0 from GPU 2" in plan_text  # why a slice, not the L40S


def test_rank_set_on_a_mig_uuid_is_labelled_with_its_instance(box):
    mig_box(box)
    assert box.cli("priority", "set", MIG1, "0").returncode == 0
    (row,) = box.json("priority", "list")["priority"]
    assert (row["uuid"], row["label"]) == (MIG1, "GPU 2 MIG 1")
    (line,) = [l for l in box.cli("priority", "list").stdout.splitlines() if MIG1 in l]
    assert "GPU 2 MIG 1" in line


@pytest.mark.parametrize("ref", ["GPU 2 MIG 1", "2 MIG 1", "gpu 2 mig 1"])
def test_mig_instance_named_by_its_label(box, ref):
    mig_box(box)
    r = box.cli("priority", "set", ref, "0")
    assert r.returncode == 0, r.stderr
    assert query(box.state, "SELECT uuid FROM priority") == [(MIG1,)]


# -- UUID prefixes, as CUDA_VISIBLE_DEVICES takes them -------------------------------------------
U1, U2, U3 = ("GPU-1a2b3c4d-5e6f-4a1b-8c2d-0123456789ab", "GPU-1a2b3c4d-9999-4a1b-8c2d-0123456789ab",
              "GPU-77aa0000-5e6f-4a1b-8c2d-0123456789ab")


def realistic_box(box):
    box.write_gpus([gpu_desc(i, uuid=u) for i, u in enumerate((U1, U2, U3))])
    box.write_policy("services:\n  - match: '*'\n")
    return box


def test_gpu_named_by_a_unique_uuid_prefix(box):
    realistic_box(box)
    for args in (["priority", "set", "GPU-77aa", "0"], ["drain", "GPU-1a2b3c4d-9", "--reason", "x"]):
        r = box.cli(*args)
        assert r.returncode == 0, (args, r.stderr)
    assert query(box.state, "SELECT uuid FROM priority") == [(U3,)]
    assert query(box.state, "SELECT uuid FROM drain") == [(U2,)]
    assert box.cli("undrain", "GPU-1a2b3c4d-99").returncode == 0
    assert query(box.state, "SELECT uuid FROM drain") == []


def test_ambiguous_uuid_prefix_is_one_line_naming_the_candidates(box):
    realistic_box(box)
    for args in (["priority", "set", "GPU-1a2b", "0"], ["drain", "GPU-1a2b", "--reason", "x"]):
        r = box.cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "GPU-1a2b", "ambiguous", U1, U2, "GPU 0", "GPU 1")
    r = box.cli("drain", "GPU-ffff", "--reason", "x")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "GPU-ffff", "no GPU's UUID starts with it")
    assert query(box.state, "SELECT count(*) FROM drain") == [(0,)]


def test_every_uuid_status_shows_is_taken_back(box):
    """`status` used to show `GPU-1a2b3c4d…89ab`, which no command accepts."""
    realistic_box(box)
    lines = box.cli("status").stdout.splitlines()
    shown = [line.split()[1] for line in lines[1:4]]
    assert shown == ["GPU-1a2b3c4d-5", "GPU-1a2b3c4d-9", "GPU-77aa0000"]
    for prefix, full in zip(shown, (U1, U2, U3)):
        assert box.cli("drain", prefix, "--reason", "check").returncode == 0
        assert query(box.state, "SELECT uuid FROM drain") == [(full,)]
        assert box.cli("undrain", prefix).returncode == 0
