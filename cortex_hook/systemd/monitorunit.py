"""`cortex-hook-monitor.service`: the host daemon that watches the GPUs while servers run
(cortex_hook/monitor/). `cortex-hook install-monitor` writes it with this machine's paths."""

NAME = "cortex-hook-monitor.service"
MARKER = "# Written by cortex-hook"


def render(options):
    """The monitor's unit, calling the program and flags of OPTIONS (systemd/program.py)."""
    return "\n".join([
        f"{MARKER} install-monitor: the GPU health monitor (README, \"When a GPU fails\").",
        "[Unit]",
        "Description=cortex-hook GPU health monitor",
        "[Service]",
        # READY=1 once every GPU is registered for events and polled once; WATCHDOG=1 only after a
        # poll the driver answered: a hung driver gets the monitor restarted, never frozen
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60s",
        "Restart=on-failure",
        "RestartSec=5s",
        "SyslogIdentifier=cortex-hook",
        f"ExecStart={options.command('monitor')}",
        # it restarts units and writes the state: root, but nothing it does not need
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "ProtectHome=read-only",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"
