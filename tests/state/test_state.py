"""The state database in-process (cortex_hook.state): a fresh database, the admin's priority order
kept exactly, bounded history, migrations, the exclusive-lease index, the history detail SQLite
writes as JSON, and the start path leaving its connection to the process exit."""
import os
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_hook.holders import Holder
from cortex_hook.state import SCHEMA_VERSION, State

from ..helpers.box import assert_one_line_error, assert_state_intact, fingerprint, gpu_desc, gpus_box, query, uuid_of
from ..helpers.processes import HolderProcess


A, B, C, D = uuid_of(0), uuid_of(1), uuid_of(2), uuid_of(3)


# -- a fresh database ---------------------------------------------------------------------------
def test_fresh_database_is_wal_current_schema_and_the_owners_alone(tmp_path):
    """0600 in a 0700 directory: nobody else can open it, or its WAL files, even to take a lock."""
    path = str(tmp_path / "var" / "state.db")
    old = os.umask(0o022)  # a loose umask: the 0600 must come from cortex-hook, not from us
    try:
        with State.open(path) as state:
            state.drain(A, "to make a WAL")
            assert {os.stat(path + suffix).st_mode & 0o7777 for suffix in ("", "-wal", "-shm")} == {0o600}
    finally:
        os.umask(old)
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert os.stat(path).st_mode & 0o7777 == 0o600
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
    holders = [HolderProcess() for _ in range(3)]
    try:
        for i, h in enumerate(holders):
            assert box.cli("allocate", f"h{i}", "--holder-pid", str(h.pid)).returncode == 0
    finally:
        for h in holders:
            h.end()
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


# -- migrations ---------------------------------------------------------------------------------
def version_0_database(path):
    """An SQLite database that is not empty and has never been migrated (user_version 0)."""
    query(path, "CREATE TABLE unrelated (x)")
    assert query(path, "PRAGMA user_version") == [(0,)] and os.path.getsize(path) > 0


def test_database_at_version_0_is_migrated(tmp_path):
    path = str(tmp_path / "state.db")
    version_0_database(path)
    with State.open(path) as state:
        state.set_priority_order([B, A])
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "SELECT uuid FROM priority ORDER BY rank") == [(B,), (A,)]


def test_version_0_database_is_not_migrated_by_a_read_only_command(box):
    gpus_box(box, 1)
    os.makedirs(os.path.dirname(box.state))
    version_0_database(box.state)
    before = fingerprint(box.state)
    r = box.cli("history")
    assert r.returncode == 74
    assert_one_line_error(r.stderr, "schema version 0", "migrate")
    assert fingerprint(box.state) == before


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

    from cortex_hook.state.jsonsql import json_sql
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
