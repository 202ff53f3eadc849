#!/usr/bin/env python3
"""How long a preemption takes, under the real systemd 252 (../shared/tools/sd-sandbox) and the fake
NVML driver: a 2-GPU box, a batch unit `embed.service` (gpus: 2) holding both GPUs, and
`systemctl start chat.service` (class critical, `preempt: lower`, 1 GPU) issued at the sandbox's
shell. Timed from the issue to chat's main process running with its GPUs (the stand-in server's
record of its own environment, written at start: its mtime), and split with the history rows
(read-only from the state database: `preempt`, the victim's `release`, chat's `allocate`) and
systemd's own unit timestamps:

  (a) the victim's stop: chat's `preempt` row -> embed's `release` row (systemd stops embed, the
      stand-in exits on SIGTERM, embed's lease unit gives the GPUs back in its ExecStopPost=);
  (b) our own overhead: the rest (issue -> `preempt`, `release` -> chat's `allocate`, `allocate`
      -> chat's process running).

Baselines in the same run, interleaved by round (each round runs every variant once, in a rotated
order): a plain `systemctl start chat.service` on a free box (embed stopped, no preemption), and
the same done by hand: `systemctl stop embed.service`, wait until its lease is gone (the state
database polled from outside, 5 ms), then `systemctl start chat.service`. Between trials chat is
stopped; after a preemption, embed (requeued) comes back by itself on both GPUs, and the bench
waits for it (also timed), so every trial starts from the same state.

Both units run tests/helpers/standin_server.py as User=nobody with the system python (stand-in
needs only the standard library); cortex-hook (bench/.venv) runs as root in the lease units,
installed with `cortex-hook install UNIT --mode env`.

    python3 bench/preemption.py [--trials 20] [--markdown]
"""

import argparse
import json
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import _sdsandbox as S  # noqa: E402

CHAT, EMBED = "chat.service", "embed.service"
PORTS = {CHAT: 18080, EMBED: 18081}  # inside the sandbox's own network namespace
NGPUS = {CHAT: 1, EMBED: 2}
SERVICES = f"""\
services:
  - match: {CHAT}
    class: critical
    preempt: lower
  - match: {EMBED}
    class: batch
    gpus: 2
  - match: "*.service"
    class: normal
"""
POLL_S = 0.005  # host-side polls of files and the state database
STANDIN_POLL_S = 0.5  # the stand-in's serve_forever() looks for a shutdown request this often

# the segments, in the order they are printed (a label several variants share is one row)
L_PREEMPT = "issue `start chat` -> chat's allocate decides to preempt (`preempt` row)"
L_STOP = "issue `stop embed` -> embed's `release` row"
L_STOP_RET = "    (`systemctl stop embed.service` returned)"
L_VICTIM = "(a) victim's stop: `preempt` row -> embed's `release` row"
L_V1 = "    `preempt` -> embed's stop begins (systemctl try-restart)"
L_V2 = "    stop begins -> embed stopped (the stand-in's own stop)"
L_V3 = "    embed stopped -> `release` row (lease unit's ExecStopPost=)"
L_REL_ALLOC = "embed's `release` -> chat leased (`allocate` row)"
L_REL_ISSUE = "embed's `release` -> issue `start chat` (5 ms polls of the state)"
L_ISSUE_ALLOC = "issue `start chat` -> chat leased (`allocate` row)"
L_FORK = "chat leased -> chat's main process forked"
L_RUN = "forked -> chat running with its GPUs (stand-in's record)"
L_TOTAL = "total: first command issued -> chat running with its GPUs"
L_OURS = "(b) our own overhead: total - (a)"
L_RETURNED = "(the last systemctl returned, from the first command's issue)"
L_RESET = "(reset: issue `stop chat` -> requeued embed running again on both GPUs)"
ORDER = (L_PREEMPT, L_STOP, L_STOP_RET, L_VICTIM, L_V1, L_V2, L_V3, L_REL_ALLOC, L_REL_ISSUE, L_ISSUE_ALLOC, L_FORK,
         L_RUN, L_TOTAL, L_OURS, L_RETURNED, L_RESET)
WAIT_POLL_S = 0.25  # cortex_hook/allocation.py: a waiting allocate looks at the state this often


def lease_unit_of(unit):
    return f"cortex-hook-lease@{unit}.service"


def service_python():
    """A python every user can run (units with User=nobody cannot run /root/.pyenv)."""
    py = shutil.which("python3", path="/usr/bin:/bin")
    if not py:
        raise SystemExit("bench: a system python3 in /usr/bin is needed (the units run as User=nobody)")
    return py


def ms(x):
    return f"{x * 1e3:.1f}"


class PreemptionBench:
    """A sandbox with embed.service and chat.service (stand-ins, env mode) on 2 fake GPUs."""

    def __init__(self, box):
        self.box = box
        self.sb = S.Sandbox(f"benchpre{os.getpid()}", os.path.join(box.root, "sdsb"))
        self.sb.env = dict(C.bench_env(), SDSANDBOX_NAME=self.sb.name, SDSANDBOX_DIR=self.sb.dir)
        self.uuids = sorted(g["uuid"] for g in box.gpus)
        self.out = os.path.join(box.root, "out")
        os.makedirs(self.out)
        os.chmod(self.out, 0o1777)  # the stand-ins, as nobody, write their records here
        self.records = {u: os.path.join(self.out, f"{u}.json") for u in (CHAT, EMBED)}
        self.python = service_python()
        self.embed_running = False

    # -- plumbing ----------------------------------------------------------------------------------
    def cortex(self, *args):
        """cortex-hook at the sandbox's shell, as an admin runs it (root)."""
        driver = [f"LD_LIBRARY_PATH={self.box.lib}", f"FAKE_NVML_CONFIG={self.box.gpus_file}"]
        return self.sb.run("env", *driver, C.CORTEX, "--policy", self.box.policy, "--state", self.box.state, *args,
                           check=True)

    def systemctl(self, *args):
        r = self.sb.systemctl(*args)
        if r.returncode != 0:
            raise SystemExit(f"bench: systemctl {' '.join(args)} exited {r.returncode}:\n{r.stderr}{r.stdout}"
                             f"\n{self.journals()}")
        return r

    def journals(self):
        return "\n".join(f"-- {u}:\n{self.sb.journal(u, 15)}"
                         for u in (CHAT, lease_unit_of(CHAT), EMBED, lease_unit_of(EMBED)))

    def leases(self):
        """{unit: sorted UUIDs} of the leases now."""
        out = {}
        for unit, uuid in C.state_rows(self.box.state, "SELECT unit, uuid FROM lease"):
            out.setdefault(unit, []).append(uuid)
        return {u: sorted(v) for u, v in out.items()}

    def last_history_id(self):
        rows = C.state_rows(self.box.state, "SELECT max(id) FROM history")
        return (rows[0][0] or 0) if rows else 0

    def history(self, after):
        """[(id, at, unit, action, detail)] after row AFTER, oldest first."""
        return C.state_rows(self.box.state, "SELECT id, at, unit, action, detail FROM history WHERE id > ? ORDER BY id",
                     (after,))

    @staticmethod
    def first(rows, unit, action, after_at=0.0):
        for row in rows:
            if row[2] == unit and row[3] == action and row[1] >= after_at:
                return row
        return None

    def forget_record(self, unit):
        try:
            os.unlink(self.records[unit])
        except FileNotFoundError:
            pass

    def running(self, unit, timeout=60.0):
        """Wait until UNIT's stand-in has written its record, as its unit's main process, with its GPUs:
        (record, mtime of the record as time.time(), `systemctl show` of the unit)."""
        path = self.records[unit]

        def written():
            try:
                with open(path) as f:
                    rec = json.load(f)
                return rec, os.stat(path).st_mtime_ns / 1e9
            except (OSError, ValueError):
                return None
        rec, at = C.wait_for(written, f"{unit}'s stand-in to start", timeout, detail=self.journals)
        shown = self.sb.show(unit, "MainPID", "ActiveState", "ExecMainStartTimestampMonotonic",
                             "ActiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic")
        gpus = [g for g in rec["env"].get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
        if shown["ActiveState"] != "active" or int(shown["MainPID"]) != rec["pid"]:
            raise SystemExit(f"bench: {unit}: the stand-in (pid {rec['pid']}) is not the unit's main process "
                             f"({shown})\n{self.journals()}")
        if len(gpus) != NGPUS[unit] or not set(gpus) <= set(self.uuids):
            raise SystemExit(f"bench: {unit} runs with CUDA_VISIBLE_DEVICES={gpus} (expected {NGPUS[unit]} of "
                             f"{self.uuids})")
        if rec["uid"] != 65534:
            raise SystemExit(f"bench: {unit}'s stand-in runs as uid {rec['uid']}, not nobody")
        return rec, at, shown

    def mono_to_wall(self, usec):
        """A unit timestamp (CLOCK_MONOTONIC microseconds, the host's clock) as time.time()."""
        return int(usec) / 1e6 + (time.time() - time.monotonic())

    # -- set-up ------------------------------------------------------------------------------------
    def start(self):
        sb = self.sb
        sb.up()
        sb.systemctl("set-environment", f"LD_LIBRARY_PATH={self.box.lib}", f"FAKE_NVML_CONFIG={self.box.gpus_file}",
                     check=True)
        for unit in (CHAT, EMBED):
            # started and stopped many times a minute: systemd's default start limit (5 in 10s) would end it
            sb.write_unit(unit, f"[Unit]\nDescription=stand-in {unit}\nStartLimitIntervalSec=0\n[Service]\n"
                                f"User=nobody\nExecStart={self.python} -I -u {C.STANDIN} --host 127.0.0.1 "
                                f"--port {PORTS[unit]} --record {self.records[unit]}\n")
            self.cortex("install", unit, "--mode", "env", "--program", C.CORTEX)
        sb.systemctl("daemon-reload", check=True)

    def start_embed(self):
        self.forget_record(EMBED)
        self.systemctl("start", EMBED)
        self.embed_held()
        self.embed_running = True

    def embed_held(self, timeout=60.0):
        """Wait for embed running on both GPUs (its stand-in's record, and its lease)."""
        rec, at, _ = self.running(EMBED, timeout)
        C.wait_for(lambda: self.leases().get(EMBED) == self.uuids, f"{EMBED}'s lease on both GPUs", timeout)
        return at

    def stop_embed(self):
        self.systemctl("stop", EMBED)
        C.wait_for(lambda: EMBED not in self.leases(), f"{EMBED}'s lease to be released")
        self.embed_running = False

    def stop_chat(self):
        self.systemctl("stop", CHAT)
        C.wait_for(lambda: CHAT not in self.leases(), f"{CHAT}'s lease to be released")

    def check_start(self, embed):
        """The state a trial starts from: chat stopped and leaseless; embed on both GPUs or gone."""
        leases = self.leases()
        want = {EMBED: self.uuids} if embed else {}
        if leases != want:
            raise SystemExit(f"bench: a trial would start from the leases {leases} (expected {want})")
        self.forget_record(CHAT)

    # -- the variants ------------------------------------------------------------------------------
    def enter(self):
        """`sd-sandbox.sh exec true`: what entering the sandbox costs every systemctl here."""
        t0 = time.perf_counter()
        self.sb.run("true", check=True)
        return time.perf_counter() - t0

    def ready(self, embed):
        """Bring the box to a trial's start (embed holding both GPUs, or stopped); the last history id."""
        if embed and not self.embed_running:
            self.start_embed()
        elif not embed and self.embed_running:
            self.stop_embed()
        self.check_start(embed=embed)
        return self.last_history_id()

    def start_chat(self, id0):
        """`systemctl start chat.service`: (when it returned, chat's record, when it ran, its unit
        timestamps, the history rows since ID0)."""
        self.systemctl("start", CHAT)
        returned = time.time()
        rec, ran, chat = self.running(CHAT)
        return returned, rec, ran, chat, self.history(id0)

    def preempt(self):
        """embed holds both GPUs; `systemctl start chat.service`: {segment: seconds}."""
        id0 = self.ready(embed=True)
        t0 = time.time()
        returned, rec, ran, chat, rows = self.start_chat(id0)
        pre = self.first(rows, CHAT, "preempt")
        if pre is None:
            raise SystemExit(f"bench: chat started without a preempt row: {[r[2:4] for r in rows]}")
        victims = [v["unit"] for v in json.loads(pre[4])["victims"]]
        if victims != [EMBED]:
            raise SystemExit(f"bench: chat preempted {victims}, expected [{EMBED}]")
        rel = self.first(rows, EMBED, "release", pre[1])
        alloc = self.first(rows, CHAT, "allocate", pre[1])
        if rel is None or alloc is None:
            raise SystemExit(f"bench: history after the preemption lacks a row: {[r[2:4] for r in rows]}")
        if self.leases().get(CHAT) != sorted(rec["env"]["CUDA_VISIBLE_DEVICES"].split(",")):
            raise SystemExit(f"bench: chat's lease {self.leases()} differs from what its process got")
        emb = self.sb.show(EMBED, "ActiveExitTimestampMonotonic", "InactiveEnterTimestampMonotonic")
        stop_began = self.mono_to_wall(emb["ActiveExitTimestampMonotonic"])
        stopped = self.mono_to_wall(emb["InactiveEnterTimestampMonotonic"])
        forked = self.mono_to_wall(chat["ExecMainStartTimestampMonotonic"])
        seg = {L_PREEMPT: pre[1] - t0, L_VICTIM: rel[1] - pre[1], L_V1: stop_began - pre[1],
               L_V2: stopped - stop_began, L_V3: rel[1] - stopped, L_REL_ALLOC: alloc[1] - rel[1],
               L_FORK: forked - alloc[1], L_RUN: ran - forked, L_TOTAL: ran - t0,
               L_OURS: (ran - t0) - (rel[1] - pre[1]), L_RETURNED: returned - t0}
        # back to the start: chat stops, embed (requeued) takes both GPUs back by itself
        self.forget_record(EMBED)
        t1 = time.time()
        self.stop_chat()
        back = self.embed_held()
        self.embed_running = True
        seg[L_RESET] = back - t1
        return seg

    def free(self):
        """A free box (embed stopped): `systemctl start chat.service`: {segment: seconds}."""
        id0 = self.ready(embed=False)
        t0 = time.time()
        returned, _, ran, chat, rows = self.start_chat(id0)
        alloc = self.first(rows, CHAT, "allocate")
        if alloc is None or self.first(rows, CHAT, "preempt"):
            raise SystemExit(f"bench: unexpected history on a free box: {[r[2:4] for r in rows]}")
        forked = self.mono_to_wall(chat["ExecMainStartTimestampMonotonic"])
        seg = {L_ISSUE_ALLOC: alloc[1] - t0, L_FORK: forked - alloc[1], L_RUN: ran - forked, L_TOTAL: ran - t0,
               L_RETURNED: returned - t0}
        self.stop_chat()
        return seg

    def manual(self):
        """By hand: `systemctl stop embed.service`, its lease gone, `systemctl start chat.service`."""
        id0 = self.ready(embed=True)
        t0 = time.time()
        self.systemctl("stop", EMBED)
        stop_returned = time.time()
        C.wait_for(lambda: EMBED not in self.leases(), f"{EMBED}'s lease to be released")
        self.embed_running = False
        t_start = time.time()
        returned, _, ran, chat, rows = self.start_chat(id0)
        rel = self.first(rows, EMBED, "release")
        alloc = self.first(rows, CHAT, "allocate")
        if rel is None or alloc is None or self.first(rows, CHAT, "preempt"):
            raise SystemExit(f"bench: unexpected history for the stop-then-start: {[r[2:4] for r in rows]}")
        forked = self.mono_to_wall(chat["ExecMainStartTimestampMonotonic"])
        seg = {L_STOP: rel[1] - t0, L_STOP_RET: stop_returned - t0, L_REL_ISSUE: t_start - rel[1],
               L_ISSUE_ALLOC: alloc[1] - t_start, L_FORK: forked - alloc[1], L_RUN: ran - forked,
               L_TOTAL: ran - t0, L_RETURNED: returned - t0}
        self.stop_chat()
        return seg


def report(samples, args, took):
    variants = (("preempt", "preemption"), ("free", "free start"), ("manual", "stop+start"))
    headers = ["segment"]
    for _, label in variants:
        headers += [f"{label} p50 ms", f"{label} p99 ms"]
    seen = {label for name, _ in variants for label in samples[name][0]}
    rows = []
    for label in [l for l in ORDER if l in seen] + sorted(seen - set(ORDER)):
        row = [label]
        for name, _ in variants:
            if label in samples[name][0]:
                s = C.stats([t[label] for t in samples[name]])
                row += [ms(s["median"]), ms(s["p99"])]
            else:
                row += ["-", "-"]
        rows.append(row)
    C.table(headers, rows, title=f"Preemption under systemd 252 (sd-sandbox), 2 fake GPUs: {args.trials} interleaved "
                                 f"rounds of (preemption: `systemctl start chat.service` while embed holds both GPUs; "
                                 f"free start: the same with embed stopped; stop+start: `systemctl stop "
                                 f"embed.service`, its lease gone, `systemctl start chat.service`) after 1 warm-up "
                                 f"round, {took:.0f} s (nearest-rank p99: of {args.trials} samples, their maximum "
                                 f"when fewer than 100):")
    st = {name: C.stats([t[L_TOTAL] for t in samples[name]]) for name, _ in variants}
    victim = C.stats([t[L_VICTIM] for t in samples["preempt"]])
    ours = C.stats([t[L_OURS] for t in samples["preempt"]])
    enter = C.stats(samples["enter"])
    print()
    print(f"Preemption, issue -> chat running with its GPUs: p50 {ms(st['preempt']['median'])} ms, p99 "
          f"{ms(st['preempt']['p99'])} ms (n = {st['preempt']['n']}). (a) the victim's stop: p50 "
          f"{ms(victim['median'])} ms, p99 {ms(victim['p99'])} ms; (b) our own overhead: p50 {ms(ours['median'])} ms, "
          f"p99 {ms(ours['p99'])} ms, of which the stand-in's own start (forked -> running) p50 "
          f"{ms(C.stats([t[L_RUN] for t in samples['preempt']])['median'])} ms.")
    print(f"Ratios, p50 (p99): preemption / stop+start by hand = {st['preempt']['median'] / st['manual']['median']:.2f}x "
          f"({st['preempt']['p99'] / st['manual']['p99']:.2f}x); preemption / free start = "
          f"{st['preempt']['median'] / st['free']['median']:.2f}x ({st['preempt']['p99'] / st['free']['p99']:.2f}x); "
          f"stop+start / free start = {st['manual']['median'] / st['free']['median']:.2f}x "
          f"({st['manual']['p99'] / st['free']['p99']:.2f}x).")
    print(f"Every command is issued at the sandbox's shell: entering it (`sd-sandbox.sh exec true`) took p50 "
          f"{ms(enter['median'])} ms, p99 {ms(enter['p99'])} ms, once per systemctl (twice in stop+start). Times are "
          f"the history rows' `at` (time.time() in the transaction that commits them), systemd's unit timestamps "
          f"(CLOCK_MONOTONIC, shared with the sandbox, taken as wall time) and the mtime of the stand-in's record "
          f"(the kernel's coarse file clock: a few ms). A waiting allocate looks at the state every "
          f"{WAIT_POLL_S:g} s, so `release` -> chat leased holds 0-{WAIT_POLL_S * 1e3:.0f} ms of that poll. The "
          f"victim's stop is mostly the stand-in's own: its serve_forever() sees the shutdown request at its next "
          f"{STANDIN_POLL_S:g} s poll; a real server's stop (freeing its GPU memory) is what (a) measures.")
    return st


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="timed rounds of every variant (default 20)")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args()
    C.MARKDOWN = args.markdown
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every finally: runs (sandbox down, temp dirs)
    why = S.missing()
    if why:
        raise SystemExit(f"bench: cannot run: {why}")
    info = C.setup(want_nvitop=False)
    print(f"# preemption: {C.machine_info(info)}")
    box = C.Box([C.gpu_desc(i, minor_number=i) for i in range(2)], name="preempt", services=SERVICES)
    bench = None
    try:
        bench = PreemptionBench(box)
        C.log("booting a systemd sandbox")
        bench.start()
        samples = {"preempt": [], "free": [], "manual": [], "enter": []}
        groups = [("preempt", bench.preempt), ("free", bench.free), ("manual", bench.manual)]
        t_start = time.monotonic()
        for r in range(-1, args.trials):
            order = groups[r % 3:] + groups[:r % 3] if r >= 0 else groups
            for name, fn in order:
                value = fn()
                if r >= 0:
                    samples[name].append(value)
            if r >= 0:
                samples["enter"].append(bench.enter())
                if (r + 1) % 5 == 0:
                    C.log(f"round {r + 1}/{args.trials}")
        took = time.monotonic() - t_start
    finally:
        if bench is not None:
            bench.sb.down()
        box.cleanup()
    report(samples, args, took)


if __name__ == "__main__":
    main()
