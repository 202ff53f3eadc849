"""`cortex-hook status --watch`: the `status` table live in the terminal, as `watch nvidia-smi`.

Each frame is the `status` table, the starts waiting for a GPU now, and the last decision about
each unit leasing or waiting. It is drawn on the alternate screen without flicker: the cursor goes
home and each line overwrites the last frame's (clear to end of line, then of screen), cut to the
terminal's width and height. `q` quits; so does Ctrl-C. A frame that cannot be gathered (state
busy or broken, driver failing) keeps the last good table under one line saying why. The terminal
is restored however the loop ends.
"""

import os
import select
import signal
import sqlite3
import sys
import time

from ..errors import CortexError, UsageError, one_line

DEFAULT_INTERVAL = 2.0
ENTER = "\x1b[?1049h\x1b[?25l"  # the alternate screen, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"
HOME, EOL, EOS = "\x1b[H", "\x1b[K", "\x1b[J"


def watch(args, gather):
    """Run `status --watch` until `q` (exit 0) or Ctrl-C (130), each frame GATHER()'s lines
    (views.live_status) under a header; UsageError without a terminal on stdout, with --json, or
    for --interval without --watch."""
    if not args.watch:
        raise UsageError("--interval goes with --watch (`status --watch --interval 5`)")
    if args.json:
        raise UsageError("--watch draws a table in the terminal; --json prints one object: give one of them")
    if not sys.stdout.isatty():
        raise UsageError("--watch needs a terminal on stdout (for a script: `status --json`; "
                         "or `watch cortex-hook status`)")
    interval = args.interval or DEFAULT_INTERVAL
    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved = _cbreak(keys)
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _write(ENTER)
        return _loop(gather, interval, keys)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        try:
            _write(LEAVE)
        finally:  # (the terminal may be gone: its settings are put back all the same)
            _restore(keys, saved)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: leave the way Ctrl-C does, the terminal restored


def _cbreak(fd):
    """Put terminal FD in cbreak mode (keys arrive one by one, unechoed); its old settings."""
    if fd is None:
        return None
    import termios
    import tty
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    return saved


def _restore(fd, saved):
    if saved is not None:
        import termios
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _loop(gather, interval, keys):
    """Draw a frame, wait INTERVAL for a key, again; returns 0 once `q` is pressed."""
    last, problem = None, None
    while True:
        try:
            last, problem = gather(), None
        except (CortexError, OSError, sqlite3.Error) as exc:
            problem = one_line(str(exc) or type(exc).__name__)
        draw(frame(last, problem, interval))
        if _quit_pressed(keys, interval):
            return 0


def _quit_pressed(fd, timeout):
    """True when `q` comes in on FD within TIMEOUT seconds (other keys just end the wait early)."""
    if fd is None:  # no keyboard: only Ctrl-C ends it
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return False
    data = os.read(fd, 64)
    return not data or b"q" in data.lower()  # (end of input: nothing more will come)


def frame(lines, problem, interval, now=None):
    """The whole frame: the header, the line saying why it could not refresh (if so), LINES."""
    now = time.time() if now is None else now
    head = [f"cortex-hook status  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}  "
            f"every {interval:g}s  q to quit", ""]
    if problem is not None:
        head.insert(1, f"(could not refresh: {problem}; "
                       + ("showing the last table)" if lines is not None else "no table yet)"))
    return head + (lines or [])


def draw(lines, size=None):
    """Overwrite the screen with LINES, each cut to the terminal's width, as many as its height holds."""
    width, height = size or _terminal_size()
    if len(lines) > height:
        lines = lines[:height - 1] + [f"(… {len(lines) - height + 1} more lines: a taller terminal shows them)"]
    # one column short of the edge: at the last column, some terminals erase the last character on EOL
    _write(HOME + "\r\n".join(line[:max(1, width - 1)] + EOL for line in lines) + EOS)


def _terminal_size():
    """The terminal's size now: asked of the terminal first, as COLUMNS and LINES in the environment
    (shutil's first answer) are the size when the command started, if not stale before."""
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        import shutil
        return shutil.get_terminal_size()


def _write(text):
    sys.stdout.write(text)
    sys.stdout.flush()
