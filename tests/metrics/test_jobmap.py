"""dcgm-exporter's HPC job mapping (metrics/jobmap.py): one file per leased GPU index, each line a
unit leasing it, following allocate, release and reap exactly, replaced atomically, and no file
at all for a GPU nobody leases (an empty one would make dcgm-exporter drop its series)."""

import os
import subprocess

from ..helpers.box import gpu_desc

POLICY = """\
services:
  - match: two.service
    gpus: 2
  - match: "shared-*.service"
    sharing: shared
    placement: pack  # shared units together, so that one file lists two
  - match: "*"
metrics:
  job_mapping_dir: {dir}
"""


def mapping(directory):
    """{file name: text} of the job-mapping directory (every file, temp files included)."""
    return {name: open(os.path.join(directory, name)).read() for name in sorted(os.listdir(directory))}


def setup(box, tmp_path, n=4):
    jobs = tmp_path / "job-map"
    box.write_gpus([gpu_desc(i) for i in range(n)]).write_policy(POLICY.format(dir=jobs))
    return str(jobs)


def test_the_files_follow_allocate_and_release(box, tmp_path):
    jobs = setup(box, tmp_path)
    assert box.cli("allocate", "one").returncode == 0
    assert mapping(jobs) == {"0": "one.service\n"}
    assert box.cli("allocate", "two").returncode == 0
    assert mapping(jobs) == {"0": "one.service\n", "1": "two.service\n", "2": "two.service\n"}
    assert box.cli("allocate", "shared-b").returncode == 0
    assert box.cli("allocate", "shared-a").returncode == 0
    assert mapping(jobs)["3"] == "shared-a.service\nshared-b.service\n"
    assert box.cli("release", "two").returncode == 0
    assert mapping(jobs) == {"0": "one.service\n", "3": "shared-a.service\nshared-b.service\n"}
    assert box.cli("release", "shared-b").returncode == 0
    assert box.cli("release", "one").returncode == 0
    assert mapping(jobs) == {"3": "shared-a.service\n"}
    assert oct(os.stat(jobs).st_mode & 0o777) == "0o755" and oct(os.stat(f"{jobs}/3").st_mode & 0o777) == "0o644"


def test_a_killed_holders_file_is_removed_at_reap(box, tmp_path):
    jobs = setup(box, tmp_path)
    holder = subprocess.Popen(["sleep", "600"])
    try:
        assert box.cli("allocate", "mortal", "--holder-pid", str(holder.pid)).returncode == 0
        assert box.cli("allocate", "other").returncode == 0
        assert mapping(jobs) == {"0": "mortal.service\n", "1": "other.service\n"}
    finally:
        holder.kill()
        holder.wait()
    assert box.cli("leases", "--reap").returncode == 0
    assert mapping(jobs) == {"1": "other.service\n"}


def test_files_are_replaced_by_rename_and_left_alone_when_unchanged(box, tmp_path):
    jobs = setup(box, tmp_path)
    assert box.cli("allocate", "shared-a").returncode == 0
    before = os.stat(f"{jobs}/0")
    assert box.cli("allocate", "other").returncode == 0  # GPU 1: file 0 keeps its text
    assert os.stat(f"{jobs}/0").st_ino == before.st_ino and os.stat(f"{jobs}/0").st_mtime_ns == before.st_mtime_ns
    assert box.cli("allocate", "shared-b").returncode == 0  # file 0 changes: a new inode, renamed over
    assert os.stat(f"{jobs}/0").st_ino != before.st_ino
    assert mapping(jobs) == {"0": "shared-a.service\nshared-b.service\n", "1": "other.service\n"}


def test_a_directory_others_can_write_is_refused_and_the_start_goes_on(box, tmp_path):
    jobs = setup(box, tmp_path)
    os.makedirs(jobs)
    os.chmod(jobs, 0o777)
    r = box.cli("allocate", "one")
    assert r.returncode == 0, r.stderr
    assert "job mapping not updated" in r.stderr and "metrics.job_mapping_dir" in r.stderr
    assert os.listdir(jobs) == []


def test_a_policy_that_drops_the_key_empties_the_directory_and_writes_no_more(box, tmp_path):
    jobs = setup(box, tmp_path)
    assert box.cli("allocate", "one").returncode == 0
    assert mapping(jobs) == {"0": "one.service\n"}
    box.write_policy("services:\n  - match: '*'\n")
    assert box.cli("allocate", "other").returncode == 0
    assert box.cli("allocate", "third").returncode == 0
    assert mapping(jobs) == {}  # no stale unit names left for dcgm-exporter


def test_a_directory_under_one_others_can_write_is_never_created(box, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # (no sticky bit: anyone could swap what is inside)
    jobs = open_dir / "job-map"
    box.write_gpus([gpu_desc(0)]).write_policy(POLICY.format(dir=jobs))
    r = box.cli("allocate", "one")
    assert r.returncode == 0, r.stderr
    assert "job mapping not updated" in r.stderr and not jobs.exists()
