"""The state database: schema and WAL, priorities, drains, GPU references, history, broken and
unsafe files, lease holders and reaping, release, migrations.

In-process tests use `cortex_hook.state.State` on real SQLite files; where the exit code matters
the real CLI runs as a subprocess against a Box.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_hook.holders import Holder, boot_id, pid_start_time
from cortex_hook.state import SCHEMA_VERSION, State

from .helpers.box import assert_one_line_error, assert_state_intact, gpu_desc, uuid_of

A, B, C, D = uuid_of(0), uuid_of(1), uuid_of(2), uuid_of(3)


def fingerprint(path):
    """(sha256, size) of a file."""
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), len(data)


def query(path, sql, args=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def gpus_box(box, n=3, policy="services:\n  - match: '*'\n", **kw):
    box.write_gpus([gpu_desc(i, **kw) for i in range(n)])
    box.write_policy(policy)
    return box


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "state" / "state.db")
    with State.open(path) as state:
        yield state


# -- a fresh database ---------------------------------------------------------------------------
def test_fresh_database_is_wal_current_schema_and_0644(tmp_path):
    path = str(tmp_path / "var" / "state.db")
    old = os.umask(0o077)  # a tight umask: the 0644 must come from cortex-hook, not from us
    try:
        State.open(path).close()
    finally:
        os.umask(old)
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert os.stat(path).st_mode & 0o7777 == 0o644
    tables = {n for (n,) in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"priority", "drain", "lease", "history", "gpu_seen"} <= tables


# -- priorities ---------------------------------------------------------------------------------
def test_priority_order_is_kept_exactly_as_given(db):
    db.set_priority_order([C, A, B])  # deliberately not sorted
    assert [(u, r) for u, r, _ in db.priorities()] == [(C, 0), (A, 1), (B, 2)]
    db.set_priority_order([B, C, A])  # replaces, does not merge
    assert [u for u, _, _ in db.priorities()] == [B, C, A]
    with pytest.raises(ValueError):
        db.set_priority_order([A, A])
    assert [u for u, _, _ in db.priorities()] == [B, C, A]


def test_set_priority_moves_and_shifts(db):
    db.set_priority_order([C, A, B])
    db.set_priority(B, 0)
    assert [(u, r) for u, r, _ in db.priorities()] == [(B, 0), (C, 1), (A, 2)]
    db.set_priority(B, 99)  # past the end: last
    assert [(u, r) for u, r, _ in db.priorities()] == [(C, 0), (A, 1), (B, 2)]
    db.set_priority(D, 1)  # a GPU not ranked yet is inserted, the rest shift
    assert [(u, r) for u, r, _ in db.priorities()] == [(C, 0), (D, 1), (A, 2), (B, 3)]


def test_clearing_priorities_keeps_the_others_order(db):
    db.set_priority_order([D, C, A, B])
    db.clear_priorities({C})
    assert [(u, r) for u, r, _ in db.priorities()] == [(D, 0), (A, 1), (B, 2)]
    db.clear_priorities({D, B})
    assert [(u, r) for u, r, _ in db.priorities()] == [(A, 0)]
    db.set_priority_order([B, A])
    db.clear_priorities()
    assert db.priorities() == []


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


# -- history ------------------------------------------------------------------------------------
def test_state_history_keeps_only_the_last_limit_rows(db):
    for i in range(20):
        db.record(f"u{i}", "allocate", [A], {"i": i}, 5)
    rows = db.history(limit=100)
    assert [r["detail"]["i"] for r in rows] == [15, 16, 17, 18, 19]  # newest last
    assert db.conn.execute("SELECT count(*) FROM history").fetchone() == (5,)


def test_history_is_bounded_by_the_policy_limit(box):
    gpus_box(box, 2, policy="history_limit: 5\nservices:\n  - match: '*'\n")
    for i in range(20):
        assert box.cli("allocate", f"c{i}").returncode == 0
        assert box.cli("release", f"c{i}").returncode == 0
    rows = box.json("history", "-n", "1000")["history"]
    assert len(rows) <= 5, [(r["id"], r["action"], r["unit"]) for r in rows]
    assert query(box.state, "SELECT count(*) FROM history")[0][0] <= 5
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids)
    assert (rows[-1]["action"], rows[-1]["unit"]) == ("release", "c19.service")  # newest last
    assert (rows[-2]["action"], rows[-2]["unit"]) == ("allocate", "c19.service")


def test_reaping_by_hand_respects_the_policy_history_limit(box):
    gpus_box(box, 4, policy="history_limit: 3\nservices:\n  - match: '*'\n")
    holders = [_holder_process() for _ in range(3)]
    try:
        for i, h in enumerate(holders):
            assert box.cli("allocate", f"h{i}", "--holder-pid", str(h.pid)).returncode == 0
    finally:
        for h in holders:
            _end(h)
    assert len(box.json("leases", "--reap")["reaped"]) == 3
    rows = box.json("history", "-n", "1000")["history"]
    assert len(rows) <= 3, [(r["action"], r["unit"]) for r in rows]
    assert [r["action"] for r in rows] == ["reap"] * len(rows)


def test_history_json_newest_last_and_per_unit(box):
    gpus_box(box, 2)
    for unit in ("a", "b", "a"):
        assert box.cli("allocate", unit).returncode == 0
    assert box.cli("release", "a").returncode == 0
    rows = box.json("history")["history"]
    assert [(r["action"], r["unit"]) for r in rows] == [
        ("allocate", "a.service"), ("allocate", "b.service"), ("allocate", "a.service"), ("release", "a.service")]
    assert [r["action"] for r in box.json("history", "a")["history"]] == ["allocate", "allocate", "release"]
    assert [r["unit"] for r in box.json("history", "-n", "2")["history"]] == ["a.service", "a.service"]


# -- broken state files: exit 74, file untouched --------------------------------------------------
def _real_database(box):
    """A real state database with some content (many history rows, so it spans many pages)."""
    gpus_box(box, 2)
    assert box.cli("priority", "order", "1", "0").returncode == 0
    assert box.cli("drain", "1", "--reason", "x" * 200).returncode == 0
    assert box.cli("allocate", "keep").returncode == 0
    with State.open(box.state) as state:
        for i in range(300):
            state.record(f"filler{i}.service", "allocate", [A], {"pad": "y" * 100}, 1000)
    assert query(box.state, "PRAGMA page_count")[0][0] > 10


def _make_garbage(box):
    gpus_box(box, 2)
    os.makedirs(os.path.dirname(box.state))
    with open(box.state, "wb") as f:
        f.write(b"this is not an SQLite database\n" * 200)


def _make_truncated(box):
    _real_database(box)
    with open(box.state, "rb") as f:
        data = f.read()
    with open(box.state, "wb") as f:
        f.write(data[: len(data) // 2])


def _make_truncated_mid_page(box):
    _real_database(box)
    with open(box.state, "rb") as f:
        data = f.read()
    with open(box.state, "wb") as f:
        f.write(data[: 4096 * 3 + 1000])


def _make_newer(box):
    _real_database(box)
    conn = sqlite3.connect(box.state)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


BROKEN = {"garbage": (_make_garbage, "not a usable SQLite database"),
          "truncated": (_make_truncated, "not a usable SQLite database"),
          "truncated-mid-page": (_make_truncated_mid_page, "not a usable SQLite database"),
          "newer-schema": (_make_newer, "newer")}
COMMANDS = [["allocate", "chat"], ["release", "keep"], ["status"], ["leases", "--reap"], ["history"],
            ["priority", "list"], ["priority", "set", "0", "0"], ["drain", "0", "--reason", "r"], ["plan", "chat"]]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_state_is_exit_74_and_never_modified(box, kind):
    make, needle = BROKEN[kind]
    make(box)
    before = fingerprint(box.state)
    listing = sorted(os.listdir(os.path.dirname(box.state)))
    for args in COMMANDS:
        r = box.cli(*args)
        assert r.returncode == 74, (args, r.returncode, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, box.state, needle)
        assert fingerprint(box.state) == before, args
        assert sorted(os.listdir(os.path.dirname(box.state))) == listing, args
    assert not os.path.exists(box.env_file("chat.service"))


def test_newer_schema_message_says_upgrade(box):
    _make_newer(box)
    r = box.cli("leases")
    assert r.returncode == 74
    assert_one_line_error(r.stderr, f"schema version {SCHEMA_VERSION + 1}", "upgrade cortex-hook")


def test_state_path_that_is_a_symlink_is_refused(box, tmp_path):
    gpus_box(box, 2)
    real = tmp_path / "elsewhere" / "real.db"
    with State.open(str(real)):
        pass
    os.makedirs(os.path.dirname(box.state))
    os.symlink(real, box.state)
    before = fingerprint(real)
    for args in (["leases"], ["allocate", "a"], ["status"]):
        r = box.cli(*args)
        assert r.returncode == 74, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "symlink")
    assert fingerprint(real) == before and os.path.islink(box.state)


# -- unsafe permissions: exit 77 --------------------------------------------------------------------
def _existing_state(box):
    gpus_box(box, 2)
    assert box.cli("allocate", "keep").returncode == 0


@pytest.mark.parametrize("target, change, needle", [
    ("file", lambda p: os.chmod(p, 0o664), "writable by group or others"),
    ("file", lambda p: os.chmod(p, 0o646), "writable by group or others"),
    ("file", lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
    ("dir", lambda p: os.chmod(p, 0o775), "writable by group or others"),
    ("dir", lambda p: os.chmod(p, 0o757), "writable by group or others"),
    ("dir", lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
])
def test_unsafe_state_file_or_directory_is_exit_77(box, target, change, needle):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    _existing_state(box)
    path = box.state if target == "file" else os.path.dirname(box.state)
    change(path)
    before = fingerprint(box.state)
    for args in (["leases"], ["allocate", "other"], ["release", "keep"], ["status"]):
        r = box.cli(*args)
        assert r.returncode == 77, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, needle)
    assert fingerprint(box.state) == before
    assert [l for l in query(box.state, "SELECT unit FROM lease")] == [("keep.service",)]


def test_unsafe_state_directory_refused_before_creating_the_database(box):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    os.makedirs(os.path.dirname(box.state))
    os.chmod(os.path.dirname(box.state), 0o777)
    r = box.cli("allocate", "a")
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "state directory", "writable by group or others")
    assert not os.path.exists(box.state)


@pytest.mark.parametrize("change, needle", [
    (lambda p: os.chmod(p, 0o664), "writable by group or others"),
    (lambda p: os.chmod(p, 0o646), "writable by group or others"),
    (lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
])
def test_unsafe_policy_file_is_exit_77(box, change, needle):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    change(box.policy)
    for args in (["plan", "a"], ["allocate", "a"], ["status"], ["priority", "set", "0", "0"]):
        r = box.cli(*args)
        assert r.returncode == 77, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "policy", needle)
    assert not os.path.exists(box.env_file("a.service"))
    assert not os.path.exists(box.state) or query(box.state, "SELECT count(*) FROM lease") == [(0,)]


def test_policy_in_a_world_writable_directory_needs_the_sticky_bit(box, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    pdir = tmp_path / "etc"
    pdir.mkdir()
    policy = str(pdir / "policy.yaml")
    with open(box.policy) as f:
        text = f.read().replace("gpus.json", os.path.join(box.root, "gpus.json"))
    with open(policy, "w") as f:
        f.write(text)
    os.chmod(policy, 0o644)
    os.chmod(pdir, 0o777)
    r = box.cli("plan", "a", "--policy", policy)
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "writable by group or others", str(pdir))
    os.chmod(pdir, 0o1777)  # like /tmp: nobody else can replace our root-owned file
    r = box.cli("plan", "a", "--policy", policy)
    assert r.returncode == 0, r.stderr


# -- lease holders and reaping ----------------------------------------------------------------------
def _holder_process():
    """A live process to hold a lease; it runs until its stdin closes."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def _end(proc):
    proc.kill()
    proc.wait()  # reaped: /proc/PID is gone
    assert pid_start_time(proc.pid) is None


def test_lease_of_a_dead_pid_is_listed_dead_and_reaped(box):
    gpus_box(box, 2)
    holder = _holder_process()
    try:
        r = box.cli("allocate", "a", "--holder-pid", str(holder.pid))
        assert r.returncode == 0, r.stderr
        (lease,) = box.json("leases")["leases"]
        assert (lease["unit"], lease["pid"], lease["alive"]) == ("a.service", holder.pid, True)
        assert lease["pid_start"] == pid_start_time(holder.pid) and lease["boot_id"] == boot_id()
        assert box.json("leases", "--reap")["reaped"] == []  # a live holder is kept
    finally:
        _end(holder)
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
    holder = _holder_process()
    try:
        assert box.cli("allocate", "a", "--holder-pid", str(holder.pid)).returncode == 0
        r = box.cli("allocate", "b")
        assert r.returncode == 69  # GPU 0 is held while its holder lives
        assert_one_line_error(r.stderr, "b.service")
    finally:
        _end(holder)
    out = box.json("allocate", "b")
    assert out["gpus"] == [A]
    assert [(l["unit"], l["uuid"]) for l in box.json("leases")["leases"]] == [("b.service", A)]
    actions = [(h["action"], h["unit"]) for h in box.json("history")["history"]]
    assert actions[-2:] == [("reap", "a.service"), ("allocate", "b.service")]


def test_plan_ignores_dead_leases_without_changing_anything(box):
    gpus_box(box, 1)
    holder = _holder_process()
    try:
        assert box.cli("allocate", "a", "--holder-pid", str(holder.pid)).returncode == 0
    finally:
        _end(holder)
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


# -- migrations ---------------------------------------------------------------------------------
def test_empty_database_at_version_0_is_migrated(tmp_path):
    path = str(tmp_path / "state.db")
    open(path, "wb").close()  # an empty file is an SQLite database with user_version 0
    assert query(path, "PRAGMA user_version") == [(0,)]
    with State.open(path) as state:
        state.set_priority_order([B, A])
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "SELECT uuid FROM priority ORDER BY rank") == [(B,), (A,)]


def test_version_0_database_is_not_migrated_by_a_read_only_command(box):
    gpus_box(box, 1)
    os.makedirs(os.path.dirname(box.state))
    open(box.state, "wb").close()
    r = box.cli("history")
    assert r.returncode == 74
    assert_one_line_error(r.stderr, "schema version 0", "migrate")
    assert os.path.getsize(box.state) == 0


def test_current_database_is_not_migrated_again(tmp_path):
    path = str(tmp_path / "state.db")
    with State.open(path) as state:
        state.set_priority_order([C, A])
        state.drain(B, "kept")
        state.add_leases("u.service", [A], "exclusive", Holder(pid=None, pid_start=None, boot_id=None))
        state.record("u.service", "allocate", [A], {"n": 1}, 100)
    schema = query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with State.open(path) as state:  # opened again: nothing to migrate, everything survives
        assert [u for u, _, _ in state.priorities()] == [C, A]
        assert list(state.snapshot().drains) == [B]
        assert [(l.unit, l.uuid) for l in state.leases()] == [("u.service", A)]
        assert [h["detail"] for h in state.history()] == [{"n": 1}]
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema


def test_exclusive_index_refuses_a_second_exclusive_lease(db):
    """The schema itself keeps two exclusive leases off one GPU, whatever a planner decides."""
    nobody = Holder(pid=None, pid_start=None, boot_id=None)
    db.add_leases("a.service", [A], "exclusive", nobody)
    with pytest.raises(sqlite3.IntegrityError):
        db.add_leases("b.service", [A], "exclusive", nobody)
    db.add_leases("c.service", [A], "shared", nobody)  # the index does not cover shared leases
    assert [(l.unit, l.sharing) for l in db.leases()] == [("a.service", "exclusive"), ("c.service", "shared")]


# -- history detail: SQLite writes the JSON -----------------------------------------------------
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))  # UTF-8 can hold it
_DETAIL = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _DETAIL, max_size=5))
def test_history_detail_round_trips_through_sqlites_json(detail):
    """What `record` stores through json_sql reads back (json.loads) as exactly what was given."""
    import json

    from cortex_hook.state import json_sql
    conn = sqlite3.connect(":memory:")
    params = []
    text = conn.execute("SELECT " + json_sql(detail, params), params).fetchone()[0]
    assert json.loads(text) == detail


def test_history_rows_read_back_with_their_detail(tmp_path):
    with State.open(str(tmp_path / "s.db"), check_owner=False) as state:
        state.record("a.service", "allocate", [A], {"summary": 'it "works"\n', "env": {"X": "1"}, "fallback": None})
        state.record("a.service", "release", [A], {})
        rows = state.history()
    assert [(r["action"], r["detail"]) for r in rows] == [
        ("allocate", {"summary": 'it "works"\n', "env": {"X": "1"}, "fallback": None}), ("release", {})]


# -- the start path leaves its connection to the process exit -----------------------------------
def test_start_path_leaves_the_wal_for_the_next_command_to_checkpoint(box):
    """`allocate`/`release` end with os._exit and do not checkpoint: their commits stay in the WAL,
    which every reader sees; the next ordinary command that closes last checkpoints it away."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    wal = box.state + "-wal"
    assert box.cli("allocate", "a").returncode == 0
    assert os.path.getsize(wal) > 0
    conn = sqlite3.connect(f"file:{box.state}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT unit, uuid FROM lease").fetchall() == [("a.service", uuid_of(0))]
    finally:
        conn.close()
    assert box.json("leases")["leases"][0]["unit"] == "a.service"
    assert not os.path.exists(wal)  # `leases` closed last: checkpointed and removed
    assert box.cli("release", "a").returncode == 0
    assert os.path.getsize(wal) > 0 and box.json("leases")["leases"] == []
    assert_state_intact(box.state)


def test_in_process_main_closes_its_connection(box):
    """Only the console script (cli.run) leaves the connection open; main() called in a process
    that goes on (a test, a tool) closes it as every other command does."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    code = "import sys\nfrom cortex_hook.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    r = subprocess.run([sys.executable, "-c", code, "allocate", "a"], env=box.env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(box.state + "-wal")  # closed: checkpointed and removed
    assert box.json("leases")["leases"][0]["unit"] == "a.service"  # and committed
