"""The runtime dir and the files allocate writes into it (files/rundir.py, files/record.py): a
start whose env file cannot be written exits 73 and its lease rolls back; a runtime dir that is
not a plain directory root alone can change is refused."""
import os
import stat

import pytest

from ..helpers.box import assert_one_line_error, gpu_desc, uuid_of
from ..helpers.envrules import env_as_systemd_reads


# -- allocate when the env file cannot be written: exit 73, the lease rolls back -------------------
def one_gpu(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    return box


def assert_nothing_leased(box, unit):
    assert box.json("leases")["leases"] == []
    assert [h for h in box.json("history", "-n", "100")["history"] if h["action"] == "allocate"] == []
    # the GPU really is free: another unit gets it
    assert box.json("plan", "other")["gpus"] == [uuid_of(0)]


def test_unwritable_env_file_rolls_the_lease_back(box):
    """The write fails inside the transaction (the env file's name is taken by a directory)."""
    one_gpu(box)
    blocker = os.path.join(box.runtime, "chat.service.env")
    os.makedirs(blocker)
    with open(os.path.join(blocker, "keep"), "w") as f:
        f.write("x")
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "cannot write", blocker)
    assert_nothing_leased(box, "chat.service")
    assert os.listdir(blocker) == ["keep"]
    assert [n for n in os.listdir(box.runtime) if n.startswith(".") or n.endswith(".tmp")] == []
    os.unlink(os.path.join(blocker, "keep"))
    os.rmdir(blocker)
    ok = box.cli("allocate", "chat")  # the same command works once the path is free
    assert ok.returncode == 0, ok.stderr
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["chat.service"]


def test_failed_env_write_leaves_no_runtime_file_of_that_start(box):
    """Nothing of a start that rolled back stays in the runtime dir (no decision record either)."""
    one_gpu(box)
    blocker = os.path.join(box.runtime, "chat.service.env")
    os.makedirs(blocker)
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert box.json("leases")["leases"] == []
    left = sorted(n for n in os.listdir(box.runtime) if not n.endswith(".cache"))  # memos may stay
    assert left == ["chat.service.env"]


def test_runtime_dir_that_is_a_regular_file_is_exit_73(box):
    one_gpu(box)
    with open(box.runtime, "w") as f:
        f.write("not a directory\n")
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", box.runtime)
    with open(box.runtime) as f:
        assert f.read() == "not a directory\n"
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_below_a_regular_file_is_exit_73(box):
    one_gpu(box)
    blocker = os.path.join(box.root, "afile")
    with open(blocker, "w") as f:
        f.write("x")
    r = box.cli("allocate", "chat", env=box.env(CORTEX_HOOK_RUNTIME_DIR=os.path.join(blocker, "run")))
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir")
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_that_is_a_symlink_is_refused(box, tmp_path):
    one_gpu(box)
    real = tmp_path / "real-run"
    real.mkdir()
    os.symlink(real, box.runtime)
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", "symlink")
    assert os.listdir(real) == []
    assert os.path.islink(box.runtime)
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_writable_by_others_is_exit_77(box):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    one_gpu(box)
    os.makedirs(box.runtime)
    os.chmod(box.runtime, 0o777)
    r = box.cli("allocate", "chat")
    assert r.returncode == 77, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", "writable by group or others")
    assert os.listdir(box.runtime) == []
    assert_nothing_leased(box, "chat.service")


def test_allocated_env_file_is_parsed_back_by_the_reference_parser(box):
    one_gpu(box)
    r = box.cli("allocate", "chat")
    assert r.returncode == 0, r.stderr
    with open(box.env_file("chat.service"), "rb") as f:
        env = env_as_systemd_reads(f.read().decode("utf-8"))
    assert env["CUDA_VISIBLE_DEVICES"] == uuid_of(0) and env["CORTEX_HOOK_UNIT"] == "chat.service"
    assert stat.S_IMODE(os.stat(box.env_file("chat.service")).st_mode) == 0o644
    assert [n for n in os.listdir(box.runtime) if n.startswith(".") or n.endswith(".tmp")] == []


def test_sticky_world_writable_runtime_dir_is_refused(box):
    """Sticky world-writable is fine ABOVE the runtime dir (/tmp), never for the dir itself: another
    user could plant UNIT.env there, which systemd hands to ExecStartPre=+ as root."""
    one_gpu(box)
    os.makedirs(box.runtime)
    os.chmod(box.runtime, 0o1777)
    r = box.cli("allocate", "chat")
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "runtime dir", "writable by group or others")
    assert box.json("leases")["leases"] == []
