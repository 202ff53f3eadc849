"""Who holds a lease and whether that holder is alive (holders.py): dead pids, reused pids,
another boot; reaping by `allocate` and by `leases --reap`, and `release`."""
import os
from cortex_hook.holders import Holder, boot_id, pid_start_time
from cortex_hook.state import State
from .helpers.box import assert_one_line_error, gpus_box, query, uuid_of
from .helpers.processes import HolderProcess


A, B, C, D = uuid_of(0), uuid_of(1), uuid_of(2), uuid_of(3)


# -- lease holders and reaping ----------------------------------------------------------------------
def test_lease_of_a_dead_pid_is_listed_dead_and_reaped(box):
    gpus_box(box, 2)
    holder = HolderProcess()
    try:
        r = box.cli("allocate", "a", "--holder-pid", str(holder.pid))
        assert r.returncode == 0, r.stderr
        (lease,) = box.json("leases")["leases"]
        assert (lease["unit"], lease["pid"], lease["alive"]) == ("a.service", holder.pid, True)
        assert lease["pid_start"] == pid_start_time(holder.pid) and lease["boot_id"] == boot_id()
        assert box.json("leases", "--reap")["reaped"] == []  # a live holder is kept
    finally:
        holder.end()
    (lease,) = box.json("leases")["leases"]
    assert lease["alive"] is False
    text = box.cli("leases")
    assert "holder gone" in text.stdout
    out = box.json("leases", "--reap")
    assert out["reaped"] == [{"unit": "a.service", "uuid": A}] and out["leases"] == []
    assert box.json("leases")["leases"] == []
    assert [(h["action"], h["unit"]) for h in box.json("history")["history"]][-1] == ("reap", "a.service")


def _lease_row(state_path, unit, uuid, holder):
    with State.open(state_path) as state:
        state.add_leases(unit, [uuid], "exclusive", holder)


def test_holder_identity_decides_alive(box):
    """Same pid with another start time (pid reused) or another boot id is dead; the true one lives."""
    gpus_box(box, 4)
    assert box.cli("leases").returncode == 0  # creates the database
    me = os.getpid()
    start = pid_start_time(me)
    assert start is not None
    _lease_row(box.state, "alive.service", A, Holder(pid=me, pid_start=start, boot_id=boot_id()))
    _lease_row(box.state, "reused.service", B, Holder(pid=me, pid_start=start + 12345, boot_id=boot_id()))
    _lease_row(box.state, "lastboot.service", C,
               Holder(pid=me, pid_start=start, boot_id="00000000-0000-4000-8000-00000000beef"))
    _lease_row(box.state, "byhand.service", D, Holder(pid=None, pid_start=None, boot_id=None))
    alive = {l["unit"]: l["alive"] for l in box.json("leases")["leases"]}
    assert alive == {"alive.service": True, "reused.service": False, "lastboot.service": False,
                     "byhand.service": True}
    out = box.json("leases", "--reap")
    assert sorted(x["unit"] for x in out["reaped"]) == ["lastboot.service", "reused.service"]
    assert sorted(l["unit"] for l in out["leases"]) == ["alive.service", "byhand.service"]


def test_allocate_reaps_dead_leases_before_planning(box):
    gpus_box(box, 1)
    holder = HolderProcess()
    try:
        assert box.cli("allocate", "a", "--holder-pid", str(holder.pid)).returncode == 0
        r = box.cli("allocate", "b")
        assert r.returncode == 69  # GPU 0 is held while its holder lives
        assert_one_line_error(r.stderr, "b.service")
    finally:
        holder.end()
    out = box.json("allocate", "b")
    assert out["gpus"] == [A]
    assert [(l["unit"], l["uuid"]) for l in box.json("leases")["leases"]] == [("b.service", A)]
    actions = [(h["action"], h["unit"]) for h in box.json("history")["history"]]
    assert actions[-2:] == [("reap", "a.service"), ("allocate", "b.service")]


def test_plan_ignores_dead_leases_without_changing_anything(box):
    gpus_box(box, 1)
    holder = HolderProcess()
    try:
        assert box.cli("allocate", "a", "--holder-pid", str(holder.pid)).returncode == 0
    finally:
        holder.end()
    before = query(box.state, "SELECT unit, uuid FROM lease")
    assert box.json("plan", "b")["gpus"] == [A]
    assert query(box.state, "SELECT unit, uuid FROM lease") == before == [("a.service", A)]


# -- release ------------------------------------------------------------------------------------
def test_release_is_idempotent_and_removes_the_env_file(box):
    gpus_box(box, 1)
    assert box.cli("allocate", "a").returncode == 0
    assert os.path.exists(box.env_file("a.service"))
    first = box.cli("release", "a")
    assert first.returncode == 0 and first.stdout.strip() == f"a.service: released {A}"
    assert not os.path.exists(box.env_file("a.service"))
    second = box.cli("release", "a")
    assert second.returncode == 0 and second.stdout.strip() == "a.service: held no GPU"
    never = box.cli("release", "never-started")
    assert never.returncode == 0 and "held no GPU" in never.stdout
    assert box.json("leases")["leases"] == []
    releases = [h for h in box.json("history")["history"] if h["action"] == "release"]
    assert [(h["unit"], h["gpus"]) for h in releases] == [("a.service", [A])]


def test_release_removes_a_stale_env_file_without_a_lease(box):
    gpus_box(box, 1)
    os.makedirs(box.runtime)
    with open(box.env_file("a.service"), "w") as f:
        f.write('CUDA_VISIBLE_DEVICES="stale"\n')
    r = box.cli("release", "a")
    assert r.returncode == 0 and "held no GPU" in r.stdout
    assert not os.path.exists(box.env_file("a.service"))
