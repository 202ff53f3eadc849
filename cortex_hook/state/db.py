"""The state database (SQLite, WAL): open it, and read and write GPU priorities, drains, leases,
decision history (what the runtime monitor writes: state/monitoring.py).

Everything is keyed by device UUID (indices move between boots). Writers take the lock with
`BEGIN IMMEDIATE`, so an allocation re-reads leases and inserts its own in one transaction and
two units starting together never share a GPU they were meant to own. A database this version
cannot read (garbage, truncated, newer schema) is refused and left exactly as it is.
"""

import os
import sqlite3
import stat
import time
from contextlib import contextmanager

from ..errors import StateError
from ..files.trust import check_trusted
from ..model import Drain, Lease, Snapshot, Trouble
from . import view
from .preemption import promises
from .jsonsql import history_dicts, json_sql
from .schema import DEFAULT_HISTORY_LIMIT, SCHEMA_VERSION, migrate

BUSY_TIMEOUT_S = 60.0

class State:
    """An open state database. Use `State.open()`; close with `close()` or `with`."""

    def __init__(self, conn, path, transient=False, runtime_dir=None):
        self.conn = conn
        self.path = path
        self.transient = transient
        self.runtime_dir = runtime_dir
        self._committed = False  # a write was committed: publish the view at close

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, create=True, check_owner=True, transient=False, runtime_dir=None):
        """Open (and, if CREATE, create or migrate) the database at PATH.

        RUNTIME_DIR is where its view is published after a change (state/view.py), and what a
        lost database is rebuilt from (state/create.py).

        TRANSIENT is for a process that writes only what a reboot voids (leases, and the history
        and GPUs seen beside them) and then ends with os._exit: the start path. Its commits are
        not synced one by one (synchronous=NORMAL; a power cut may drop the last ones, never
        corrupt the file) and `close` leaves the connection to the process exit. Otherwise every
        commit is synced (synchronous=FULL): a priority or drain an admin sets is on disk when
        the command returns."""
        directory = os.path.dirname(os.path.abspath(path))
        st = _existing(path)
        if st is None:
            if not create:
                raise StateError(f"state {path}: no such file (nothing allocated yet?)")
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StateError(f"state {path}: cannot create {directory}: {exc.strerror}") from None
            if check_owner:
                check_trusted(directory, "state directory")
            from .create import create as create_database  # only once per machine (or after a loss)
            create_database(path, runtime_dir)
        elif st.st_size == 0:
            raise StateError(f"state {path}: empty (0 bytes), truncated; it is left untouched (move it "
                             "aside: a new one gets the leases of running units back from their records)")
        if check_owner:  # the file's check covers the directories above it
            check_trusted(path, "state")
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"state {path}: cannot open: {exc}") from None
        state = cls(conn, path, transient, runtime_dir)
        try:
            state._prepare(create)
            _owner_only(path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateError(_explain_db_error(path, exc)) from None
        except BaseException:
            conn.close()
            raise
        return state

    def _prepare(self, create):
        c = self.conn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state {self.path}: schema version {version} is newer than this cortex-hook "
                f"understands ({SCHEMA_VERSION}); upgrade cortex-hook (the file is left untouched)"
            )
        # check the file really is a database before any write (a garbage file fails here)
        c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if version < SCHEMA_VERSION:
            if not create:
                raise StateError(f"state {self.path}: schema version {version}; run a write command to migrate")
            self._use_wal()
            with self.write():
                migrate(c, c.execute("PRAGMA user_version").fetchone()[0])
        c.execute("PRAGMA synchronous=NORMAL" if self.transient else "PRAGMA synchronous=FULL")

    def _use_wal(self):
        """Switch to WAL. SQLite answers "busy" here at once, without the busy timeout, while
        another process creates the file: retry for the same time a lock wait would take."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self):
        """Close the connection; a transient State's is kept open until the process exits.

        When the last connection closes, SQLite checkpoints the WAL into the database (two
        fsyncs) and deletes it, and the next open creates it again: about 1.5 ms on every start
        and stop. Left open, the committed transactions stay in the WAL, where the next
        connection reads them, and the exit releases the locks. The WAL is checkpointed by
        SQLite's own autocheckpoint (1000 pages) or by the next command that closes. The
        Context that opened a transient State keeps it until the exit (context.py).

        A State that changed the database first publishes its view (state/view.py)."""
        if self._committed:
            self._committed = False
            if self.runtime_dir:
                view.publish(self, self.runtime_dir)
            job_map = self.setting("job_mapping_dir")
            if job_map:
                from ..metrics import jobmap  # only where the policy asks for it

                jobmap.publish(self, job_map)
        if not self.transient:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def write(self):
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error).

        Inside an open transaction it joins that one, so helpers compose into one atomic write.
        """
        c = self.conn
        if c.in_transaction:
            yield c
            return
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"state {self.path}: {exc} (waited {BUSY_TIMEOUT_S:g}s for the lock)") from None
        try:
            yield c
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        else:
            try:
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                if c.in_transaction:  # SQLite may have rolled back already (a full disk does)
                    c.execute("ROLLBACK")
                raise StateError(f"state {self.path}: commit failed: {exc}") from None
            self._committed = True

    def snapshot(self, trouble_window=0.0):
        """Priorities, drains, leases and live promises, as the planner sees them, and the trouble
        the monitor saw in the last TROUBLE_WINDOW seconds (the policy's `demote_window`; 0: none)."""
        c = self.conn
        return Snapshot(
            priorities={u: r for u, r in c.execute("SELECT uuid, rank FROM priority")},
            drains={row[0]: Drain(*row) for row in c.execute("SELECT uuid, reason, since, source, detail FROM drain")},
            leases=self.leases(),
            trouble=self.trouble(time.time() - trouble_window) if trouble_window else {},
            promises=promises(self),
        )

    def trouble(self, since):
        """{uuid: [Trouble]} the monitor recorded at SINCE or later, oldest first."""
        out = {}
        for row in self.conn.execute("SELECT uuid, at, kind, count, detail FROM trouble WHERE at >= ? "
                                     "ORDER BY at, id", (since,)):
            out.setdefault(row[0], []).append(Trouble(*row))
        return out

    # -- priorities -----------------------------------------------------------------------------
    def priorities(self):
        """[(uuid, rank, set_at)] in rank order."""
        return self.conn.execute("SELECT uuid, rank, set_at FROM priority ORDER BY rank").fetchall()

    def set_priority_order(self, uuids):
        """Replace the whole order with UUIDS, exactly as given (first = rank 0)."""
        if len(set(uuids)) != len(uuids):
            raise ValueError("a GPU appears twice in the order")
        now = time.time()
        with self.write() as c:
            c.execute("DELETE FROM priority")
            c.executemany("INSERT INTO priority (uuid, rank, set_at) VALUES (?, ?, ?)",
                          [(u, i, now) for i, u in enumerate(uuids)])

    def set_priority(self, uuid, rank):
        """Move UUID to position RANK of the order (0 = first), shifting the others."""
        with self.write() as c:
            order = [u for (u,) in c.execute("SELECT uuid FROM priority ORDER BY rank") if u != uuid]
            order.insert(max(0, min(rank, len(order))), uuid)
            now = time.time()
            c.execute("DELETE FROM priority")
            c.executemany("INSERT INTO priority (uuid, rank, set_at) VALUES (?, ?, ?)",
                          [(u, i, now) for i, u in enumerate(order)])

    def clear_priorities(self, uuids=None):
        """Forget the whole order, or only UUIDS (the rest keep their relative order)."""
        with self.write() as c:
            if uuids is None:
                c.execute("DELETE FROM priority")
                return
            order = [u for (u,) in c.execute("SELECT uuid FROM priority ORDER BY rank") if u not in uuids]
            now = time.time()
            c.execute("DELETE FROM priority")
            c.executemany("INSERT INTO priority (uuid, rank, set_at) VALUES (?, ?, ?)",
                          [(u, i, now) for i, u in enumerate(order)])

    # -- drains ---------------------------------------------------------------------------------
    def drain(self, uuid, reason):
        """Keep new work off UUID (existing leases stay): the admin's drain, which replaces any
        other (a monitor's drain becomes the admin's, which the monitor never lifts)."""
        with self.write() as c:
            c.execute("INSERT OR REPLACE INTO drain (uuid, reason, since, source, detail) "
                      "VALUES (?, ?, ?, 'admin', '')", (uuid, reason, time.time()))

    def undrain(self, uuid):
        """Lift a drain, whoever made it; True if there was one."""
        with self.write() as c:
            return c.execute("DELETE FROM drain WHERE uuid = ?", (uuid,)).rowcount > 0

    # -- leases ---------------------------------------------------------------------------------
    def leases(self, unit=None):
        """Every lease (or UNIT's), oldest first."""
        sql = ("SELECT unit, uuid, sharing, pid, pid_start, boot_id, cgroup, invocation, since, holder_unit "
               "FROM lease")
        rows = (self.conn.execute(sql + " WHERE unit = ? ORDER BY since, rowid", (unit,)) if unit
                else self.conn.execute(sql + " ORDER BY since, rowid"))
        return [Lease(*row) for row in rows]

    def add_leases(self, unit, uuids, sharing, holder):
        """Insert UNIT's leases."""
        now = time.time()
        with self.write() as c:
            c.executemany(
                "INSERT INTO lease (unit, uuid, sharing, pid, pid_start, boot_id, cgroup, invocation, since, "
                "holder_unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(unit, u, sharing, holder.pid, holder.pid_start, holder.boot_id, holder.cgroup,
                  holder.invocation, now, holder.unit) for u in uuids],
            )

    def drop_leases(self, unit):
        """Delete UNIT's leases; returns the UUIDs they held."""
        with self.write() as c:
            uuids = [u for (u,) in c.execute("SELECT uuid FROM lease WHERE unit = ?", (unit,))]
            c.execute("DELETE FROM lease WHERE unit = ?", (unit,))
        return uuids

    def release(self, unit, limit=None, detail=None):
        """Drop UNIT's leases and record it (with DETAIL); idempotent. Returns the UUIDs released."""
        with self.write():
            uuids = self.drop_leases(unit)
            if uuids:
                self.record(unit, "release", uuids, detail or {}, limit)
        return uuids

    def reap(self, alive, limit=None, exclude_unit=None):
        """Drop leases whose holder is gone (ALIVE(lease) is False); returns them."""
        with self.write() as c:
            gone = [l for l in self.leases() if l.unit != exclude_unit and not alive(l)]
            for lease in gone:
                c.execute("DELETE FROM lease WHERE unit = ? AND uuid = ?", (lease.unit, lease.uuid))
            for unit in sorted({l.unit for l in gone}):
                self.record(unit, "reap", [l.uuid for l in gone if l.unit == unit],
                            {"why": "holder gone"}, limit)
        return gone

    # -- history --------------------------------------------------------------------------------
    def set_history_limit(self, limit):
        """Remember the policy's history limit for commands that run without the policy."""
        self.set_setting("history_limit", limit)

    def history_limit(self):
        """The history limit the last allocation recorded (default 1000)."""
        value = self.setting("history_limit")
        return int(value) if value else DEFAULT_HISTORY_LIMIT

    def setting(self, key):
        """The policy's KEY as the last allocation recorded it for commands without the policy."""
        row = self.conn.execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key, value):
        """Record the policy's KEY (VALUE None: forget it)."""
        with self.write() as c:
            if value is None:
                c.execute("DELETE FROM setting WHERE key = ?", (key,))
            else:
                c.execute("INSERT OR REPLACE INTO setting (key, value) VALUES (?, ?)", (key, str(value)))

    def record(self, unit, action, uuids, detail, limit=None):
        """Append to the history and keep only the last LIMIT rows (default: the recorded limit)."""
        with self.write() as c:
            if limit is None:
                limit = self.history_limit()
            row = [time.time(), unit, action, ",".join(uuids)]
            params = list(row)
            try:
                cur = c.execute("INSERT INTO history (at, unit, action, gpus, detail) "
                                f"VALUES (?, ?, ?, ?, {json_sql(detail, params)})", params)
            except sqlite3.OperationalError as exc:
                if "json_" not in str(exc):
                    raise
                import json  # an SQLite built without its JSON functions
                cur = c.execute("INSERT INTO history (at, unit, action, gpus, detail) VALUES (?, ?, ?, ?, ?)",
                                row + [json.dumps(detail, sort_keys=True)])
            c.execute("DELETE FROM history WHERE id <= ?", (cur.lastrowid - limit,))

    def history_rows(self, unit=None, limit=50):
        """The last LIMIT history rows (UNIT's, or all), newest first, as stored."""
        sql = "SELECT id, at, unit, action, gpus, detail FROM history"
        args = ()
        if unit:
            sql += " WHERE unit = ?"
            args = (unit,)
        return self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", args + (limit,)).fetchall()

    def history(self, unit=None, limit=50):
        """The last LIMIT history rows (newest last) as dicts."""
        return history_dicts(self.history_rows(unit, limit))

    # -- GPUs seen ------------------------------------------------------------------------------
    def remember_gpus(self, gpus):
        """Record the identity of every GPU seen (so absent ones can still be named)."""
        now = time.time()
        rows = [(g.uuid, g.index, g.name, g.pci_bus_id, now) for g in gpus if g.uuid]
        with self.write() as c:
            c.executemany("INSERT OR REPLACE INTO gpu_seen (uuid, idx, name, pci_bus_id, last_seen) "
                          "VALUES (?, ?, ?, ?, ?)", rows)

    def seen_gpus(self):
        """{uuid: (index, name, pci_bus_id, last_seen)} for every GPU ever seen."""
        return {u: (i, n, p, t) for u, i, n, p, t in
                self.conn.execute("SELECT uuid, idx, name, pci_bus_id, last_seen FROM gpu_seen")}


def _existing(path):
    """The lstat of the state file at PATH, or None if there is none; a symlink or anything but a
    regular file is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"state {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateError(f"state {path}: is a symlink; refusing it (point --state at the real file)")
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"state {path}: not a regular file")
    return st


def _owner_only(path):
    """The database and its WAL files readable by their owner alone (earlier versions made them
    0644: anyone could then hold a lock on them and stop every start)."""
    for name in (path, path + "-wal", path + "-shm"):
        try:
            st = os.stat(name)
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.chmod(name, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError:
            pass


def _explain_db_error(path, exc):
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (f"state {path}: not a usable SQLite database ({text}); it is left untouched "
                "(move it aside to start afresh)")
    if "readonly" in text or "read-only" in text:
        return f"state {path}: read-only ({text})"
    if "locked" in text or "busy" in text:
        return f"state {path}: {text} (another cortex-hook held the lock for {BUSY_TIMEOUT_S:g}s)"
    return f"state {path}: {text}"
