"""Reliability: `kill -9` at any moment of `allocate`/`release`, and a full or read-only runtime dir.

Kill at any point
-----------------
A simulated box (4 GPUs, 6 units: 3 exclusive, 2 shared, 1 exclusive pair) and one state file.
Each round starts a few real `cortex-hook allocate|release` processes on distinct units and
SIGKILLs each after a random delay drawn uniformly from 0 to 1.2x the typical life of that kind
of process (measured first, under the same concurrency). Half the rounds start the processes
cold (`python -m cortex_hook`: the delay covers interpreter start, imports and the work); the
other half use tests/helpers/gated_allocate.py (imports done, released by a FIFO gate), so the
delays cover only the work and many more kills land inside the BEGIN IMMEDIATE transaction.
Leases are held by `--holder-pid` processes: two live for the whole test, one "mortal" that is
ended from time to time (sometimes before a round, so the racing allocates reap its leases).

After every round, and at the end:
  - `PRAGMA integrity_check` is ok (sqlite3 opened directly), the journal is WAL;
  - no GPU has two exclusive leases, or an exclusive lease next to any other lease; a unit holds
    exactly its service's number of GPUs or none, with the service's sharing, all by one holder;
  - after `cortex-hook leases --reap` no lease has a dead holder, and no live holder's lease is gone;
  - every `UNIT.env` parses completely as systemd reads it (tests/test_fuzz.py's reference
    parser), has every variable, and names as many GPUs as the unit's service asks for;
    every `UNIT.record` is a complete record for that unit; the only other files are the memos
    (`policy.cache`, `hookplan.cache`) and temp files `.NAME.PID.tmp` whose PID is a process we killed (at most one per process):
    write_atomic never leaves half a file under a final name, but a process killed between
    creating its temp file and rename(2) leaves the temp file behind (nothing removes it,
    except a later process that happens to get the same pid; it is hidden from
    `EnvironmentFile=-DIR/%n.env` by its name);
  - units are checked against a model of what completed: a unit whose last operation finished
    (not killed) is exactly consistent: leased => its env file and record name exactly its
    GPUs; released or refused => no lease, no env file, no record; leased by a holder that died
    => the lease is reaped (its env file may stay: reaping never touches the runtime dir).
    A unit whose last operation was killed may be in one of the windows the code leaves open:
      * allocate writes UNIT.record and UNIT.env (rename) inside the transaction, before COMMIT:
        killed between the env rename and COMMIT, the lease rolls back and the env file stays:
        an env file without a lease, or, for a unit that already held a lease (a restart), an
        env file naming the new choice next to the old lease;
      * allocate refusing a unit removes its files before COMMIT: killed there, an old lease
        stays without its env file;
      * release commits first, then removes UNIT.env, then UNIT.record: killed in between, an env
        file (or a record) without a lease.
    In every window the next completed `release UNIT` (what ExecStopPost= runs) or `allocate
    UNIT` makes the unit consistent again; the test ends by releasing every unit and checking
    that nothing but killed processes' temp files is left, then allocating again.
Each window is also produced deterministically (test_window_*): a real CLI process on a real
database SIGKILLs itself right after one step (it patches that one function in its own process).
The state database is created before the first round; a kill while the very first allocate
creates it has its own test, and so has the race of several processes creating it at once.

Full and read-only runtime dir
------------------------------
As root, in a private mount namespace (`unshare -m`), a tiny tmpfs is the runtime dir:
filled so the env file write hits ENOSPC (after the decision record fitted), filled so nothing
fits, remounted read-only, and a read-only bind mount of a real directory. `allocate` exits 73
with one line naming the file and the errno text, leaves no lease and no history entry
(`leases --json` and `history --json` outside), and no half-written or temp file.
"""

import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .helpers.box import Box, assert_one_line_error, assert_state_intact, uuid_of
from .helpers.envrules import parse_env_252
from .helpers.instruments import REPO, require
from .helpers.kill import TMP_NAME, WAIT_S, KillHarness, env_problem, prepare_box, read_env_text, shared_file
from .helpers.processes import HolderProcess, proc_start_time


KILLS = int(os.environ.get("CORTEX_HOOK_KILLS", "30"))
MAX_ROUNDS = 80


def _new_box(path):
    os.makedirs(path)
    return Box(path)


def test_kill_minus_nine_at_any_moment_keeps_leases_and_files_consistent(tmp_path):
    seed = int(os.environ.get("CORTEX_HOOK_KILL_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    harness = KillHarness(_new_box(tmp_path / "box"), rng)
    try:
        harness.start()
        harness.measure(_new_box(tmp_path / "scratch"))
        while harness.stats["kills"] < KILLS and harness.rounds < MAX_ROUNDS:
            harness.round("cold" if harness.rounds % 2 == 0 else "warm")
            assert not harness.problems, harness.report(seed)
        harness.finish()
        assert not harness.problems, harness.report(seed)
    finally:
        harness.stop()
    stats = harness.stats
    print(f"\nkill -9 harness (seed {seed}): {dict(sorted(stats.items()))}")
    assert stats["kills"] >= KILLS, harness.report(seed)  # the kills really landed
    assert stats["kills_allocate"] and stats["kills_release"], harness.report(seed)
    assert stats["integrity ok"] == stats["integrity checks"] >= harness.rounds


def test_kill_while_creating_the_state_database_leaves_it_usable(tmp_path):
    """The first `allocate` ever (it creates, migrates and switches the database to WAL), killed at
    a random moment of its life; then the next commands work on what it left."""
    rng = random.Random(int(os.environ.get("CORTEX_HOOK_KILL_SEED") or random.randrange(1 << 32)))
    timing = prepare_box(_new_box(tmp_path / "timing"), create_state=False)
    started = time.monotonic()
    assert timing.cli("allocate", "ex-a", "--holder-pid", str(os.getpid())).returncode == 0
    typical = time.monotonic() - started
    killed = 0
    for trial in range(8):
        box = prepare_box(_new_box(tmp_path / f"t{trial}"), create_state=False)
        proc = subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", "ex-a", "--holder-pid",
                                 str(os.getpid())], env=box.env(), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + rng.uniform(0, 1.2 * typical)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)  # no-op if it has exited (send_signal polls first)
        err = proc.communicate(timeout=WAIT_S)[1].decode()
        killed += proc.returncode == -signal.SIGKILL
        assert proc.returncode in (0, -signal.SIGKILL), err
        r = box.cli("leases", "--json")
        assert r.returncode == 0, (trial, r.stderr)
        assert [l["unit"] for l in json.loads(r.stdout)["leases"]] in ([], ["ex-a.service"])
        assert_state_intact(box.state)
        out = box.json("allocate", "ex-b", "--holder-pid", str(os.getpid()))
        assert len(out["gpus"]) == 1
    assert killed >= 1  # at least one kill landed before the process finished


RACE_OPENER = r"""
import os, sys
sys.path.insert(0, {repo!r})
from cortex_hook.errors import StateError
from cortex_hook.state import State
path, ready, fifo = sys.argv[1:4]
open(ready, "w").close()
os.close(os.open(fifo, os.O_RDONLY))  # the gate: every opener starts at once
try:
    State.open(path).close()
except StateError as exc:
    print(exc)
    sys.exit(74)
"""


def test_processes_racing_to_create_the_state_all_succeed(tmp_path):
    """Units starting together on a machine with no state database yet (first boot after the
    install, or after the file was moved aside): every one of them must get a usable database.
    Real processes, released together by a FIFO gate, each opening (creating, migrating) the state
    with State.open exactly as every cortex-hook command does; repeated, since it is a race."""
    code = RACE_OPENER.format(repo=REPO)
    for trial in range(12):
        d = tmp_path / f"race{trial}"
        d.mkdir()
        os.chmod(d, 0o755)
        state, fifo = str(d / "state" / "state.db"), str(d / "gate.fifo")
        os.mkfifo(fifo)
        procs = [subprocess.Popen([sys.executable, "-c", code, state, str(d / f"{i}.ready"), fifo],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
        writer = None
        try:
            deadline = time.monotonic() + WAIT_S
            while not all(os.path.exists(d / f"{i}.ready") for i in range(8)):
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
                assert time.monotonic() < deadline
                time.sleep(0.002)
            while writer is None:
                try:
                    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    assert exc.errno == errno.ENXIO and time.monotonic() < deadline
                    time.sleep(0.0005)
            results = [(p.wait(timeout=WAIT_S), p.communicate()) for p in procs]
        finally:
            if writer is not None:
                os.close(writer)
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        failed = [(rc, out.strip(), err.strip()[-300:]) for rc, (out, err) in results if rc != 0]
        assert not failed, f"trial {trial}: {len(failed)} of 8 failed: {failed[0]}"
        assert_state_intact(state)


# -- the windows, deterministically: a real process SIGKILLs itself at an exact point ----------------
# The driver patches one function of cortex_hook in its own process so that it sends itself
# SIGKILL right after (or before) that step; everything else is the real CLI on a real database.
KILL_DRIVER = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
import cortex_hook.cli, cortex_hook.files.atomic, cortex_hook.files.record, cortex_hook.state
point = {point!r}

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def after(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        die()
        return result
    setattr(owner, name, wrapper)

if point == "after-add-leases":
    after(cortex_hook.state.State, "add_leases")
elif point == "after-env-write":
    after(cortex_hook.files.record, "write_start")
elif point == "after-release-commit":
    after(cortex_hook.state.State, "release")
elif point == "before-env-rename":
    real_rename = os.rename
    def rename(src, dst, *a, **k):
        if dst.endswith(".env"):
            die()
        return real_rename(src, dst, *a, **k)
    cortex_hook.files.atomic.os.rename = rename
sys.exit(cortex_hook.cli.main(sys.argv[1:]))
"""


def kill_at(box, point, *args):
    """Run the CLI with ARGS, SIGKILLed at POINT; returns the CompletedProcess."""
    code = KILL_DRIVER.format(repo=REPO, point=point)
    return subprocess.run([sys.executable, "-c", code, *args], env=box.env(), capture_output=True, text=True,
                          timeout=WAIT_S)


def leases_of(box):
    return sorted((l["unit"], l["uuid"]) for l in box.json("leases")["leases"])


def _files(box):
    return sorted(os.listdir(box.runtime)) if os.path.isdir(box.runtime) else []


def _unit_files(box):
    """The runtime dir's env files and records (not the memos, not temp files)."""
    return [f for f in _files(box) if not shared_file(f) and not f.startswith(".")]


@pytest.fixture
def holder():
    h = HolderProcess()
    yield h
    h.end()


@pytest.fixture
def kbox(tmp_path):
    return prepare_box(Box(tmp_path))


def test_window_kill_after_lease_insert_before_env_write_leaves_nothing(kbox, holder):
    r = kill_at(kbox, "after-add-leases", "allocate", "ex-a", "--holder-pid", str(holder.pid))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert leases_of(kbox) == []  # the uncommitted insert rolled back
    assert _unit_files(kbox) == []


def test_window_kill_between_env_write_and_commit_leaves_an_env_file_without_lease(kbox, holder):
    """allocate writes UNIT.env inside the transaction; a kill before COMMIT keeps the file, not the lease."""
    r = kill_at(kbox, "after-env-write", "allocate", "ex-a", "--holder-pid", str(holder.pid))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert leases_of(kbox) == []
    text = read_env_text(kbox.env_file("ex-a.service"))
    assert text is not None and env_problem("ex-a.service", text) is None  # complete, but orphaned
    assert os.path.exists(os.path.join(kbox.runtime, "ex-a.service.record"))
    assert not [h for h in kbox.json("history")["history"] if h["unit"] == "ex-a.service"]
    # the GPU it names is free: another unit takes it while the orphan file still names it
    other = kbox.json("allocate", "ex-b", "--holder-pid", str(holder.pid))
    assert other["gpus"] == dict(parse_env_252(text)[0])["CUDA_VISIBLE_DEVICES"].split(",")
    # what ExecStopPost= runs repairs it
    r = kbox.cli("release", "ex-a")
    assert r.returncode == 0 and "held no GPU" in r.stdout
    assert not os.path.exists(kbox.env_file("ex-a.service"))
    assert not os.path.exists(os.path.join(kbox.runtime, "ex-a.service.record"))


def test_window_restart_killed_before_commit_leaves_env_naming_gpus_the_unit_does_not_hold(kbox, holder):
    """A restart (allocate of a unit that holds a lease) killed between env write and COMMIT keeps
    the old lease next to an env file naming the new choice."""
    first = kbox.json("allocate", "ex-a", "--holder-pid", str(holder.pid))["gpus"]
    assert first == [uuid_of(0)]
    assert kbox.cli("priority", "order", "3").returncode == 0  # the restart now prefers GPU 3
    r = kill_at(kbox, "after-env-write", "allocate", "ex-a", "--holder-pid", str(holder.pid))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert leases_of(kbox) == [("ex-a.service", uuid_of(0))]  # the old lease, rolled back to
    env = dict(parse_env_252(read_env_text(kbox.env_file("ex-a.service")))[0])
    assert env["CUDA_VISIBLE_DEVICES"] == uuid_of(3)  # ... but the env file names the new choice
    assert kbox.cli("release", "ex-a").returncode == 0
    assert leases_of(kbox) == [] and not os.path.exists(kbox.env_file("ex-a.service"))


def test_window_release_killed_after_commit_leaves_env_file_until_next_release(kbox, holder):
    assert kbox.cli("allocate", "pair", "--holder-pid", str(holder.pid)).returncode == 0
    r = kill_at(kbox, "after-release-commit", "release", "pair")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert leases_of(kbox) == []
    assert env_problem("pair.service", read_env_text(kbox.env_file("pair.service"))) is None  # orphan
    r = kbox.cli("release", "pair")
    assert r.returncode == 0 and "held no GPU" in r.stdout
    assert _unit_files(kbox) == []


def test_window_kill_before_env_rename_leaves_only_a_temp_file_with_its_pid(kbox, holder):
    r = kill_at(kbox, "before-env-rename", "allocate", "ex-a", "--holder-pid", str(holder.pid))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert leases_of(kbox) == []
    assert not os.path.exists(kbox.env_file("ex-a.service"))  # never a half file under the real name
    tmps = [f for f in _files(kbox) if TMP_NAME.fullmatch(f)]
    assert len(tmps) == 1 and tmps[0].startswith(".ex-a.service.env.")
    pid = int(TMP_NAME.fullmatch(tmps[0]).group("pid"))
    assert proc_start_time(pid) is None  # its process is gone (we were its parent and reaped it)
    assert env_problem("ex-a.service", read_env_text(os.path.join(kbox.runtime, tmps[0]))) is None  # fsynced
    # the record was written (and renamed) before: it stays until release, like the env file would
    assert os.path.exists(os.path.join(kbox.runtime, "ex-a.service.record"))
    assert kbox.cli("release", "ex-a").returncode == 0
    assert _unit_files(kbox) == []
    assert kbox.cli("allocate", "ex-a", "--holder-pid", str(holder.pid)).returncode == 0


# =================================================================================================
# full and read-only runtime dir (private mount namespace)
# =================================================================================================
def _namespace_available(tmp_path):
    if os.geteuid() != 0:
        return False, "root (mount in a private namespace)"
    for tool in ("unshare", "mount", "dd"):
        if not shutil.which(tool):
            return False, f"{tool} (util-linux / coreutils)"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=8k tmpfs {probe}"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return False, f"unshare -m + mount tmpfs (CAP_SYS_ADMIN): {r.stderr.strip()}"
    return True, ""


@pytest.fixture
def ns_box(tmp_path):
    ok, what = _namespace_available(tmp_path)
    require(ok, what)
    box = prepare_box(_new_box(tmp_path / "box"))
    # another unit holds a lease in the ordinary runtime dir: the failure must not disturb it
    assert box.cli("allocate", "ex-b", "--holder-pid", str(os.getpid())).returncode == 0
    return box


PAGE = os.sysconf("SC_PAGE_SIZE")


def _in_namespace(box, setup, unit="ex-a"):
    """Run `allocate UNIT` in a private mount namespace after the shell SETUP (which mounts the
    runtime dir at $RT); copy what it left in $RT to OUT. -> (CompletedProcess, {name: bytes})."""
    rt = os.path.join(box.root, "rt")
    out = os.path.join(box.root, "out")
    os.makedirs(rt, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    script = f"""
set -e
RT={rt}
{setup}
set +e
"$PY" -m cortex_hook --runtime-dir "$RT" allocate {unit} --holder-pid {os.getpid()}
rc=$?
cp -a "$RT/." {out}/ 2>/dev/null
exit $rc
"""
    env = box.env(PY=sys.executable)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                       timeout=WAIT_S, cwd=REPO)
    left = {}
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as f:
            left[name] = f.read()
    assert os.listdir(rt) == []  # the mount never leaked out of the namespace
    return r, left


def _history_ids(box):
    return [h["id"] for h in box.json("history", "-n", "1000")["history"]]


def _assert_refused_73(box, r, history_before, *needles):
    assert r.returncode == 73, (r.returncode, r.stdout, r.stderr)
    assert_one_line_error(r.stderr, *needles)
    assert leases_of(box) == [("ex-b.service", uuid_of(0))]  # no lease for the unit; the other kept
    assert _history_ids(box) == history_before  # the transaction rolled back whole


def _memos_and_record_size(box):
    """The memos this box writes (policy.cache, hookplan.cache), and the size of ex-a's decision
    record (from a real run in a scratch runtime dir, same policy and GPUs)."""
    scratch = os.path.join(box.root, "scratch-run")
    r = box.cli("--runtime-dir", scratch, "allocate", "ex-a", "--holder-pid", str(os.getpid()))
    assert r.returncode == 0, r.stderr
    record = os.path.getsize(os.path.join(scratch, "ex-a.service.record"))
    assert box.cli("--runtime-dir", scratch, "release", "ex-a").returncode == 0
    r = box.cli("--runtime-dir", scratch, "plan", "ex-a")  # loads the policy through the cache
    memos = sorted(os.path.join(scratch, n) for n in os.listdir(scratch) if n.endswith(".cache"))
    assert [os.path.basename(m) for m in memos] == ["hookplan.cache", "policy.cache"]
    return memos, record


def test_enospc_on_the_env_file_exits_73_and_leaves_no_lease_and_no_file(ns_box):
    """Room for the decision record but not the env file: the env write hits ENOSPC."""
    memos, record = _memos_and_record_size(ns_box)
    assert 64 < record % PAGE < PAGE - 64, f"record size {record} too close to a page boundary to plan with"
    pages = sum(math.ceil(os.path.getsize(m) / PAGE) for m in memos) + math.ceil(record / PAGE) + 1  # + filler
    history = _history_ids(ns_box)
    r, left = _in_namespace(ns_box, f"""
mount -t tmpfs -o size={pages * PAGE},mode=0755 tmpfs "$RT"
cp {" ".join(memos)} "$RT/"
dd if=/dev/zero of="$RT/filler" bs={PAGE} count=1 2>/dev/null
""")
    _assert_refused_73(ns_box, r, history, "ex-a.service.env", "No space left on device")
    assert sorted(left) == ["filler", "hookplan.cache", "policy.cache"], sorted(left)  # no env/record/temp/view


def test_enospc_with_nothing_free_exits_73_and_leaves_no_lease(ns_box):
    history = _history_ids(ns_box)
    r, left = _in_namespace(ns_box, """
mount -t tmpfs -o size=16k,mode=0755 tmpfs "$RT"
dd if=/dev/zero of="$RT/filler" bs=1024 count=64 2>/dev/null || true
""")
    _assert_refused_73(ns_box, r, history, "cannot write", "No space left on device")
    assert sorted(left) == ["filler"], sorted(left)


@pytest.mark.parametrize("how", ["tmpfs-remount-ro", "bind-ro"])
def test_read_only_runtime_dir_exits_73_and_leaves_no_lease(ns_box, how):
    if how == "tmpfs-remount-ro":
        setup = 'mount -t tmpfs -o size=64k,mode=0755 tmpfs "$RT"\nmount -o remount,ro "$RT"'
    else:  # a real directory with a stale env file of the unit, bind-mounted read-only over itself
        stale = os.path.join(ns_box.root, "rt-real")
        os.makedirs(stale)
        with open(os.path.join(stale, "ex-a.service.env"), "w") as f:
            f.write('CUDA_VISIBLE_DEVICES="stale"\n')
        setup = f'mount --bind {stale} "$RT"\nmount -o remount,bind,ro "$RT"'
    history = _history_ids(ns_box)
    r, left = _in_namespace(ns_box, setup)
    _assert_refused_73(ns_box, r, history, "cannot write", "Read-only file system")
    if how == "bind-ro":
        assert left == {"ex-a.service.env": b'CUDA_VISIBLE_DEVICES="stale"\n'}
    else:
        assert left == {}


def test_a_full_state_disk_is_one_line_with_sqlites_reason_and_leaves_no_runtime_file(ns_box):
    """The state database's file system is full: the allocation cannot commit. It used to say
    `cannot rollback - no transaction is active` and leave an env file and a record naming a GPU
    the unit does not hold; now SQLite's own reason, exit 74, and nothing of that start is left."""
    state_dir = os.path.dirname(ns_box.state)
    saved = os.path.join(ns_box.root, "state-copy")
    shutil.copytree(state_dir, saved)
    used = sum(os.path.getsize(os.path.join(saved, n)) for n in os.listdir(saved))
    script = f"""
set -e
mount -t tmpfs -o size={used + 8 * PAGE},mode=0700 tmpfs {state_dir}
cp -a {saved}/. {state_dir}/
dd if=/dev/zero of={state_dir}/filler bs={PAGE} count=64 2>/dev/null || true
set +e
"$PY" -m cortex_hook allocate ex-a --holder-pid {os.getpid()}
"""
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], env=ns_box.env(PY=sys.executable),
                       capture_output=True, text=True, timeout=WAIT_S, cwd=REPO)
    assert r.returncode == 74, (r.returncode, r.stdout, r.stderr)
    line = assert_one_line_error(r.stderr, "full")
    assert "rollback" not in line
    assert sorted(_unit_files(ns_box)) == ["ex-b.service.env", "ex-b.service.record"]  # ex-a left nothing
    assert leases_of(ns_box) == [("ex-b.service", uuid_of(0))]  # the real database, untouched
