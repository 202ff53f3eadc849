"""Making the state database: whole or not at all, root's alone, and never silently empty.

A new database is built under a temporary name (schema, WAL mode, 0600) and linked into place
only if nothing is there yet, so a process racing another never sees a half-made or empty file:
an empty (0-byte) `state.db` is a truncated one, refused like any other broken database.

A database that is missing while units hold GPUs (deleted by hand, a lost disk) is not a fresh
start: every running unit's decision record is still in the runtime dir, and the last view root
published (state/view.py) still holds the priorities, drains and the monitor's trouble. The new
database gets the leases of the units whose lease unit still runs, the priorities, drains,
trouble and GPUs seen of the view, and a `recover` line in the history; the command says so on
stderr, loudly.
"""

import os
import sqlite3

from ..errors import StateError
from ..files import record as records
from ..files.rundir import RECORD_SUFFIX, trusted
from ..holders import Holder, invocation_of
from ..systemd.leaseunit import lease_unit_of
from ..systemd.journal import WARNING, log
from . import view
from .schema import migrate

MODE = 0o600


def create(path, runtime_dir=None):
    """Create the database at PATH (if no other process did first); -> what was recovered into it
    (a sentence, or None for a fresh machine)."""
    tmp = f"{path}.new-{os.getpid()}"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
        _remove(leftover)  # ours, from a killed run with our pid
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            os.chmod(tmp, MODE)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            migrate(conn, 0)
            recovered = _recover(conn, runtime_dir) if runtime_dir else None
            conn.execute("COMMIT")
        finally:
            conn.close()  # checkpoints the WAL into the file and removes it
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None  # another process made it first: its database is the one
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"state {path}: cannot create it: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            _remove(leftover)
    if recovered:
        log(WARNING, f"cortex-hook: state {path} was missing: {recovered}")
    return recovered


def _recover(conn, runtime_dir):
    """Fill a new database from the runtime dir's records and view; -> a sentence, or None."""
    if not trusted(runtime_dir):
        return None
    leases = _live_leases(runtime_dir)
    seen = view.load(runtime_dir) or {}
    if not leases and not seen:
        return None
    conn.executemany("INSERT INTO lease (unit, uuid, sharing, pid, pid_start, boot_id, cgroup, invocation, since, "
                     "holder_unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", leases)
    conn.executemany("INSERT INTO priority (uuid, rank, set_at) VALUES (?, ?, ?)", seen.get("priorities", []))
    conn.executemany("INSERT INTO drain (uuid, reason, since, source, detail) VALUES (?, ?, ?, ?, ?)",
                     [(d["uuid"], d["reason"], d["since"], d.get("source", "admin"), d.get("detail", ""))
                      for d in seen.get("drains", [])])
    conn.executemany("INSERT INTO trouble (uuid, at, kind, count, detail) VALUES (?, ?, ?, ?, ?)",
                     [(t["uuid"], t["at"], t["kind"], t["count"], t["detail"]) for t in seen.get("trouble", [])])
    conn.executemany("INSERT INTO gpu_seen (uuid, idx, name, pci_bus_id, last_seen) VALUES (?, ?, ?, ?, ?)",
                     [(uuid, *row) for uuid, row in seen.get("seen", {}).items()])
    units = sorted({row[0] for row in leases})
    what = (f"restored {len(leases)} lease(s) of {len(units)} running unit(s) from their decision records "
            f"({', '.join(units) or 'none'}), and {len(seen.get('priorities', []))} priorities and "
            f"{len(seen.get('drains', []))} drains from the last view; the history before now is lost")
    conn.execute("INSERT INTO history (at, unit, action, gpus, detail) VALUES (strftime('%s','now'), "
                 "'-', 'recover', ?, json_object('summary', ?))", (",".join(r[1] for r in leases), what))
    return what


def _live_leases(runtime_dir):
    """Lease rows for every unit whose decision record was made by its lease unit as it runs now."""
    rows = []
    for name in sorted(os.listdir(runtime_dir)):
        if not name.endswith(RECORD_SUFFIX):
            continue
        unit = name[: -len(RECORD_SUFFIX)]
        record = records.read_record(runtime_dir, unit)
        holder_unit = lease_unit_of(unit)
        if not record or record.get("invocation") is None or invocation_of(holder_unit) != record["invocation"]:
            continue  # not the start of a unit that runs now
        decision = record["decision"]
        holder = Holder(pid=None, pid_start=None, boot_id=record.get("boot_id"), invocation=record["invocation"],
                        unit=holder_unit)
        rows += [(unit, gpu.uuid, decision.service.sharing, holder.pid, holder.pid_start, holder.boot_id, None,
                  holder.invocation, record.get("at", 0.0), holder.unit) for gpu in decision.chosen]
    return rows


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
