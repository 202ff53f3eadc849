"""`status --watch` (cli/watch.py): the live table in a real terminal (a private tmux server per
test), a lease and a waiting start taken from outside showing up in it, a state that cannot be read
showing one line above the last table, `q` quitting with 0 and the alternate screen left; and the
refusals without a terminal."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from cortex_hook.errors import UsageError

from ..helpers.box import assert_one_line_error, gpu_desc
from ..helpers.processes import HolderProcess

POLICY = """\
services:
  - match: 'big*'
    gpus: 2
    on_unavailable: wait 5m
  - match: '*'
"""


class Pane:
    """One command running in a pane of a private tmux server (200x50), which stays once the command
    has exited (remain-on-exit) so that its last screen can be read."""

    def __init__(self, argv):
        self.server = f"cortex-watch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", shlex.join(argv),
                  ";", "set-option", "-g", "remain-on-exit", "on")

    def tmux(self, *args):
        """Run a tmux command against this server; its stdout."""
        r = subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def screen(self):
        """What the pane shows now."""
        return self.tmux("capture-pane", "-p")

    def alternate_on(self):
        """True while the pane shows its alternate screen."""
        return self.tmux("display-message", "-p", "#{alternate_on}").strip() == "1"

    def until(self, what, condition, timeout=60):
        """Poll the screen until CONDITION(screen) holds; fail after TIMEOUT seconds naming WHAT."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the pane never showed {what}; it shows:\n{screen}")
            time.sleep(0.1)

    def kill(self):
        """End the server (and the command, if it still runs)."""
        subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def pane_for():
    """Start a command in a private tmux pane; every server is killed at teardown."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing (the CI image must have it)")
        pytest.skip("tmux is missing")
    panes = []

    def start(argv):
        panes.append(Pane(argv))
        return panes[-1]

    yield start
    for pane in panes:
        pane.kill()


def _gpu_rows(screen):
    """The rows of the GPU table (they start with the GPU's index)."""
    return [line.rstrip() for line in screen.splitlines() if line[:1].isdigit()]


def _section(screen, title):
    """The lines from the one starting with TITLE to the next blank line."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(title)), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


# tmux 3.3a may miss the exit of a pane's process (left a zombie, #{pane_dead_status} never set): a
# shell runs the watch and writes its exit status (it survives Ctrl-C by catching SIGINT; the watch,
# started with SIGINT at its default, gets it)
EXIT_LINE = re.compile(r"^\[watch exited with ([0-9]+)\]$", re.MULTILINE)
WRAPPER = 'trap true INT; "$@"; echo "[watch exited with $?]"; exec sleep 600'  # (tmux writes over a dead pane)


def _watch(box, pane_for):
    """`status --watch --interval 0.3` on BOX's two GPUs, in a pane (the box's env passed by `env`)."""
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(POLICY)
    env = [f"{k}={v}" for k, v in box.env().items() if k.startswith("CORTEX_HOOK_")]
    return pane_for(["sh", "-c", WRAPPER, "sh", "env", *env, sys.executable, "-m", "cortex_hook",
                     "status", "--watch", "--interval", "0.3"])


def _exited(pane):
    """Poll until the watch has exited; (its exit status, the pane still on the alternate screen)."""
    screen = pane.until("the watch exiting", EXIT_LINE.search, timeout=30)
    assert "Traceback" not in screen, screen
    return int(EXIT_LINE.search(screen).group(1)), pane.alternate_on()


def test_watch_shows_leases_and_waits_taken_from_outside_and_quits_on_q(box, pane_for):
    pane = _watch(box, pane_for)
    pane.until("both GPUs, free", lambda s: "q to quit" in s and [row[:8] for row in _gpu_rows(s)] == [
        "0    GPU", "1    GPU"] and all(row.endswith("  -") for row in _gpu_rows(s)))

    holder = HolderProcess()
    waiter = None
    try:
        r = box.cli("allocate", "some.service", "--holder-pid", str(holder.pid))
        assert r.returncode == 0, r.stderr
        screen = pane.until("some.service leasing a GPU",
                            lambda s: any(row.endswith("  some.service") for row in _gpu_rows(s)))
        assert _section(screen, "UNIT")[1].split()[:2] == ["some.service", "allocate"], screen

        waiter = subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", "big"], env=box.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert "waiting for a GPU" in waiter.stderr.readline()
        screen = pane.until("big.service waiting", lambda s: len(_section(s, "WAITING")) == 2)
        assert _section(screen, "WAITING")[1].split()[:2] == ["big.service", "normal"], screen
        waiter.kill()
        waiter.communicate()

        state_dir = os.path.dirname(box.state)  # the state unreadable for a while: the last table stays
        os.rename(state_dir, state_dir + ".away")
        os.makedirs(box.state)
        screen = pane.until("the refresh failing", lambda s: "(could not refresh: " in s)
        assert "showing the last table)" in screen and "some.service" in screen and "Traceback" not in screen
        os.rmdir(box.state)
        os.rmdir(state_dir)
        os.rename(state_dir + ".away", state_dir)
        pane.until("the table refreshed again", lambda s: "could not refresh" not in s)
    finally:
        if waiter is not None and waiter.returncode is None:
            waiter.kill()
            waiter.communicate()
        holder.end()

    pane.tmux("send-keys", "q")
    assert _exited(pane) == (0, False), pane.screen()


def test_ctrl_c_leaves_the_alternate_screen_too(box, pane_for):
    pane = _watch(box, pane_for)
    pane.until("the table", lambda s: "q to quit" in s and len(_gpu_rows(s)) == 2)
    pane.tmux("send-keys", "C-c")
    assert _exited(pane) == (130, False), pane.screen()


@pytest.mark.parametrize("args, needle", [
    (["status", "--watch"], "needs a terminal"),
    (["status", "--watch", "--json"], "--json"),
    (["status", "--interval", "5"], "goes with --watch"),
])
def test_watch_refuses_without_a_terminal_or_with_json(box, args, needle):
    box.write_gpus([gpu_desc(0)]).write_policy("services:\n  - match: '*'\n")
    r = box.cli(*args)  # (stdout is a pipe)
    assert r.returncode == UsageError.exit_code, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert_one_line_error(r.stderr, needle)


def test_interval_below_the_minimum_is_refused(box):
    r = box.cli("status", "--watch", "--interval", "0.1")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "from 0.2")
