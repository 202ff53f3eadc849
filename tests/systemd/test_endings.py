"""How a start or a run ended, where an admin looks, under the real systemd 252 (sd-sandbox): the
last `Status:` line says how it ended (not "waiting" or "stopping"), cortex-hook's lines carry its
own syslog identifier in the unit's journal (`journalctl -t cortex-hook -u UNIT`), and `history`
says how each run ended, in systemd's words."""

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.box import gpu_desc

pytestmark = pytest.mark.systemd


def cortex_lines(host, unit):
    """What `journalctl -t cortex-hook -u UNIT` shows, as an admin would ask."""
    host.sb.run("journalctl", "--sync")
    return host.sb.run("journalctl", "-t", "cortex-hook", "-u", unit, "--no-pager", "-o", "cat").stdout


def test_a_start_that_gave_up_waiting_says_how_it_ended(host):
    """`on_unavailable: wait 2s` with the only GPU drained: the start fails (75), and the lease unit's
    last STATUS= says so (it said `waiting for a GPU (0s left)` forever); the reason is in
    `journalctl -t cortex-hook -u UNIT`, however many restarts scroll it out of `systemctl status`."""
    host.setup("services:\n  - match: llm.service\n    on_unavailable: wait 2s\n", gpus=[gpu_desc(0)])
    host.cortex("drain", "0", "--reason", "maintenance")
    host.standin_unit("llm.service", "User=nobody\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    assert host.sb.systemctl("start", "llm.service").returncode != 0
    lease = host.sb.wait_state(lease_unit_of("llm.service"), "failed")
    assert lease["StatusText"].startswith("not started: "), lease
    assert "waiting" not in lease["StatusText"].split(":", 1)[0]
    said = cortex_lines(host, "llm.service")
    assert "llm.service not started: " in said, said
    assert "drained" in said.split("llm.service not started: ", 1)[1]


def test_a_supervised_start_stopped_before_ready_says_how_it_ended(host):
    """A supervised server whose health never turns 200 within TimeoutStartSec=: systemd stops it,
    and its last STATUS= is how it ended (it said `stopping llm.service`)."""
    host.setup("services:\n  - match: llm.service\n    readiness: http://127.0.0.1:1/health\n")
    host.standin_unit("llm.service", "User=nobody\nTimeoutStartSec=3\n")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    assert host.sb.systemctl("start", "llm.service").returncode != 0
    state = host.sb.wait_state("llm.service", "failed", "inactive")
    assert state["StatusText"].startswith("stopped before it was ready: server exited with "), state
    assert "cortex-hook: stopped before it was ready" in cortex_lines(host, "llm.service")


def test_history_says_how_each_run_ended(host):
    """A stop and a kill -9 of the server: each release row says how systemd saw the run end
    (`$SERVICE_RESULT` and the main process's exit); an unknown unit has no history, and says so."""
    host.setup("services:\n  - match: llm.service\n")
    host.standin_unit("llm.service", "User=nobody\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    host.sb.stop("llm.service")
    host.sb.systemctl("start", "llm.service", check=True)
    host.sb.systemctl("kill", "--signal=KILL", "llm.service", check=True)
    host.sb.wait_released("llm.service")
    host.sb.wait_for(lambda: len(releases(host)) == 2, "two release rows")
    stopped, killed = [r["detail"].get("ended") for r in releases(host)]
    assert stopped == {"result": "success", "exit": "signal TERM"}
    assert killed == {"result": "signal", "exit": "signal KILL"}
    shown = host.cortex("history", "llm.service").stdout
    assert "ended: signal (signal KILL)" in shown and "ended: success (signal TERM)" in shown
    assert host.cortex("history", "nosuch.service").stdout == "no history for nosuch.service\n"


def releases(host):
    return [r for r in host.cortex_json("history", "llm.service")["history"] if r["action"] == "release"]


def test_quick_restarts_are_limited_by_the_units_own_start_limit_only(host):
    """Seven restarts within 10 s (the monitor's after faults, an admin's): every one gets its lease,
    though systemd's default start limit is 5 starts in 10 s, because the lease unit has none of its
    own (StartLimitIntervalSec=0), and the unit's own limit, the one that decides, is raised here."""
    host.setup("services:\n  - match: llm.service\n", gpus=[gpu_desc(0), gpu_desc(1)])
    host.standin_unit("llm.service", "User=nobody\nStartLimitBurst=100\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    for _ in range(7):
        done = host.sb.systemctl("restart", "llm.service")
        assert done.returncode == 0, (done.stderr, host.sb.journal(lease_unit_of("llm.service")))
    lease = host.sb.show(lease_unit_of("llm.service"), "ActiveState", "StartLimitIntervalUSec")
    assert lease == {"ActiveState": "active", "StartLimitIntervalUSec": "0"}, lease
