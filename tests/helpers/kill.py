"""The kill harness: real `cortex-hook allocate|release` processes SIGKILLed at random moments on
one simulated box, and the checks that nothing was lost, duplicated or half-written (the method
is described in tests/test_reliability.py; bench/stress.py runs it at scale)."""

import errno
import json
import marshal
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict

from cortex_hook.files.record import RECORD_VERSION

from .box import gpu_desc
from .envrules import parse_env_252
from .instruments import REPO
from .processes import HolderProcess


GATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gated_allocate.py")

N_GPUS = 4
UNITS = {  # unit -> (sharing, number of GPUs)
    "ex-a.service": ("exclusive", 1),
    "ex-b.service": ("exclusive", 1),
    "ex-c.service": ("exclusive", 1),
    "sh-a.service": ("shared", 1),
    "sh-b.service": ("shared", 1),
    "pair.service": ("exclusive", 2),
}
POLICY = """\
services:
  - match: 'ex-*'
    sharing: exclusive
  - match: 'sh-*'
    sharing: shared
  - match: pair
    gpus: 2
    sharing: exclusive
"""
ENV_KEYS = {"CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES", "CORTEX_GPU_COUNT", "CORTEX_GPU_UUIDS",
            "CORTEX_GPU_INDICES", "CORTEX_HOOK_UNIT"}
TMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.tmp")
WAIT_S = 120.0  # no single cortex-hook run may take longer than this (busy timeout is 60 s)

# What a problem counts as in the summary (bench/stress.py)
LOST = ("lost", "reaped-live", "partial")
DUPLICATED = ("duplicate",)


class Op:
    """One cortex-hook process of a round."""

    def __init__(self, op, unit, holder=None):
        self.op, self.unit, self.holder = op, unit, holder
        self.proc = self.pid = None
        self.start = self.end = None
        self.wall_start = None
        self.kill_at = None
        self.delay = 0.0
        self.rc = None
        self.stdout = self.stderr = ""

    @property
    def killed(self):
        return self.rc == -signal.SIGKILL

    def argv(self):
        args = [self.op, self.unit]
        if self.op == "allocate":
            args += ["--json", "--holder-pid", str(self.holder.pid)]
        return args

    def __repr__(self):
        return f"{self.op} {self.unit} (pid {self.pid}, rc {self.rc})"


class UnitModel:
    """What the completed operations say a unit should hold."""

    def __init__(self):
        self.dirty = False  # its last operation was killed
        self.lease = None  # the GPUs of its last completed successful allocate, in env order
        self.holder = None


def shared_file(name):
    """A runtime dir file of no unit: the memos (`*.cache`) and the state's view, rewritten whole
    (write_atomic) by whichever command runs; a half one would show as a bad memo or view."""
    return name.endswith(".cache") or name == "state.view"


def read_env_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return None


def prepare_box(box, create_state=True):
    """GPUs and policy; with CREATE_STATE, the state database too (created by one process:
    processes racing to create it is test_processes_racing_to_create_the_state_all_succeed)."""
    box.write_gpus([gpu_desc(i) for i in range(N_GPUS)])
    box.write_policy(POLICY)
    if create_state:
        r = box.cli("leases")
        assert r.returncode == 0, r.stderr
    return box


def env_problem(unit, text):
    """Why TEXT is not a complete env file of UNIT (None if it is)."""
    pairs, complete = parse_env_252(text)
    env = dict(pairs)
    if not complete or not text.endswith("\n") or len(pairs) != len(env):
        return f"incomplete or malformed: {text!r}"
    if set(env) != ENV_KEYS:
        return f"variables {sorted(env)} (expected {sorted(ENV_KEYS)})"
    gpus = env["CUDA_VISIBLE_DEVICES"].split(",")
    if env["CORTEX_HOOK_UNIT"] != unit or env["CORTEX_GPU_UUIDS"] != env["CUDA_VISIBLE_DEVICES"] \
            or env["CORTEX_GPU_COUNT"] != str(len(gpus)) or len(gpus) != UNITS[unit][1] \
            or len(set(gpus)) != len(gpus):
        return f"inconsistent values: {env}"
    return None


class KillHarness:
    """Random kill -9 rounds against one box, with every check after each round.

    Problems are collected in `self.problems` ([(kind, text)]); tests assert there are none,
    bench/stress.py counts them. `self.stats` counts what happened.
    """

    def __init__(self, box, rng, per_round=4, kill_factor=1.2, p_release=0.4, python=None, log=None):
        self.box, self.rng = box, rng
        self.per_round, self.kill_factor, self.p_release = per_round, kill_factor, p_release
        self.python = python or sys.executable
        self.log = log or (lambda msg: None)
        self.stats = Counter()
        self.problems = []
        self.model = {u: UnitModel() for u in UNITS}
        self.killed_pids = set()
        self.holders = {}
        self.live = []
        self.mortal = None
        self.typical = {}
        self.rounds = 0
        self.tmp_seen = set()
        self.history = []  # (round, mode, [Op]) of the last 3 rounds, for failure reports

    # -- set-up and tear-down -------------------------------------------------------------------
    def setup_box(self, box):
        return prepare_box(box)

    def start(self):
        self.setup_box(self.box)
        self.live = [self._holder(), self._holder()]
        self.mortal = self._holder()

    def _holder(self):
        h = HolderProcess()
        self.holders[h.pid] = h
        return h

    def stop(self):
        """End every holder we started (by pid, through its Popen)."""
        for h in self.holders.values():
            h.end()

    def problem(self, kind, text):
        self.problems.append((kind, text))
        self.stats[f"problem:{kind}"] += 1

    # -- running processes ------------------------------------------------------------------------
    def _run(self, box, ops, mode, kill):
        """Start OPS together (cold or gated), SIGKILL each at its kill time if KILL; wait for all."""
        env = box.env()
        gate_dir = os.path.join(box.root, "gate", str(self.stats["launched"]))
        os.makedirs(gate_dir)
        fifo = os.path.join(gate_dir, "gate.fifo")
        if mode == "warm":
            os.mkfifo(fifo)
        writer = None
        try:
            for i, op in enumerate(ops):
                if mode == "cold":
                    cmd = [self.python, "-m", "cortex_hook", *op.argv()]
                else:
                    cmd = [self.python, GATED, os.path.join(gate_dir, f"{i}.ready"), fifo, "--", *op.argv()]
                op.wall_start = time.time()
                op.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                op.pid = op.proc.pid
                op.start = time.monotonic()
                self.stats["launched"] += 1
            if mode == "warm":
                writer = self._open_gate(gate_dir, fifo, ops)
                now = time.monotonic()
                for op in ops:
                    op.start = now
            for op in ops:
                typical = self.typical.get((mode, op.op), 0.5)
                op.delay = self.rng.uniform(0, self.kill_factor * typical)
                op.kill_at = op.start + op.delay if kill else None
            self._reap_or_kill(ops)
        finally:
            if writer is not None:
                os.close(writer)
            for op in ops:
                if op.proc is not None and op.proc.poll() is None:  # only on an error above
                    op.proc.kill()
                    op.proc.wait()
        for op in ops:
            out, err = op.proc.communicate(timeout=WAIT_S)
            op.stdout, op.stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
            op.rc = op.proc.returncode
            if op.killed:
                self.killed_pids.add(op.pid)
        shutil.rmtree(gate_dir, ignore_errors=True)

    def _open_gate(self, gate_dir, fifo, ops):
        deadline = time.monotonic() + WAIT_S
        while True:  # poll until every process has imported cortex-hook and sits at the gate
            missing = [i for i in range(len(ops)) if not os.path.exists(os.path.join(gate_dir, f"{i}.ready"))]
            if not missing:
                break
            dead = [ops[i] for i in missing if ops[i].proc.poll() is not None]
            if dead:
                raise AssertionError(f"exited before the gate: {dead}: {dead[0].proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not at the gate after {WAIT_S}s: {[ops[i] for i in missing]}")
            time.sleep(0.002)
        while True:
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: no reader has the FIFO open yet
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)

    def _reap_or_kill(self, ops):
        """Poll every process: note when it ends; SIGKILL it at its kill time if it is still running.

        Popen.send_signal polls first, so a process that has just exited (a zombie, not yet
        reaped: its pid cannot be reused) is never signalled by mistake."""
        deadline = time.monotonic() + WAIT_S
        pending = list(ops)
        while pending:
            now = time.monotonic()
            for op in list(pending):
                if op.proc.poll() is not None:
                    op.end = now
                    pending.remove(op)
                elif op.kill_at is not None and now >= op.kill_at:
                    op.proc.send_signal(signal.SIGKILL)
                    op.kill_at = None
            if now > deadline:
                raise AssertionError(f"still running after {WAIT_S}s: {pending}")
            if pending:
                next_kill = min((op.kill_at for op in pending if op.kill_at is not None), default=now + 0.001)
                time.sleep(min(0.001, max(0.0, next_kill - time.monotonic())))

    def _random_ops(self):
        units = self.rng.sample(sorted(UNITS), self.per_round)
        holders = self.live + [self.mortal]
        return [Op("release", u) if self.rng.random() < self.p_release else
                Op("allocate", u, self.rng.choice(holders)) for u in units]

    # -- measuring the typical life of each kind of process -----------------------------------------
    def measure(self, scratch_box, rounds=3, modes=("cold", "warm")):
        """Median duration per (mode, op), on a scratch box, under the same concurrency, no kills."""
        self.setup_box(scratch_box)
        durations = defaultdict(list)
        for mode in modes:
            for _ in range(rounds):
                ops = self._random_ops()
                self._run(scratch_box, ops, mode, kill=False)
                for op in ops:
                    assert op.rc in (0, 69), (op, op.stderr)
                    durations[(mode, op.op)].append(op.end - op.start)
        for mode in modes:  # an op that never came up gets the other op's time
            for op in ("allocate", "release"):
                if not durations[(mode, op)]:
                    durations[(mode, op)] = durations[(mode, "release" if op == "allocate" else "allocate")]
        self.typical = {k: statistics.median(v) for k, v in durations.items()}
        self.log("typical durations: " + ", ".join(f"{m} {o} {t * 1000:.0f} ms"
                                                    for (m, o), t in sorted(self.typical.items())))
        return self.typical

    # -- one round ----------------------------------------------------------------------------------
    def round(self, mode):
        self.rounds += 1
        self.reaped_in_round = self.rng.random() < 0.25
        if self.reaped_in_round:  # its leases die now: the racing allocates reap them
            self._replace_mortal()
        before = self._snapshot()
        ops = self._random_ops()
        self.stats["trials"] += len(ops)
        self._run(self.box, ops, mode, kill=True)
        self.history = (self.history + [(self.rounds, mode, ops)])[-3:]
        after = self._snapshot()
        self._account(ops, before, after)
        if self.rng.random() < 0.35:
            self._replace_mortal()
        self.check(f"round {self.rounds} ({mode})")

    def _replace_mortal(self):
        self.mortal.end()
        self.stats["holders ended"] += 1
        self.mortal = self._holder()

    def _snapshot(self):
        """({unit: {uuid: (since, holder pid)}}, {unit: env text}, {unit: record bytes}) right now."""
        leases = defaultdict(dict)
        if os.path.exists(self.box.state):
            conn = sqlite3.connect(self.box.state)
            try:
                for unit, uuid, since, pid in conn.execute("SELECT unit, uuid, since, pid FROM lease"):
                    leases[unit][uuid] = (since, pid)
            except sqlite3.OperationalError:  # killed while creating the schema: no table yet
                pass
            finally:
                conn.close()
        envs = {u: read_env_text(self.box.env_file(u)) for u in UNITS}
        records = {}
        for u in UNITS:
            try:
                with open(os.path.join(self.box.runtime, u + ".record"), "rb") as f:
                    records[u] = f.read()
            except FileNotFoundError:
                records[u] = None
        return leases, envs, records

    def _account(self, ops, before, after):
        """Update the model from what completed; count where the kills landed and what they left."""
        (lb, eb, rb), (la, ea, ra) = before, after
        for op in ops:
            if "Traceback" in op.stderr:
                self.problem("traceback", f"{op}: {op.stderr}")
            m = self.model[op.unit]
            if op.killed:
                self.stats["kills"] += 1
                self.stats[f"kills_{op.op}"] += 1
                m.dirty = True
                u = op.unit
                if op.op == "allocate":
                    if any(since >= op.wall_start for since, _ in la.get(u, {}).values()):
                        self.stats["allocate killed after COMMIT"] += 1
                    elif ea[u] != eb[u]:
                        self.stats["allocate killed between env write and COMMIT"] += 1
                    elif ra[u] != rb[u]:
                        self.stats["allocate killed between record write and env write"] += 1
                    else:
                        self.stats["allocate killed before any write"] += 1
                elif set(lb.get(u, {})) and not la.get(u) and not self.reaped_in_round:
                    self.stats["release killed after COMMIT"] += 1
                    if ea[u] is not None:
                        self.stats["release killed between COMMIT and file removal"] += 1
                self._count_window(u, (lb, eb, rb), (la, ea, ra))
                continue
            self.stats[f"completed_{op.op}"] += 1
            if op.op == "allocate" and op.rc == 0:
                try:
                    gpus = json.loads(op.stdout)["gpus"]
                except (ValueError, KeyError) as exc:
                    self.problem("bad-output", f"{op}: {exc}: {op.stdout[:300]!r}")
                    continue
                m.dirty, m.lease, m.holder = False, tuple(gpus), op.holder
            elif op.op == "allocate" and op.rc == 69:
                lines = [l for l in op.stderr.splitlines() if l.strip()]
                if len(lines) != 1 or op.unit not in lines[0]:
                    self.problem("bad-exit", f"{op}: refusal is not one line naming the unit: {op.stderr!r}")
                m.dirty, m.lease, m.holder = False, None, None
                self.stats["refused (69)"] += 1
            elif op.op == "release" and op.rc == 0:
                m.dirty, m.lease, m.holder = False, None, None
            else:
                self.problem("bad-exit", f"{op}: exit {op.rc}: {op.stderr.strip()!r}")
                m.dirty = True

    def _count_window(self, unit, before, after):
        """What a kill left for UNIT, counted once, only if the kill changed something."""
        (lb, eb, rb), (la, ea, ra) = before, after
        lease_b, lease_a = set(lb.get(unit, {})), set(la.get(unit, {}))
        if lease_b == lease_a and eb[unit] == ea[unit] and rb[unit] == ra[unit]:
            self.stats["after a kill: nothing changed"] += 1
            return
        if any(not self.holders[pid].alive() for _, pid in lb.get(unit, {}).values()):
            self.stats["after a kill: its lease was reaped meanwhile"] += 1  # not the kill's doing
            return
        env = None
        if ea[unit] is not None and env_problem(unit, ea[unit]) is None:
            env = set(dict(parse_env_252(ea[unit])[0])["CUDA_VISIBLE_DEVICES"].split(","))
        if lease_a and env == lease_a:
            self.stats["after a kill: consistent"] += 1
        elif lease_a and env:
            self.stats["window: env file names other GPUs than the lease"] += 1
        elif lease_a:
            self.stats["window: lease without env file"] += 1
        elif env:
            self.stats["window: env file without lease"] += 1
        elif ra[unit] is not None:
            self.stats["window: record without env file"] += 1
        else:
            self.stats["after a kill: consistent"] += 1

    # -- the checks ---------------------------------------------------------------------------------
    def check(self, where):
        box = self.box
        if not os.path.exists(box.state):  # every process died before creating the database
            files = os.listdir(box.runtime) if os.path.isdir(box.runtime) else []
            if any(f.endswith((".env", ".record")) for f in files):
                self.problem("stale-files", f"{where}: runtime files without a state database: {files}")
            return
        pre = self._lease_rows()
        r = box.cli("leases", "--reap", "--json")
        if r.returncode != 0 or "Traceback" in r.stderr:
            self.problem("bad-exit", f"{where}: leases --reap: exit {r.returncode}: {r.stderr.strip()!r}")
            return
        self._check_database(where, pre)
        envs, records = self._check_runtime_dir(where)
        self._check_model(where, envs, records)

    def _lease_rows(self):
        conn = sqlite3.connect(self.box.state)
        try:
            return conn.execute("SELECT unit, uuid, sharing, pid, pid_start FROM lease").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def _check_database(self, where, pre):
        conn = sqlite3.connect(self.box.state)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchall()
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
            rows = conn.execute("SELECT unit, uuid, sharing, pid, pid_start FROM lease").fetchall()
        finally:
            conn.close()
        self.stats["integrity checks"] += 1
        if integrity == [("ok",)] and journal == "wal":
            self.stats["integrity ok"] += 1
        else:
            self.problem("integrity", f"{where}: integrity_check {integrity}, journal {journal}")
        by_gpu, by_unit = defaultdict(list), defaultdict(list)
        for row in rows:
            by_gpu[row[1]].append(row)
            by_unit[row[0]].append(row)
        for uuid, ls in by_gpu.items():
            exclusive = [l for l in ls if l[2] == "exclusive"]
            if len(exclusive) > 1:
                self.problem("duplicate", f"{where}: GPU {uuid} has two exclusive leases: {ls}")
            elif exclusive and len(ls) > 1:
                self.problem("duplicate", f"{where}: GPU {uuid}: exclusive lease next to another: {ls}")
        for unit, ls in by_unit.items():
            if unit not in UNITS:
                self.problem("foreign", f"{where}: lease of unknown unit {ls}")
                continue
            sharing, count = UNITS[unit]
            if len(ls) > count:
                self.problem("duplicate", f"{where}: {unit} holds {len(ls)} GPUs, its service {count}: {ls}")
            elif len(ls) < count:
                self.problem("partial", f"{where}: {unit} holds {len(ls)} of its {count} GPUs: {ls}")
            if {l[2] for l in ls} != {sharing}:
                self.problem("duplicate", f"{where}: {unit} leases with the wrong sharing: {ls}")
            if len({l[3] for l in ls}) != 1:
                self.problem("duplicate", f"{where}: {unit} leases by several holders: {ls}")
        for row in rows:
            h = self.holders.get(row[3])
            if h is None:
                self.problem("foreign", f"{where}: lease held by a pid that is none of our holders: {row}")
            elif not h.alive():
                self.problem("dead-holder", f"{where}: after leases --reap, a dead holder's lease: {row}")
        for row in pre:  # reaping never drops a live holder's lease
            h = self.holders.get(row[3])
            if h is not None and h.alive() and row not in rows:
                self.problem("reaped-live", f"{where}: a live holder's lease vanished in leases --reap: {row}")
        self.db_leases = {u: [l[1] for l in ls] for u, ls in by_unit.items()}
        self.db_holder = {u: ls[0][3] for u, ls in by_unit.items()}

    def _check_runtime_dir(self, where):
        envs, records, tmp_per_pid = {}, {}, Counter()
        names = os.listdir(self.box.runtime) if os.path.isdir(self.box.runtime) else []
        for name in names:
            path = os.path.join(self.box.runtime, name)
            tmp = TMP_NAME.fullmatch(name)
            if shared_file(name):
                continue
            if tmp:
                pid = int(tmp.group("pid"))
                tmp_per_pid[pid] += 1
                self.tmp_seen.add(name)
                if pid not in self.killed_pids:
                    self.problem("stray-tmp", f"{where}: temp file {name} of a process that was not killed")
                continue
            unit, ext = os.path.splitext(name)
            if unit not in UNITS or ext not in (".env", ".record"):
                self.problem("unexpected-file", f"{where}: {name}")
                continue
            if ext == ".env":
                text = read_env_text(path)
                why = env_problem(unit, text)
                if why:
                    self.problem("half-file", f"{where}: {name}: {why}")
                    continue
                envs[unit] = dict(parse_env_252(text)[0])["CUDA_VISIBLE_DEVICES"].split(",")
            else:
                try:
                    with open(path, "rb") as f:
                        data = marshal.load(f)
                    decision = data["value"]["decision"]
                    assert data["key"] == (RECORD_VERSION, unit) and decision["unit"] == unit
                    records[unit] = [g["uuid"] for g in decision["chosen"]]
                except (ValueError, EOFError, KeyError, TypeError, AssertionError) as exc:
                    self.problem("half-file", f"{where}: {name}: not a complete record: {exc!r}")
        for pid, n in tmp_per_pid.items():
            if n > 1:
                self.problem("stray-tmp", f"{where}: {n} temp files of the one killed process {pid}")
        self.stats["tmp files left (max seen)"] = max(self.stats["tmp files left (max seen)"],
                                                     sum(tmp_per_pid.values()))
        return envs, records

    def _check_model(self, where, envs, records):
        for unit, m in self.model.items():
            db = self.db_leases.get(unit)
            env, rec = envs.get(unit), records.get(unit)
            if m.dirty:  # a window the kill left (counted in _count_window); the next completed op repairs it
                continue
            if m.lease is not None and m.holder.alive():
                if db is None or set(db) != set(m.lease):
                    self.problem("lost", f"{where}: {unit} should hold {m.lease} (holder {m.holder.pid} alive), "
                                         f"holds {db}")
                if env != list(m.lease):
                    self.problem("stale-files", f"{where}: {unit} holds {m.lease}, env file says {env}")
                if rec != list(m.lease):
                    self.problem("stale-files", f"{where}: {unit} holds {m.lease}, record says {rec}")
                if db is not None and self.db_holder[unit] != m.holder.pid:
                    self.problem("lost", f"{where}: {unit} lease moved to holder {self.db_holder[unit]}")
            elif m.lease is not None:  # the holder died: reaped, its files may stay (reap leaves them)
                if db is not None:
                    self.problem("dead-holder", f"{where}: {unit} still leased after its holder died: {db}")
                if env is not None:
                    self.stats["env file left by a reaped lease"] += 1
                    if env != list(m.lease):
                        self.problem("stale-files", f"{where}: {unit}: reaped lease {m.lease}, env file {env}")
            else:
                if db is not None:
                    self.problem("lost", f"{where}: {unit} was released or refused, yet holds {db}")
                if env is not None or rec is not None:
                    self.problem("stale-files", f"{where}: {unit} was released or refused, yet has "
                                                f"env {env} / record {rec}")

    # -- the end: everything is repaired by ordinary commands ---------------------------------------
    def finish(self):
        """Release every unit (completed), check nothing is left; allocate again; release again."""
        box = self.box
        for unit in UNITS:
            r = box.cli("release", unit)
            if r.returncode != 0 or "Traceback" in r.stderr:
                self.problem("bad-exit", f"final release {unit}: exit {r.returncode}: {r.stderr!r}")
            self.model[unit] = UnitModel()
        self.check("after releasing every unit")
        left = [n for n in os.listdir(box.runtime) if not shared_file(n) and not TMP_NAME.fullmatch(n)] \
            if os.path.isdir(box.runtime) else []
        if left or self._lease_rows():
            self.problem("unrepaired", f"after releasing every unit: files {left}, leases {self._lease_rows()}")
        for unit in ("pair.service", "ex-a.service", "sh-a.service", "sh-b.service"):  # 4 GPUs: all fit
            r = box.cli("allocate", unit, "--json", "--holder-pid", str(self.live[0].pid))
            if r.returncode != 0:
                self.problem("unrepaired", f"allocate {unit} after the kills: exit {r.returncode}: {r.stderr!r}")
                continue
            self.model[unit].lease, self.model[unit].holder = tuple(json.loads(r.stdout)["gpus"]), self.live[0]
        self.check("after allocating again")
        for unit in UNITS:
            box.cli("release", unit)
            self.model[unit] = UnitModel()
        self.check("at the end")

    def report(self, seed=None):
        lines = [f"seed {seed}" if seed is not None else "", f"stats: {dict(self.stats)}",
                 f"typical: {self.typical}"]
        lines += [f"{kind}: {text}" for kind, text in self.problems[:20]]
        for n, mode, ops in self.history:
            lines.append(f"round {n} ({mode}): " + "; ".join(
                f"{op} kill after {op.delay * 1000:.0f} ms, stderr {op.stderr.strip()[-200:]!r}" for op in ops))
        return "\n".join(lines)


# =================================================================================================
# kill -9 at random moments
# =================================================================================================
