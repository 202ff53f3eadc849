#!/usr/bin/env python3
"""What cortex-hook's Prometheus metrics cost, on the fake NVML driver with the real nvidia-ml-py:

1. one scrape on 8 and on 64 GPUs, on boxes with 3 leases, 1 drained GPU and ~500 history rows
   (a) `cortex-hook metrics` as a whole process, next to `cortex-hook status --json` and the pynvml
       snippet of bench/startpath.py (init + memory of every GPU) on the same box, interleaved;
   (b) HTTP GETs of the monitor's /metrics (`cortex-hook monitor` as a plain process, with
       `metrics: listen: 127.0.0.1:PORT` and `health: poll: 10s`), the two boxes' monitors
       running together and their requests alternating;
2. what dcgm-exporter's job mapping (`metrics: job_mapping_dir:`, on tmpfs as /run is) adds to
   `cortex-hook allocate UNIT` and then `release UNIT` (whole processes, as startpath.py times
   them) on 8 GPUs: two boxes, the same but for that key, interleaved.

The shared fake driver holds at most 32 GPUs, so every box here uses the copy with a larger table
that growth.py builds (bench/.cache/fake-nvml-max128/).

    python3 bench/metrics.py [--rounds 40] [--requests 300] [--only cli|http|jobmap] [--markdown]
"""

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from growth import UNIT, fill_history  # noqa: E402
from startpath import PYNVML_SNIPPET  # noqa: E402

SERVICES = """\
services:
  - match: "*.service"
    gpus: 1
    min_free_memory: 4GiB
"""
LEASED = ("chat.service", "embed.service", "rerank.service")  # held through every measurement
HISTORY_ROWS = 500  # under the default history_limit (1000), so they stay
POLL = "10s"
SIZES = (8, 64)


def ms(x):
    return f"{x * 1e3:.1f}"


def method(text, info):
    """The method paragraph under a table's title, with the machine line as it is now."""
    print(text)
    print(f"machine: {C.machine_info(info)}")


def count(body, pattern):
    return len(re.findall(pattern, body, flags=re.M))


def check_exposition(body, n, leases, drained, what):
    """The scrape shows every GPU, the leases and the drain (else the bench measures the wrong thing)."""
    got = (count(body, r"^cortex_hook_gpu_info\{"), count(body, r"^cortex_hook_gpu_leased\{.*\} 1$"),
           count(body, r"^cortex_hook_gpu_drained\{.*\} 1$"))
    if got != (n, leases, drained):
        raise SystemExit(f"bench: {what}: expected {n} GPUs, {leases} leased, {drained} drained; "
                         f"the exposition shows {got[0]}, {got[1]}, {got[2]}:\n{body[:2000]}")


# -- 1. one scrape --------------------------------------------------------------------------------
def scrape_box(n, lib):
    """A box of N GPUs with the metrics endpoint in its policy (filled by fill_scrape_box)."""
    port = C.free_port()
    box = C.Box([C.gpu_desc(i) for i in range(n)], services=SERVICES, lib=lib, name=f"metrics{n}",
                extra_policy=f"metrics:\n  listen: 127.0.0.1:{port}\nhealth:\n  poll: {POLL}\n")
    box.port, box.monitor = port, None
    return box


def fill_scrape_box(box, n):
    """3 leases, 1 GPU drained by an admin, ~500 history rows; checks what `metrics` shows."""
    box.warm(UNIT)
    for unit in LEASED:
        box.cortex("allocate", unit)
    box.cortex("drain", box.gpus[-1]["uuid"], "--reason", "bench: a drained GPU")
    fill_history(box, HISTORY_ROWS)  # a real allocate + release of UNIT, then copies of their rows
    for k in range(5):  # and a few more real ones (outcome tallies)
        box.cortex("allocate", f"job-{k}.service")
        box.cortex("release", f"job-{k}.service")
    body = box.cortex("metrics").stdout
    check_exposition(body, n, len(LEASED), 1, f"cortex-hook metrics on {n} GPUs")
    box.cli_bytes = len(body.encode())


def cli_part(boxes, args, info):
    groups = []
    for n, box in boxes.items():
        env = box.env()
        groups += [[C.Step(f"metrics {n}", [C.CORTEX, "metrics"], env)],
                   [C.Step(f"status {n}", [C.CORTEX, "status", "--json"], env)],
                   [C.Step(f"pynvml {n}", [C.VENV_PY, "-c", PYNVML_SNIPPET], env)]]
    C.log(f"1a: {args.rounds} rounds of {len(groups)} commands, interleaved")
    samples = C.run_interleaved(groups, args.rounds, args.warmup)
    st = {k: C.stats(v) for k, v in samples.items()}
    rows = []
    for n in boxes:
        for cmd, label in (("metrics", "cortex-hook metrics"), ("status", "cortex-hook status --json"),
                           ("pynvml", "pynvml (init + memory of every GPU)")):
            s = st[f"{cmd} {n}"]
            rows.append([f"{n} GPUs: {label}", s["n"], ms(s["median"]), ms(s["p90"]), ms(s["min"]),
                         f"{s['median'] / st[f'status {n}']['median']:.2f}",
                         f"{s['median'] / st[f'pynvml {n}']['median']:.2f}"])
    C.table(["box: command", "n", "median ms", "p90 ms", "min ms", "× status --json", "× pynvml"], rows,
            title="1a. one scrape as a whole process: `cortex-hook metrics` (stdout), on 8 and 64 GPUs")
    method(f"Wall time of each process (time.perf_counter around subprocess.run, clean env, cwd /), "
           f"{args.rounds} rounds after {args.warmup} untimed ones; every round runs the 6 commands once, "
           f"in a rotated order. Each box: {len(LEASED)} leases, 1 GPU drained by an admin, "
           f"~{HISTORY_ROWS + 12} history rows; the fake driver with a 128-GPU table; no monitor running. "
           f"Ratios are of medians, against the same box. Output: "
           + ", ".join(f"{box.cli_bytes} bytes on {n} GPUs" for n, box in boxes.items()) + ".", info)
    m8, m64 = st["metrics 8"]["median"], st["metrics 64"]["median"]
    print(f"metrics 64 GPUs / 8 GPUs = {m64 / m8:.2f}x "
          f"(status --json: {st['status 64']['median'] / st['status 8']['median']:.2f}x, "
          f"pynvml: {st['pynvml 64']['median'] / st['pynvml 8']['median']:.2f}x)")
    return st


def get(port):
    """One GET /metrics on a new connection (the server speaks HTTP/1.0): (seconds, status, body)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return time.perf_counter() - t0, resp.status, body


def start_monitor(box):
    log_path = os.path.join(box.root, "monitor.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([C.CORTEX, "monitor"], cwd=C.CWD, env=box.env(), stdout=log,
                                stderr=subprocess.STDOUT)
    box.monitor, box.monitor_log = proc, log_path
    return proc


def wait_endpoint(box, n, timeout=120):
    """Until /metrics answers 200 (the monitor serves it after its first poll) and shows the box."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if box.monitor.poll() is not None:
            raise SystemExit(f"bench: the monitor on {n} GPUs exited {box.monitor.returncode}:\n"
                             f"{open(box.monitor_log, errors='replace').read()[-3000:]}")
        try:
            _, status, body = get(box.port)
            if status == 200:
                check_exposition(body.decode(), n, len(LEASED), 1, f"the monitor's /metrics on {n} GPUs")
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: the monitor on {n} GPUs did not answer /metrics within {timeout} s:\n"
                     f"{open(box.monitor_log, errors='replace').read()[-3000:]}")


def stop_monitors(boxes, timeout=30):
    """SIGTERM to every monitor WE started (by pid), then wait: {n: (exit code, seconds to exit)}."""
    t0, out = time.monotonic(), {}
    running = {n: box.monitor for n, box in boxes.items() if box.monitor is not None}
    for proc in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for n, proc in running.items():
        try:
            code = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        out[n] = (code, time.monotonic() - t0)
        boxes[n].monitor = None
    return out


def http_part(boxes, args, info, cli_st=None):
    try:
        for n, box in boxes.items():
            start_monitor(box)
        t0 = time.monotonic()
        for n, box in boxes.items():
            wait_endpoint(box, n)
        C.log(f"1b: both monitors answer {time.monotonic() - t0:.1f} s after their start; "
              f"{args.requests} GETs each, alternating")
        samples = {n: [] for n in boxes}
        sizes = {n: set() for n in boxes}
        order = list(boxes)
        for r in range(-10, args.requests):
            for n in (order if r % 2 == 0 else order[::-1]):
                dt, status, body = get(boxes[n].port)
                if status != 200:
                    raise SystemExit(f"bench: GET /metrics on {n} GPUs answered {status}: {body[:500]!r}")
                if r >= 0:
                    samples[n].append(dt)
                    sizes[n].add(len(body))
        for n, box in boxes.items():
            if box.monitor.poll() is not None:
                raise SystemExit(f"bench: the monitor on {n} GPUs exited during the scrapes")
    finally:
        stops = stop_monitors(boxes)
    st = {n: C.stats(v) for n, v in samples.items()}
    base = st[order[0]]["median"]
    rows = []
    for n in boxes:
        s = st[n]
        size = sizes[n]
        row = [f"{n} GPUs", s["n"], ms(s["median"]), ms(s["p90"]), ms(s["p99"]), ms(s["max"]),
               (str(min(size)) if len(size) == 1 else f"{min(size)}–{max(size)}"),
               f"{s['median'] / base:.2f}"]
        if cli_st:
            row.append(f"{s['median'] / cli_st[f'metrics {n}']['median']:.3f}")
        rows.append(row)
    headers = ["box", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "response bytes", f"× {order[0]} GPUs"]
    if cli_st:
        headers.append("× `cortex-hook metrics` process")
    C.table(headers, rows, title="1b. one scrape of the monitor's /metrics endpoint, on 8 and 64 GPUs")
    method(f"`cortex-hook monitor` ran as a plain process on each box of 1a (policy `metrics: listen: "
           f"127.0.0.1:PORT`, `health: poll: {POLL}`), both at once; after /metrics first answered 200 and 10 "
           f"untimed GETs each, {args.requests} GETs per box alternated between the boxes. Each is timed from "
           f"opening the connection (http.client, a new one per request: the server speaks HTTP/1.0) to "
           f"the last byte of the body. p99 is the nearest rank. Meanwhile each monitor's event wait wakes "
           f"every 10 ms (the fake driver's step; a real driver sleeps in the kernel). On SIGTERM the monitors "
           f"ended " + ", ".join(f"{n} GPUs: exit {code} after {secs:.1f} s" for n, (code, secs) in stops.items())
           + f" (a SIGTERM takes effect when the driver's event wait returns: up to the poll interval, {POLL}).",
           info)
    print(f"/metrics p50 64 GPUs / 8 GPUs = {st[64]['median'] / st[8]['median']:.2f}x")
    return st


# -- 2. the job mapping on the start path ----------------------------------------------------------
def jobmap_part(args, info, lib):
    jobdir_root = tempfile.mkdtemp(prefix="cortex-bench-jobmap-", dir=C.TMPFS)
    os.chmod(jobdir_root, 0o755)
    jobdir = os.path.join(jobdir_root, "dcgm-job-mapping")
    boxes = {}
    try:
        boxes["without"] = C.Box([C.gpu_desc(i) for i in range(8)], services=SERVICES, lib=lib,
                                 name="metrics-nomap")
        boxes["with"] = C.Box([C.gpu_desc(i) for i in range(8)], services=SERVICES, lib=lib,
                              name="metrics-jobmap", extra_policy=f"metrics:\n  job_mapping_dir: {jobdir}\n")
        for box in boxes.values():
            box.warm(UNIT)
            for unit in LEASED[:2]:
                box.cortex("allocate", unit)
            box.cortex("allocate", UNIT)
            box.cortex("release", UNIT)
        # the directory really follows the leases (else the bench would time nothing)
        boxes["with"].cortex("allocate", UNIT)
        during = {name: open(os.path.join(jobdir, name)).read() for name in os.listdir(jobdir)}
        boxes["with"].cortex("release", UNIT)
        after = sorted(os.listdir(jobdir))
        if len(during) != 3 or len(after) != 2 or f"{UNIT}\n" not in during.values():
            raise SystemExit(f"bench: job mapping not kept: {during} while {UNIT} runs, {after} after it")
        groups = []
        for key, box in boxes.items():
            env = box.env()
            groups.append([C.Step(f"allocate {key}", [C.CORTEX, "allocate", UNIT], env),
                           C.Step(f"release {key}", [C.CORTEX, "release", UNIT], env)])
        rounds = 2 * args.rounds  # cheap, and the difference is small
        C.log(f"2: {rounds} rounds of allocate + release on 2 boxes, interleaved")
        samples = C.run_interleaved(groups, rounds, args.warmup)
    finally:
        for box in boxes.values():
            box.cleanup()
        shutil.rmtree(jobdir_root, ignore_errors=True)
    st = {k: C.stats(v) for k, v in samples.items()}
    rows = []
    for cmd in ("allocate", "release"):
        base = st[f"{cmd} without"]["median"]
        for key in ("without", "with"):
            s = st[f"{cmd} {key}"]
            rows.append([f"{cmd}, {key} job_mapping_dir", s["n"], ms(s["median"]), ms(s["p90"]), ms(s["min"]),
                         f"{s['median'] / base:.2f}"])
    C.table(["command", "n", "median ms", "p90 ms", "min ms", "× without"], rows,
            title="2. dcgm-exporter's job mapping on the start path: `cortex-hook allocate UNIT`, then `release UNIT`, 8 GPUs")
    method(f"Two 8-GPU boxes, the same but for `metrics: job_mapping_dir:` (a directory on {C.TMPFS or 'tmpfs'}, "
           f"as /run is), each with {len(LEASED[:2])} other leases standing (so the directory holds 2 files, "
           f"3 while UNIT runs). Wall time of each whole process, {rounds} rounds (2 x --rounds) after "
           f"{args.warmup} untimed ones; every round runs allocate then release on each box, the boxes in a "
           f"rotated order. Ratios are of medians; the paired difference is the median over rounds of "
           f"(with - without) in the same round.", info)
    for cmd in ("allocate", "release"):
        a, b = st[f"{cmd} with"]["median"], st[f"{cmd} without"]["median"]
        paired = statistics.median(w - wo for w, wo in zip(samples[f"{cmd} with"], samples[f"{cmd} without"]))
        print(f"{cmd} with / without = {a / b:.2f}x ({(a - b) * 1e3:+.1f} ms; paired difference "
              f"{paired * 1e3:+.1f} ms)")
    return st


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(ap, rounds=40)
    ap.add_argument("--requests", type=int, default=300, help="timed GETs per box in 1b (default 300)")
    ap.add_argument("--only", choices=("cli", "http", "jobmap"), help="run one part only")
    args = ap.parse_args()
    C.apply_common_args(args)
    if args.requests < 100:
        ap.error("--requests: at least 100 (the p99 needs them)")
    info = C.setup(want_nvitop=False)
    print(f"# metrics: {C.machine_info(info)}")
    lib = C.build_fake_nvml(max_gpus=128)
    cli_st = None
    if args.only in (None, "cli", "http"):
        boxes = {}
        try:
            for n in SIZES:
                boxes[n] = scrape_box(n, lib)
                fill_scrape_box(boxes[n], n)
                C.log(f"box of {n} GPUs ready (metrics output {boxes[n].cli_bytes} bytes)")
            if args.only in (None, "cli"):
                cli_st = cli_part(boxes, args, info)
            if args.only in (None, "http"):
                http_part(boxes, args, info, cli_st)
        finally:
            for box in boxes.values():
                if box.monitor is not None:
                    C.terminate(box.monitor)
                box.cleanup()
    if args.only in (None, "jobmap"):
        jobmap_part(args, info, lib)


if __name__ == "__main__":
    main()
