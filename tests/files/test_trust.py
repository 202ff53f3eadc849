"""Files that decide what root does (the policy, the state) are refused with exit 77 when someone
other than root could change them, or a directory above them (files/trust.py)."""
import os

import pytest

from ..helpers.box import assert_one_line_error, fingerprint, gpus_box, query


# -- unsafe permissions: exit 77 --------------------------------------------------------------------
def _existing_state(box):
    gpus_box(box, 2)
    assert box.cli("allocate", "keep").returncode == 0


@pytest.mark.parametrize("target, change, needle", [
    ("file", lambda p: os.chmod(p, 0o664), "writable by group or others"),
    ("file", lambda p: os.chmod(p, 0o646), "writable by group or others"),
    ("file", lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
    ("dir", lambda p: os.chmod(p, 0o775), "writable by group or others"),
    ("dir", lambda p: os.chmod(p, 0o757), "writable by group or others"),
    ("dir", lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
])
def test_unsafe_state_file_or_directory_is_exit_77(box, target, change, needle):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    _existing_state(box)
    path = box.state if target == "file" else os.path.dirname(box.state)
    change(path)
    before = fingerprint(box.state)
    for args in (["leases"], ["allocate", "other"], ["release", "keep"], ["status"]):
        r = box.cli(*args)
        assert r.returncode == 77, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, needle)
    assert fingerprint(box.state) == before
    assert [l for l in query(box.state, "SELECT unit FROM lease")] == [("keep.service",)]


def test_unsafe_state_directory_refused_before_creating_the_database(box):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    os.makedirs(os.path.dirname(box.state))
    os.chmod(os.path.dirname(box.state), 0o777)
    r = box.cli("allocate", "a")
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "state directory", "writable by group or others")
    assert not os.path.exists(box.state)


@pytest.mark.parametrize("change, needle", [
    (lambda p: os.chmod(p, 0o664), "writable by group or others"),
    (lambda p: os.chmod(p, 0o646), "writable by group or others"),
    (lambda p: os.chown(p, 65534, -1), "owned by uid 65534"),
])
def test_unsafe_policy_file_is_exit_77(box, change, needle):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    change(box.policy)
    for args in (["plan", "a"], ["allocate", "a"], ["status"], ["priority", "set", "0", "0"]):
        r = box.cli(*args)
        assert r.returncode == 77, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "policy", needle)
    assert not os.path.exists(box.env_file("a.service"))
    assert not os.path.exists(box.state) or query(box.state, "SELECT count(*) FROM lease") == [(0,)]


def test_policy_in_a_world_writable_directory_needs_the_sticky_bit(box, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    gpus_box(box, 1)
    pdir = tmp_path / "etc"
    pdir.mkdir()
    policy = str(pdir / "policy.yaml")
    with open(box.policy) as f:
        text = f.read().replace("gpus.json", os.path.join(box.root, "gpus.json"))
    with open(policy, "w") as f:
        f.write(text)
    os.chmod(policy, 0o644)
    os.chmod(pdir, 0o777)
    r = box.cli("plan", "a", "--policy", policy)
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "writable by group or others", str(pdir))
    os.chmod(pdir, 0o1777)  # like /tmp: nobody else can replace our root-owned file
    r = box.cli("plan", "a", "--policy", policy)
    assert r.returncode == 0, r.stderr
