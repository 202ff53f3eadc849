"""Preemption under the real systemd 252 (sd-sandbox) and the fake driver: a critical unit takes the
GPUs of batch work, the victims are requeued or stopped, the handoff waits for the memory the
driver still shows, and requeued units get their GPUs back by themselves."""

import json

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.sandbox import gpu_env

pytestmark = pytest.mark.systemd

GiB = 1 << 30
CLASSES = """\
services:
  - match: chat.service
    class: critical
    preempt: lower
{chat}
  - match: embed.service
    class: batch
    gpus: {embed_gpus}
{embed}
  - match: "*.service"
    class: normal
{other}
"""


def policy(chat="", embed="", other="", embed_gpus=2):
    return CLASSES.format(chat=chat, embed=embed, other=other, embed_gpus=embed_gpus)


def unit(host, name, port, extra=""):
    """NAME runs the stand-in server on PORT (env mode: its lease unit allocates)."""
    record = host.standin_unit(name, "User=nobody\n" + extra, port=port)
    host.install(name, "env")
    return record


def deaf_unit(host, name):
    """NAME runs a server that ignores SIGTERM (its own TimeoutStopSec= is long: 90 s)."""
    host.sb.write_unit(name, "[Service]\nUser=nobody\nTimeoutStopSec=90\nExecStart="
                       f"{host.sb.python} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "time.sleep(100000)'\n")
    host.install(name, "env")


def active(host, name):
    return host.sb.prop(name, "ActiveState") == "active"


def gpus_of(host, name):
    """The GPU UUIDs UNIT's main process was started with (its CUDA_VISIBLE_DEVICES)."""
    pid = int(host.sb.prop(name, "MainPID"))
    assert pid, f"{name} has no main process"
    return gpu_env(host.sb.environ(pid)).get("CUDA_VISIBLE_DEVICES", "").split(",")


def held(host):
    """{unit: sorted UUIDs} of the leases now."""
    out = {}
    for lease in host.leases():
        out.setdefault(lease["unit"], []).append(lease["uuid"])
    return {u: sorted(v) for u, v in out.items()}


def status(host, name):
    host.sb.run("journalctl", "--sync")
    return host.sb.systemctl("status", name, "--no-pager", "-n", "20").stdout


def test_a_critical_start_preempts_batch_work_which_is_requeued_and_comes_back(host):
    """embed (batch) holds both GPUs; chat (critical, preempt: lower) starts: `systemctl start`
    succeeds, chat runs on a GPU, embed is requeued and shows why it waits; when chat stops,
    embed is active again on both GPUs by itself."""
    host.setup(policy())
    unit(host, "embed.service", 18081)
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    assert held(host) == {"embed.service": sorted([uuid_of(0), uuid_of(1)])}

    host.sb.systemctl("start", "chat.service", check=True)
    assert active(host, "chat.service")
    got = gpus_of(host, "chat.service")
    assert len(got) == 1 and got[0] in (uuid_of(0), uuid_of(1))
    assert held(host) == {"chat.service": got}

    lease = host.sb.wait_for(lambda: "preempted by chat.service" in host.sb.prop(
        lease_unit_of("embed.service"), "StatusText") and host.sb.show(lease_unit_of("embed.service"), "StatusText",
                                                                        "ActiveState"), "embed to wait, requeued")
    assert lease["ActiveState"] == "activating" and lease["StatusText"].startswith("waiting for a GPU (preempted by")
    shown = status(host, "embed.service")
    assert "embed.service preempted by chat.service for GPU" in shown, shown
    assert "waits for a GPU: preempted by chat.service (requeued)" in shown, shown
    rows = host.cortex_json("history", "chat.service")["history"]
    preempt = [r for r in rows if r["action"] == "preempt"]
    assert len(preempt) == 1 and [v["unit"] for v in preempt[0]["detail"]["victims"]] == ["embed.service"]

    host.sb.stop("chat.service")
    host.sb.wait_for(lambda: active(host, "embed.service"), "embed to be active again", unit="embed.service")
    assert sorted(gpus_of(host, "embed.service")) == sorted([uuid_of(0), uuid_of(1)])
    assert held(host) == {"embed.service": sorted([uuid_of(0), uuid_of(1)])}


def test_a_normal_unit_cannot_preempt_another_normal_unit(host):
    """Two normal units hold both GPUs; a third normal unit with `preempt: lower` is refused (69)
    and says why; the two keep running, untouched."""
    host.setup(policy(other="    preempt: lower\n"))
    for name, port in (("a.service", 18081), ("b.service", 18082), ("c.service", 18083)):
        unit(host, name, port)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "a.service", "b.service", check=True)
    assert host.sb.systemctl("start", "c.service").returncode != 0
    said = host.sb.wait_state(lease_unit_of("c.service"), "failed")["StatusText"]
    assert said.startswith("not started: c.service needs 1 GPU") and "leased" in said, said
    assert active(host, "a.service") and active(host, "b.service")
    assert sorted(held(host)) == ["a.service", "b.service"]
    assert not [r for r in host.cortex_json("history")["history"] if r["action"] == "preempt"]


def test_a_never_victim_is_never_chosen(host):
    """embed (batch) says `when_preempted: never`: chat (critical, preempt: lower) is refused and
    the explanation names the exemption; embed keeps both GPUs and runs on."""
    host.setup(policy(embed="    when_preempted: never\n"))
    unit(host, "embed.service", 18081)
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    pid = host.sb.prop("embed.service", "MainPID")
    assert host.sb.systemctl("start", "chat.service").returncode != 0
    host.sb.wait_state(lease_unit_of("chat.service"), "failed")
    shown = host.cortex("plan", "chat.service", "--", "/bin/true", check=False).stdout
    assert "preempt: embed.service is never preempted (when_preempted: never)" in shown, shown
    assert active(host, "embed.service") and host.sb.prop("embed.service", "MainPID") == pid
    assert held(host) == {"embed.service": sorted([uuid_of(0), uuid_of(1)])}


def test_a_victim_with_when_preempted_stop_stays_stopped(host):
    """`when_preempted: stop`: embed is stopped (not requeued) for chat, and stays stopped after
    chat has stopped and given its GPU back."""
    host.setup(policy(embed="    when_preempted: stop\n"))
    unit(host, "embed.service", 18081)
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    host.sb.systemctl("start", "chat.service", check=True)
    assert host.sb.prop("embed.service", "ActiveState") == "inactive"
    assert "embed.service preempted by chat.service for GPU" in status(host, "embed.service")
    assert "stopped (when_preempted: stop)" in status(host, "embed.service")
    host.sb.stop("chat.service")
    assert host.sb.prop("embed.service", "ActiveState") == "inactive"
    assert host.sb.prop(lease_unit_of("embed.service"), "ActiveState") == "inactive"
    assert held(host) == {}


def test_a_victim_that_ignores_sigterm_is_killed_after_its_grace(host):
    """embed ignores SIGTERM (and its own TimeoutStopSec= is long): after `preempt_grace: 2s`
    cortex-hook kills it, says so in its status, and chat starts."""
    host.setup(policy(embed="    preempt_grace: 2s\n"))
    deaf_unit(host, "embed.service")
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    host.sb.systemctl("start", "chat.service", check=True)
    assert len(gpus_of(host, "chat.service")) == 1
    shown = status(host, "embed.service")
    assert "still runs 2s after it was told to stop (preempt_grace), preempted by chat.service: SIGKILL" in shown
    ended = [r for r in host.cortex_json("history", "embed.service")["history"] if r["action"] == "release"]
    assert ended[-1]["detail"]["ended"]["exit"] == "signal KILL", ended


def _holding(host, pid, gib=20):
    """The fake driver lists PID on GPU 0 holding GIB GiB (GPU 1 idle)."""
    host.box.write_gpus([gpu_desc(0, memory_used=f"{gib}GiB", processes=[{"pid": pid, "used_memory": f"{gib}GiB"}]),
                         gpu_desc(1)])


def _handoff_setup(host, timeout="2m"):
    host.setup(policy(chat="    min_free_memory: 20GiB\n") + f"handoff_timeout: {timeout}\n")
    host.sb.set_environment(FAKE_NVML_LIVE="1")
    unit(host, "embed.service", 18081)
    record = unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    pid = int(host.sb.prop("embed.service", "MainPID"))
    _holding(host, pid)  # embed's server "uses" 20 GiB of GPU 0's 24 GiB
    return pid, record


def test_the_handoff_waits_for_the_memory_the_driver_still_shows(host):
    """embed's process is gone after its stop, but the driver lists it on GPU 0 for N more seconds
    (CUDA tearing down): chat, which needs 20 GiB, starts only once the driver lets go, and soon
    after; its lease unit said what it waited for."""
    import threading
    import time

    pid, record = _handoff_setup(host)
    freed = {}

    def let_go_later():
        host.sb.wait_for(lambda: not host.sb.exists(f"/proc/{pid}"), "embed's server to end", timeout=60)
        time.sleep(3)  # the driver holds the memory 3 s after the process ended (what is simulated)
        host.box.write_gpus([gpu_desc(0), gpu_desc(1)])
        freed["at"] = time.time()

    helper = threading.Thread(target=let_go_later)
    helper.start()
    try:
        host.sb.systemctl("start", "chat.service", check=True)
    finally:
        helper.join()
    started = json.loads(host.record(record) and record.read_text())
    assert gpus_of(host, "chat.service") == [uuid_of(0)]  # the GPU that fits only once freed
    started_at = record.stat().st_mtime
    assert started_at >= freed["at"], "chat's server started before the driver let go of the memory"
    assert started_at - freed["at"] < 5, "chat's server started long after the memory came back"
    assert started["pid"] == int(host.sb.prop("chat.service", "MainPID"))


def test_a_holder_that_never_lets_go_ends_in_a_clear_timeout(host):
    """The driver keeps listing embed's ended process on GPU 0: chat's start fails after
    `handoff_timeout` (75) naming the GPU and the process, and gives its lease back."""
    pid, _ = _handoff_setup(host, timeout="3s")
    assert host.sb.systemctl("start", "chat.service").returncode != 0
    said = host.sb.wait_state(lease_unit_of("chat.service"), "failed")["StatusText"]
    assert f"GPU 0 ({uuid_of(0)}) is still not free after 3s (handoff_timeout): pid {pid} has ended, " \
           "but the driver still lists it holding 20.0 GiB" in said, said
    assert "chat.service" not in held(host)
    assert host.sb.prop(lease_unit_of("chat.service"), "ExecMainStatus") == "75"


MIXED = """\
services:
  - match: "c*.service"
    class: critical
    preempt: lower
  - match: "n*.service"
    class: normal
    preempt: lower
  - match: "b*.service"
    class: batch
"""


def test_many_mixed_starts_at_once_never_share_a_gpu_nor_preempt_for_nothing(host):
    """Four batch units hold the four GPUs; two critical and two normal units (all `preempt:
    lower`) start at once: each gets a GPU, no GPU is ever leased by two units, and every
    preemption ends with its preemptor holding the GPUs it took. When they stop, the four batch
    units come back by themselves."""
    host.setup(MIXED, gpus=[gpu_desc(i) for i in range(4)])
    batch = [f"b{i}.service" for i in range(4)]
    higher = ["c0.service", "c1.service", "n0.service", "n1.service"]
    for i, name in enumerate(batch + higher):
        unit(host, name, 18081 + i)
    host.sb.daemon_reload()
    host.sb.systemctl("start", *batch, check=True)
    host.sb.systemctl("start", "--no-block", *higher, check=True)
    host.sb.wait_for(lambda: all(active(host, u) for u in higher), "the critical and normal units to run")
    leases = held(host)
    assert sorted(leases) == sorted(higher) and all(len(v) == 1 for v in leases.values())
    assert len({v[0] for v in leases.values()}) == 4

    rows = sorted(host.cortex_json("history", "-n", "1000")["history"], key=lambda r: r["id"])
    holders = {}
    for row in rows:
        gpus = [g for g in row["gpus"].split(",") if g] if isinstance(row["gpus"], str) else row["gpus"]
        if row["action"] == "allocate":
            for gpu in gpus:
                assert gpu not in holders, f"{gpu} leased by {row['unit']} while {holders.get(gpu)} held it"
                holders[gpu] = row["unit"]
        elif row["action"] in ("release", "reap"):
            for gpu in gpus:
                if holders.get(gpu) == row["unit"]:
                    del holders[gpu]
    preempts = [r for r in rows if r["action"] == "preempt"]
    assert len(preempts) == 4 and {r["unit"] for r in preempts} == set(higher)
    for row in preempts:
        promised = row["gpus"].split(",") if isinstance(row["gpus"], str) else row["gpus"]
        later = [r for r in rows if r["id"] > row["id"] and r["unit"] == row["unit"] and r["action"] == "allocate"]
        assert later and set(promised) <= set(later[0]["gpus"] if isinstance(later[0]["gpus"], list)
                                              else later[0]["gpus"].split(",")), (row, later)
        victims = [v["unit"] for v in row["detail"]["victims"]]
        assert len(victims) == 1 and victims[0] in batch

    host.sb.stop(*higher)
    host.sb.wait_for(lambda: all(active(host, u) for u in batch), "the batch units to come back")
    assert sorted(held(host)) == sorted(batch)


def test_a_free_gpu_of_the_selection_is_promised_with_the_victims(host):
    """chat needs 2 GPUs: GPU 0 is free, embed (1 GPU) holds GPU 1. chat preempts embed and is
    promised both: embed's requeued restart, which fits on GPU 0, does not take it; chat gets
    both GPUs and embed waits."""
    host.setup(policy(chat="    gpus: 2\n", embed_gpus=1))
    unit(host, "x.service", 18082)
    unit(host, "embed.service", 18081)
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "x.service", check=True)  # keeps GPU 0 while embed takes GPU 1
    host.sb.systemctl("start", "embed.service", check=True)
    host.sb.stop("x.service")
    assert held(host) == {"embed.service": [uuid_of(1)]}
    host.sb.systemctl("start", "chat.service", check=True)
    assert sorted(gpus_of(host, "chat.service")) == [uuid_of(0), uuid_of(1)]
    host.sb.wait_for(lambda: "preempted by chat.service" in host.sb.prop(lease_unit_of("embed.service"),
                                                                          "StatusText"), "embed to wait, requeued")
    assert held(host) == {"chat.service": [uuid_of(0), uuid_of(1)]}


def test_an_admin_stop_of_a_requeued_unit_ends_its_requeue(host):
    """embed, requeued and waiting, is stopped by the admin; started again later while chat still
    holds the GPU, it is an ordinary start: refused at once (its `on_unavailable` is fail), not
    waiting as 'preempted by chat.service'."""
    host.setup(policy(embed_gpus=1), gpus=[gpu_desc(0)])
    unit(host, "embed.service", 18081)
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "embed.service", check=True)
    host.sb.systemctl("start", "chat.service", check=True)
    lease = lease_unit_of("embed.service")
    host.sb.wait_for(lambda: "preempted by chat" in host.sb.prop(lease, "StatusText"), "embed to wait, requeued")
    host.sb.stop("embed.service")
    assert host.sb.systemctl("start", "embed.service").returncode != 0
    said = host.sb.wait_state(lease, "failed")["StatusText"]
    assert said.startswith("not started: embed.service needs 1 GPU") and "preempted" not in said, said
    assert held(host) == {"chat.service": [uuid_of(0)]}


def test_a_victim_still_in_its_handoff_is_restarted_too(host):
    """embed has its lease but its lease unit still waits for the memory of GPU 0's last holder
    (embed itself not yet started); chat preempts it: embed's start is restarted (and requeued),
    its lease given back, and chat runs once the memory is back."""
    host.setup(policy(embed_gpus=1), gpus=[gpu_desc(0)])
    host.sb.set_environment(FAKE_NVML_LIVE="1")
    for name, port in (("x.service", 18082), ("embed.service", 18081), ("chat.service", 18080)):
        unit(host, name, port)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "x.service", check=True)
    pid = int(host.sb.prop("x.service", "MainPID"))
    host.box.write_gpus([gpu_desc(0, memory_used="20GiB", processes=[{"pid": pid, "used_memory": "20GiB"}])])
    host.sb.stop("x.service")  # GPU 0 given back; the driver still lists x's ended server on it
    host.sb.systemctl("start", "--no-block", "embed.service", check=True)
    embed_lease = lease_unit_of("embed.service")
    host.sb.wait_for(lambda: "waiting for the memory" in host.sb.prop(embed_lease, "StatusText"),
                     "embed's lease unit to wait in the handoff")
    assert held(host) == {"embed.service": [uuid_of(0)]}
    host.sb.systemctl("start", "--no-block", "chat.service", check=True)
    chat_lease = lease_unit_of("chat.service")
    host.sb.wait_for(lambda: "waiting for the memory" in host.sb.prop(chat_lease, "StatusText"),
                     "chat to have GPU 0, waiting for its memory", unit=chat_lease)
    assert held(host) == {"chat.service": [uuid_of(0)]}
    host.box.write_gpus([gpu_desc(0)])  # the driver lets go
    host.sb.wait_for(lambda: active(host, "chat.service"), "chat to run", unit="chat.service")
    assert gpus_of(host, "chat.service") == [uuid_of(0)]
    assert "preempted by chat.service" in host.sb.prop(embed_lease, "StatusText")


def test_the_sigkill_after_the_grace_never_hits_a_victims_new_instance(host):
    """chat (2 GPUs of 20 GiB) preempts v1 (grace 1s) and v2 (ignores SIGTERM, grace 3s). v1 stops
    at once and its requeued restart runs on the small GPU 2, which chat cannot use; at v1's grace
    it is left alone (it no longer holds what chat waits for), and v2 is killed at its own."""
    host.setup("""\
services:
  - match: chat.service
    class: critical
    preempt: lower
    gpus: 2
    min_free_memory: 20GiB
  - match: v1.service
    class: batch
    preempt_grace: 1s
  - match: v2.service
    class: batch
    preempt_grace: 3s
""", gpus=[gpu_desc(0), gpu_desc(1), gpu_desc(2, memory_total="8GiB")])
    unit(host, "v1.service", 18081)
    deaf_unit(host, "v2.service")
    unit(host, "chat.service", 18080)
    host.sb.daemon_reload()
    host.sb.systemctl("start", "v1.service", "v2.service", check=True)
    assert sorted(held(host)) == ["v1.service", "v2.service"]
    assert {g for v in held(host).values() for g in v} == {uuid_of(0), uuid_of(1)}
    host.sb.systemctl("start", "chat.service", check=True)
    assert sorted(gpus_of(host, "chat.service")) == [uuid_of(0), uuid_of(1)]
    host.sb.wait_for(lambda: active(host, "v1.service"), "v1 to run again on GPU 2", unit="v1.service")
    assert held(host)["v1.service"] == [uuid_of(2)]
    said = status(host, "v1.service")
    assert "SIGKILL" not in said, said
    assert "v2.service preempted by chat.service" in status(host, "v2.service")
    assert "(preempt_grace), preempted by chat.service: SIGKILL" in status(host, "v2.service")
    v1_ends = [r["detail"]["ended"]["exit"] for r in host.cortex_json("history", "v1.service")["history"]
               if r["action"] == "release"]
    assert len(v1_ends) == 1 and "KILL" not in v1_ends[0], v1_ends  # (the stand-in ends 0 on SIGTERM)
