"""Leases over a unit's whole life, under the real systemd 252 (sd-sandbox) with fake NVML GPUs:
no lease or runtime file survives any way out (stop, kill -9 of server or wrapper, crash, failed
start, start timeout, restart loop), parallel starts get disjoint GPUs, a restart replaces its own
lease, and a lease from a previous boot is reaped."""

import json
import os
import sqlite3

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.sandbox import PORT, SUPERVISED, gpu_env


pytestmark = pytest.mark.systemd
UNIT = "llm.service"
PLAIN = "services:\n  - match: llm.service\n"  # env mode: no readiness probe needed
BOTH_MODES = pytest.mark.parametrize("mode", ["env", "supervise"])


# -- helpers -------------------------------------------------------------------------------------
def install_llm(h, mode, args="", service="", unit="", gpus=None, command=None):
    """The policy for MODE, then llm.service (the stand-in, or COMMAND) with cortex-hook in front."""
    h.setup(SUPERVISED if mode == "supervise" else PLAIN, gpus)
    if command is None:
        h.standin_unit(UNIT, f"User=nobody\n{service}", args=args)
    else:
        h.sb.write_unit(UNIT, f"[Service]\nUser=nobody\n{service}ExecStart={command}\n")
    if unit:  # [Unit] settings (StartLimit*): appended as a second [Unit] section
        with open(f"{h.sb.unit_dir}/{UNIT}", "a") as f:
            f.write(f"[Unit]\n{unit}")
    h.install(UNIT, mode)
    h.sb.daemon_reload()


def assert_holding(h, unit=UNIT, gpu=0):
    """UNIT holds exactly GPU and has its runtime files: there is something to release."""
    assert [(l["unit"], l["uuid"]) for l in h.leases()] == [(unit, uuid_of(gpu))]
    assert h.sb.read(f"/run/cortex-hook/{unit}.env") is not None
    assert h.decision(unit)["chosen"][0]["uuid"] == uuid_of(gpu)


def assert_released(h, unit=UNIT):
    """No lease at all, and UNIT's env file and decision record are gone."""
    assert h.leases() == []
    assert h.sb.read(f"/run/cortex-hook/{unit}.env") is None
    assert not h.sb.exists(f"/run/cortex-hook/{unit}.record")


def end_state(h, unit=UNIT):
    """Wait until UNIT is down for good and its lease unit has released, and return UNIT's outcome."""
    h.sb.wait_state(unit, "failed", "inactive")
    h.sb.wait_released(unit)
    return h.sb.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "NRestarts")


def gone(h, pid):
    return h.sb.read(f"/proc/{pid}/stat") is None


def history(h, unit=None):
    r = h.cortex("history", *([unit] if unit else []), "-n", "100", "--json")
    return json.loads(r.stdout)["history"]


def start_active(h, unit=UNIT):
    h.sb.systemctl("start", unit, check=True)
    st = h.sb.wait_state(unit, "active")
    assert_holding(h, unit)
    return int(st["MainPID"])


# -- 1. every way out releases -------------------------------------------------------------------
@BOTH_MODES
def test_stop_releases(host, mode):
    """`systemctl stop` ends the unit cleanly (Result=success) and gives the GPU back."""
    install_llm(host, mode)
    start_active(host)
    host.sb.stop(UNIT)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"]) == ("inactive", "success")
    assert_released(host)
    assert [r["action"] for r in history(host, UNIT)] == ["allocate", "release"]


def test_kill9_of_the_server_under_supervise_releases(host):
    """kill -9 of the server (the supervisor's child): the wrapper exits 128+9, the unit fails, the
    lease is released."""
    install_llm(host, "supervise")
    wrapper = start_active(host)
    (server,) = host.sb.children(wrapper)
    host.sb.run("kill", "-9", str(server), check=True)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "137")
    assert gone(host, wrapper) and gone(host, server)
    assert_released(host)


def test_kill9_of_the_server_in_env_mode_releases(host):
    """env mode: the server is MainPID; kill -9 gives Result=signal (KILL) and the lease goes."""
    install_llm(host, "env")
    server = start_active(host)
    host.sb.run("kill", "-9", str(server), check=True)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainCode"], st["ExecMainStatus"]) == \
        ("failed", "signal", "2", "9")  # CLD_KILLED, SIGKILL
    assert_released(host)


def test_kill9_of_the_wrapper_releases_and_leaves_no_orphan_server(host):
    """kill -9 of the supervise wrapper (MainPID): Result=signal, the server child does not outlive
    it (KillMode=mixed still SIGKILLs the cgroup), and the lease is released."""
    install_llm(host, "supervise")
    wrapper = start_active(host)
    (server,) = host.sb.children(wrapper)
    host.sb.run("kill", "-9", str(wrapper), check=True)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainCode"], st["ExecMainStatus"]) == \
        ("failed", "signal", "2", "9")
    assert gone(host, server), "the server outlived its wrapper while its lease was released"
    assert_released(host)


def test_crash_of_the_server_under_supervise_releases(host):
    """The server dies of SIGSEGV after it was ready: the wrapper exits 128+11, lease released."""
    install_llm(host, "supervise")
    wrapper = start_active(host)
    (server,) = host.sb.children(wrapper)
    host.sb.run("kill", "-SEGV", str(server), check=True)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "139")
    assert "server exited with signal 11" in host.sb.journal(UNIT) + host.sb.prop(UNIT, "StatusText")
    assert_released(host)


def test_crash_in_env_mode_releases(host):
    """env mode: a server that runs, then exits 3 (Result=exit-code, status 3), gives its GPU back."""
    crash = host.out / "crash-now"
    install_llm(host, "env", command=f"/bin/sh -c 'while [ ! -e {crash} ]; do sleep 0.1; done; exit 3'")
    start_active(host)
    crash.touch()
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainCode"], st["ExecMainStatus"]) == \
        ("failed", "exit-code", "1", "3")  # CLD_EXITED
    assert_released(host)


def test_failed_start_under_supervise_releases(host):
    """The server dies before it is ready: `systemctl start` fails, and the lease is released."""
    install_llm(host, "supervise", args="--exit-before-ready 3")
    r = host.sb.systemctl("start", UNIT)
    assert r.returncode != 0
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "3")
    assert_released(host)
    assert [r["action"] for r in history(host, UNIT)] == ["allocate", "release"]


def test_failed_start_in_env_mode_releases(host):
    """env mode, Type=exec with a missing binary: the start fails (203/EXEC) after the lease unit took
    the GPU, and the lease unit gives it back."""
    install_llm(host, "env", service="Type=exec\n", command="/nonexistent/llama-server --port 1")
    r = host.sb.systemctl("start", UNIT)
    assert r.returncode != 0
    st = end_state(host)
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "203")
    assert_released(host)
    assert [r["action"] for r in history(host, UNIT)] == ["allocate", "release"]


@pytest.mark.parametrize("mode", ["supervise", "env-notify"])
def test_start_timeout_releases(host, mode):
    """A server that never becomes ready within TimeoutStartSec=: Result=timeout, lease released.
    (env-notify: an env-mode unit of the admin's own Type=notify that never sends READY=1.)"""
    never = host.out / "never-ready"
    service = "TimeoutStartSec=6s\n" + ("Type=notify\n" if mode == "env-notify" else "")
    install_llm(host, "supervise" if mode == "supervise" else "env", args=f"--ready-file {never}",
                service=service)
    host.sb.systemctl("start", "--no-block", UNIT, check=True)
    host.sb.wait_for(lambda: host.leases(), "the lease to be taken", unit=UNIT)
    st = end_state(host)
    assert (st["ActiveState"], st["Result"]) == ("failed", "timeout")
    assert_released(host)


@pytest.mark.parametrize("mode", ["env", "supervise"])
def test_restart_loop_releases_each_run_and_after_giving_up(host, mode):
    """Restart=on-failure with a server that always fails: every run allocates afresh and releases, and
    once the start limit is hit (StartLimitBurst=2) no lease remains. (systemd 252 starts the lease
    unit once more as the limit is hit, and stops it: one more allocate and release.)"""
    install_llm(host, mode, args="--exit-before-ready 3", service="Restart=on-failure\nRestartSec=100ms\n",
                unit="StartLimitIntervalSec=60s\nStartLimitBurst=2\n")
    host.sb.systemctl("start", "--no-block", UNIT, check=True)
    host.sb.wait_for(lambda: "Start request repeated too quickly" in host.sb.journal(UNIT),
                     "systemd to give up (start limit)", unit=UNIT)
    st = end_state(host)
    # systemd 252 keeps the first failure's Result (not start-limit-hit) once the limit stops it
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "3")
    actions = [r["action"] for r in history(host, UNIT)]
    assert len(actions) >= 4 and actions == ["allocate", "release"] * (len(actions) // 2)  # paired, never two
    assert_released(host)


# -- 2. parallel starts ---------------------------------------------------------------------------
def test_parallel_starts_get_disjoint_gpus_and_a_third_fails_clearly(host):
    """a and b started together get different GPUs (each sees its own); c finds none left and fails:
    its lease unit exits 69, and cortex-hook's one-line reason is in c's journal and status."""
    host.setup('services:\n  - match: "?.service"\n')
    for i, name in enumerate(("a", "b", "c")):
        host.standin_unit(f"{name}.service", "User=nobody\n", port=PORT + 1 + i)
        host.install(f"{name}.service", "env")
    host.sb.daemon_reload()

    host.sb.systemctl("start", "a.service", "b.service", check=True)
    leases = {l["unit"]: l["uuid"] for l in host.leases()}
    assert sorted(leases) == ["a.service", "b.service"]
    assert sorted(leases.values()) == [uuid_of(0), uuid_of(1)]
    for unit, uuid in leases.items():
        pid = int(host.sb.prop(unit, "MainPID"))
        env = gpu_env(host.sb.environ(pid))
        assert (env["CUDA_VISIBLE_DEVICES"], env["CORTEX_HOOK_UNIT"]) == (uuid, unit)

    r = host.sb.systemctl("start", "c.service")
    assert r.returncode != 0 and "dependency" in r.stderr
    assert host.sb.prop("c.service", "ActiveState") == "inactive"  # never started
    st = host.sb.show(lease_unit_of("c.service"), "ActiveState", "Result", "ExecMainStatus")
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "69")
    status = host.sb.systemctl("status", "c.service", "--no-pager", "-n", "20").stdout
    errors = [l for l in host.sb.journal("c.service").splitlines() if l.startswith("c.service not started: ")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("c.service not started: c.service needs 1 GPU")
    assert "0 of 2 qualify (rejected: 2 leased)" in errors[0]
    assert errors[0] in status
    shown = host.sb.run("journalctl", "-t", "cortex-hook", "-u", "c.service", "--no-pager", "-o", "cat").stdout
    assert errors[0] in shown
    assert {l["unit"]: l["uuid"] for l in host.leases()} == leases  # a and b undisturbed
    assert host.sb.read("/run/cortex-hook/c.service.env") is None


# -- 3. restart --------------------------------------------------------------------------------
@BOTH_MODES
def test_restart_replaces_its_own_lease(host, mode):
    """`systemctl restart` on a one-GPU host works (twice) and leaves exactly one lease, the new
    start's, not two competing ones."""
    install_llm(host, mode, gpus=[gpu_desc(0)])
    first = start_active(host)
    invocations = {host.start_record(UNIT)["invocation"]}
    for _ in range(2):
        host.sb.systemctl("restart", UNIT, check=True)
        st = host.sb.wait_state(UNIT, "active")
        assert int(st["MainPID"]) != first
        assert_holding(host)
        lease = host.leases()[0]
        lease_unit = lease_unit_of(UNIT)
        assert lease["invocation"] == host.start_record(UNIT)["invocation"] == host.sb.prop(lease_unit, "InvocationID")
        assert lease["holder_unit"] == lease_unit
        invocations.add(lease["invocation"])
        assert gpu_env(host.sb.environ(int(st["MainPID"])))["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    assert len(invocations) == 3
    host.sb.stop(UNIT)
    assert_released(host)
    assert [r["action"] for r in history(host, UNIT)] == ["allocate", "release"] * 3  # never two at once


# -- 4. reaping a previous boot's lease ----------------------------------------------------------
def test_a_lease_from_a_previous_boot_is_reaped(host):
    """A lease left by another unit in an earlier boot (its cgroup path even exists now) does not
    block the only GPU: the next start reaps it, takes the GPU, and the history says "reap"."""
    install_llm(host, "env", gpus=[gpu_desc(0)])
    assert host.leases() == []  # creates the state database
    with sqlite3.connect(host.box.state) as db:
        db.execute("INSERT INTO lease (unit, uuid, sharing, pid, pid_start, boot_id, cgroup, invocation, since) "
                   "VALUES ('old.service', ?, 'exclusive', 1, NULL, ?, '/sys/fs/cgroup', 'abc', 1.0)",
                   (uuid_of(0), "0" * 8 + "-0000-4000-8000-" + "0" * 12))
    db.close()
    (stale,) = host.leases()
    assert (stale["unit"], stale["uuid"], stale["alive"]) == ("old.service", uuid_of(0), False)

    start_active(host)  # holds GPU 0, and only it
    reaps = [r for r in history(host) if r["action"] == "reap"]
    assert [(r["unit"], r["gpus"]) for r in reaps] == [("old.service", [uuid_of(0)])]
    host.sb.stop(UNIT)
    assert_released(host)


# -- 5. a lost state database ----------------------------------------------------------------------
def test_a_deleted_state_database_is_rebuilt_from_the_running_units(host):
    """`rm state.db*` while two units run: the next start used to get an empty database and a
    running unit's GPU. Now the new database gets the running units' leases back from their
    decision records, and the priorities and drains from the last view, and says so loudly."""
    host.setup('services:\n  - match: "?.service"\n', gpus=[gpu_desc(i) for i in range(4)])
    for i, name in enumerate(("a", "b", "c")):
        host.standin_unit(f"{name}.service", "User=nobody\n", port=PORT + 1 + i)
        host.install(f"{name}.service", "env")
    host.sb.daemon_reload()
    host.cortex("priority", "order", "3", "2", "1", "0")
    host.cortex("drain", "1", "--reason", "fan")
    host.sb.systemctl("start", "a.service", "b.service", check=True)
    held = {l["unit"]: l["uuid"] for l in host.leases()}
    assert sorted(held.values()) == [uuid_of(2), uuid_of(3)]  # ranks 0 and 1; GPU 1 drained
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(host.box.state + suffix):
            os.unlink(host.box.state + suffix)

    host.sb.systemctl("start", "c.service", check=True)
    leases = {l["unit"]: l["uuid"] for l in host.leases()}
    assert {u: leases[u] for u in held} == held  # the running units keep theirs
    assert leases["c.service"] == uuid_of(0)      # not a running unit's GPU, not the drained one
    said = host.sb.journal(lease_unit_of("c.service"))
    assert "was missing: restored 2 lease(s) of 2 running unit(s)" in said and "a.service, b.service" in said
    order = [p["uuid"] for p in host.cortex_json("priority", "list")["priority"]]
    assert order == [uuid_of(3), uuid_of(2), uuid_of(1), uuid_of(0)]
    assert [h["action"] for h in host.cortex_json("history")["history"]][:2] == ["recover", "allocate"]
    host.sb.stop("a.service", "b.service", "c.service")
    assert host.leases() == []
