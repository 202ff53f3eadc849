"""What `cortex-hook install` and `uninstall` check and say: a unit the policy has no service for,
the mode chosen when --mode is not given, the hint for a template, the drop-in's own comment, a
wrapper the unit's User= cannot run (checked against the real systemd 252: 203/EXEC), and a unit
the generator keeps in front of cortex-hook after `uninstall`."""

import os
import shutil
import sys

import pytest

from ..helpers.box import Box
from .test_generator import generated, install_generator, reload

DROPIN = "zz-cortex-hook.conf"
systemd = pytest.mark.systemd


# -- helpers -----------------------------------------------------------------------------------------
def image(tmp_path, policy_body, units):
    """An image root with UNITS ({name: [Service] body}) and a Box whose policy is POLICY_BODY."""
    root = tmp_path / "image"
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, body in units.items():
        (root / "etc/systemd/system" / name).write_text(f"[Service]\n{body}ExecStart=/bin/true\n")
    (tmp_path / "box").mkdir()
    box = Box(tmp_path / "box")
    box.write_gpus([])
    box.write_policy(policy_body)
    return root, box


def install(box, root, *args):
    """`cortex-hook install ARGS --root ROOT` against BOX's policy (the program: this one)."""
    program = os.path.join(os.path.dirname(sys.executable), "cortex-hook")
    return box.cli("install", *args, "--root", str(root), "--program", program)


def private_venv(directory, venv, mode=0o700):
    """A venv as an admin makes it under /root: DIRECTORY (MODE) holds the service venv's Python
    (its pyvenv.cfg, bin/python3, lib/) and a cortex-hook program whose `#!` is that Python.
    Returns the program's path. Root runs it; a User= that cannot search DIRECTORY cannot."""
    os.makedirs(os.path.join(directory, "bin"))
    shutil.copy(os.path.join(venv, "pyvenv.cfg"), directory)
    os.symlink(os.path.realpath(os.path.join(venv, "bin", "python3")), os.path.join(directory, "bin", "python3"))
    os.symlink(os.path.join(venv, "lib"), os.path.join(directory, "lib"))
    with open(os.path.join(venv, "bin", "cortex-hook")) as f:
        script = f.read().split("\n", 1)[1]
    program = os.path.join(directory, "bin", "cortex-hook")
    with open(program, "w") as f:
        f.write(f"#!{directory}/bin/python3\n{script}")
    os.chmod(program, 0o755)
    os.chmod(directory, mode)
    return program


# -- a unit the policy has no service for -----------------------------------------------------------
def test_a_unit_no_service_matches_is_refused_naming_unit_and_policy(tmp_path):
    """Every start of such a unit would fail in its lease unit (exit 78): refuse to install it."""
    root, box = image(tmp_path, "services:\n  - match: other.service\n", {"llm.service": ""})
    for extra in ((), ("--dry-run",)):
        r = install(box, root, "llm.service", "--mode", "env", *extra)
        assert r.returncode == 78, (r.stdout, r.stderr)
        line = r.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert line.startswith(f"cortex-hook: {box.policy}: services: no service matches llm.service")
        assert "'other.service'" in line
    assert not (root / "etc/systemd/system/llm.service.d").exists()
    assert not (root / "etc/systemd/system/cortex-hook-lease@.service").exists()


def test_a_template_is_installed_when_some_instance_has_a_service(tmp_path):
    """`vllm@*.service` covers the template; a policy naming only `vllm@m1.service` still lets it
    install, warning that other instances have no service."""
    root, box = image(tmp_path, "services:\n  - match: 'vllm@*.service'\n", {"vllm@.service": ""})
    r = install(box, root, "vllm@.service", "--mode", "env")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    box.write_policy("services:\n  - match: vllm@m1.service\n")
    r = install(box, root, "vllm@.service", "--mode", "env")
    assert r.returncode == 0, r.stderr
    assert "warning: vllm@.service: only the instances vllm@m1.service have a service" in r.stderr


def test_an_unreadable_policy_warns_and_installs(tmp_path):
    """An image is built before its policy exists: a warning naming the policy, and the drop-in."""
    root, box = image(tmp_path, "services: []\n", {"llm.service": ""})
    os.unlink(box.policy)
    r = install(box, root, "llm.service", "--mode", "env")
    assert r.returncode == 0, r.stderr
    assert "warning: llm.service: the policy cannot be read" in r.stderr and box.policy in r.stderr
    assert (root / "etc/systemd/system/llm.service.d" / DROPIN).exists()


# -- the mode, the hint, the drop-in's comment --------------------------------------------------------
def test_without_mode_the_policys_install_key_or_env_is_used_and_said(tmp_path):
    root, box = image(tmp_path, "services:\n  - match: llm.service\n    install: exec\n  - match: '*'\n",
                      {"llm.service": "", "other.service": ""})
    r = install(box, root, "llm.service", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "# Written by cortex-hook (mode exec) for llm.service." in r.stdout
    assert "llm.service: mode exec, from `install: exec` of its service in the policy" in r.stderr
    r = install(box, root, "other.service", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "# Written by cortex-hook (mode env) for other.service." in r.stdout
    assert "other.service: mode env, the default (no --mode" in r.stderr
    r = install(box, root, "other.service", "--dry-run", "--mode", "supervise")
    assert "(mode supervise)" in r.stdout and r.stderr == ""  # chosen: nothing to say


def test_a_template_gets_an_instance_in_the_hint_and_real_names_in_its_comment(tmp_path):
    """systemctl cannot restart `vllm@.service`, and a comment is never expanded (no %n in it)."""
    root, box = image(tmp_path, "services:\n  - match: 'vllm@*.service'\n  - match: llm.service\n",
                      {"vllm@.service": "", "llm.service": ""})
    r = install(box, root, "vllm@.service", "--mode", "env")
    assert r.returncode == 0, r.stderr
    assert "systemctl daemon-reload && systemctl restart vllm@INSTANCE.service" in r.stdout
    assert "restart vllm@.service" not in r.stdout
    head = (root / "etc/systemd/system/vllm@.service.d" / DROPIN).read_text().split("[Unit]")[0]
    assert "`cortex-hook plan vllm@INSTANCE.service` explains the choice" in head and "%" not in head
    r = install(box, root, "llm.service", "--mode", "env")
    assert "systemctl restart llm.service\n" in r.stdout
    head = (root / "etc/systemd/system/llm.service.d" / DROPIN).read_text().split("[Unit]")[0]
    assert "`cortex-hook plan llm.service` explains the choice" in head and "%" not in head


# -- a wrapper the unit's User= cannot run -------------------------------------------------------------
def test_the_wrapper_check_follows_users_groups_and_modes(tmp_path):
    """In an image root (its own /etc/passwd and /etc/group): cortex-hook in /opt/cortex-hook, 0750,
    group staff. A unit with Group=staff, or staff among User='s groups, reaches it; root
    does; a plain User=nobody does not (warned, and the drop-in still written); env mode runs
    nothing as User= (no warning)."""
    root, box = image(tmp_path, "services:\n  - match: '*'\n",
                      {"grp.service": "User=nobody\nGroup=staff\n", "member.service": "User=member\n",
                       "nogrp.service": "User=nobody\n", "root.service": "", "num.service": "User=65534\n"})
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
                                     "member:x:1000:1000::/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nstaff:x:50:member\nnogroup:x:65534:\nmember:x:1000:\n")
    venv = root / "opt/cortex-hook"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python3").write_text("")
    (venv / "bin/cortex-hook").write_text("#!/opt/cortex-hook/bin/python3\n")
    for f in ("python3", "cortex-hook"):
        os.chmod(venv / "bin" / f, 0o755)
    os.chown(venv, 0, 50)
    os.chmod(venv, 0o750)
    program = "/opt/cortex-hook/bin/cortex-hook"
    for unit, mode, warned in (("grp.service", "supervise", False), ("member.service", "exec", False),
                               ("root.service", "supervise", False), ("nogrp.service", "env", False),
                               ("nogrp.service", "supervise", True), ("num.service", "exec", True)):
        r = box.cli("install", unit, "--mode", mode, "--root", str(root), "--program", program)
        assert r.returncode == 0, r.stderr
        assert (root / f"etc/systemd/system/{unit}.d" / DROPIN).exists()
        assert ("warning" in r.stderr) == warned, (unit, mode, r.stderr)
        if warned:
            assert "who cannot execute /opt/cortex-hook/bin/python3: /opt/cortex-hook is drwxr-x---" in r.stderr
            assert "203/EXEC" in r.stderr


@systemd
def test_a_wrapper_under_a_private_directory_is_warned_and_fails_as_warned(host, service_venv):
    """cortex-hook in a venv under a 0700 directory (as /root): `install --mode supervise` for a
    User=nobody unit warns, naming the directory; and systemd does fail that unit with 203/EXEC
    (its lease unit, as root, allocates fine). The same unit without User= gets no warning."""
    host.setup("services:\n  - match: llm.service\n")
    program = private_venv(str(host.out / "private"), service_venv)
    host.standin_unit("llm.service", "User=nobody\n")
    r = host.cortex("install", "llm.service", "--mode", "supervise", "--program", program)
    assert r.returncode == 0, r.stderr
    assert f"warning: llm.service runs as User=nobody, who cannot execute {host.out}/private/bin/python3: " \
           f"{host.out}/private is drwx------" in r.stderr
    assert "every start would fail with 203/EXEC" in r.stderr
    host.sb.daemon_reload()
    assert host.sb.systemctl("start", "llm.service").returncode != 0
    st = host.sb.show("llm.service", "ExecMainStatus", "Result")
    assert st == {"ExecMainStatus": "203", "Result": "exit-code"}, st
    host.sb.wait_released("llm.service")

    host.standin_unit("llm.service")  # no User=: root runs the wrapper
    r = host.cortex("install", "llm.service", "--mode", "supervise", "--program", program)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    host.sb.daemon_reload()
    host.sb.systemctl("start", "llm.service", check=True)
    host.sb.stop("llm.service")
    assert host.leases() == []


# -- uninstall while the generator keeps the unit -------------------------------------------------------
@systemd
def test_uninstall_says_the_generator_keeps_the_unit_and_how_to_stop_it(host):
    """`install:` in the policy: the generator's drop-in is active, and `uninstall` (which has no
    drop-in of its own to remove) says where it is and what to change instead."""
    host.setup("services:\n  - match: llm.service\n    install: env\n")
    host.standin_unit("llm.service")
    install_generator(host)
    assert reload(host)["units"] == {"llm.service": "env"}
    r = host.cortex("uninstall", "llm.service")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("llm.service: no drop-in of `cortex-hook install` in /etc/systemd/system\n")
    assert f"llm.service: handled by the cortex-hook generator: its drop-in {generated('llm.service')}" in out
    assert f"from `install:` in {host.box.policy}" in out
    assert "remove `install:` from that service" in out and "systemctl daemon-reload" in out
    assert os.path.join(os.path.dirname(host.box.policy), ".generated-units") in out

    host.install("llm.service", "exec")  # now also one of `install`: removed, and the generator's named
    r = host.cortex("uninstall", "llm.service")
    assert r.stdout.startswith("removed /etc/systemd/system/llm.service.d/zz-cortex-hook.conf")
    assert f"llm.service: still handled by the cortex-hook generator: its drop-in {generated('llm.service')}" \
           in r.stdout
    assert generated("llm.service") in host.sb.prop("llm.service", "DropInPaths")
