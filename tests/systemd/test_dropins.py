"""cortex-hook in front of real units, under the real systemd 252 (sd-sandbox), GPUs from the fake
NVML driver: drop-ins, the three modes, readiness, watchdog, lease release on every way out,
the generator, isolation, and hostile values reaching the service byte for byte."""

import os

import pytest

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import REPO
from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.sandbox import PORT, STANDIN, SUPERVISED, Host, gpu_env, host_root


pytestmark = pytest.mark.systemd

# -- the three modes ---------------------------------------------------------------------------
def test_env_mode_with_user_gets_exactly_the_planned_variables(host):
    """The lease unit allocates as root; the main process (User=nobody) gets the env file."""
    host.setup("services:\n  - match: llm.service\n    min_free_memory: 8GiB\n")
    record = host.standin_unit("llm.service", "User=nobody\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    seen = host.record(record)
    assert seen["uid"] != 0
    planned = host.decision("llm.service")["launch"]
    assert planned["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    main_pid = int(host.sb.prop("llm.service", "MainPID"))
    assert gpu_env(host.sb.environ(main_pid)) == planned["env"]
    assert gpu_env(seen["env"]) == planned["env"]
    assert [(l["unit"], l["uuid"]) for l in host.leases()] == [("llm.service", uuid_of(0))]

    host.sb.stop("llm.service")
    assert host.leases() == []
    assert host.sb.read("/run/cortex-hook/llm.service.env") is None


def test_exec_mode_becomes_the_server_with_its_prefixes(host):
    """exec: MAINPID *is* the server (same pid), with the planned env; `@` keeps its argv[0]."""
    host.setup("services:\n  - match: llm.service\n")
    record = host.out / "llm.json"
    host.sb.write_unit("llm.service", f"[Service]\nUser=nobody\nExecStart=@{host.sb.python} llm-standin -u "
                                      f"{STANDIN} --port {PORT} --record {record}\n")
    host.install("llm.service", "exec")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    seen = host.record(record)
    main_pid = int(host.sb.prop("llm.service", "MainPID"))
    assert seen["argv"][0].endswith("standin_server.py")  # python's argv; its argv[0] is below
    assert host.sb.read(f"/proc/{main_pid}/cmdline").split("\0")[0] == "llm-standin"
    planned = host.decision("llm.service")["launch"]["env"]
    assert gpu_env(host.sb.environ(main_pid)) == planned == gpu_env(seen["env"])
    assert planned["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    host.sb.stop("llm.service")
    assert host.leases() == []


def test_supervise_blocks_until_health_turns_200(host):
    """Type=notify: the start waits while /health says 503 Loading model, with that in STATUS=,
    and completes (READY=1) only once it says 200; STATUS then names the GPUs by UUID."""
    host.setup(SUPERVISED)
    ready = host.out / "model-loaded"
    record = host.standin_unit("llm.service", "User=nobody\n", args=f"--ready-file {ready}")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "--no-block", "llm.service", check=True)
    loading = host.sb.wait_for(lambda: "503 Loading model" in host.sb.prop("llm.service", "StatusText") and
                               host.sb.show("llm.service", "ActiveState", "StatusText"), "STATUS= 503 Loading model")
    assert loading["ActiveState"] == "activating"
    assert loading["StatusText"] == "waiting for /health: 503 Loading model"
    ready.touch()
    st = host.sb.wait_state("llm.service", "active")
    assert st["StatusText"] == f"ready on {uuid_of(0)} (priority -)"  # the shortest prefix no other GPU has
    planned = host.decision("llm.service")["launch"]["env"]
    assert gpu_env(host.sb.environ(int(st["MainPID"]))) == planned  # the wrapper
    assert gpu_env(host.record(record)["env"]) == planned           # and the server it runs
    host.sb.stop("llm.service")
    final = host.sb.show("llm.service", "Result", "ActiveState")
    assert final == {"Result": "success", "ActiveState": "inactive"}
    assert (host.out / "llm.service.json.signals").read_text() == "SIGTERM\n"  # exactly once
    assert host.leases() == []


def test_supervise_fails_the_start_when_the_server_dies_first(host):
    host.setup(SUPERVISED)
    host.standin_unit("llm.service", "User=nobody\n", args="--exit-before-ready 3")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    r = host.sb.systemctl("start", "llm.service")
    assert r.returncode != 0
    st = host.sb.show("llm.service", "Result", "ExecMainStatus", "StatusText", "ActiveState")
    assert st["ActiveState"] == "failed" and st["Result"] == "exit-code" and st["ExecMainStatus"] == "3"
    assert st["StatusText"] == "server exited with code 3 before it was ready"
    assert host.leases() == []


def test_watchdog_ends_a_server_whose_health_goes_bad(host):
    host.setup(SUPERVISED + "    watchdog: 2s\n")
    sick = host.out / "sick"
    host.standin_unit("llm.service", "User=nobody\n", args=f"--unhealthy-file {sick}")
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.sb.prop("llm.service", "WatchdogUSec") == "2s"
    assert len(host.leases()) == 1
    sick.touch()
    host.sb.wait_for(lambda: host.sb.prop("llm.service", "Result") == "watchdog", "Result=watchdog")
    host.sb.wait_state("llm.service", "failed", "inactive")
    assert "Watchdog timeout" in host.sb.journal("llm.service")
    assert host.leases() == []


# -- device isolation ----------------------------------------------------------------------------
OPEN_DEVICES = """\
import json, os, sys, time
result = {}
for path in sys.argv[2:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        result[path] = "opened"
    except OSError as exc:
        result[path] = exc.errno
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(result, f)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
"""


def test_isolate_lets_the_unit_open_only_its_gpu(host):
    """isolate: true puts the device cgroup in front of CUDA_VISIBLE_DEVICES: the chosen GPU's node
    opens (ENXIO here: the nodes have no driver behind them), the other GPU's node gives EPERM."""
    import errno
    host.setup("isolate: true\nservices:\n  - match: llm.service\n",
               gpus=[gpu_desc(0, minor_number=0), gpu_desc(1, minor_number=1)])
    host.sb.run("mknod", "-m", "666", "/dev/nvidia1", "c", "195", "1", check=True)
    host.cortex("drain", "0", "--reason", "make the choice GPU 1")
    script = host.out / "open.py"
    script.write_text(OPEN_DEVICES)
    result = host.out / "opened.json"
    host.sb.write_unit("llm.service", f"[Service]\nUser=nobody\nExecStart={host.sb.python} {script} {result} "
                                      "/dev/nvidia0 /dev/nvidia1 /dev/null\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    opened = host.record(result)
    assert host.decision("llm.service")["launch"]["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(1)
    assert opened["/dev/nvidia1"] == errno.ENXIO   # allowed: the device cgroup let it through
    assert opened["/dev/nvidia0"] == errno.EPERM   # the other GPU: refused by the device cgroup
    assert opened["/dev/null"] == "opened"
    props = host.sb.show("llm.service", "DevicePolicy", "NeedDaemonReload")
    allowed = host.sb.device_allow("llm.service")
    assert props["DevicePolicy"] == "closed" and "/dev/nvidia1 rw" in allowed
    assert "/dev/nvidia0 rw" not in allowed
    assert props["NeedDaemonReload"] == "no"  # install left placeholders: no "changed on disk"
    host.sb.stop("llm.service")
    assert host.sb.show("llm.service", "DevicePolicy")["DevicePolicy"] == "auto"  # for this start only
    assert host.leases() == []


def test_isolate_locks_a_cpu_fallback_out_of_every_gpu(host):
    """on_unavailable: cpu with no GPU free: the unit starts on CPU with DevicePolicy=closed and no
    NVIDIA node at all (it kept DevicePolicy=auto, and could open a GPU another unit holds alone)."""
    import errno
    host.setup("isolate: true\nservices:\n  - match: llm.service\n    on_unavailable: cpu\n",
               gpus=[gpu_desc(0, minor_number=0)])
    host.cortex("drain", "0", "--reason", "held elsewhere")
    script = host.out / "open.py"
    script.write_text(OPEN_DEVICES)
    result = host.out / "opened.json"
    host.sb.write_unit("llm.service", f"[Service]\nUser=nobody\nExecStart={host.sb.python} {script} {result} "
                                      "/dev/nvidia0 /dev/nvidiactl /dev/null\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    opened = host.record(result)
    assert host.decision("llm.service")["launch"]["env"]["CUDA_VISIBLE_DEVICES"] == "-1"
    assert opened["/dev/nvidia0"] == errno.EPERM and opened["/dev/nvidiactl"] == errno.EPERM
    assert opened["/dev/null"] == "opened"
    assert host.sb.prop("llm.service", "DevicePolicy") == "closed"
    assert not [e for e in host.sb.device_allow("llm.service") if "nvidia" in e]
    host.sb.stop("llm.service")
    assert host.sb.prop("llm.service", "DevicePolicy") == "auto"



def test_isolate_keeps_the_units_own_device_settings_and_gives_them_back(host):
    """A unit with its own DevicePolicy=/DeviceAllow=: the lockdown keeps its own entries (all
    but one naming an NVIDIA device, which would let another GPU through), and release puts its
    own settings back (not DevicePolicy=auto and an empty list). (Its own `strict` would stay
    strict: not tried here, the stand-in's python needs /dev/null.)"""
    host.setup("isolate: true\nservices:\n  - match: llm.service\n",
               gpus=[gpu_desc(0, minor_number=0), gpu_desc(1, minor_number=1)])
    host.cortex("drain", "0", "--reason", "make the choice GPU 1")
    for node, minor in (("/dev/nvidia1", "1"), ("/dev/fuse", None)):
        host.sb.run("mknod", "-m", "666", node, "c", *(("195", minor) if minor else ("10", "229")), check=True)
    record = host.standin_unit("llm.service", "User=nobody\nDevicePolicy=closed\nDeviceAllow=/dev/fuse rw\n"
                                     "DeviceAllow=/dev/nvidia0 rw\n")
    host.install("llm.service", "env")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    host.record(record)  # it runs
    props = host.sb.show("llm.service", "DevicePolicy", "ActiveState")
    assert (props["DevicePolicy"], props["ActiveState"]) == ("closed", "active")
    allowed = host.sb.device_allow("llm.service")
    assert "/dev/fuse rw" in allowed and "/dev/nvidia1 rw" in allowed and "/dev/nvidia0 rw" not in allowed
    host.sb.stop("llm.service")
    props = host.sb.show("llm.service", "DevicePolicy", "NeedDaemonReload")
    assert props["DevicePolicy"] == "closed"
    assert sorted(host.sb.device_allow("llm.service")) == ["/dev/fuse rw", "/dev/nvidia0 rw"]
    assert props["NeedDaemonReload"] == "no"

def test_reaping_a_start_whose_release_never_ran_lifts_its_lockdown(host):
    """A start whose release never ran (here its lease unit's ExecStopPost= was overridden away):
    `leases --reap` drops the lease and undoes the rest exactly as release does (env file, record,
    and the device lockdown, which would otherwise hold the unit's next plain start to one GPU)."""
    host.setup("isolate: true\nservices:\n  - match: llm.service\n",
               gpus=[gpu_desc(0, minor_number=0), gpu_desc(1, minor_number=1)])
    host.standin_unit("llm.service", "User=nobody\n")
    host.install("llm.service", "env")
    lease = lease_unit_of("llm.service")
    host.sb.write_unit(f"{lease}.d/no-release.conf", "[Service]\nExecStopPost=\nExecStopPost=/bin/true\n")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.sb.prop("llm.service", "DevicePolicy") == "closed"
    host.sb.systemctl("stop", "llm.service", check=True)
    host.sb.wait_released("llm.service")
    assert [l["unit"] for l in host.leases()] == ["llm.service"]  # nothing gave it back
    assert host.sb.prop("llm.service", "DevicePolicy") == "closed"
    assert host.start_record("llm.service") is not None

    reaped = host.cortex_json("leases", "--reap")["reaped"]
    assert [r["unit"] for r in reaped] == ["llm.service"]
    assert host.leases() == []
    assert host.sb.prop("llm.service", "DevicePolicy") == "auto"
    assert host.sb.device_allow("llm.service") == []
    assert host.start_record("llm.service") is None
    assert not host.sb.exists("/run/cortex-hook/llm.service.env")


# -- what we write, read back by the real systemd ---------------------------------------------------
HOSTILE_ARGS = ['plain', 'with space', 'dq"uote', "sq'uote", 'back\\slash', 'per%cent', '%n', 'dollar$HOME',
                '${NOT_EXPANDED}', 'semi;colon', 'tab\there', 'new\nline', 'ünïcödé', '', '--flag=a b']


def exec_line(words):
    """An ExecStart= value written the way an admin would, quoting what needs it."""
    from cortex_hook.systemd.unitfile import exec_word
    return " ".join(exec_word(w) for w in words)


def test_server_argv_survives_wrapping_byte_for_byte(host):
    """supervise re-declares the unit's own ExecStart: the server gets exactly the argv (quotes,
    %, $, backslashes, newlines, empty words) it got without cortex-hook."""
    host.setup("services:\n  - match: llm.service\n")
    record = host.out / "llm.json"
    words = [host.sb.python, "-u", STANDIN, "--port", str(PORT), "--record", str(record), "--", *HOSTILE_ARGS]
    host.sb.write_unit("llm.service", f"[Service]\nExecStart={exec_line(words)}\n")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    plain = host.record(record)["argv"]
    host.sb.stop("llm.service")
    record.unlink()
    host.install("llm.service", "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    wrapped = host.record(record)
    assert wrapped["argv"] == plain
    assert plain[-len(HOSTILE_ARGS):] == HOSTILE_ARGS
    assert wrapped["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(0)


def test_hostile_paths_and_unit_names_reach_cortex_hook_byte_for_byte(sandbox, fake_nvml_lib):
    """The policy and state paths baked into a drop-in (spaces, quotes, %, $, backslash, newline)
    and an escaped instance name reach `allocate` unchanged: it finds its files, and the service
    sees its own unit name in CORTEX_HOOK_UNIT."""
    with host_root(sandbox) as root:
        weird = os.path.join(root, 'a dir with "quotes" $HOME %n \\back\nline')
        os.mkdir(weird)
        host = Host(sandbox, root, fake_nvml_lib)
        host.box.policy = os.path.join(weird, "policy.yaml")
        host.box.state = os.path.join(weird, "state.db")
        host.setup("services:\n  - match: 'vllm@*.service'\n")
        unit = "vllm@my\\x2dmodel.service"  # what `systemd-escape --template vllm@.service my-model` gives
        record = host.out / "vllm.json"
        host.sb.write_unit("vllm@.service", f"[Service]\nExecStart={host.sb.python} -u {STANDIN} --port {PORT} "
                                            f"--record {record} %i\n")
        host.install("vllm@.service", "env")
        host.sb.daemon_reload()
        host.sb.systemctl("start", unit, check=True)
        seen = host.record(record)
        assert seen["env"]["CORTEX_HOOK_UNIT"] == unit
        assert seen["argv"][-1] == "my\\x2dmodel"  # %i is the escaped instance name (%I would unescape)
        assert [(l["unit"], l["uuid"]) for l in host.leases()] == [(unit, uuid_of(0))]
        host.sb.stop(unit)
        assert host.leases() == []


def test_hostile_values_in_the_env_file_reach_the_service(sandbox, tmp_path):
    """Anything cortex-hook puts in an env file reaches the server unchanged. The GPU UUIDs come
    from the driver (here: a simulated one reporting hostile UUIDs)."""
    with host_root(sandbox) as root:
        host = Host(sandbox, root, None)
        weird = ['GPU-with space', 'GPU-"dq"', "GPU-'sq'", 'GPU-$HOME', 'GPU-${X}', 'GPU-`id`', 'GPU-\\x41\\',
                 'GPU-%n%%', 'GPU-new\nline', 'GPU-ünï']
        host.box.write_gpus([gpu_desc(i, uuid=u) for i, u in enumerate(weird)])
        host.box.write_policy("services:\n  - match: llm.service\n    gpus: all\n")
        record = host.standin_unit("llm.service")
        host.install("llm.service", "env")
        host.sb.daemon_reload()
        host.sb.systemctl("start", "llm.service", check=True)
        env = host.record(record)["env"]
        assert env["CORTEX_GPU_UUIDS"].split(",") == weird
        assert env["CUDA_VISIBLE_DEVICES"] == ",".join(weird)


@pytest.mark.parametrize("mode", ["env", "exec", "supervise"])
def test_every_drop_in_passes_systemd_analyze_verify_silently(host, mode):
    """FACTS §1: verify exits 0 even on mistakes but prints them; any output is a failure."""
    host.setup("services:\n  - match: 'vllm@*.service'\n")
    words = [host.sb.python, "-u", STANDIN, "--port", str(PORT), "--", *HOSTILE_ARGS[:9]]
    host.sb.write_unit("vllm@.service", f"[Unit]\nDescription=vllm %i\n[Service]\nExecStart=@{words[0]} "
                                        f"vllm-%i {exec_line(words[1:])}\n")
    host.install("vllm@.service", mode)
    r = host.sb.run("systemd-analyze", "verify", "/etc/systemd/system/vllm@m1.service")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


EXAMPLES = os.path.join(REPO, "cortex_hook", "cli", "examples")  # shipped: `cortex-hook example`


@pytest.mark.parametrize("example", ["llama-server.service", "vllm@.service", "tritonserver.service"])
def test_example_units_verify_alone_and_with_each_mode(host, example):
    """The shipped example units (servers swapped for /bin/true, which exists here) pass verify with
    no output, before and after `cortex-hook install` in every mode; users are created first."""
    host.setup("services:\n  - match: '*'\n")
    text = open(os.path.join(EXAMPLES, example)).read()
    for server in ("/usr/local/bin/llama-server", "/opt/vllm/bin/vllm", "/opt/tritonserver/bin/tritonserver"):
        text = text.replace(server, "/bin/true")
    host.sb.write_unit(example, text)
    instance = example.replace("@.", "@m1.")
    for mode in (None, "env", "exec", "supervise"):
        if mode:
            host.install(example, mode)
        r = host.sb.run("systemd-analyze", "verify", f"/etc/systemd/system/{instance}")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), mode


def recipe(text, heading="Step by step:"):
    """The shell lines a unit file's comments give after HEADING (`#   command`), as one script."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith(heading)) + 1
    script = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        script.append(line[len("#   "):])
    return "\n".join(script) + "\n"


def test_vllm_example_starts_for_an_escaped_model_name_and_reads_its_settings(host):
    """The vllm@ example, run the way its own comments say (model name through systemd-escape, its
    settings file named as they say), starts and gets its settings: `EnvironmentFile=` reads a
    glob, where the backslashes of an escaped instance name are escapes, not characters. A
    faithful copy: the server is the stand-in, /etc/vllm a directory of the test, no StateDirectory=
    (it is the host's /var/lib), User=nobody."""
    host.setup("services:\n  - match: 'vllm@*.service'\n")
    record = host.out / "vllm.json"
    settings = host.out / "etc-vllm"
    text = open(os.path.join(EXAMPLES, "vllm@.service")).read()
    for old, new in (("/etc/vllm", str(settings)), ("/opt/vllm/bin/vllm", f"{host.sb.python} -u {STANDIN} "
                     f"--record {record}"), ("User=vllm", "User=nobody"), ("Group=vllm", "Group=nogroup"),
                     ("StateDirectory=vllm\n", "")):
        assert old in text, old
        text = text.replace(old, new)
    host.sb.write_unit("vllm@.service", text)
    host.install("vllm@.service", "env")
    host.sb.daemon_reload()
    r = host.sb.run("sh", "-ec", recipe(text))
    instance = host.sb.run("systemd-escape", "meta-llama/Llama-3.1-8B-Instruct", check=True).stdout.strip()
    unit = f"vllm@{instance}.service"
    assert r.returncode == 0, (r.stderr, host.sb.journal(unit)[-2000:])
    seen = host.record(record)
    assert seen["env"]["PORT"] == "8001"  # from the instance's settings file
    assert seen["argv"][seen["argv"].index("serve") + 1:] == [
        "meta-llama/Llama-3.1-8B-Instruct", "--host", "127.0.0.1", "--port", "8001", "--tensor-parallel-size", "1"]
    assert host.sb.prop(unit, "ActiveState") == "active"
    host.sb.stop(unit)
    assert host.leases() == []


def test_example_policy_validates(box):
    r = box.cli("validate", os.path.join(EXAMPLES, "policy.yaml"))
    assert r.returncode == 0, r.stderr
    assert "ok (3 services, inventory nvml)" in r.stdout


def test_waiting_for_a_gpu_shows_in_status_and_takes_it_when_freed(host):
    """on_unavailable: wait: the second unit's start waits for its lease unit, which says so in
    `systemctl status cortex-hook-lease@second.service.service`, and starts once the first one stops."""
    host.setup("services:\n"
               "  - match: first.service\n    readiness: http://127.0.0.1:18080/health\n"
               "  - match: second.service\n    readiness: http://127.0.0.1:18081/health\n"
               "    on_unavailable: wait 2m\n", gpus=[gpu_desc(0)])
    host.standin_unit("first.service")
    host.standin_unit("second.service", port=18081)
    for unit in ("first.service", "second.service"):
        host.install(unit, "supervise")
    host.sb.daemon_reload()
    host.sb.systemctl("start", "first.service", check=True)
    host.sb.systemctl("start", "--no-block", "second.service", check=True)
    lease = lease_unit_of("second.service")
    status = host.sb.wait_for(lambda: "waiting for a GPU" in host.sb.prop(lease, "StatusText") and
                              host.sb.show(lease, "StatusText", "ActiveState"), "a waiting STATUS=", unit=lease)
    assert status["ActiveState"] == "activating"
    assert host.sb.prop("second.service", "ActiveState") == "inactive"  # its start job waits for the lease
    assert "left): second.service needs 1 GPU" in status["StatusText"] and "leased" in status["StatusText"]
    host.sb.stop("first.service")
    host.sb.wait_state("second.service", "active")
    assert [(l["unit"], l["uuid"]) for l in host.leases()] == [("second.service", uuid_of(0))]


def test_a_units_pythonpath_does_not_choose_what_root_imports(host):
    """A PYTHONPATH meant for the server (here pointing at a planted `cortex_hook` package) must not
    be imported by root: no root command runs in the unit, and the lease unit runs cortex-hook as
    `PYTHON -I` with the service manager's environment."""
    host.setup("services:\n  - match: llm.service\n")
    planted = host.out / "planted" / "cortex_hook"
    planted.mkdir(parents=True)
    marker = host.out / "imported-as-root"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    record = host.standin_unit("llm.service", f"Environment=PYTHONPATH={planted.parent}\n")
    host.install("llm.service", "supervise")
    text = open(os.path.join(host.sb.unit_dir, "llm.service.d", "zz-cortex-hook.conf")).read()
    assert "ExecStartPre" not in text and "ExecStopPost" not in text and "=+" not in text
    lease = open(os.path.join(host.sb.unit_dir, "cortex-hook-lease@.service")).read()
    from cortex_hook.systemd.program import interpreter_of
    assert f"ExecStart={interpreter_of(host.sb.program)} -I {host.sb.program} " in lease
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.record(record)["env"]["PYTHONPATH"] == str(planted.parent)  # the server still gets it
    assert not marker.exists()
    host.sb.stop("llm.service")
    assert not marker.exists() and host.leases() == []
