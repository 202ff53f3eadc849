"""What a user who is not root sees of the state: a copy root writes into the runtime dir.

The database and its WAL files are root's alone (0600): a user who could open them could hold a
lock on them and stop every start. So after every command that changed the state, root writes
`/run/cortex-hook/state.view` (marshal, 0644, atomically; files/memo.py): the priorities, drains
(with who made them), leases, the GPUs seen, the last history rows, the monitor's trouble, the
starts waiting and the GPUs promised to a preempting start.
`status`, `leases`, `history`, `plan` and `priority list` run by anyone else read it through
`StateView`, which answers the same questions as State and refuses every change with a one-line
"needs root" (exit 77).

The view is also what a lost database is rebuilt from (state/create.py).
"""

import time

from ..errors import NotPermittedError
from ..files import memo
from ..files.rundir import trusted
from ..model import Drain, Lease, Promise, Snapshot, Trouble, Wait
from . import tallies
from .jsonsql import history_dicts
from .preemption import promises

NAME = "state.view"
VERSION = 1
HISTORY_ROWS = 200
TROUBLE_DAYS = 30  # no policy window is longer (policy/yamlnodes.MAX_SECONDS)


def publish(state, directory):
    """Write the view of STATE into the runtime dir DIRECTORY when only root can change it
    (best effort: the database stays the truth)."""
    if not trusted(directory):
        return
    value = {
        "at": time.time(), "priorities": [list(row) for row in state.priorities()],
        "drains": [d.to_plain() for d in state.snapshot().drains.values()],
        "leases": [lease.to_plain() for lease in state.leases()],
        "seen": {uuid: list(row) for uuid, row in state.seen_gpus().items()},
        "history": [list(row) for row in state.history_rows(None, HISTORY_ROWS)],
        "history_limit": state.history_limit(),
        "trouble": [t.to_plain() for rows in state.trouble(time.time() - TROUBLE_DAYS * 86400).values()
                    for t in rows],
        "waits": [w.to_plain() for w in tallies.waits(state)],
        "promises": [p.to_plain() for p in promises(state)],
    }
    memo.store(directory, NAME, (VERSION,), value)


def load(directory):
    """The view in DIRECTORY (a dict), or None when there is none root wrote."""
    value = memo.load(directory, NAME, (VERSION,))
    return value if isinstance(value, dict) else None


class StateView:
    """The state as its view shows it, for a user who cannot open the database: State's reading
    methods; every change refused (NotPermittedError)."""

    def __init__(self, directory, state_path):
        self.state_path = state_path
        data = load(directory) or {}
        self.at = data.get("at")
        self._priorities = [tuple(row) for row in data.get("priorities", [])]
        self._drains = {d["uuid"]: Drain.from_plain(d) for d in data.get("drains", [])}
        self._leases = [Lease.from_plain(lease) for lease in data.get("leases", [])]
        self._seen = {uuid: tuple(row) for uuid, row in data.get("seen", {}).items()}
        self._history = [tuple(row) for row in data.get("history", [])]
        self._history_limit = data.get("history_limit", 1000)
        self._trouble = [Trouble.from_plain(t) for t in data.get("trouble", [])]
        self._waits = [Wait.from_plain(w) for w in data.get("waits", [])]
        self._promises = [Promise.from_plain(p) for p in data.get("promises", [])]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Nothing to close."""

    def snapshot(self, trouble_window=0.0):
        """Priorities, drains, leases and live promises, and the trouble of the last TROUBLE_WINDOW
        seconds, as State.snapshot."""
        return Snapshot(priorities={u: r for u, r, _ in self._priorities}, drains=dict(self._drains),
                        leases=list(self._leases),
                        trouble=self.trouble(time.time() - trouble_window) if trouble_window else {},
                        promises=[p for p in self._promises if tallies.wait_alive(p)])

    def trouble(self, since):
        """{uuid: [Trouble]} the view holds from SINCE on, oldest first."""
        out = {}
        for t in self._trouble:
            if t.at >= since:
                out.setdefault(t.uuid, []).append(t)
        return out

    def priorities(self):
        """[(uuid, rank, set_at)] in rank order."""
        return list(self._priorities)

    def waits(self):
        """[Wait] of the starts that waited for a GPU when root last wrote the view, whose process
        still runs (as tallies.waits)."""
        return [w for w in self._waits if tallies.wait_alive(w)]

    def leases(self, unit=None):
        """Every lease (or UNIT's), oldest first."""
        return [lease for lease in self._leases if unit is None or lease.unit == unit]

    def seen_gpus(self):
        """{uuid: (index, name, pci_bus_id, last_seen)} for every GPU seen."""
        return dict(self._seen)

    def history_limit(self):
        """The history limit root's last allocation recorded."""
        return self._history_limit

    def history_rows(self, unit=None, limit=50):
        """The last LIMIT raw history rows (newest first), as State.history_rows."""
        return [row for row in self._history if unit is None or row[2] == unit][:limit]

    def history(self, unit=None, limit=50):
        """The last LIMIT history rows the view holds (newest last) as dicts."""
        return history_dicts(self.history_rows(unit, limit))

    def remember_gpus(self, gpus):
        """Root records the GPUs seen; a view leaves them."""

    def __getattr__(self, name):  # set_priority, drain, reap, release, write, ...: root's
        raise NotPermittedError(f"changing the state needs root (the database {self.state_path} is "
                                "root's alone; this view is read-only)")
