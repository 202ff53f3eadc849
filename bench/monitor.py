#!/usr/bin/env python3
"""What the GPU health monitor (`cortex-hook monitor`) costs and how fast it acts, on the fake NVML
driver (events from FAKE_NVML_EVENTS, live GPU changes under FAKE_NVML_LIVE=1):

1. detection, outside systemd: the monitor as a plain process (no units) on a throw-away box with
   `health: {poll: 10s}`. An XID 79 event is appended to the events file; the time until the GPU's
   drain row is in the state database (its `since`, stamped in the transaction that commits it;
   and when a read-only reader polling every 5 ms first sees it). The GPU is undrained by hand
   (`cortex-hook undrain`) before the next trial. Then the same for a fault no event reports
   (volatile uncorrectable ECC written into the live GPU JSON at a random moment): a poll finds it.
2. event -> the affected unit active again on a healthy GPU, under the real systemd 252
   (../shared/tools/sd-sandbox): a supervised stand-in server, the monitor unit from
   `install-monitor`; split with the unit's own timestamps, next to a plain `systemctl restart`
   of the same unit and the stand-in's own start-to-ready (outside systemd), interleaved by round.
3. idle cost over a window: RSS, CPU seconds per hour, wake-ups per second (voluntary +
   involuntary context switches of every thread), on 8 and 64 GPUs, against a python sleeping and
   a python that has only initialised pynvml, all in the same window. The fake driver's event wait
   sleeps in 10 ms steps (a real driver's sleeps in the kernel until an event or the timeout), so
   a copy of the fake whose wait sleeps the whole timeout is measured too.

    python3 bench/monitor.py [--trials 20] [--poll-trials 20] [--sd-trials 20]
                             [--idle-seconds 600] [--only detect|systemd|idle] [--markdown]
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import _sdsandbox as S  # noqa: E402
from supervisor import TICK, NotifyListener, memory  # noqa: E402

POLL_S = 10
MONITOR = "cortex-hook-monitor.service"
UNIT = "a.service"
PORT = 18080  # inside the sandbox's own network namespace
FAKE_WAIT_STEP_MS = 10  # fake_nvml.c: nvmlEventSetWait_v2 looks at the events file every 10 ms


# -- small helpers -------------------------------------------------------------------------------
def drain_since(db, uuid):
    rows = C.state_rows(db, "SELECT since FROM drain WHERE uuid = ?", (uuid,))
    return rows[0][0] if rows else None


def append_event(path, **event):
    """Append one event line; (time.time(), time.monotonic()) just after the write."""
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")
    return time.time(), time.monotonic()


def write_gpus(box, gpus):
    """Replace the box's GPU JSON atomically (a new inode: the fake driver reloads it under FAKE_NVML_LIVE)."""
    tmp = box.gpus_file + ".new"
    with open(tmp, "w") as f:
        json.dump({"gpus": gpus}, f, indent=1)
    os.replace(tmp, box.gpus_file)
    return time.time()


def log_tail(log_path):
    """The monitor's last 20 log lines (what a timeout shows)."""
    if not (log_path and os.path.exists(log_path)):
        return ""
    with open(log_path, errors="replace") as f:
        return "monitor log:\n" + "".join(f.readlines()[-20:])


def ms(x):
    return f"{x * 1e3:.1f}"


def dist_row(label, values, unit=1e3):
    s = C.stats(values)
    f = (lambda v: f"{v * unit:.1f}")
    return [label, s["n"], f(s["median"]), f(s["p90"]), f(s["p99"]), f(s["max"]), f(s["mean"])]


DIST_HEADERS = ["measure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"]


# -- 1. detection outside systemd ---------------------------------------------------------------
def detection(args):
    box = C.Box([C.gpu_desc(i) for i in range(8)], name="monitor-detect",
                extra_policy=f"health:\n  poll: {POLL_S}s\n  recover: never\n")
    events = os.path.join(box.root, "events.jsonl")
    open(events, "w").close()
    listener = NotifyListener(os.path.join(box.root, "notify"))
    log_path = os.path.join(box.root, "monitor.log")
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([C.CORTEX, "monitor"], cwd=C.CWD, stdout=log, stderr=subprocess.STDOUT,
                                    env=box.env(FAKE_NVML_EVENTS=events, FAKE_NVML_LIVE="1",
                                                NOTIFY_SOCKET=listener.path))
        if not listener.wait_for("READY=1", 60):
            raise SystemExit(f"bench: the monitor sent no READY=1 within 60 s:\n{open(log_path).read()}")
        uuids = [g["uuid"] for g in box.gpus]

        def undrain(uuid):
            box.cortex("undrain", uuid)
            if drain_since(box.state, uuid) is not None:
                raise SystemExit(f"bench: `cortex-hook undrain {uuid}` left the monitor's drain in place")

        committed, seen = [], []
        warmup = 2
        C.log(f"XID 79: {warmup} warm-up + {args.trials} trials")
        for k in range(-warmup, args.trials):
            i = k % len(uuids)
            time.sleep(random.uniform(0.05, 0.25))
            wall, _ = append_event(events, gpu=i, type="xid", data=79)
            since = C.wait_for(lambda: drain_since(box.state, uuids[i]), f"the XID 79 drain of GPU {i}", 30, 0.005,
                               lambda: log_tail(log_path))
            seen_at = time.time()
            if k >= 0:
                committed.append(since - wall)
                seen.append(seen_at - wall)
            undrain(uuids[i])
        polled = []
        C.log(f"volatile uncorrectable ECC (no event): {args.poll_trials} trials, ~{POLL_S} s each")
        for k in range(args.poll_trials):
            i = k % len(uuids)
            time.sleep(random.uniform(0, POLL_S))  # a fault at a random moment of the poll cycle
            faulty = [dict(g) for g in box.gpus]
            faulty[i]["ecc_errors"] = {"volatile_uncorrected": 2}
            wall = write_gpus(box, faulty)
            since = C.wait_for(lambda: drain_since(box.state, uuids[i]), f"the ECC drain of GPU {i}", 3 * POLL_S,
                               0.02, lambda: log_tail(log_path))
            polled.append(since - wall)
            write_gpus(box, box.gpus)
            undrain(uuids[i])
        rows = [dist_row("XID 79 event -> drain row committed (its `since`)", committed),
                dist_row("XID 79 event -> drain row seen by a reader (5 ms polls)", seen),
                dist_row(f"ECC in the GPU JSON -> drain committed (poll: {POLL_S}s)", polled)]
        C.table(DIST_HEADERS, rows, title=f"1. detection outside systemd: `cortex-hook monitor` as a plain process, "
                                          f"8 GPUs, no units, {warmup} warm-up events not counted "
                                          "(p99 of 20 samples is their maximum):")
        mean = C.stats(polled)["mean"]
        print(f"A fault no event reports waits for the next poll: uniform over 0..{POLL_S} s when it comes at a "
              f"random moment, so {POLL_S / 2:g} s on average plus the poll's own time; measured mean "
              f"{mean:.2f} s. The event path is bounded below by the fake driver's {FAKE_WAIT_STEP_MS} ms step "
              f"(its nvmlEventSetWait_v2 looks at the events file every {FAKE_WAIT_STEP_MS} ms: "
              f"{FAKE_WAIT_STEP_MS / 2:g} ms on average).")
        return {"committed": committed, "seen": seen, "polled": polled}
    finally:
        if proc is not None:
            C.terminate(proc)
        listener.close()
        box.cleanup()


# -- 2. event -> unit active again, under systemd ------------------------------------------------
UNIT_TIMES = ("MainPID", "ActiveState", "ActiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic",
              "InactiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
SEGMENTS = (("stop begins -> unit stopped", "ActiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic"),
            ("stopped -> start begins (lease released and allocated again)", "InactiveEnterTimestampMonotonic",
             "InactiveExitTimestampMonotonic"),
            ("start begins -> supervise runs", "InactiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic"),
            ("supervise runs -> READY=1 (stand-in started, probed every 0.5 s)", "ExecMainStartTimestampMonotonic",
             "ActiveEnterTimestampMonotonic"))


def lease_of(db, unit):
    rows = C.state_rows(db, "SELECT uuid FROM lease WHERE unit = ?", (unit,))
    return rows[0][0] if rows else None


def standin_alone():
    """Seconds from starting the stand-in (outside systemd) to its first 200 on /health (5 ms polls)."""
    port = C.free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([C.VENV_PY, "-u", C.STANDIN, "--host", "127.0.0.1", "--port", str(port)], cwd=C.CWD,
                            env=C.bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - t0 < 30:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.005)
        raise SystemExit("bench: the stand-in answered no 200 on /health within 30 s")
    finally:
        C.terminate(proc)


class SystemdBench:
    """A sandbox with a supervised stand-in (a.service) and the monitor unit, on 4 fake GPUs."""

    def __init__(self, box, events):
        self.box, self.events = box, events
        self.sb = S.Sandbox(f"benchmon{os.getpid()}", os.path.join(box.root, "sdsb"))
        self.sb.env = dict(C.bench_env(), SDSANDBOX_NAME=self.sb.name, SDSANDBOX_DIR=self.sb.dir)
        self.uuids = [g["uuid"] for g in box.gpus]

    def cortex(self, *args):
        """cortex-hook at the sandbox's shell, as an admin runs it (root, the default runtime dir /run/cortex-hook)."""
        driver = [f"LD_LIBRARY_PATH={self.box.lib}", f"FAKE_NVML_CONFIG={self.box.gpus_file}"]
        return self.sb.run("env", *driver, C.CORTEX, "--policy", self.box.policy, "--state", self.box.state, *args,
                           check=True)

    def start(self):
        sb = self.sb
        sb.up()
        sb.systemctl("set-environment", f"LD_LIBRARY_PATH={self.box.lib}", f"FAKE_NVML_CONFIG={self.box.gpus_file}",
                     f"FAKE_NVML_EVENTS={self.events}", check=True)
        # restarted on purpose many times a minute: systemd's default start limit (5 in 10s) would end it
        sb.write_unit(UNIT, f"[Unit]\nDescription=stand-in server\nStartLimitIntervalSec=0\n[Service]\n"
                            f"ExecStart={C.VENV_PY} -u {C.STANDIN} --host 127.0.0.1 --port {PORT}\n")
        self.cortex("install", UNIT, "--mode", "supervise", "--program", C.CORTEX)
        self.cortex("install-monitor", "--program", C.CORTEX)
        sb.systemctl("daemon-reload", check=True)
        sb.systemctl("start", UNIT, check=True)
        sb.systemctl("start", MONITOR, check=True)  # returns at READY=1: registered and polled once

    def times(self):
        return self.sb.show(UNIT, *UNIT_TIMES)

    def wait_restarted(self, pid_before):
        def moved():
            t = self.times()
            return t if t["ActiveState"] == "active" and t["MainPID"] not in ("0", pid_before) else None
        try:
            return C.wait_for(moved, f"{UNIT} active again", 60, 0.05)
        except SystemExit as exc:
            raise SystemExit(f"{exc}\n{UNIT}:\n{self.sb.journal(UNIT)}\n{MONITOR}:\n{self.sb.journal(MONITOR)}") from None

    def segments(self, t, mono0):
        """{segment: seconds} of one restart from the unit's timestamps; MONO0: when it was asked for."""
        us = {k: int(v) / 1e6 for k, v in t.items() if k.endswith("Monotonic")}
        out = {"asked -> stop begins": us["ActiveExitTimestampMonotonic"] - mono0}
        for label, a, b in SEGMENTS:
            out[label] = us[b] - us[a]
        out["total: asked -> active again"] = us["ActiveEnterTimestampMonotonic"] - mono0
        return out

    def fault(self):
        """One XID 79 under a.service: {segment: seconds}; the dead GPU is undrained afterwards."""
        db = self.box.state
        old = lease_of(db, UNIT)
        pid = self.times()["MainPID"]
        wall0, mono0 = append_event(self.events, gpu=self.uuids.index(old), type="xid", data=79)
        t = self.wait_restarted(pid)
        new = lease_of(db, UNIT)
        if new in (None, old):
            raise SystemExit(f"bench: {UNIT} did not move off the faulty GPU {old} (now {new})")
        since = drain_since(db, old)
        acted = C.state_rows(db, "SELECT max(at) FROM history WHERE unit = ? AND action = 'fault-restart'", (UNIT,))[0][0]
        seg = self.segments(t, mono0)
        seg = {"event -> drain committed": since - wall0,
               "drain -> monitor's `systemctl try-restart` returned": acted - since, **seg}
        self.cortex("undrain", old)
        return seg

    def plain(self):
        """One `systemctl restart --no-block a.service` (no fault): {segment: seconds}."""
        pid = self.times()["MainPID"]
        mono0 = time.monotonic()
        self.sb.systemctl("restart", "--no-block", UNIT, check=True)
        return self.segments(self.wait_restarted(pid), mono0)


def under_systemd(args):
    why = S.missing()
    if why:
        print(f"\n2. under systemd: skipped ({why})")
        return None
    box = C.Box([C.gpu_desc(i, minor_number=i) for i in range(4)], name="monitor-sd",
                extra_policy=f"health:\n  poll: {POLL_S}s\n  recover: never\n  max_fault_restarts: 1000000\n",
                services=f"services:\n  - match: {UNIT}\n    readiness: http://127.0.0.1:{PORT}/health\n")
    events = os.path.join(box.root, "events.jsonl")
    open(events, "w").close()
    bench = SystemdBench(box, events)
    try:
        C.log("booting a systemd sandbox")
        bench.start()
        samples = {"fault": [], "plain": [], "standin": []}
        groups = [("fault", bench.fault), ("plain", bench.plain), ("standin", standin_alone)]
        t_start = time.monotonic()
        for r in range(-1, args.sd_trials):
            order = groups[r % 3:] + groups[:r % 3] if r >= 0 else groups
            for name, fn in order:
                value = fn()
                if r >= 0:
                    samples[name].append(value)
            if r >= 0 and (r + 1) % 5 == 0:
                C.log(f"round {r + 1}/{args.sd_trials}")
        took = time.monotonic() - t_start
        nrestarts = bench.sb.show(MONITOR, "NRestarts")["NRestarts"]
    finally:
        bench.sb.down()
        box.cleanup()
    fault, plain = samples["fault"], samples["plain"]
    rows = []
    for label in fault[0]:
        f = C.stats([s[label] for s in fault])
        p = C.stats([s[label] for s in plain]) if label in plain[0] else None
        rows.append([label, ms(f["median"]), ms(f["p99"]), ms(p["median"]) if p else "-", ms(p["p99"]) if p else "-"])
    alone = C.stats(samples["standin"])
    rows.append(["stand-in alone, outside systemd: start -> first 200 on /health", "-", "-",
                 ms(alone["median"]), ms(alone["p99"])])
    C.table(["segment", "fault p50 ms", "fault p99 ms", "plain restart p50 ms", "plain restart p99 ms"], rows,
            title=f"2. under systemd 252 (sd-sandbox): XID 79 under a supervised stand-in -> {UNIT} active again "
                  f"on a healthy GPU; {args.sd_trials} interleaved rounds of (fault, plain `systemctl restart "
                  f"--no-block`, stand-in alone) after 1 warm-up round, {took:.0f} s; the monitor restarted "
                  f"{nrestarts} times:")
    f_total = C.stats([s["total: asked -> active again"] for s in fault])["median"]
    p_total = C.stats([s["total: asked -> active again"] for s in plain])["median"]
    f_detect = C.stats([s["event -> drain committed"] for s in fault])["median"]
    print(f"Medians: event -> active again {ms(f_total)} ms; a plain restart of the same unit {ms(p_total)} ms "
          f"({f_total / p_total:.2f}x); what the fault path adds before the restart (event -> the unit's stop "
          f"begins) {ms(C.stats([s['asked -> stop begins'] for s in fault])['median'])} ms, of which detection "
          f"(event -> drain) {ms(f_detect)} ms. The server's own start-to-ready is {ms(alone['median'])} ms; under "
          "supervise it is seen at the next 0.5 s readiness probe. Times are systemd's own unit timestamps "
          "(CLOCK_MONOTONIC, shared with the sandbox) against the moment the event was written or the restart asked "
          "for; the plain restart's first segment includes entering the sandbox (nsenter) to run systemctl.")
    return samples


# -- 3. idle cost ---------------------------------------------------------------------------------
def blocking_fake():
    """A copy of the fake driver whose nvmlEventSetWait_v2 sleeps the whole timeout instead of 10 ms
    steps (as a real driver sleeps in the kernel); its directory, or None when the source changed shape."""
    src = os.path.join(C.FAKE_NVML_SRC, "fake_nvml.c")
    with open(src) as f:
        text = f.read()
    new, n = re.subn(r"usleep\(left < 10000 \? \(useconds_t\)left : 10000\);", "usleep((useconds_t)left);", text)
    if n != 1:
        return None
    outdir = os.path.join(C.BENCH_DIR, ".cache", "fake-nvml-blocking-wait")
    os.makedirs(outdir, exist_ok=True)
    patched = os.path.join(outdir, "fake_nvml.c")
    try:
        same = open(patched).read() == new
    except OSError:
        same = False
    if not same:
        with open(patched, "w") as f:
            f.write(new)
    C._gcc(patched, outdir)
    return outdir


def switches(pid):
    """{tid: (voluntary, involuntary)} context switches of every live thread of PID."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        vol = inv = 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        inv = int(line.split()[1])
        except OSError:
            continue
        out[tid] = (vol, inv)
    return out


def cpu_seconds(pid):
    """utime+stime of PID's whole thread group (threads that ended included)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stop_with_rusage(proc):
    """SIGTERM, then wait4: (exit code, voluntary + involuntary switches of the whole life)."""
    if proc.poll() is not None:
        return proc.returncode, None
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_nvcsw + ru.ru_nivcsw
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.05)


class Idler:
    """One process measured while idle: a monitor on its own box, or a baseline."""

    def __init__(self, label, argv, env, box=None, listener=None, ready_line=False):
        self.label, self.box, self.listener = label, box, listener
        self.log = os.path.join(box.root if box else tempfile.gettempdir(), f"idle-{os.getpid()}-{id(self)}.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=C.CWD, stderr=log,
                                         stdout=subprocess.PIPE if ready_line else log)
        self.ready_line = ready_line

    def wait_ready(self):
        if self.listener is not None:
            ok = self.listener.wait_for("READY=1", 90)
        elif self.ready_line:
            ok = self.proc.stdout.readline().strip() == b"ready"
        else:
            ok = True
        if not ok or self.proc.poll() is not None:
            raise SystemExit(f"bench: {self.label} did not get ready:\n{open(self.log, errors='replace').read()}")

    def snapshot(self):
        return time.monotonic(), cpu_seconds(self.proc.pid), switches(self.proc.pid)

    def statuses(self, t0, t1):
        """STATUS= datagrams in [T0, T1] (one per poll when idle)."""
        if self.listener is None:
            return None
        return sum(1 for t, m in self.listener.messages if t0 <= t <= t1
                   and any(line.startswith("STATUS=") for line in m.split("\n")))

    def close(self):
        code, total = stop_with_rusage(self.proc)
        if self.listener is not None:
            self.listener.close()
        if self.box is not None:
            self.box.cleanup()
        else:
            try:
                os.unlink(self.log)
            except OSError:
                pass
        return code, total


def monitor_idler(label, ngpus, lib, events):
    box = C.Box([C.gpu_desc(i) for i in range(ngpus)], name=f"monitor-idle{ngpus}", lib=lib,
                extra_policy=f"health:\n  poll: {POLL_S}s\n")
    listener = NotifyListener(os.path.join(box.root, "notify"))
    extra = {"NOTIFY_SOCKET": listener.path}
    if events:
        extra["FAKE_NVML_EVENTS"] = os.path.join(box.root, "events.jsonl")
        open(extra["FAKE_NVML_EVENTS"], "w").close()
    env = box.env(**extra)
    if not events:
        env.pop("FAKE_NVML_EVENTS", None)
    idler = Idler(label, [C.CORTEX, "monitor"], env, box=box, listener=listener)
    idler.ngpus = ngpus
    return idler


def idle(args):
    shipped = C.build_fake_nvml()
    blocking = blocking_fake()
    specs = [("monitor, 8 GPUs", 8, shipped, True), ("monitor, 64 GPUs", 64, shipped, True),
             ("monitor, 8 GPUs, FAKE_NVML_EVENTS unset", 8, shipped, False)]
    if blocking:
        specs += [("monitor, 8 GPUs, whole-timeout wait", 8, blocking, True),
                  ("monitor, 64 GPUs, whole-timeout wait", 64, blocking, True)]
    else:
        print("(the fake driver's event wait changed shape: the whole-timeout copy is not measured)")
    idlers = []
    try:
        for label, n, lib, events in specs:
            idlers.append(monitor_idler(label, n, lib, events))
        idlers.append(Idler("python sleep (baseline)", [C.VENV_PY, "-c", "import time; time.sleep(100000)"],
                            C.bench_env()))
        idlers[-1].ngpus = 0
        pyn = ("import sys, time, pynvml as N; N.nvmlInit(); [N.nvmlDeviceGetHandleByIndex(i) for i in "
               "range(N.nvmlDeviceGetCount())]; print('ready', flush=True); time.sleep(100000)")
        idlers.append(Idler("python with pynvml initialised, 8 GPUs (baseline)", [C.VENV_PY, "-c", pyn],
                            idlers[0].box.env(), ready_line=True))
        idlers[-1].ngpus = 8
        for idler in idlers:
            idler.wait_ready()
        for idler in idlers:
            if idler.box is not None:
                with open(os.path.join(idler.box.runtime, "monitor.status")) as f:
                    st = json.load(f)
                if st["gpus"] != idler.ngpus or len(st["registered"]) != idler.ngpus:
                    raise SystemExit(f"bench: {idler.label}: the monitor watches {st['gpus']} GPUs, "
                                     f"{len(st['registered'])} by events (expected {idler.ngpus})")
        time.sleep(2.0)  # settle after READY=1
        C.log(f"idle window: {args.idle_seconds:g} s, {len(idlers)} processes")
        before = {i.label: i.snapshot() for i in idlers}
        end = time.monotonic() + args.idle_seconds
        while time.monotonic() < end:
            time.sleep(min(60.0, max(0.0, end - time.monotonic())))
            for i in idlers:
                if i.proc.poll() is not None:
                    raise SystemExit(f"bench: {i.label} exited {i.proc.returncode} in the idle window:\n"
                                     + open(i.log, errors="replace").read()[-3000:])
            left = end - time.monotonic()
            if left > 1:
                C.log(f"idle window: {left:.0f} s left")
        after = {i.label: i.snapshot() for i in idlers}
        mems = {i.label: memory(i.proc.pid) for i in idlers}
        figures = {}
        for i in idlers:
            t0, c0, s0 = before[i.label]
            t1, c1, s1 = after[i.label]
            window = t1 - t0
            vol = sum(v - s0.get(tid, (0, 0))[0] for tid, (v, _) in s1.items())
            inv = sum(n - s0.get(tid, (0, 0))[1] for tid, (_, n) in s1.items())
            figures[i.label] = {"window": window, "cpu": c1 - c0, "vol": vol, "inv": inv,
                                "polls": i.statuses(t0, t1), "live_total": sum(a + b for a, b in s1.values()),
                                "mem": mems[i.label], "threads": len(s1)}
    finally:
        ends = {}
        for i in idlers:
            ends[i.label] = i.close()
    base = figures["python sleep (baseline)"]
    pyn_base = figures["python with pynvml initialised, 8 GPUs (baseline)"]
    rows = []
    for label, f in figures.items():
        m = f["mem"]
        wake = (f["vol"] + f["inv"]) / f["window"]
        polls = f["polls"]
        rows.append([label, f"{m['rss'] / 1024:.1f}", f"{m['hwm'] / 1024:.1f}",
                     f"{m['pss'] / 1024:.1f}" if m["pss"] is not None else "-",
                     f"{m['rss'] / base['mem']['rss']:.2f}", f"{m['rss'] / pyn_base['mem']['rss']:.2f}",
                     f"{f['cpu'] / f['window'] * 3600:.2f}", f"{f['cpu'] * 1e3 / polls:.1f}" if polls else "-",
                     f"{wake:.1f}", f"{f['inv'] / f['window']:.2f}", str(polls) if polls is not None else "-"])
    C.table(["process", "VmRSS MiB", "VmHWM MiB", "Pss MiB", "RSS × sleep", "RSS × pynvml", "CPU s/hour",
             "CPU ms/poll", "wake-ups/s", "of which involuntary/s", "polls in window"], rows,
            title=f"3. idle cost over a {base['window']:.0f} s window (poll: {POLL_S}s, no events, no units; "
                  f"all processes at once; CPU = utime+stime of the whole process in 1/{TICK} s ticks; wake-ups = "
                  "voluntary + involuntary context switches of the threads alive at the end of the window; "
                  "polls = STATUS= datagrams received):")
    shipped8 = figures["monitor, 8 GPUs"]
    w = {k: (f["vol"] + f["inv"]) / f["window"] for k, f in figures.items()}
    notes = [f"The fake driver's event wait looks at its events file every {FAKE_WAIT_STEP_MS} ms: "
             f"{1000 / FAKE_WAIT_STEP_MS:.0f} wake-ups/s by design."]
    if "monitor, 8 GPUs, whole-timeout wait" in w:
        explained = w["monitor, 8 GPUs"] - w["monitor, 8 GPUs, whole-timeout wait"]
        notes.append(f"With a copy of the fake whose wait sleeps until the timeout (as a real driver's wait sleeps "
                     f"in the kernel), 8 GPUs: {w['monitor, 8 GPUs, whole-timeout wait']:.2f} wake-ups/s, 64 GPUs: "
                     f"{w['monitor, 64 GPUs, whole-timeout wait']:.2f}/s. The fake's polling explains "
                     f"{explained:.1f} of the {w['monitor, 8 GPUs']:.1f} wake-ups/s "
                     f"({explained / w['monitor, 8 GPUs'] * 100:.0f}%); CPU "
                     f"{shipped8['cpu'] / shipped8['window'] * 3600:.2f} -> "
                     f"{figures['monitor, 8 GPUs, whole-timeout wait']['cpu'] / shipped8['window'] * 3600:.2f} s/hour.")
    unset = figures["monitor, 8 GPUs, FAKE_NVML_EVENTS unset"]
    notes.append(f"FAKE_NVML_EVENTS unset: {w['monitor, 8 GPUs, FAKE_NVML_EVENTS unset']:.1f} wake-ups/s, "
                 f"{unset['cpu'] / unset['window'] * 3600:.2f} CPU s/hour: the fake still sleeps in "
                 f"{FAKE_WAIT_STEP_MS} ms steps without an events file (it only skips reading one), so unsetting it "
                 "removes the file reads, not the wake-ups.")
    for label, f in figures.items():
        code, total = ends.get(label, (None, None))
        if total is not None and f["polls"]:
            notes.append(f"{label}: exit {code} after SIGTERM; threads that ended (one per poll: the discovery "
                         f"thread with the driver timeout) made at most {total - f['live_total']} switches over "
                         f"the whole life, not counted above.")
    for n in notes:
        print(n)
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="XID 79 trials outside systemd (default 20)")
    ap.add_argument("--poll-trials", type=int, default=20,
                    help=f"polled-fault trials outside systemd, ~{POLL_S} s each (default 20)")
    ap.add_argument("--sd-trials", type=int, default=20, help="rounds under systemd (default 20)")
    ap.add_argument("--idle-seconds", type=float, default=600.0, help="idle window in seconds (default 600)")
    ap.add_argument("--only", choices=("detect", "systemd", "idle"), action="append",
                    help="run only this part (repeatable)")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args()
    C.MARKDOWN = args.markdown
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every finally: runs (sandbox down, temp dirs)
    info = C.setup(want_nvitop=False)
    print(f"# monitor: {C.machine_info(info)}")
    parts = args.only or ["detect", "systemd", "idle"]
    if "detect" in parts:
        detection(args)
    if "systemd" in parts:
        under_systemd(args)
    if "idle" in parts:
        idle(args)


if __name__ == "__main__":
    main()
