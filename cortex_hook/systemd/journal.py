"""One-line messages on stderr, with sd-daemon `<N>` level prefixes when stderr is the journal, and
cortex-hook's word about a unit in that unit's own journal."""

import os
import sys

from ..errors import one_line

ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "cortex-hook"

_journal = None
_native = False


def stderr_is_journal():
    """True when JOURNAL_STREAM names our stderr (systemd connected it to the journal)."""
    global _journal
    if _journal is None:
        _journal = False
        stream = os.environ.get("JOURNAL_STREAM", "")
        dev, _, ino = stream.partition(":")
        if dev.isdigit() and ino.isdigit():
            try:
                st = os.fstat(sys.stderr.fileno())
                _journal = (st.st_dev, st.st_ino) == (int(dev), int(ino))
            except (OSError, ValueError, AttributeError):
                _journal = False
    return _journal


def speak_as_cortex_hook():
    """From now on, `log` writes to the journal as cortex-hook's when stderr is the journal: for the
    wrappers, which run in the server's unit, whose syslog identifier is the server's (the lease
    unit has its own, `SyslogIdentifier=cortex-hook`, and keeps its stderr stream)."""
    global _native
    _native = True


def log(level, message):
    """Write MESSAGE (one line per line of text) at LEVEL to stderr (or see speak_as_cortex_hook)."""
    lines = str(message).splitlines() or [""]
    if _native and stderr_is_journal():
        sys.stderr.flush()  # keep what was printed before in order
        while lines and _send((("MESSAGE", lines[0]), ("PRIORITY", str(level)), ("SYSLOG_IDENTIFIER", IDENTIFIER))):
            lines.pop(0)
        if not lines:
            return
    prefix = f"<{level}>" if stderr_is_journal() else ""
    for line in lines:
        sys.stderr.write(f"{prefix}{line}\n")
    sys.stderr.flush()


def error(message):
    """An error line: `cortex-hook: MESSAGE`, always exactly one line."""
    log(ERR, f"cortex-hook: {one_line(message)}")


def tell_unit(unit, level, message):
    """Write MESSAGE to the journal as cortex-hook's word about UNIT, so that `journalctl -u UNIT`
    (and `journalctl -t cortex-hook -u UNIT`) show it beside UNIT's own lines: journald takes
    OBJECT_SYSTEMD_UNIT= from root only. Best effort: no journal, nothing written."""
    _send((("MESSAGE", one_line(message)), ("PRIORITY", str(level)), ("SYSLOG_IDENTIFIER", IDENTIFIER),
           ("OBJECT_SYSTEMD_UNIT", unit)))


def _send(fields):
    """One journal entry of FIELDS (one-line values) through the native protocol; False if it
    could not be sent."""
    import socket  # only under systemd
    data = "".join(f"{name}={value}\n" for name, value in fields).encode("utf-8", "backslashreplace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, JOURNAL_SOCKET)
    except OSError:
        return False
    return True
