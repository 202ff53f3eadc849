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
