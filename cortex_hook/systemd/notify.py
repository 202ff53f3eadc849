"""sd_notify messages (through the sdnotify package): STATUS=, READY=1, WATCHDOG=1, STOPPING=1."""

import os

import sdnotify

from .journal import NOTICE, WARNING, log


class Notifier:
    """Talks to $NOTIFY_SOCKET when systemd gave one; otherwise prints STATUS lines to stderr."""

    def __init__(self):
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._socket = None
        self._failed = False
        if self.enabled:
            self._socket = sdnotify.SystemdNotifier().socket  # connected (abstract names handled)
        self.last_status = None

    def send(self, *fields):
        """Send FIELDS (e.g. "READY=1", "STATUS=…") as one datagram.

        Encoded as UTF-8 here: sdnotify's own notify() encodes latin-1 and silently drops any
        message it cannot encode (a STATUS with "…" or a non-ASCII unit name would lose READY=1).
        """
        if self._socket is None:
            return
        try:
            self._socket.sendall("\n".join(fields).encode("utf-8"))
        except OSError as exc:
            if not self._failed:
                log(WARNING, f"cortex-hook: cannot notify systemd: {exc}")
                self._failed = True

    def status(self, text, *more):
        """Set the STATUS= line (one line; also echoed to the journal when it changes)."""
        line = " ".join(str(text).split())
        if line != self.last_status:
            log(NOTICE, f"cortex-hook: {line}")
            self.last_status = line
        self.send(*more, f"STATUS={line}")

    def ready(self, text):
        """READY=1 with a last STATUS= line."""
        self.status(text, "READY=1")

    def watchdog(self):
        """WATCHDOG=1: the server is still healthy."""
        self.send("WATCHDOG=1")

    def stopping(self, text):
        """STOPPING=1 with a last STATUS= line."""
        self.status(text, "STOPPING=1")


def watchdog_interval():
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
