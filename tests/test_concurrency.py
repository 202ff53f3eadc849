"""Real concurrency on one state file: many separate processes released at the same instant.

Every process is tests/helpers/gated_allocate.py: it imports cortex-hook, says it is ready, then
blocks opening a FIFO; the test opens the FIFO for writing once all are ready, which wakes them
together. Each then runs `cortex_hook.cli.main(...)` against the same box.
"""

import errno
import os
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from .helpers.box import assert_one_line_error, assert_state_intact, gpu_desc, uuid_of

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "gated_allocate.py")
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 180.0


def run_gated(box, tmp_path, commands):
    """Run every (name, cortex-hook argv) of COMMANDS in its own process, all released at once.

    Returns {name: {"rc", "stdout", "stderr"}}.
    """
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    fifo = str(gate_dir / "gate.fifo")
    os.mkfifo(fifo)
    procs = {}
    for name, argv in commands:
        ready = str(gate_dir / f"{name}.ready")
        out = open(gate_dir / f"{name}.out", "w")
        err = open(gate_dir / f"{name}.err", "w")
        procs[name] = (subprocess.Popen([sys.executable, HELPER, ready, fifo, "--", *argv], env=box.env(),
                                        stdout=out, stderr=err, stdin=subprocess.DEVNULL), ready, out, err)
    writer = None
    try:
        # wait (polling, with a generous timeout) until every process sits at the gate
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            missing = [n for n, (p, ready, _, _) in procs.items() if not os.path.exists(ready)]
            if not missing:
                break
            dead = [n for n in missing if procs[n][0].poll() is not None]
            assert not dead, f"exited before reaching the gate: {dead}: " + \
                "".join((gate_dir / f"{n}.err").read_text() for n in dead)
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT_S}s: {missing}"
            time.sleep(0.01)
        # every process is ready (at, or a few instructions before, its open of the FIFO):
        # opening the write end wakes every reader blocked in open(); late ones pass straight through
        while writer is None:
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader has opened it yet
                    raise
                assert time.monotonic() < deadline + READY_TIMEOUT_S, "no process opened the gate"
                time.sleep(0.001)
        for name, (p, _, _, _) in procs.items():
            p.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if writer is not None:
            os.close(writer)
        for p, _, out, err in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()
    return {name: {"rc": p.returncode, "stdout": (gate_dir / f"{name}.out").read_text(),
                   "stderr": (gate_dir / f"{name}.err").read_text()}
            for name, (p, _, _, _) in procs.items()}


def read_env_file(path):
    with open(path) as f:
        return {line.split("=", 1)[0]: line.split("=", 1)[1].strip().strip('"')
                for line in f.read().splitlines() if line and not line.startswith("#")}


def assert_never_locked(results):
    for name, r in results.items():
        text = (r["stdout"] + r["stderr"]).lower()
        assert "database is locked" not in text and "locked" not in text, (name, r)
        assert "Traceback" not in r["stderr"], (name, r["stderr"])


def assert_integrity(box):
    assert_state_intact(box.state)


def leases_by_unit(box):
    out = {}
    for lease in box.json("leases")["leases"]:
        out.setdefault(lease["unit"], []).append(lease)
    return out


@pytest.mark.parametrize("state_exists", [True, False], ids=["existing-state", "fresh-state"])
def test_sixteen_processes_six_gpus_exclusive(box, tmp_path, state_exists):
    """16 units race for 6 exclusive GPUs: exactly 6 win, each on its own GPU; 10 get exit 69."""
    box.write_gpus([gpu_desc(i) for i in range(6)])
    box.write_policy("services:\n  - match: '*'\n    sharing: exclusive\n")
    if state_exists:
        assert box.cli("leases").returncode == 0
        assert os.path.exists(box.state)
    else:
        assert not os.path.exists(box.state)  # the racers also race to create and migrate it
    units = [f"u{i}.service" for i in range(16)]
    results = run_gated(box, tmp_path, [(u, ["allocate", u]) for u in units])

    assert_never_locked(results)
    winners = sorted(u for u, r in results.items() if r["rc"] == 0)
    losers = sorted(u for u, r in results.items() if r["rc"] != 0)
    assert len(winners) == 6, {u: (r["rc"], r["stderr"]) for u, r in results.items()}
    for u in losers:
        r = results[u]
        assert r["rc"] == 69, (u, r)
        assert_one_line_error(r["stderr"], u, "needs 1 GPU")
        assert not os.path.exists(box.env_file(u))

    leases = leases_by_unit(box)
    assert sorted(leases) == winners
    assert all(len(ls) == 1 and ls[0]["sharing"] == "exclusive" and ls[0]["alive"] for ls in leases.values())
    held = [ls[0]["uuid"] for ls in leases.values()]
    assert sorted(held) == sorted(uuid_of(i) for i in range(6))  # 6 distinct GPUs: all of them
    for u in winners:
        env = read_env_file(box.env_file(u))
        assert env["CUDA_VISIBLE_DEVICES"] == leases[u][0]["uuid"]
        assert env["CORTEX_HOOK_UNIT"] == u
    assert len({read_env_file(box.env_file(u))["CUDA_VISIBLE_DEVICES"] for u in winners}) == 6
    assert_integrity(box)
    assert os.stat(box.state).st_mode & 0o777 == 0o600
    history = box.json("history", "-n", "100")["history"]
    assert sorted(h["unit"] for h in history if h["action"] == "allocate") == winners
    assert sorted(h["unit"] for h in history if h["action"] == "refuse") == losers


def test_shared_and_exclusive_never_share_a_gpu(box, tmp_path):
    """8 shared and 8 exclusive units race for 3 GPUs: an exclusive lease is always alone."""
    box.write_gpus([gpu_desc(i) for i in range(3)])
    box.write_policy("""\
        services:
          - match: 'shared-*'
            sharing: shared
          - match: 'excl-*'
            sharing: exclusive
        """)
    units = [f"shared-{i}.service" for i in range(8)] + [f"excl-{i}.service" for i in range(8)]
    results = run_gated(box, tmp_path, [(u, ["allocate", u]) for u in units])

    assert_never_locked(results)
    for u, r in results.items():
        assert r["rc"] in (0, 69), (u, r)
        if r["rc"] == 69:
            assert_one_line_error(r["stderr"], u)
    leases = leases_by_unit(box)
    assert sorted(leases) == sorted(u for u, r in results.items() if r["rc"] == 0)
    on_gpu = defaultdict(list)
    for unit, ls in leases.items():
        assert len(ls) == 1
        expected = "shared" if unit.startswith("shared-") else "exclusive"
        assert ls[0]["sharing"] == expected
        on_gpu[ls[0]["uuid"]].append(ls[0])
    for uuid, ls in on_gpu.items():
        if any(l["sharing"] == "exclusive" for l in ls):
            assert len(ls) == 1, (uuid, [(l["unit"], l["sharing"]) for l in ls])
    # nobody releases, so an exclusive unit was refused only when every GPU was taken
    assert sorted(on_gpu) == [uuid_of(i) for i in range(3)]
    assert sum(1 for u in leases if u.startswith("excl-")) <= 3
    for unit, ls in leases.items():
        assert read_env_file(box.env_file(unit))["CUDA_VISIBLE_DEVICES"] == ls[0]["uuid"]
    assert_integrity(box)


@pytest.mark.parametrize("on_unavailable", ["fail", "wait 2m"])
def test_release_while_others_allocate(box, tmp_path, on_unavailable):
    """8 holders release while 8 newcomers allocate the same 8 GPUs: the table stays consistent."""
    box.write_gpus([gpu_desc(i) for i in range(8)])
    box.write_policy(f"""\
        services:
          - match: '*'
            on_unavailable: {on_unavailable}
        """)
    old = [f"r{i}.service" for i in range(8)]
    new = [f"a{i}.service" for i in range(8)]
    for u in old:
        r = box.cli("allocate", u)
        assert r.returncode == 0, r.stderr
    assert sorted(l["uuid"] for l in box.json("leases")["leases"]) == [uuid_of(i) for i in range(8)]

    commands = [(u, ["release", u]) for u in old] + [(u, ["allocate", u]) for u in new]
    results = run_gated(box, tmp_path, commands)

    assert_never_locked(results)
    for u in old:
        assert results[u]["rc"] == 0, (u, results[u])
        assert not os.path.exists(box.env_file(u))
    for u in new:
        r = results[u]
        if on_unavailable == "fail":
            assert r["rc"] in (0, 69), (u, r)
        else:  # every newcomer waits until a holder has gone
            assert r["rc"] == 0, (u, r)
    leases = leases_by_unit(box)
    assert not set(leases) & set(old)
    assert sorted(leases) == sorted(u for u in new if results[u]["rc"] == 0)
    held = [l["uuid"] for ls in leases.values() for l in ls]
    assert len(held) == len(set(held)) == len(leases)
    for u in new:
        if results[u]["rc"] == 0:
            assert read_env_file(box.env_file(u))["CUDA_VISIBLE_DEVICES"] == leases[u][0]["uuid"]
        else:
            assert not os.path.exists(box.env_file(u))
    history = box.json("history", "-n", "1000")["history"]
    assert sorted(h["unit"] for h in history if h["action"] == "release") == old
    assert_integrity(box)
