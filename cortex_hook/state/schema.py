"""The state database's schema: append-only migrations, one per version.

`PRAGMA user_version` holds the version a database is at; opening it runs the migrations it lacks
(state/db.py) and refuses one from a newer cortex-hook.
"""

_V1 = """
CREATE TABLE priority (
    uuid    TEXT PRIMARY KEY,
    rank    INTEGER NOT NULL UNIQUE,
    set_at  REAL NOT NULL
);
CREATE TABLE drain (
    uuid    TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    since   REAL NOT NULL
);
CREATE TABLE lease (
    unit        TEXT NOT NULL,
    uuid        TEXT NOT NULL,
    sharing     TEXT NOT NULL CHECK (sharing IN ('exclusive', 'shared')),
    pid         INTEGER,
    pid_start   INTEGER,
    boot_id     TEXT,
    cgroup      TEXT,
    invocation  TEXT,
    since       REAL NOT NULL,
    PRIMARY KEY (unit, uuid)
);
CREATE UNIQUE INDEX lease_one_exclusive ON lease (uuid) WHERE sharing = 'exclusive';
CREATE TABLE history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    unit    TEXT NOT NULL,
    action  TEXT NOT NULL,
    gpus    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE TABLE gpu_seen (
    uuid        TEXT PRIMARY KEY,
    idx         INTEGER,
    name        TEXT,
    pci_bus_id  TEXT,
    last_seen   REAL NOT NULL
);
"""

# v2: settings the policy gives that commands without the policy still honour (release runs
# when a unit stops, and must work even when the policy is broken): the history limit.
_V2 = """
CREATE TABLE setting (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
"""

# v3: a lease held by a systemd unit that has no processes (the lease unit, active after its
# allocate exited): alive while that unit is active with the recorded invocation id.
_V3 = """
ALTER TABLE lease ADD COLUMN holder_unit TEXT;
"""

# v4: the runtime monitor. A drain says who made it (an admin's drain the monitor never lifts)
# and what the monitor saw; `trouble` holds the non-fatal trouble it saw (corrected ECC errors,
# XIDs that are not fatal, throttling, faults it recovered from), which demotes a GPU for a while.
_V4 = """
ALTER TABLE drain ADD COLUMN source TEXT NOT NULL DEFAULT 'admin' CHECK (source IN ('admin', 'monitor'));
ALTER TABLE drain ADD COLUMN detail TEXT NOT NULL DEFAULT '';
CREATE TABLE trouble (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid    TEXT NOT NULL,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    count   INTEGER NOT NULL DEFAULT 1,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX trouble_at ON trouble (at);
"""

# v5: what the metrics count (state/tallies.py): starts waiting for a GPU now, and monotonic
# counters (allocation outcomes, the monitor's faults and actions, wait and handoff histograms).
_V5 = """
CREATE TABLE waiting (
    unit        TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    class       TEXT NOT NULL,
    since       REAL NOT NULL,
    pid         INTEGER,
    pid_start   INTEGER,
    boot_id     TEXT,
    summary     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE tally (
    name    TEXT NOT NULL,
    labels  TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
"""

# v6: preemption (state/preemption.py). `promise`: a GPU promised to the start that preempted its
# holder; `preempted`: a unit stopped or requeued by a preemption, until it starts again; and what
# a waiting start could use (its queue turn: queue.py).
_V6 = """
CREATE TABLE promise (
    uuid        TEXT PRIMARY KEY,
    unit        TEXT NOT NULL,
    victim      TEXT NOT NULL,
    since       REAL NOT NULL,
    pid         INTEGER,
    pid_start   INTEGER,
    boot_id     TEXT
);
CREATE TABLE preempted (
    unit        TEXT PRIMARY KEY,
    by_unit     TEXT NOT NULL,
    since       REAL NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('requeue', 'stop'))
);
ALTER TABLE waiting ADD COLUMN wants TEXT NOT NULL DEFAULT '';
ALTER TABLE waiting ADD COLUMN count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE waiting ADD COLUMN seen TEXT NOT NULL DEFAULT '';
"""

# MIGRATIONS[n] takes a database from schema version n to n+1. Append only.
MIGRATIONS = (_V1, _V2, _V3, _V4, _V5, _V6)
DEFAULT_HISTORY_LIMIT = 1000
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script):
    """The SQL statements of a migration script."""
    return [s.strip() for s in script.split(";") if s.strip()]


def migrate(conn, version):
    """Bring the database on CONN from schema VERSION to SCHEMA_VERSION (inside the caller's
    transaction)."""
    for step in range(version, SCHEMA_VERSION):
        for statement in statements(MIGRATIONS[step]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {step + 1}")
