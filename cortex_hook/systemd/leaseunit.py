"""The lease unit: `cortex-hook-lease@UNIT.service` takes UNIT's GPUs before UNIT starts and gives
them back after UNIT's processes are gone, as root.

Root never runs in UNIT itself. A `+` command there (ExecStartPre=+) would run with UNIT's
Environment= and EnvironmentFile=, and a server user who owns a directory the unit points to
(LD_PRELOAD, LD_LIBRARY_PATH, PATH) would get root. The lease unit runs with the service
manager's environment, which only root sets. UNIT's drop-in (systemd/dropin.py) has
`Requires=` and `After=` on it; the lease unit has `BindsTo=UNIT` and `StopWhenUnneeded=yes`, so:

- UNIT waits for its lease (its own start timeout does not count while it waits);
- every way UNIT ends (stop, exit, crash, kill -9, watchdog, start timeout, each failure of a
  `Restart=` loop, the start limit) stops the lease unit after UNIT's processes are gone, and its
  ExecStopPost= releases; a restart allocates afresh;
- a failed allocation fails UNIT's start with result 'dependency', the reason in the journal;
- it has no start limit of its own (StartLimitIntervalSec=0): UNIT's decides how often UNIT starts.

Type=notify with RemainAfterExit=yes: STATUS= shows the wait in `systemctl status
cortex-hook-lease@UNIT.service`; READY=1 comes with the lease, and the unit stays active, with no
process, until UNIT stops (holders.py: its invocation id holds the lease).
"""

PREFIX = "cortex-hook-lease@"
TEMPLATE = PREFIX + ".service"
MARKER = "# Written by cortex-hook"


def lease_unit_of(unit):
    """The lease unit of service UNIT: `cortex-hook-lease@UNIT.service`."""
    return f"{PREFIX}{unit}.service"


def render(options):
    """The lease unit template, calling the program and flags of OPTIONS (systemd/program.py)."""
    return "\n".join([
        f"{MARKER}: the GPU lease of each unit cortex-hook stands in front of.",
        "# UNIT's drop-in requires cortex-hook-lease@UNIT.service (%i is UNIT's name, as given).",
        "[Unit]",
        "Description=cortex-hook GPU lease for %i",
        "BindsTo=%i",
        "StopWhenUnneeded=yes",
        "# UNIT's own start limit decides how often it may start; one here would fail a restart of UNIT",
        "# (the monitor's after a fault, an admin's) with 'dependency' once 5 came within 10s",
        "StartLimitIntervalSec=0",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "RemainAfterExit=yes",
        "TimeoutStartSec=infinity",
        "SyslogIdentifier=cortex-hook",
        f"ExecStart={options.command('allocate', '%i')}",
        f"ExecStopPost={options.command('release', '%i')}",
    ]) + "\n"
