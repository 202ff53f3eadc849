#!/usr/bin/env python3
"""Start-path cost: whole-process wall time of `cortex-hook allocate UNIT` on the fake NVML driver
(8 GPUs, the real nvidia-ml-py), against baselines measured in the same run, interleaved:

  pass      python -c pass                                   (interpreter start-up)
  pynvml    python -c 'import pynvml; nvmlInit(); memory info of every GPU'   (the floor for any
            tool that asks the driver from Python)
  nvisel    nvisel -n 1 -f 20GiB                            (nvitop's GPU selector, if installed)
  plan      cortex-hook plan UNIT                           (dry run)
  allocate  cortex-hook allocate UNIT                       (what ExecStartPre=+ runs)
  release   cortex-hook release UNIT                        (what ExecStopPost=+ runs; after allocate)

The project's goal: allocate <= 1.25 x pynvml, and faster than nvisel.

    python3 bench/startpath.py [--rounds 30] [--importtime] [--profile] [--syscalls] [--markdown]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

UNIT = "bench-llm.service"
GOAL_VS_PYNVML = 1.25
PYNVML_SNIPPET = ("import pynvml; pynvml.nvmlInit(); [pynvml.nvmlDeviceGetMemoryInfo("
                  "pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]")
SERVICES = """\
services:
  - match: "*.service"
    gpus: 1
    min_free_memory: 20GiB
"""


def make_box(n=8):
    return C.Box([C.gpu_desc(i) for i in range(n)], services=SERVICES, name="startpath")


def groups_for(box, with_nvisel):
    env = box.env()
    groups = [
        [C.Step("python -c pass", [C.VENV_PY, "-c", "pass"], env)],
        [C.Step("pynvml", [C.VENV_PY, "-c", PYNVML_SNIPPET], env)],
        [C.Step("plan", [C.CORTEX, "plan", UNIT], env)],
        [C.Step("allocate", [C.CORTEX, "allocate", UNIT], env), C.Step("release", [C.CORTEX, "release", UNIT], env)],
    ]
    if with_nvisel:
        groups.insert(2, [C.Step("nvisel", [C.NVISEL, "-n", "1", "-f", "20GiB"], env)])
    return groups


def verdict(st):
    """Print the goal lines; returns True when the goal is met."""
    a = st["allocate"]["median"]
    b = st["pynvml"]["median"]
    ok = a <= GOAL_VS_PYNVML * b
    print(f"\nallocate / pynvml = {a / b:.2f}x (goal <= {GOAL_VS_PYNVML}x): {'MET' if ok else 'NOT MET'}")
    if "nvisel" in st:
        c = st["nvisel"]["median"]
        faster = a < c
        print(f"allocate / nvisel = {a / c:.2f}x (goal < 1.00x): {'MET' if faster else 'NOT MET'}")
        ok = ok and faster
    else:
        print("allocate / nvisel: nvisel not installed (pip install nvitop failed); not compared")
    p = st["python -c pass"]["median"]
    print(f"allocate minus interpreter start-up: {(a - p) * 1e3:.1f} ms; pynvml minus start-up: {(b - p) * 1e3:.1f} ms")
    print(f"goal overall: {'MET' if ok else 'NOT MET'}")
    return ok


# -- import profile ---------------------------------------------------------------------------
_IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S.*)$")


def import_profile(box, runs=5, top=25):
    """`python -X importtime` of allocate, RUNS times; median self / cumulative per module (ms)."""
    env = box.env()
    per_module = {}
    totals = []
    for _ in range(runs):
        r = subprocess.run([C.VENV_PY, "-X", "importtime", C.CORTEX, "allocate", UNIT], env=env,
                           capture_output=True, text=True, cwd=C.CWD)
        if r.returncode != 0:
            raise SystemExit(f"bench: allocate under -X importtime exited {r.returncode}:\n{r.stderr}")
        C.Step("release", [C.CORTEX, "release", UNIT], env).run()
        total = 0
        seen = {}
        for line in r.stderr.splitlines():
            m = _IMPORT_LINE.match(line)
            if not m:
                continue
            self_us, cum_us, indent, name = int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4).strip()
            total += self_us
            s = seen.setdefault(name, [0, 0, indent])
            s[0] += self_us
            s[1] = max(s[1], cum_us)
        totals.append(total)
        for name, (s, c, indent) in seen.items():
            per_module.setdefault(name, []).append((s, c, indent))
    rows = {name: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), v[0][2], len(v))
            for name, v in per_module.items()}
    total_ms = statistics.median(totals) / 1e3
    print(f"\nimport profile of `cortex-hook allocate` (python -X importtime, median of {runs} runs): "
          f"{len(rows)} modules imported, sum of self times {total_ms:.1f} ms "
          "(importtime's own overhead inflates it a little)")
    by_self = sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]
    C.table(["module (by self time)", "self ms", "cumulative ms"],
            [[n, f"{s / 1e3:.2f}", f"{c / 1e3:.2f}"] for n, (s, c, _, _) in by_self])
    top_level = [(n, v) for n, v in rows.items() if v[2] == 1]  # imported directly by the program or lazily
    by_cum = sorted(top_level, key=lambda kv: -kv[1][1])[:top]
    C.table(["top-level import (by cumulative)", "cumulative ms", "self ms"],
            [[n, f"{c / 1e3:.2f}", f"{s / 1e3:.2f}"] for n, (s, c, _, _) in by_cum],
            title="\nimports at the outermost level (each with everything it pulled in):")
    groups = {}
    for n, (s, _, _, _) in rows.items():
        groups[n.split(".")[0]] = groups.get(n.split(".")[0], 0) + s
    by_pkg = sorted(groups.items(), key=lambda kv: -kv[1])[:top]
    C.table(["package (self times summed)", "ms", "share"],
            [[n, f"{s / 1e3:.2f}", f"{s / 1e3 / total_ms:.0%}"] for n, s in by_pkg],
            title="\nby top-level package:")


def cprofile(box, top=25):
    """cProfile of one allocate (the state already exists): cortex-hook's own functions by
    cumulative time, then everything by own time. cProfile sees the main thread only: NVML
    discovery runs in a thread (for its timeout), so it shows as the main thread's wait in
    `lock.acquire` / `run_with_timeout`."""
    env = box.env()
    tmp = tempfile.mkdtemp(prefix="cortex-bench-prof-")
    try:
        out = os.path.join(tmp, "allocate.prof")
        # the console script ends with os._exit (before cProfile could write its file): profile
        # main() as the console script runs it instead
        code = ("import cProfile, sys\n"
                "from cortex_hook.cli import main\n"
                "p = cProfile.Profile()\n"
                "rc = p.runcall(main, sys.argv[2:], exit_fast=True)\n"
                "p.dump_stats(sys.argv[1])\n"
                "sys.exit(rc)\n")
        r = subprocess.run([C.VENV_PY, "-c", code, out, "allocate", UNIT], env=env,
                           capture_output=True, text=True, cwd=C.CWD)
        C.Step("release", [C.CORTEX, "release", UNIT], env).run()
        if r.returncode != 0:
            raise SystemExit(f"bench: allocate under cProfile exited {r.returncode}:\n{r.stderr}")
        code = ("import pstats, sys; p = pstats.Stats(sys.argv[1]); "
                f"p.sort_stats('cumulative').print_stats('site-packages/cortex_hook', {top}); "
                f"p.strip_dirs().sort_stats('tottime').print_stats({top})")
        r = subprocess.run([C.VENV_PY, "-c", code, out], env=C.bench_env(), capture_output=True, text=True,
                           cwd=C.CWD)
        site = C._site_packages() + "/"
        print("\ncProfile of one `cortex-hook allocate`: cortex-hook's functions by cumulative time, then "
              "everything by own time\n(main thread only: NVML discovery runs in a thread, seen here as "
              "run_with_timeout / lock.acquire):")
        print("\n".join(l.replace(site, "") for l in r.stdout.splitlines()
                        if l.strip() and not l.lstrip().startswith(("List reduced", "Ordered by"))))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def syscalls(box):
    """strace -f -c of one allocate: where the kernel time goes (fsync, opens, stats ...)."""
    if not shutil.which("strace"):
        print("\nstrace not installed: no syscall summary")
        return
    env = box.env()
    tmp = tempfile.mkdtemp(prefix="cortex-bench-strace-")
    try:
        out = os.path.join(tmp, "summary")
        r = subprocess.run(["strace", "-f", "-c", "-w", "-o", out, C.CORTEX, "allocate", UNIT], env=env,
                           capture_output=True, text=True, cwd=C.CWD)
        C.Step("release", [C.CORTEX, "release", UNIT], env).run()
        if r.returncode != 0:
            print(f"\nstrace run exited {r.returncode}: {r.stderr.strip()[-300:]}")
            return
        lines = open(out).read().splitlines()
        print("\nsyscalls of one `cortex-hook allocate` (strace -f -c -w: wall time inside each call, "
              "strace slows everything down):")
        print("\n".join(lines[:22] + ([lines[-1]] if len(lines) > 22 else [])))
        r = subprocess.run(["strace", "-f", "-y", "-e", "trace=fsync,fdatasync,sync_file_range,rename,unlink",
                            "-o", out, C.CORTEX, "allocate", UNIT], env=env, capture_output=True, text=True, cwd=C.CWD)
        C.Step("release", [C.CORTEX, "release", UNIT], env).run()
        calls = [l.split(None, 1)[1] for l in open(out).read().splitlines()
                 if l.split(None, 1)[1:] and not l.split(None, 1)[1].startswith(("+++", "---"))]
        print(f"\nfsync/fdatasync/rename/unlink calls of one allocate ({len(calls)}):")
        for c in calls:
            print("  " + c)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--gpus", type=int, default=8, help="simulated GPUs (default 8)")
    ap.add_argument("--importtime", action="store_true", help="also print the -X importtime profile of allocate")
    ap.add_argument("--importtime-runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of one allocate")
    ap.add_argument("--syscalls", action="store_true", help="also print strace summaries of one allocate")
    ap.add_argument("--no-timing", action="store_true", help="skip the timed rounds (profiles only)")
    args = ap.parse_args()
    C.apply_common_args(args)
    info = C.setup()
    print(f"# startpath: {C.machine_info(info)}")
    with make_box(args.gpus) as box:
        box.warm(UNIT)
        box.cortex("allocate", UNIT)  # creates the state
        box.cortex("release", UNIT)
        if not args.no_timing:
            groups = groups_for(box, C.have_nvisel())
            C.log(f"{args.rounds} rounds of {sum(len(g) for g in groups)} commands, interleaved")
            samples = C.run_interleaved(groups, args.rounds, args.warmup)
            order = ["python -c pass", "pynvml", "nvisel", "plan", "allocate", "release"]
            st = C.print_table(samples, "pynvml", order=order, extra_baselines=("nvisel", "python -c pass"),
                               title=f"wall time per process, {args.gpus} GPUs on the fake NVML driver, "
                                     f"{args.rounds} interleaved rounds:")
            verdict(st)
        if args.importtime:
            import_profile(box, args.importtime_runs)
        if args.profile:
            cprofile(box)
        if args.syscalls:
            syscalls(box)


if __name__ == "__main__":
    main()
