#!/usr/bin/env python3
"""Boot storm: N separate processes (default 64) run `cortex-hook allocate unit-K` at the same
moment against 8 exclusive GPUs (fake NVML driver, real nvidia-ml-py). Each process waits on a
FIFO gate (bench/_gated.py) and the bench opens it once all are ready, which releases them all.

fail  (policy `on_unavailable: fail`, the default): expect exactly 8 successes on 8 distinct
      GPUs, every other process exiting 69 with no other exit code and no "database is locked".
      Run twice: `warm` (cortex-hook and its libraries imported before the gate, so mostly the
      driver calls and the contention for the state database are left) and `cold` (imports after the gate, as 64 units at boot would).
wait  (policy `on_unavailable: wait 30s`, warm): each winner releases its unit HOLD seconds
      after it got its GPU (as its ExecStopPost= would), so the waiters pick the GPUs up in waves;
      reports how many got one, their latencies and the handoff time (release -> next lease of
      the same GPU, from the history table).

Latency = from opening the gate to the process's exit, seen by the bench.

    python3 bench/bootstorm.py [--procs 64] [--gpus 8] [--hold 0.3] [--only fail|wait] [--markdown]
"""

import argparse
import collections
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

GATED = os.path.join(C.BENCH_DIR, "_gated.py")
# what SQLite lock trouble looks like in cortex-hook's output (not "busy" alone: the JSON says "0% busy")
LOCK_WORDS = ("database is locked", "database is busy", "table is locked", "sqlite_busy", "state database error",
              "for the lock")


def services(on_unavailable):
    return f"""\
services:
  - match: "unit-*.service"
    gpus: 1
    min_free_memory: 4GiB
    on_unavailable: {on_unavailable}
"""


def unit(k):
    return f"unit-{k}.service"


class Storm:
    """N gated `cortex-hook allocate` processes in BOX; the results after run()."""

    def __init__(self, box, n, mode, hold=None, timeout=120.0):
        self.box, self.n, self.mode, self.hold, self.timeout = box, n, mode, hold, timeout
        self.dir = os.path.join(box.root, f"storm-{mode}-{time.monotonic_ns()}")
        os.makedirs(self.dir)
        self.gate = os.path.join(self.dir, "gate")
        os.mkfifo(self.gate)
        self.procs, self.exit_at, self.outs, self.cpu = [], {}, [], {}
        self.releases = []  # (unit, Popen, started, finished)
        self.t_gate = None

    def _spawn(self):
        env = self.box.env()
        for k in range(self.n):
            out = open(os.path.join(self.dir, f"{k}.out"), "wb")
            err = open(os.path.join(self.dir, f"{k}.err"), "wb")
            self.outs.append((out, err))
            p = subprocess.Popen([C.VENV_PY, GATED, os.path.join(self.dir, f"{k}.ready"), self.gate, self.mode, "--",
                                  "allocate", unit(k), "--json"], env=env, stdout=out, stderr=err, cwd=C.CWD)
            self.procs.append(p)

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while True:
            ready = sum(os.path.exists(os.path.join(self.dir, f"{k}.ready")) for k in range(self.n))
            if ready == self.n:
                return
            dead = [k for k, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                k = dead[0]
                raise SystemExit(f"bench: storm process {k} exited {self.procs[k].returncode} before the gate:\n"
                                 + open(os.path.join(self.dir, f"{k}.err")).read())
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: only {ready}/{self.n} storm processes ready after {self.timeout:g}s")
            time.sleep(0.02)

    def run(self):
        self._spawn()
        wfd = None
        try:
            self._wait_ready()
            for k, p in enumerate(self.procs):
                threading.Thread(target=self._reap, args=(k, p), daemon=True).start()
            self.t_gate = time.monotonic()
            wfd = os.open(self.gate, os.O_WRONLY)  # every reader blocked in open() is released now
            # keep the write end open: a process that reached open() late passes at once
            self._loop()
        finally:
            for p in self.procs:
                C.terminate(p, timeout=5)  # only if still running after the loop (timeout)
            for _, p, _, _ in self.releases:
                C.terminate(p, timeout=5)
            if wfd is not None:
                os.close(wfd)
            for out, err in self.outs:
                out.close()
                err.close()
        return self

    def _reap(self, k, p):
        """Wait for process K with wait4, for its CPU time as well as its exit."""
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except ChildProcessError:  # reaped elsewhere (only after a timeout)
            p.wait()
        else:
            p.returncode = os.waitstatus_to_exitcode(status)
            self.cpu[k] = ru.ru_utime + ru.ru_stime
        self.exit_at[k] = time.monotonic()

    def _loop(self):
        deadline = self.t_gate + self.timeout
        scheduled = set()
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.hold is not None:
                for k, at in list(self.exit_at.items()):
                    if k not in scheduled and self.procs[k].returncode == 0 and now >= at + self.hold:
                        scheduled.add(k)
                        p = subprocess.Popen([C.CORTEX, "release", unit(k)], env=self.box.env(), cwd=C.CWD,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                        self.releases.append([unit(k), p, now, None])
            for rel in self.releases:
                if rel[3] is None and rel[1].poll() is not None:
                    rel[3] = time.monotonic()
            done = len(self.exit_at) == self.n
            winners = [k for k in self.exit_at if self.procs[k].returncode == 0]
            if done and (self.hold is None or (len(scheduled) == len(winners)
                                               and all(r[3] is not None for r in self.releases))):
                return
            time.sleep(0.005)
        C.log(f"storm timed out after {self.timeout:g}s; stopping what is left")

    # -- results ----------------------------------------------------------------------------------
    def results(self):
        res = []
        for k, p in enumerate(self.procs):
            out = open(os.path.join(self.dir, f"{k}.out"), errors="replace").read()
            err = open(os.path.join(self.dir, f"{k}.err"), errors="replace").read()
            gate_passed = None
            for line in err.splitlines():
                if line.startswith("gate-passed "):
                    gate_passed = float(line.split()[1])
            gpus = None
            if p.returncode == 0:
                try:
                    gpus = json.loads(out).get("gpus")
                except ValueError:
                    gpus = None
            text = (out + err).lower()
            res.append({"k": k, "code": p.returncode, "gpus": gpus,
                        "latency": self.exit_at[k] - self.t_gate if k in self.exit_at else None,
                        "gate_skew": gate_passed - self.t_gate if gate_passed else None,
                        "locked": any(w in text for w in LOCK_WORDS), "cpu": self.cpu.get(k),
                        "err": err})
        return res


def lat(values):
    v = [x for x in values if x is not None]
    if not v:
        return ["-", "-", "-"]
    return [f"{C.percentile(v, 50) * 1e3:.0f}", f"{C.percentile(v, 99) * 1e3:.0f}", f"{max(v) * 1e3:.0f}"]


def db_rows(box, sql):
    """SQL's rows from the box's state database, read directly (not through cortex-hook)."""
    conn = sqlite3.connect(box.state, timeout=60)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def db_leases(box):
    return db_rows(box, "SELECT unit, uuid FROM lease")


def db_history(box):
    return db_rows(box, "SELECT at, unit, action, gpus FROM history ORDER BY id")


def release_all(box, units):
    procs = [subprocess.Popen([C.CORTEX, "release", u], env=box.env(), cwd=C.CWD, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for u in units]
    for p in procs:
        p.wait()


def fail_storm(n, gpus, mode):
    with C.Box([C.gpu_desc(i) for i in range(gpus)], services=services("fail"), name="storm") as box:
        box.cortex("leases")  # creates nothing; makes sure the CLI runs here before the storm
        storm = Storm(box, n, mode).run()
        res = storm.results()
        codes = collections.Counter(r["code"] for r in res)
        winners = [r for r in res if r["code"] == 0]
        won_gpus = [g for r in winners for g in (r["gpus"] or [])]
        leases = db_leases(box)
        release_all(box, [unit(r["k"]) for r in winners])
        left = db_leases(box)
        other = {c: m for c, m in codes.items() if c not in (0, 69)}
        samples = [r for r in res if r["code"] not in (0, 69)][:3]
        row = {
            "variant": f"fail, {mode}", "procs": n, "ok": codes.get(0, 0), "exit 69": codes.get(69, 0),
            "other exits": ", ".join(f"{c}×{m}" for c, m in sorted(other.items())) or "none",
            "distinct GPUs": len(set(won_gpus)), "leases in db": len(leases),
            "locked/busy text": sum(r["locked"] for r in res),
            "all": lat(r["latency"] for r in res), "ok lat": lat(r["latency"] for r in winners),
            "69 lat": lat(r["latency"] for r in res if r["code"] == 69),
            "gate skew": max((r["gate_skew"] or 0) for r in res),
            "cpu": C.percentile([r["cpu"] for r in res if r["cpu"] is not None], 50),
            "cpu total": sum(r["cpu"] or 0 for r in res),
            "expect": (codes.get(0, 0) == gpus and codes.get(69, 0) == n - gpus and len(set(won_gpus)) == gpus
                       and not other and not any(r["locked"] for r in res) and len(leases) == gpus and not left),
        }
        for r in samples:
            C.log(f"unexpected exit {r['code']} of unit-{r['k']}: {r['err'].strip()[-400:]}")
        return row


def wait_storm(n, gpus, hold, wait="30s"):
    with C.Box([C.gpu_desc(i) for i in range(gpus)], services=services(f"wait {wait}"), name="storm") as box:
        box.cortex("leases")
        storm = Storm(box, n, "warm", hold=hold, timeout=120.0).run()
        res = storm.results()
        codes = collections.Counter(r["code"] for r in res)
        winners = sorted((r for r in res if r["code"] == 0), key=lambda r: r["latency"])
        hist = db_history(box)
        # handoff: a GPU's allocation minus the release just before it of the same GPU
        last_release, handoffs = {}, []
        for at, _u, action, g in hist:
            for uuid in (x for x in g.split(",") if x):
                if action == "release":
                    last_release[uuid] = at
                elif action == "allocate" and uuid in last_release:
                    handoffs.append(at - last_release.pop(uuid))
        waves = [winners[i:i + gpus] for i in range(0, len(winners), gpus)]
        left = db_leases(box)
        if left:
            release_all(box, sorted({u for u, _ in left}))
        other = {c: m for c, m in codes.items() if c != 0}
        return {
            "procs": n, "ok": codes.get(0, 0),
            "other exits": ", ".join(f"{c}×{m}" for c, m in sorted(other.items())) or "none",
            "locked/busy text": sum(r["locked"] for r in res),
            "all": lat(r["latency"] for r in winners),
            "first wave": lat(r["latency"] for r in (waves[0] if waves else [])),
            "waves": [f"{w[0]['latency']:.2f}-{w[-1]['latency']:.2f}s" for w in waves],
            "handoff": lat(handoffs), "handoffs": len(handoffs), "hold": hold, "wait": wait,
            "wall": max((r["latency"] or 0) for r in res),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hold", type=float, default=0.3, help="seconds a winner holds its GPU in the wait run")
    ap.add_argument("--only", choices=("fail", "wait"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    C.MARKDOWN = args.markdown
    info = C.setup(want_nvitop=False)
    print(f"# bootstorm: {C.machine_info(info)}")
    ok = True
    if args.only in (None, "fail"):
        rows = []
        for mode in ("warm", "cold"):
            C.log(f"fail storm ({mode}): {args.procs} processes, {args.gpus} GPUs")
            rows.append(fail_storm(args.procs, args.gpus, mode))
        C.table(["variant", "procs", "ok", "exit 69", "other exits", "distinct GPUs", "leases in db",
                 "locked/busy text", "p50 ms", "p99 ms", "max ms", "ok p50/p99 ms", "69 p50/p99 ms", "CPU ms/proc p50",
                 "CPU s total", "as expected"],
                [[r["variant"], r["procs"], r["ok"], r["exit 69"], r["other exits"], r["distinct GPUs"],
                  r["leases in db"], r["locked/busy text"], *r["all"], "/".join(r["ok lat"][:2]),
                  "/".join(r["69 lat"][:2]), f"{r['cpu'] * 1e3:.0f}", f"{r['cpu total']:.1f}",
                  "yes" if r["expect"] else "NO"] for r in rows],
                title=f"boot storm, on_unavailable: fail ({args.procs} processes, {args.gpus} exclusive GPUs; "
                      f"latency = gate open -> process exit; expected {args.gpus} ok on distinct GPUs, the rest 69):")
        for r in rows:
            print(f"  {r['variant']}: last process through the gate {r['gate skew'] * 1e3:.1f} ms after it opened")
        ok = all(r["expect"] for r in rows)
    if args.only in (None, "wait"):
        C.log(f"wait storm: {args.procs} processes, {args.gpus} GPUs, each winner releases after {args.hold}s")
        w = wait_storm(args.procs, args.gpus, args.hold)
        C.table(["variant", "procs", "got a GPU", "other exits", "locked/busy text", "p50 ms", "p99 ms", "max ms",
                 "1st wave p50/p99 ms", "handoff p50/p99/max ms"],
                [[f"wait {w['wait']}, hold {w['hold']}s", w["procs"], w["ok"], w["other exits"], w["locked/busy text"],
                  *w["all"], "/".join(w["first wave"][:2]), "/".join(w["handoff"])]],
                title="boot storm, on_unavailable: wait 30s (winners release after the hold; latency = gate "
                      "open -> exit with a GPU; handoff = release -> next allocate of that GPU, from the history):")
        print(f"  waves of {args.gpus} (first-last exit after the gate): {', '.join(w['waves'])}")
        print(f"  handoffs measured: {w['handoffs']}")
        ok = ok and w["ok"] == args.procs and w["other exits"] == "none" and not w["locked/busy text"]
    print(f"\nall as expected: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
