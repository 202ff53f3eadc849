#!/usr/bin/env python3
"""How `cortex-hook allocate` grows with the box: wall time per process at 1, 8 and 64 GPUs,
8 GPUs x 7 MIG instances, and 8 GPUs with 10,000 rows already in the history table, all on the
fake NVML driver with the real nvidia-ml-py, interleaved in one run. Each allocate is followed by
an untimed release (its time is shown too). The shared fake driver holds at most 32 GPUs, so
every case runs on a copy built with a larger table (bench/.cache/). For context, the same pynvml snippet as bench/startpath.py (init + memory of
every GPU) runs on each box too.

The project's goal: 64 GPUs within 1.5x of 8 GPUs.

    python3 bench/growth.py [--rounds 30] [--history-rows 10000] [--no-pynvml] [--markdown]
"""

import argparse
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from startpath import PYNVML_SNIPPET  # noqa: E402

UNIT = "bench-llm.service"
GOAL_64_VS_8 = 1.5
SERVICES = """\
services:
  - match: "*.service"
    gpus: 1
    min_free_memory: 4GiB
"""


def fill_history(box, rows):
    """Put ROWS realistic decisions (copies of a real allocate/release pair) into the history."""
    box.cortex("allocate", UNIT)
    box.cortex("release", UNIT)
    conn = sqlite3.connect(box.state, timeout=60)
    try:
        alloc = conn.execute("SELECT gpus, detail FROM history WHERE action = 'allocate' ORDER BY id DESC").fetchone()
        rel = conn.execute("SELECT gpus, detail FROM history WHERE action = 'release' ORDER BY id DESC").fetchone()
        now = time.time() - rows
        data = []
        for k in range(rows):
            gpus, detail = alloc if k % 2 == 0 else rel
            data.append((now + k, f"svc-{k // 2 % 500}.service", "allocate" if k % 2 == 0 else "release", gpus, detail))
        with conn:
            conn.executemany("INSERT INTO history (at, unit, action, gpus, detail) VALUES (?, ?, ?, ?, ?)", data)
        return conn.execute("SELECT count(*) FROM history").fetchone()[0]
    finally:
        conn.close()


def history_count(box):
    conn = sqlite3.connect(box.state, timeout=60)
    try:
        return conn.execute("SELECT count(*) FROM history").fetchone()[0]
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--history-rows", type=int, default=10_000)
    ap.add_argument("--no-pynvml", action="store_true", help="skip the pynvml baseline on each box")
    args = ap.parse_args()
    C.apply_common_args(args)
    info = C.setup()
    print(f"# growth: {C.machine_info(info)}")
    rows = args.history_rows
    cases = [
        ("1 GPU", [C.gpu_desc(0)], ""),
        ("8 GPUs", [C.gpu_desc(i) for i in range(8)], ""),
        ("64 GPUs", [C.gpu_desc(i) for i in range(64)], ""),
        ("8 GPUs x 7 MIG", [C.mig_gpu_desc(i, 7) for i in range(8)], ""),
        # the limit must exceed the rows, or the first allocate trims the table back to 1000
        (f"8 GPUs + {rows} history", [C.gpu_desc(i) for i in range(8)], f"history_limit: {rows * 10}\n"),
    ]
    # the shared fake driver holds at most 32 GPUs (more are cut off silently): every case here
    # runs on a build of the same source with a larger table, so all cases use the same library
    lib = C.build_fake_nvml(max_gpus=128)
    boxes = []
    try:
        for name, gpus, extra in cases:
            box = C.Box(gpus, services=SERVICES, extra_policy=extra, name="growth", lib=lib)
            boxes.append((name, box))
            box.warm(UNIT)
            box.cortex("allocate", UNIT)
            r = box.cortex("plan", UNIT, "--json")
            plan = json.loads(r.stdout)
            box.cortex("release", UNIT)
            want = sum(1 + len(g.get("mig_devices", [])) for g in gpus)
            C.log(f"{name}: {len(plan['verdicts'])} candidates, plan picks {plan['gpus']}")
            if len(plan["verdicts"]) != want:
                raise SystemExit(f"bench: {name}: cortex-hook saw {len(plan['verdicts'])} candidates, expected {want}")
        hist_box = boxes[-1][1]
        C.log(f"history rows now: {fill_history(hist_box, rows)}")
        groups = []
        for name, box in boxes:
            env = box.env()
            groups.append([C.Step(f"allocate {name}", [C.CORTEX, "allocate", UNIT], env),
                           C.Step(f"release {name}", [C.CORTEX, "release", UNIT], env)])
            if not args.no_pynvml:
                groups.append([C.Step(f"pynvml {name}", [C.VENV_PY, "-c", PYNVML_SNIPPET], env)])
        C.log(f"{args.rounds} rounds of {sum(len(g) for g in groups)} commands, interleaved")
        samples = C.run_interleaved(groups, args.rounds, args.warmup)
        st = {k: C.stats(v) for k, v in samples.items()}
        base = st["allocate 8 GPUs"]["median"]
        headers = ["case", "candidates", "allocate median ms", "p90 ms", "× 8 GPUs", "release median ms"]
        if not args.no_pynvml:
            headers += ["pynvml median ms", "allocate × pynvml"]
        table_rows = []
        for (name, box), (_, gpus, _) in zip(boxes, cases):
            a = st[f"allocate {name}"]
            cands = sum(1 + len(g.get("mig_devices", [])) for g in gpus)
            row = [name, cands, f"{a['median'] * 1e3:.1f}", f"{a['p90'] * 1e3:.1f}", f"{a['median'] / base:.2f}",
                   f"{st[f'release {name}']['median'] * 1e3:.1f}"]
            if not args.no_pynvml:
                p = st[f"pynvml {name}"]["median"]
                row += [f"{p * 1e3:.1f}", f"{a['median'] / p:.2f}"]
            table_rows.append(row)
        C.table(headers, table_rows, title=f"allocate wall time per process by box size ({args.rounds} interleaved "
                                            "rounds; pynvml = init + memory of every physical GPU):")
        r64 = st["allocate 64 GPUs"]["median"] / base
        print(f"\n64 GPUs / 8 GPUs = {r64:.2f}x (goal <= {GOAL_64_VS_8}x): {'MET' if r64 <= GOAL_64_VS_8 else 'NOT MET'}")
        print(f"history rows at the end in the history case: {history_count(hist_box)} "
              f"(history_limit {rows * 10})")
    finally:
        for _, box in boxes:
            box.cleanup()


if __name__ == "__main__":
    main()
