"""The systemd generator (`cortex-hook install-generator`) under the real systemd 252 (sd-sandbox),
GPUs from the fake NVML driver: drop-ins from the policy's `install:` keys at every daemon-reload,
clean `systemd-analyze verify`, a broken policy that keeps the units it managed from starting
(saying why), no driver access while generating, units that cannot be wrapped, and installing
into an image root (plain tests, no sandbox)."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

from ..helpers.box import Box, uuid_of
from ..helpers.sandbox import PORT, STANDIN, gpu_env


systemd = pytest.mark.systemd
GENERATOR_NAME = "cortex-hook-generator"
NORMAL_DIR = "/run/systemd/generator"
STATUS = "/run/cortex-hook/generator.status"
DROPIN = "zz-cortex-hook.conf"
VLLM_PORT = PORT + 1
OTHER_PORT = PORT + 2


# -- helpers -----------------------------------------------------------------------------------
def generated(unit):
    """Where the generator puts UNIT's drop-in (inside the sandbox)."""
    return f"{NORMAL_DIR}/{unit}.d/{DROPIN}"


def exists(host, path):
    return host.sb.run("test", "-e", path).returncode == 0


def install_generator(host):
    """`cortex-hook install-generator` inside the sandbox, as the admin runs it; returns the host path."""
    r = host.cortex("install-generator", "--program", host.sb.program, check=True)
    path = os.path.join(host.sb.dir, "etc-systemd", "system-generators", GENERATOR_NAME)
    assert os.path.isfile(path) and os.stat(path).st_mode & 0o111, (r.stdout, r.stderr)
    return path


def manager_log(host):
    """The whole journal, every message sent so far processed. The manager's generator runner (a
    forked `(sd-gens)`, not PID 1 itself) logs `GENERATOR failed with exit status N.` there."""
    host.sb.run("journalctl", "--sync")
    return host.sb.run("journalctl", "--no-pager", "-o", "cat").stdout


def generator_failures(host):
    return [l for l in manager_log(host).splitlines() if GENERATOR_NAME in l and "failed" in l]


def reload(host, timeout=120):
    """daemon-reload (which reruns every generator); returns the generator.status of that run."""
    t0 = time.time()
    host.sb.systemctl("daemon-reload", timeout=timeout, check=True)
    text = host.sb.read(STATUS)
    status = json.loads(text) if text else None
    assert status is not None and status["at"] >= t0, diagnose(host, f"no fresh {STATUS} (found {text!r})")
    return status


def diagnose(host, what):
    """WHAT, plus what systemd logged about the generator and its stderr when run by hand (systemd
    keeps a generator's stderr nowhere)."""
    r = host.sb.run("sh", "-c", f"d=$(mktemp -d) && /etc/systemd/system-generators/{GENERATOR_NAME} $d $d $d")
    return (f"{what}; the journal says: {generator_failures(host)}; run by hand it exits {r.returncode} "
            f"with stderr: {r.stderr[-1500:]!r}")


def dry_run(host, unit, mode):
    """What `cortex-hook install UNIT --mode MODE --dry-run` would write (without its `# PATH` line)."""
    r = host.cortex("install", unit, "--mode", mode, "--program", host.sb.program, "--dry-run", check=True)
    first, _, text = r.stdout.partition("\n")
    assert first == f"# /etc/systemd/system/{unit}.d/{DROPIN}"
    return text


def vllm_template(host, user="User=nobody\n"):
    """vllm@.service running the stand-in server (as nobody); returns instance -> its record file."""
    cmd = (f"{host.sb.python} -u {STANDIN} --host 127.0.0.1 --port {VLLM_PORT} "
           f"--record {host.out}/vllm-%i.json")
    host.sb.write_unit("vllm@.service", f"[Unit]\nDescription=stand-in vllm %i\n[Service]\n{user}"
                                        f"ExecStart={cmd}\n")
    return lambda instance: host.out / f"vllm-{instance}.json"


def leased(host):
    return sorted((l["unit"], l["uuid"]) for l in host.leases())


# -- 1. install-generator, then the policy alone puts cortex-hook in front of the units -------------
GENERATED = f"""\
services:
  - match: llm.service
    install: env
  - match: vllm@*.service
    install: supervise
    readiness: http://127.0.0.1:{VLLM_PORT}/health
"""


@systemd
def test_generated_dropins_lease_gpus_for_a_unit_and_a_template(host):
    """After install-generator and daemon-reload, `install:` alone gives a unit and a template cortex-hook."""
    host.setup(GENERATED)
    llm_record = host.standin_unit("llm.service", "User=nobody\n")
    vllm_record = vllm_template(host)
    install_generator(host)
    assert not host.sb.exists("/run/cortex-hook/policy.cache")
    status = reload(host)
    assert (status["ok"], status["error"], status["skipped"]) == (True, None, {})
    assert status["units"] == {"llm.service": "env", "vllm@.service": "supervise"}
    assert host.sb.exists("/run/cortex-hook/policy.cache")  # parsed once for the starts to come

    for unit, target, mode in (("llm.service", "llm.service", "env"),
                               ("vllm@m1.service", "vllm@.service", "supervise")):
        text = host.sb.read(generated(target))
        assert text is not None, f"no {generated(target)}"
        assert text == dry_run(host, target, mode)
        cat = host.sb.systemctl("cat", unit, check=True).stdout
        assert f"# {generated(target)}\n{text}" in cat
        assert generated(target) in host.sb.prop(unit, "DropInPaths").split()

    host.sb.systemctl("start", "llm.service", check=True)
    seen = host.record(llm_record)
    planned = host.decision("llm.service")["launch"]["env"]
    assert gpu_env(host.sb.environ(int(host.sb.prop("llm.service", "MainPID")))) == planned == gpu_env(seen["env"])

    host.sb.systemctl("start", "vllm@m1.service", check=True)  # returns at READY=1
    st = host.sb.show("vllm@m1.service", "Type", "NotifyAccess", "ActiveState", "StatusText", "MainPID")
    assert (st["Type"], st["NotifyAccess"], st["ActiveState"]) == ("notify", "main", "active")
    assert st["StatusText"].startswith("ready on GPU-")
    vllm_planned = host.decision("vllm@m1.service")["launch"]["env"]
    assert vllm_planned["CORTEX_HOOK_UNIT"] == "vllm@m1.service"
    assert gpu_env(host.sb.environ(int(st["MainPID"]))) == vllm_planned            # the wrapper
    assert gpu_env(host.record(vllm_record("m1"))["env"]) == vllm_planned         # the server it runs

    assert leased(host) == sorted([("llm.service", planned["CUDA_VISIBLE_DEVICES"]),
                                   ("vllm@m1.service", vllm_planned["CUDA_VISIBLE_DEVICES"])])
    assert {planned["CUDA_VISIBLE_DEVICES"], vllm_planned["CUDA_VISIBLE_DEVICES"]} == {uuid_of(0), uuid_of(1)}
    host.sb.stop("llm.service", "vllm@m1.service")
    assert host.leases() == []


# -- 2. systemd-analyze verify ---------------------------------------------------------------------
VERIFIED = GENERATED.replace("    install: supervise\n", "    install: supervise\n    watchdog: 12d\n") + """\
  - match: tgi.service
    install: exec
"""


@systemd
def test_generated_dropins_pass_systemd_analyze_verify_silently(host):
    """The generated drop-ins (env, exec, supervise on a template) pass `systemd-analyze verify` silently."""
    host.setup(VERIFIED)
    host.standin_unit("llm.service")  # (no User=nobody: verify warns "Special user nobody ... not safe!")
    host.standin_unit("tgi.service", port=OTHER_PORT)
    vllm_template(host, user="")
    install_generator(host)
    status = reload(host)
    assert status["units"] == {"llm.service": "env", "tgi.service": "exec", "vllm@.service": "supervise"}

    def verify(unit):  # plain `verify UNIT` ignores /run/systemd/generator; the trailing `:` keeps the rest
        r = host.sb.run("env", f"SYSTEMD_UNIT_PATH={NORMAL_DIR}:", "systemd-analyze", "verify", unit)
        return r.returncode, r.stdout, r.stderr

    for unit, target in (("llm.service", "llm.service"), ("tgi.service", "tgi.service"),
                         ("vllm@m1.service", "vllm@.service")):
        assert exists(host, generated(target))
        assert verify(unit) == (0, "", "")
        assert verify(lease_unit_of(unit)) == (0, "", "")
    # 12 days, exactly (verify above is silent); `WatchdogSec=1.0368e+06s`, what %g wrote, is refused
    assert "\nWatchdogSec=1036800s\n" in host.sb.read(generated("vllm@.service"))

    # the control: verify does read the generator's directory
    planted = f"{NORMAL_DIR}/llm.service.d/zz-planted.conf"
    host.sb.run("sh", "-c", f"printf '[Service]\\nType=notfy\\n' > {planted}", check=True)
    _, out, err = verify("llm.service")
    assert planted in out + err
    host.sb.run("rm", planted, check=True)
    assert verify("llm.service") == (0, "", "")


# -- 3. the output is rebuilt on every reload ---------------------------------------------------------
TWO_INSTALLED = """\
services:
  - match: llm.service
    install: env
  - match: other.service
    install: env
"""
OTHER_NOT_INSTALLED = """\
services:
  - match: llm.service
    install: env
  - match: other.service
"""


@systemd
def test_removing_install_from_the_policy_removes_the_dropin_at_reload(host):
    """Removing a service's `install:` and reloading removes its drop-in and the generator forgets it."""
    host.setup(TWO_INSTALLED)
    host.standin_unit("llm.service")
    other_record = host.standin_unit("other.service", port=OTHER_PORT)
    install_generator(host)
    assert reload(host)["units"] == {"llm.service": "env", "other.service": "env"}
    assert exists(host, generated("other.service")) and exists(host, generated("llm.service"))
    cat = host.sb.systemctl("cat", "other.service", check=True).stdout
    assert f"# {generated('other.service')}\n" in cat and "Requires=cortex-hook-lease@%n.service\n" in cat

    host.box.write_policy(OTHER_NOT_INSTALLED, inventory="nvml")
    status = reload(host)
    assert (status["ok"], status["units"]) == (True, {"llm.service": "env"})
    assert not exists(host, generated("other.service"))
    assert not exists(host, f"{NORMAL_DIR}/other.service.d")
    assert exists(host, generated("llm.service"))
    cat = host.sb.systemctl("cat", "other.service", check=True).stdout
    assert DROPIN not in cat and "cortex-hook-lease@" not in cat
    assert host.sb.prop("other.service", "DropInPaths") == ""

    host.sb.systemctl("start", "other.service", check=True)
    assert gpu_env(host.record(other_record)["env"]) == {}
    assert host.leases() == []
    host.sb.stop("other.service")

    host.box.write_policy(OTHER_NOT_INSTALLED + "    gpus: lots\n", inventory="nvml")
    status = reload(host)
    assert (status["ok"], status["units"]) == (False, {"llm.service": "env"})
    assert not exists(host, generated("other.service"))
    other_record.unlink()
    host.sb.systemctl("start", "other.service", check=True)
    assert gpu_env(host.record(other_record)["env"]) == {}


# -- 4. a broken policy keeps the managed units from starting, saying why ----------------------------
GOOD = """\
services:
  - match: llm.service
    install: exec
"""
BROKEN = {
    # (policy body, what the error starts with after the file name); lines 1-2 are version/inventory
    "yaml-syntax": ("services:\n  - match: llm.service\n    install: exec: supervise\n",
                    ":5:18: invalid YAML: mapping values are not allowed"),
    "schema": ("services:\n  - match: llm.service\n    install: exec\n    gpus: lots\n",
               ":6:11: services[0].gpus: expected a count from 1 or `all`, got 'lots'"),
}


@systemd
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_policy_keeps_the_generated_units_from_starting(host, kind):
    """A broken policy stops the last good run's units from starting, saying why, and nothing else."""
    body, expected = BROKEN[kind]
    host.setup(GOOD)
    host.standin_unit("llm.service", "User=nobody\n")
    other_record = host.standin_unit("other.service", port=OTHER_PORT)
    install_generator(host)
    assert reload(host)["units"] == {"llm.service": "exec"}
    host.sb.systemctl("start", "llm.service", check=True)  # the unit works under the good policy
    assert leased(host) == [("llm.service", uuid_of(0))]
    host.sb.stop("llm.service")
    assert host.leases() == []

    host.box.write_policy(body, inventory="nvml")
    message = host.box.policy + expected
    status = reload(host)  # daemon-reload itself succeeded (check=True)
    assert status["ok"] is False
    assert status["error"].startswith(message), status
    assert status["units"] == {"llm.service": "exec"}  # the last good run's drop-in, exactly
    assert exists(host, generated("llm.service"))
    assert generator_failures(host) == []

    r = host.sb.systemctl("start", "llm.service")
    assert r.returncode != 0
    assert host.sb.prop("llm.service", "ActiveState") == "inactive"  # its start failed: 'dependency'
    st = host.sb.show(lease_unit_of("llm.service"), "ActiveState", "Result", "ExecMainStatus")
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "78")
    assert f"llm.service not started: {message}" in host.sb.journal("llm.service")
    shown = host.sb.systemctl("status", "llm.service", "--no-pager", "-l", "-n", "20").stdout
    assert message in shown
    assert host.leases() == []
    assert host.sb.read("/run/cortex-hook/llm.service.env") is None
    assert host.decision("llm.service") is None

    host.sb.systemctl("start", "other.service", check=True)  # units without install: are unaffected
    assert host.record(other_record)["argv"][0] == STANDIN
    host.sb.stop("other.service")

    host.box.write_policy(GOOD, inventory="nvml")
    status = reload(host)
    assert (status["ok"], status["error"], status["units"]) == (True, None, {"llm.service": "exec"})
    host.sb.systemctl("start", "llm.service", check=True)
    assert host.sb.prop("llm.service", "ActiveState") == "active"
    assert leased(host) == [("llm.service", uuid_of(0))]
    host.sb.stop("llm.service")
    assert host.leases() == []


SUPERVISED_WATCHDOG = f"""\
services:
  - match: vllm@*.service
    install: supervise
    readiness: http://127.0.0.1:{VLLM_PORT}/health
    watchdog: 2s
"""


def watchdog_pings(host, unit):
    """Wait until systemd has received two more WATCHDOG=1 from UNIT (it is fed, not cut off)."""
    seen = []

    def fed():
        stamp = host.sb.prop(unit, "WatchdogTimestampMonotonic")
        if not seen or seen[-1] != stamp:
            seen.append(stamp)
        return len(seen) >= 3
    host.sb.wait_for(fed, f"{unit} to keep feeding its watchdog", timeout=30, unit=unit)


@systemd
def test_a_broken_policy_and_a_reload_never_touch_a_running_server(host):
    """A typo in the policy and a daemon-reload used to turn every managed unit's drop-in to env
    mode: a running supervised server became Type=simple, its READY and watchdog pings were refused,
    and systemd killed it. Now the running unit keeps its drop-in; only new starts fail, saying why.
    A valid edit that would change a running unit's drop-in waits until it stops."""
    host.setup(SUPERVISED_WATCHDOG)
    vllm_template(host)
    install_generator(host)
    assert reload(host)["units"] == {"vllm@.service": "supervise"}
    host.sb.systemctl("start", "vllm@m1.service", check=True)
    pid = host.sb.prop("vllm@m1.service", "MainPID")

    host.box.write_policy(SUPERVISED_WATCHDOG + "    gpus: lots\n", inventory="nvml")
    status = reload(host)
    assert status["ok"] is False and status["units"] == {"vllm@.service": "supervise"}
    st = host.sb.show("vllm@m1.service", "Type", "NotifyAccess", "KillMode", "ActiveState", "MainPID")
    assert (st["Type"], st["NotifyAccess"], st["KillMode"], st["ActiveState"], st["MainPID"]) == \
        ("notify", "main", "mixed", "active", pid)
    watchdog_pings(host, "vllm@m1.service")
    assert host.sb.prop("vllm@m1.service", "MainPID") == pid and "reception is disabled" not in \
        host.sb.journal("vllm@m1.service")
    r = host.sb.systemctl("start", "vllm@m2.service")
    assert r.returncode != 0 and host.sb.prop(lease_unit_of("vllm@m2.service"), "ExecMainStatus") == "78"

    host.box.write_policy(SUPERVISED_WATCHDOG.replace("install: supervise", "install: env"), inventory="nvml")
    status = reload(host)
    assert status["ok"] is True and status["units"] == {"vllm@.service": "supervise"}
    assert status["pending"] == {"vllm@.service": "keeps its supervise drop-in while it runs"}
    watchdog_pings(host, "vllm@m1.service")
    host.sb.stop("vllm@m1.service")
    assert reload(host)["units"] == {"vllm@.service": "env"}  # applied once it no longer runs


# -- 5. the generator never asks the driver -----------------------------------------------------------
NO_DRIVER = """\
discovery_timeout: 60s
services:
  - match: llm.service
    install: env
  - match: vllm@*.service
    install: supervise
"""
WRAPPER = """\
#!/bin/sh
# test wrapper: the installed cortex-hook generator with a driver in its environment, its stderr kept
LD_LIBRARY_PATH={lib} FAKE_NVML_CONFIG={config} FAKE_NVML_DEBUG=2 {real} "$@" 2>/run/generator-test.stderr
echo $? >/run/generator-test.rc
"""


@systemd
@pytest.mark.parametrize("driver", ["hung", "missing"])
def test_generator_never_asks_the_driver(host, driver, tmp_path):
    """With a hung or missing NVML driver the generator still finishes at once, exit 0, every drop-in written."""
    host.setup(NO_DRIVER)
    host.standin_unit("llm.service")
    vllm_template(host)
    path = install_generator(host)
    fifo = os.path.join(host.box.root, "hung-driver.fifo")
    os.mkfifo(fifo, 0o644)
    empty = os.path.join(host.box.root, "no-driver")
    os.mkdir(empty, 0o755)
    lib, config = (host.box.lib, fifo) if driver == "hung" else (empty, host.box.gpus_file)

    # the control: a process that does ask NVML with this environment hangs (or finds no driver)
    probe = [sys.executable, "-c", "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount())"]
    env = dict(os.environ, LD_LIBRARY_PATH=lib, FAKE_NVML_CONFIG=config)
    if driver == "hung":
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(probe, env=env, capture_output=True, timeout=3)
    else:
        r = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "NVMLError_LibraryNotFound" in r.stderr

    real = os.path.join(host.sb.dir, "etc-systemd", GENERATOR_NAME + ".real")
    os.replace(path, real)
    with open(path, "w") as f:
        f.write(WRAPPER.format(lib=lib, config=config, real=f"/etc/systemd/{GENERATOR_NAME}.real"))
    os.chmod(path, 0o755)

    t0 = time.monotonic()
    status = reload(host, timeout=50)  # an NVML call would hang, or take discovery_timeout (60 s)
    took = time.monotonic() - t0
    assert host.sb.read("/run/generator-test.rc") == "0\n"
    assert host.sb.read("/run/generator-test.stderr") == ""
    assert (status["ok"], status["skipped"]) == (True, {})
    assert status["units"] == {"llm.service": "env", "vllm@.service": "supervise"}
    assert exists(host, generated("llm.service")) and exists(host, generated("vllm@.service"))
    assert took < 15, f"daemon-reload took {took:.1f}s"


# -- 6. units that cannot be wrapped get env mode ------------------------------------------------------
UNWRAPPABLE = """\
services:
  - match: batch.service
    install: supervise
  - match: twostep.service
    install: exec
"""


@systemd
def test_unwrappable_units_get_env_mode_and_are_listed_as_skipped(host):
    """Units exec/supervise cannot wrap get env mode, are listed as skipped with why, and still lease."""
    host.setup(UNWRAPPABLE)
    out = host.out

    def job(name):  # records its env, then runs until the test lets it finish
        return (f"ExecStart=/bin/sh -c \"env > {out}/{name}.tmp && mv {out}/{name}.tmp {out}/{name}.env; "
                f"while [ ! -e {out}/{name}.done ]; do sleep 0.05; done\"\n")
    host.sb.write_unit("batch.service", "[Service]\nType=oneshot\n" + job("batch"))
    host.sb.write_unit("twostep.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n" + job("twostep"))
    install_generator(host)
    status = reload(host)
    assert status["ok"] is True
    assert status["units"] == {"batch.service": "env", "twostep.service": "env"}
    assert status["skipped"] == {
        "batch.service": "batch.service: Type=oneshot cannot be wrapped by `supervise` (use --mode env)",
        "twostep.service": "twostep.service: has 2 ExecStart= lines; only one command can be wrapped "
                           "(use --mode env)",
    }

    for unit in ("batch.service", "twostep.service"):
        name = unit.split(".")[0]
        text = host.sb.read(generated(unit))
        assert text is not None and "(mode env)" in text
        assert "Requires=cortex-hook-lease@%n.service" in text and "\nExecStart=" not in text
        assert text == dry_run(host, unit, "env")
        assert host.sb.prop(unit, "Type") == "oneshot"
        host.sb.systemctl("start", "--no-block", unit, check=True)
        record = out / f"{name}.env"
        host.sb.wait_for(record.exists, f"{record}", unit=unit)
        planned = host.decision(unit)["launch"]["env"]
        seen = dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)
        assert gpu_env(seen) == planned
        assert leased(host) == [(unit, planned["CUDA_VISIBLE_DEVICES"])]
        (out / f"{name}.done").touch()
        st = host.sb.wait_state(unit, "inactive", "failed")
        assert (st["ActiveState"], st["Result"]) == ("inactive", "success")
        host.sb.wait_released(unit)
        assert host.leases() == []
        assert host.sb.read(f"/run/cortex-hook/{unit}.env") is None


# -- at boot, and next to `cortex-hook install` ---------------------------------------------------------
def reboot(host):
    """Take the sandbox down and boot it again with its /etc/systemd (units, generator) kept."""
    host.sb.down()
    host.sb.up(keep=True)
    host.sb.set_environment(LD_LIBRARY_PATH=host.box.lib, FAKE_NVML_CONFIG=host.box.gpus_file)  # units' driver


def boot_status(host):
    text = host.sb.read(STATUS)  # /run is fresh at each boot: whatever is there, this boot wrote
    assert text is not None, diagnose(host, f"no {STATUS} after boot")
    return json.loads(text)


ENV_INSTALLED = """\
services:
  - match: llm.service
    install: env
"""


@systemd
def test_generator_runs_at_boot_and_remembers_its_units_across_a_reboot(host):
    """The generator runs at boot, and the units it managed on the previous boot stay blocked by a bad policy."""
    host.setup(ENV_INSTALLED)
    host.standin_unit("llm.service")
    install_generator(host)
    reboot(host)
    status = boot_status(host)
    assert (status["ok"], status["units"]) == (True, {"llm.service": "env"})
    assert generated("llm.service") in host.sb.prop("llm.service", "DropInPaths").split()
    host.sb.systemctl("start", "llm.service", check=True)
    assert leased(host) == [("llm.service", host.decision("llm.service")["launch"]["env"]["CUDA_VISIBLE_DEVICES"])]
    host.sb.stop("llm.service")
    assert host.leases() == []

    host.box.write_policy(ENV_INSTALLED + "    gpus: lots\n", inventory="nvml")
    reboot(host)
    status = boot_status(host)
    assert status["ok"] is False and status["error"].startswith(f"{host.box.policy}:6:11: services[0].gpus:")
    assert status["units"] == {"llm.service": "env"}
    r = host.sb.systemctl("start", "llm.service")
    assert r.returncode != 0
    assert host.sb.prop(lease_unit_of("llm.service"), "ExecMainStatus") == "78"
    assert f"llm.service not started: {status['error']}" in host.sb.journal("llm.service")
    assert host.leases() == []


@systemd
def test_dropin_from_cortex_hook_install_wins_over_the_generated_one(host):
    """A drop-in from `cortex-hook install` in /etc/systemd/system replaces the generated one for that unit."""
    host.setup(GENERATED)
    host.standin_unit("llm.service")
    vllm_template(host)
    install_generator(host)
    host.install("vllm@.service", "env")
    status = reload(host)
    assert status["units"] == {"llm.service": "env", "vllm@.service": "supervise"}
    assert exists(host, generated("vllm@.service"))
    paths = host.sb.prop("vllm@m1.service", "DropInPaths").split()
    assert paths == [f"/etc/systemd/system/vllm@.service.d/{DROPIN}"]
    host.sb.systemctl("start", "vllm@m1.service", check=True)
    st = host.sb.show("vllm@m1.service", "Type", "ActiveState", "MainPID")
    assert (st["Type"], st["ActiveState"]) == ("simple", "active")
    assert host.sb.read(f"/proc/{st['MainPID']}/cmdline").split("\0")[1:3] == ["-u", STANDIN]  # not wrapped
    assert [l["unit"] for l in host.leases()] == ["vllm@m1.service"]
    host.sb.stop("vllm@m1.service")
    assert host.leases() == []


# -- 7. installing into an image root (no sandbox) ------------------------------------------------------
WATCHED = ("/etc/systemd/system-generators", "/etc/systemd/system", "/run/systemd/generator",
           "/run/cortex-hook", "/etc/cortex-hook")


def tree(root):
    """Every file and directory under ROOT with its content (or None for a directory)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root)] = None
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def outside():
    """The host places install commands would touch if they ignored --root."""
    return {p: (os.path.exists(p), sorted(os.listdir(p)) if os.path.isdir(p) else None,
                os.stat(p).st_mtime_ns if os.path.exists(p) else None) for p in WATCHED}


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_HOOK_")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cortex_hook", *args], env=clean_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_install_generator_and_install_into_an_image_root_touch_nothing_outside(tmp_path):
    """install-generator --root and install --root (dry run, then real) write only under the root."""
    image, cwd = tmp_path / "image", tmp_path / "cwd"
    (image / "usr/lib/systemd/system").mkdir(parents=True)
    cwd.mkdir()
    (image / "usr/lib/systemd/system/llm.service").write_text(
        "[Unit]\nDescription=llm\n[Service]\nExecStart=/usr/bin/python3 -m http.server 8080\n")
    program = "/opt/cortex-hook/bin/cortex-hook"
    before_outside, before = outside(), tree(image)

    r = cli("install-generator", "--root", str(image), "--program", program, cwd=cwd)
    assert r.returncode == 0, r.stderr
    script = image / "etc/systemd/system-generators" / GENERATOR_NAME
    after = tree(image)
    assert set(after) - set(before) == {"etc", "etc/systemd", "etc/systemd/system-generators",
                                        os.path.relpath(script, image)}
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755
    text = script.read_text()
    assert text.startswith("#!/") and f"'generate', '--program', '{program}'" in text
    assert "'--runtime-dir', '/run/cortex-hook'" in text

    r = cli("install", "llm.service", "--root", str(image), "--mode", "exec", "--program", program,
            "--dry-run", cwd=cwd)
    assert r.returncode == 0, r.stderr
    dropin = image / "etc/systemd/system/llm.service.d" / DROPIN
    first, _, printed = r.stdout.partition("\n")
    assert first == f"# {dropin}"
    assert f"ExecStart=\nExecStart={program} --runtime-dir /run/cortex-hook exec --unit %n -- " \
           "/usr/bin/python3 -m http.server 8080\n" in printed
    assert tree(image) == after  # a dry run writes nothing

    r = cli("install", "llm.service", "--root", str(image), "--mode", "exec", "--program", program, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert dropin.read_text() == printed
    assert set(tree(image)) - set(after) == {"etc/systemd/system", "etc/systemd/system/llm.service.d",
                                             os.path.relpath(dropin, image),
                                             "etc/systemd/system/cortex-hook-lease@.service"}
    assert outside() == before_outside
    assert os.listdir(cwd) == []


def test_installed_generator_script_runs_as_systemd_runs_it(tmp_path):
    """The installed generator script, run as systemd runs it (bare environment), works and exits 0."""
    (tmp_path / "host").mkdir()
    box = Box(tmp_path / "host")
    box.write_gpus([])
    box.write_policy("services:\n  - match: llm.service\n    install: env\n")
    image = tmp_path / "image"
    program = os.path.join(os.path.dirname(sys.executable), "cortex-hook")
    runtime = tmp_path / "run"
    r = cli("--policy", box.policy, "--state", box.state, "--runtime-dir", str(runtime), "install-generator",
            "--root", str(image), "--program", program, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = image / "etc/systemd/system-generators" / GENERATOR_NAME
    dirs = [tmp_path / d for d in ("generator", "generator.early", "generator.late")]
    for d in dirs:
        d.mkdir()
    r = subprocess.run([str(script), *map(str, dirs)], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                       cwd="/", capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    text = (dirs[0] / "llm.service.d" / DROPIN).read_text()
    assert text.startswith("# Written by cortex-hook (mode env) for llm.service.")
    from cortex_hook.systemd.program import interpreter_of
    python = interpreter_of(program)  # commands run as `PYTHON -I PROGRAM` (no PYTHONPATH for root)
    assert "Requires=cortex-hook-lease@%n.service\nAfter=cortex-hook-lease@%n.service\n" in text
    lease = (dirs[0] / "cortex-hook-lease@.service").read_text()
    assert python and f"ExecStart={python} -I {program} --policy {box.policy} --state {box.state} " \
                      f"--runtime-dir {runtime} allocate %i\n" in lease
    assert f"ExecStopPost={python} -I {program} --policy {box.policy} --state {box.state} " \
           f"--runtime-dir {runtime} release %i\n" in lease
    status = json.loads((runtime / "generator.status").read_text())
    assert (status["ok"], status["units"]) == (True, {"llm.service": "env"})
    from cortex_hook.policy import load as policyload
    parsed = policyload.load_memo(str(runtime), policyload.key_of(box.policy, os.stat(box.policy)))
    assert [(s.match, s.install) for s in parsed.services] == [("llm.service", "env")]  # left for the starts


# -- what the generator trusts ---------------------------------------------------------------------
def _generate(tmp_path, policy_dir, broken):
    """`cortex-hook generate` as systemd runs it, with the policy in POLICY_DIR (BROKEN or not);
    -> (the status it wrote, the NORMAL_DIR it wrote into)."""
    (tmp_path / "box").mkdir(exist_ok=True)
    box = Box(tmp_path / "box")
    box.write_gpus([])
    policy = os.path.join(policy_dir, "policy.yaml")
    with open(policy, "w") as f:
        f.write("version: 1\nservices:\n  - match: llm.service\n    install: env\n" + ("    gpus: lots\n" if broken else ""))
    os.chmod(policy, 0o644)
    runtime, normal = tmp_path / "run", tmp_path / "generator"
    normal.mkdir(exist_ok=True)
    r = cli("--policy", policy, "--state", box.state, "--runtime-dir", str(runtime), "generate", str(normal),
            str(tmp_path / "early"), str(tmp_path / "late"), "--program", sys.executable, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    return json.loads((runtime / "generator.status").read_text()), normal


def test_a_units_list_another_user_planted_is_ignored(tmp_path):
    """In a sticky world-writable policy directory (allowed for the policy) another user planted the
    generator's list of last good units: sshd.service, a path out of the generator's directory, a
    name with a space. With a broken policy none of them gets a drop-in or a directory."""
    pdir = tmp_path / "etc"
    pdir.mkdir()
    os.chmod(pdir, 0o1777)
    planted = pdir / ".generated-units"
    entry = {"mode": "env", "dropin": "# Written by cortex-hook (mode env)\n[Service]\nExecStartPre=/bin/false\n"}
    planted.write_text(json.dumps({"units": {n: entry for n in ("sshd.service", "../../../../tmp/evil.service",
                                                                "foo bar.service")}}))
    os.chown(planted, 65534, 65534)
    status, normal = _generate(tmp_path, pdir, broken=True)
    assert (status["ok"], status["units"]) == (False, {})
    assert os.listdir(normal) == []
    assert not os.path.exists("/tmp/evil.service.d")


def test_a_root_owned_list_is_used_only_for_valid_unit_names(tmp_path):
    pdir = tmp_path / "etc"
    pdir.mkdir()
    status, normal = _generate(tmp_path, pdir, broken=False)  # a good run: its list is written
    assert status["units"] == {"llm.service": "env"}
    good = json.loads((pdir / ".generated-units").read_text())
    good["units"]["../escape.service"] = good["units"]["llm.service"]
    (pdir / ".generated-units").write_text(json.dumps(good))
    status, normal = _generate(tmp_path, pdir, broken=True)
    assert (status["ok"], status["units"]) == (False, {"llm.service": "env"})  # the last good drop-in, exactly
    assert sorted(os.listdir(normal)) == ["cortex-hook-lease@.service", "llm.service.d"]


def test_the_status_file_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    pdir = tmp_path / "etc"
    pdir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "run").mkdir(mode=0o755)
    (tmp_path / "run" / "generator.status").symlink_to(victim)
    status, _ = _generate(tmp_path, pdir, broken=False)
    assert status["ok"] and victim.read_text() == "precious\n"
    assert not (tmp_path / "run" / "generator.status").is_symlink()


@systemd
def test_an_isolated_generated_unit_never_shows_changed_on_disk(host):
    """isolate: true locks the unit's devices with `set-property --runtime` at each start. systemd 252
    calls a unit "changed on disk" (NeedDaemonReload, and `systemctl status` says to daemon-reload)
    when that creates drop-ins it did not load; the generator's placeholders make it a rewrite."""
    host.setup("isolate: true\nservices:\n  - match: llm.service\n    install: env\n")
    host.standin_unit("llm.service", "User=nobody\n")
    install_generator(host)
    assert reload(host)["ok"]
    for round_ in ("first start", "restart"):
        host.sb.systemctl("restart", "llm.service", check=True)
        props = host.sb.show("llm.service", "DevicePolicy", "NeedDaemonReload")
        assert props["DevicePolicy"] == "closed" and "/dev/nvidia0 rw" in host.sb.device_allow("llm.service"), round_
        assert props["NeedDaemonReload"] == "no", round_
        assert "changed on disk" not in host.sb.systemctl("status", "llm.service").stderr, round_
    host.sb.stop("llm.service")
    props = host.sb.show("llm.service", "DevicePolicy", "NeedDaemonReload")
    assert (props["DevicePolicy"], props["NeedDaemonReload"]) == ("auto", "no")
