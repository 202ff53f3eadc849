"""One command's view of where things are: the seam every command, the wrappers and the generator
are handed, built once from the command line.

It resolves the policy file, the state database and the runtime dir (flag, else environment,
else default), decides once whether the runtime dir may hold memos, and loads the policy and the
plugins at most once per command, from their memos when those are current. On the start path
(`allocate`/`release` as systemd runs them) the process ends with os._exit: FAST_EXIT tells the
state to leave its connection to the exit instead of checkpointing on close (state.py).

This is where the start path's speed is held: the parsed policy (policy/load.py) and pluggy's
call plan (hooks/callplan.py) come from the memo dir instead of PyYAML and pluggy, and what a
command does not use is never imported: `release` (the stop path) needs neither the policy nor the
plugins, and the wrappers never open the state.
"""

import os

from .files import rundir
from .policy.load import load_policy, policy_path

DEFAULT_STATE = "/var/lib/cortex-hook/state.db"
_UNKNOWN = object()


def state_path(explicit=None):
    """The state file: --state, else $CORTEX_HOOK_STATE, else the default."""
    return explicit or os.environ.get("CORTEX_HOOK_STATE") or DEFAULT_STATE


class Context:
    """Where one command finds its files (see the module docstring).

    `policy_given`/`state_given` are what the command line or environment named (None for the
    defaults): what `install` bakes into the drop-ins it writes."""

    def __init__(self, policy=None, state=None, runtime_dir=None, fast_exit=False):
        self.policy_given = policy or os.environ.get("CORTEX_HOOK_POLICY") or None
        self.state_given = state or os.environ.get("CORTEX_HOOK_STATE") or None
        self.policy_path = policy_path(policy)
        self.state_path = state_path(state)
        self.runtime_dir = rundir.runtime_dir(runtime_dir)
        self.fast_exit = fast_exit
        self._memo_dir = _UNKNOWN
        self._policy = None
        self._plugins = None
        self._kept = []

    @property
    def memo_dir(self):
        """The runtime dir if memos may be read and written there (it exists and only root, or
        we, can change it), else None. Asked once."""
        if self._memo_dir is _UNKNOWN:
            self._memo_dir = rundir.trusted(self.runtime_dir)
        return self._memo_dir

    def policy(self):
        """The policy (PolicyError, UnsafeFileError), from its parsed copy while it is unchanged."""
        if self._policy is None:
            self._policy = load_policy(self.policy_path, cache_dir=self.memo_dir)
        return self._policy

    def plugins(self):
        """The plugins, through their recorded call plan when it matches."""
        if self._plugins is None:
            from .hooks.manager import load_plugins  # not for `release`, the stop path
            self._plugins = load_plugins(cache_dir=self.memo_dir)
        return self._plugins

    def open_state(self, create=True):
        """The state database (StateError, UnsafeFileError); CREATE makes or migrates it.

        A user who cannot open the database (it is root's alone) gets its view instead: the same
        answers, read-only (state/view.py). On the fast-exit path the State is kept here after
        `close()`, so its connection lives until the process ends (state.State.close)."""
        if not self.may_open_state():
            from .state.view import StateView
            return StateView(self.runtime_dir, self.state_path)
        from .state import State  # sqlite3: never in a long-running supervisor that reuses a record
        state = State.open(self.state_path, create=create, transient=self.fast_exit, runtime_dir=self.runtime_dir)
        if self.fast_exit:
            self._kept.append(state)
        return state

    def may_open_state(self):
        """Root may open the database, and so may whoever can write it (or, with none yet, its
        directory); anyone else gets the view."""
        if os.geteuid() == 0:
            return True
        path = self.state_path
        if os.path.exists(path):
            return os.access(path, os.R_OK | os.W_OK)
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        return os.access(parent, os.W_OK | os.X_OK)
