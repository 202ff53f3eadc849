"""How a unit's last run ended, in systemd's own words, for the history: `Result=` (what
`$SERVICE_RESULT` says in the unit's own ExecStopPost=: success, exit-code, signal, core-dump,
watchdog, timeout, oom-kill, start-limit-hit, resources, protocol) and how its main process ended."""

import signal

from ..errors import OutputError
from .systemctl import show

CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


def how_it_ended(unit):
    """{"result": Result=, "exit": "code 1" | "signal KILL" | "" (no main process ran)} for UNIT's
    last run, or None when systemd cannot tell."""
    try:
        props = show("history", unit, "Result", "ExecMainCode", "ExecMainStatus", timeout=5)  # on the stop path
    except OutputError:
        return None
    code, status = props.get("ExecMainCode", "0"), props.get("ExecMainStatus", "0")
    if not (code.isdigit() and status.isdigit()) or "Result" not in props:
        return None
    return {"result": props["Result"], "exit": _exit(int(code), int(status))}


def _exit(code, status):
    if code == CLD_EXITED:
        return f"code {status}"
    if code in (CLD_KILLED, CLD_DUMPED):
        try:
            name = signal.Signals(status).name[3:]
        except ValueError:
            name = str(status)
        return f"signal {name}" + (" (core dumped)" if code == CLD_DUMPED else "")
    return ""


def describe(ended):
    """One line for the history: `exit-code (code 1)`, `success (signal TERM)`, `never started`."""
    if not ended:
        return ""
    return f"{ended['result']} ({ended['exit']})" if ended.get("exit") else f"{ended['result']} (never ran)"
