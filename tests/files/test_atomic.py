"""Atomic writes (files/atomic.py): a temp file renamed into place, never half a file, never
through a symlink someone planted."""
import json
import os
import stat
import subprocess
import sys

import pytest

from cortex_hook.errors import OutputError
from cortex_hook.files.atomic import write_atomic


# -- write_atomic -------------------------------------------------------------------------------
def test_write_atomic_writes_0644_and_leaves_no_temp_file(tmp_path):
    path = str(tmp_path / "u.env")
    old = os.umask(0o077)
    try:
        write_atomic(path, "A=\"1\"\n")
    finally:
        os.umask(old)
    with open(path, "rb") as f:
        assert f.read() == b'A="1"\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["u.env"]


def test_write_atomic_replaces_by_rename(tmp_path):
    path = str(tmp_path / "u.env")
    write_atomic(path, "old\n")
    old_inode = os.stat(path).st_ino
    with open(path) as reader:  # a reader holding the old file keeps reading the old, whole file
        write_atomic(path, "new\n")
        assert reader.read() == "old\n"
    with open(path) as f:
        assert f.read() == "new\n"
    assert os.stat(path).st_ino != old_inode
    assert os.listdir(tmp_path) == ["u.env"]


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "run" / "u.env"
    path.parent.mkdir()
    os.symlink(victim, path)
    write_atomic(str(path), 'A="1"\n')
    assert not os.path.islink(path) and stat.S_ISREG(os.lstat(path).st_mode)
    assert path.read_text() == 'A="1"\n'
    assert victim.read_text() == "precious\n"
    assert os.listdir(path.parent) == ["u.env"]


def test_write_atomic_does_not_follow_a_planted_temp_symlink(tmp_path):
    """A temp name with our pid (left by a killed run, or planted) is replaced, never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    path = run / "u.env"
    os.symlink(victim, run / f".u.env.{os.getpid()}.tmp")
    write_atomic(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert victim.read_text() == "precious\n"
    assert os.listdir(run) == ["u.env"]


def test_write_atomic_failure_midway_keeps_the_old_file_whole(tmp_path):
    """The disk fills up (RLIMIT_FSIZE) after part of the data: the old file stays, no temp remains."""
    run = tmp_path / "run"
    run.mkdir()
    path = run / "u.env"
    path.write_text("OLD=\"whole\"\n")
    code = (
        "import json, resource, signal, sys\n"
        "from cortex_hook.files.atomic import write_atomic\n"
        "from cortex_hook.errors import OutputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    write_atomic(sys.argv[1], 'X' * (1 << 20))\n"
        "except OutputError as exc:\n"
        "    print(json.dumps(str(exc))); sys.exit(73)\n"
        "sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert "cannot write" in json.loads(r.stdout) and str(path) in json.loads(r.stdout)
    assert path.read_text() == "OLD=\"whole\"\n"
    assert os.listdir(run) == ["u.env"]


def test_write_atomic_onto_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "u.env"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(OutputError) as info:
        write_atomic(str(target), "A=\"1\"\n")
    assert "cannot write" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["u.env"] and os.listdir(target) == ["inside"]


def test_write_atomic_into_a_missing_directory_is_output_error(tmp_path):
    with pytest.raises(OutputError):
        write_atomic(str(tmp_path / "nope" / "u.env"), "x\n")
    assert os.listdir(tmp_path) == []
