"""Files that decide what root does (the policy, the state) are refused with exit 77 when someone
other than root could change them, or a directory above them (files/trust.py)."""
import json
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


# -- the path as given, every component, read from the descriptor that was checked -----------------
NOBODY = 65534


def _policies(box, tmp_path):
    """Root's policy (class critical) and another user's (class batch), both well-formed."""
    gpus_box(box, 1)
    with open(box.policy) as f:
        text = f.read().replace("gpus.json", os.path.join(box.root, "gpus.json"))
    root_policy, users_policy = tmp_path / "root.yaml", tmp_path / "user.yaml"
    root_policy.write_text(text.replace("match: '*'", "match: '*'\n    class: critical"))
    users_policy.write_text(text.replace("match: '*'", "match: '*'\n    class: batch"))
    os.chown(users_policy, NOBODY, NOBODY)
    return root_policy, users_policy


def _plan_class(box, policy):
    r = box.cli("plan", "a", "--json", "--policy", str(policy))
    return r.returncode, (json.loads(r.stdout)["service"]["class"] if r.returncode in (0, 69) else r.stderr)


def test_a_symlink_in_a_directory_another_user_can_write_is_refused(box, tmp_path):
    """Root's policy behind a symlink that a user can flip (their directory): refused, whatever it
    points at now; once only root's policy was read it never was the user's (a check of the
    resolved path alone let 71 of 150 plans read the user's policy, and poisoned the memo)."""
    root_policy, users_policy = _policies(box, tmp_path)
    users_dir = tmp_path / "users"
    users_dir.mkdir()
    os.chown(users_dir, NOBODY, NOBODY)
    link = users_dir / "policy.yaml"
    for target in (root_policy, users_policy):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        code, error = _plan_class(box, link)
        assert code == 77 and "owned by uid 65534" in error and str(users_dir) in error, error


def test_a_symlink_another_user_owns_in_a_sticky_directory_is_refused(box, tmp_path):
    root_policy, _ = _policies(box, tmp_path)
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    link = sticky / "policy.yaml"
    link.symlink_to(root_policy)
    assert _plan_class(box, link) == (0, "critical")  # root's own link in a sticky dir: followed
    link.unlink()
    link.symlink_to(root_policy)
    os.lchown(link, NOBODY, NOBODY)  # the same link, planted by another user
    code, error = _plan_class(box, link)
    assert code == 77 and "a symlink owned by uid 65534" in error


def test_the_memo_is_keyed_on_the_file_that_was_read(box, tmp_path):
    """Root flips its own link between two root policies: every plan uses the one it read, never
    the memo of the other."""
    root_policy, _ = _policies(box, tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(root_policy.read_text().replace("class: critical", "class: normal"))
    link = tmp_path / "current.yaml"
    os.makedirs(box.runtime, mode=0o755)
    for target, klass in ((root_policy, "critical"), (other, "normal"), (root_policy, "critical"),
                          (other, "normal")):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        assert _plan_class(box, link) == (0, klass)
    assert os.path.exists(os.path.join(box.runtime, "policy.cache"))  # the memo was in play
