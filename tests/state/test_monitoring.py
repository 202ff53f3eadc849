"""What the runtime monitor keeps in the state (cortex_hook.state.monitoring): schema v4 and its
migration from v3, drains that say who made them (the monitor never replaces or lifts an admin's),
the trouble table read within a window, the restart count, and the view and a rebuilt database
carrying both."""
import os
import sqlite3
import time

import pytest

from cortex_hook.model import Drain, Trouble
from cortex_hook.state import SCHEMA_VERSION, State, monitoring
from cortex_hook.state.schema import MIGRATIONS, statements
from cortex_hook.state.view import StateView

from ..helpers.box import query, uuid_of

A, B, C = uuid_of(0), uuid_of(1), uuid_of(2)


def version_3_database(path):
    """A database as cortex-hook left it before the monitor: schema v3, an admin's drain on A."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        for statement in statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO drain (uuid, reason, since) VALUES (?, 'fan noise', 100.0)", (A,))
    conn.execute("INSERT INTO priority (uuid, rank, set_at) VALUES (?, 0, 100.0)", (B,))
    conn.commit()
    conn.close()


def test_a_version_3_database_migrates_and_its_drains_are_the_admins(tmp_path):
    path = str(tmp_path / "state.db")
    version_3_database(path)
    with State.open(path) as state:
        assert state.snapshot().drains == {A: Drain(A, "fan noise", 100.0, "admin", "")}
        assert [u for u, _, _ in state.priorities()] == [B]
        assert not monitoring.drain_by_monitor(state, A, "XID 79 at noon", "XID 79")  # the admin's stays
        assert monitoring.drain_by_monitor(state, C, "XID 79 at noon", "XID 79")
        monitoring.record_trouble(state, B, "xid", 1, "94")
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "SELECT uuid, source, detail FROM drain ORDER BY uuid") == [(A, "admin", ""),
                                                                                  (C, "monitor", "XID 79")]
    assert query(path, "SELECT uuid, kind, count, detail FROM trouble") == [(B, "xid", 1, "94")]


def test_the_schema_refuses_a_drain_from_nobody_it_knows(db):
    with pytest.raises(sqlite3.IntegrityError), db.write() as c:
        c.execute("INSERT INTO drain (uuid, reason, since, source) VALUES (?, 'x', 0, 'someone')", (A,))


def test_the_monitor_never_replaces_or_lifts_an_admins_drain(db):
    db.drain(A, "maintenance")
    assert monitoring.drain_by_monitor(db, A, "XID 79 at noon", "XID 79") is False
    assert monitoring.lift_monitor_drain(db, A) is False
    assert db.snapshot().drains[A].reason == "maintenance" and db.snapshot().drains[A].source == "admin"
    assert monitoring.monitor_drains(db) == []


def test_the_monitor_drains_once_and_lifts_only_its_own(db):
    assert monitoring.drain_by_monitor(db, B, "XID 79 at noon", "XID 79") is True
    assert monitoring.drain_by_monitor(db, B, "XID 48 at one", "XID 48") is False  # drained already: kept
    (drain,) = monitoring.monitor_drains(db)
    assert (drain.uuid, drain.reason, drain.source, drain.detail) == (B, "XID 79 at noon", "monitor", "XID 79")
    assert monitoring.lift_monitor_drain(db, B) is True
    assert db.snapshot().drains == {} and monitoring.lift_monitor_drain(db, B) is False


def test_an_admins_drain_over_the_monitors_makes_it_the_admins_and_undrain_lifts_any(db):
    monitoring.drain_by_monitor(db, A, "XID 79 at noon", "XID 79")
    monitoring.drain_by_monitor(db, B, "XID 48 at one", "XID 48")
    db.drain(A, "keep it out until the RMA")
    assert db.snapshot().drains[A].source == "admin" and db.snapshot().drains[A].detail == ""
    assert monitoring.lift_monitor_drain(db, A) is False  # the monitor no longer lifts it
    assert [d.uuid for d in monitoring.monitor_drains(db)] == [B]
    assert db.undrain(B) is True and db.undrain(A) is True
    assert db.snapshot().drains == {}


def test_trouble_is_read_within_a_window_and_pruned(db):
    monitoring.record_trouble(db, A, "corrected_ecc", 14)
    monitoring.record_trouble(db, B, "throttle", detail="thermal")
    now = time.time()
    with db.write() as c:  # as if seen two hours ago
        c.execute("INSERT INTO trouble (uuid, at, kind, count, detail) VALUES (?, ?, 'xid', 1, '94')", (A, now - 7200))
    assert db.snapshot().trouble == {}  # no window: nothing read (the start path's default)
    recent = db.snapshot(3600).trouble
    assert [(t.kind, t.count) for t in recent[A]] == [("corrected_ecc", 14)]
    assert [(t.kind, t.detail) for t in recent[B]] == [("throttle", "thermal")]
    assert [t.kind for t in monitoring.trouble_since(db, now - 3 * 3600)[A]] == ["xid", "corrected_ecc"]
    assert monitoring.prune_trouble(db, now - 3600) == 1
    assert [t.kind for t in monitoring.trouble_since(db, 0)[A]] == ["corrected_ecc"]
    with pytest.raises(ValueError, match="unknown trouble kind"):
        monitoring.record_trouble(db, A, "melted")


def test_fault_actions_since_counts_the_units_restarts_only(db):
    for unit, action in [("a.service", "fault-restart"), ("a.service", "fault-restart"), ("a.service", "fault-stop"),
                         ("b.service", "fault-restart"), ("a.service", "allocate")]:
        db.record(unit, action, [A], {"gpu": A, "why": "XID 79", "source": "monitor"})
    now = time.time()
    assert monitoring.fault_actions_since(db, "a.service", now - 60) == 2
    with db.write() as c:
        c.execute("UPDATE history SET at = ? WHERE id = 1", (now - 7200,))
    assert monitoring.fault_actions_since(db, "a.service", now - 3600) == 1
    assert monitoring.fault_actions_since(db, "c.service", 0) == 0


def test_the_view_and_a_rebuilt_database_keep_who_drained_and_the_trouble(tmp_path):
    """A user who is not root sees the monitor's drains and trouble through the view; a database
    lost and rebuilt from that view gets them back, the monitor's drains still the monitor's."""
    path, run = str(tmp_path / "state" / "state.db"), str(tmp_path / "run")
    os.makedirs(run, mode=0o755)
    with State.open(path, runtime_dir=run) as state:
        state.drain(A, "maintenance")
        monitoring.drain_by_monitor(state, B, "XID 79 at noon", "XID 79")
        monitoring.record_trouble(state, C, "corrected_ecc", 12)
    view = StateView(run, path).snapshot(3600)
    assert {u: (d.source, d.detail) for u, d in view.drains.items()} == {A: ("admin", ""), B: ("monitor", "XID 79")}
    assert [(t.kind, t.count) for t in view.trouble[C]] == [("corrected_ecc", 12)]
    assert StateView(run, path).snapshot().trouble == {}
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with State.open(path, runtime_dir=run) as state:
        assert [d.uuid for d in monitoring.monitor_drains(state)] == [B]
        assert state.snapshot().drains[A].source == "admin"
        assert isinstance(state.snapshot(3600).trouble[C][0], Trouble)
