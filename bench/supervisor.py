#!/usr/bin/env python3
"""What `cortex-hook supervise` costs while the server runs: memory (VmRSS, VmHWM from
/proc/PID/status, and Pss / private memory from /proc/PID/smaps_rollup) once it is ready, and
CPU time (utime+stime from /proc/PID/stat; on-CPU nanoseconds from /proc/PID/schedstat) over a
measured window, with WATCHDOG_USEC set (pings, each after a readiness probe) and without.

Four supervisors run at once, each in front of the idle stand-in server
(tests/helpers/standin_server.py, ready at once), on the fake NVML driver, with a NOTIFY_SOCKET
the bench listens on (so READY=1 and WATCHDOG=1 are real datagrams, and counted):
  self-allocated        supervise alone (outside systemd it allocates for itself: it has imported
                        pynvml, the planner and SQLite);
  reusing ExecStartPre  what the supervise drop-in does under systemd: `allocate` ran first in the
                        unit's cgroup with the same INVOCATION_ID (a cgroup the bench makes in the
                        name=systemd hierarchy and removes), so supervise reuses its decision;
each with and without the watchdog. Baselines: the stand-in itself, and
`python -c 'import time; time.sleep(600)'`.

    python3 bench/supervisor.py [--window 30] [--watchdog-sec 4] [--markdown]
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def services(ports):
    out = "services:\n"
    for name, port in ports.items():
        out += f"""\
  - match: "{name}.service"
    gpus: 1
    min_free_memory: 4GiB
    readiness: http://127.0.0.1:{port}/health
"""
    return out


class NotifyListener:
    """A NOTIFY_SOCKET of our own: records every datagram with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def count(self, field, since=0.0, until=float("inf")):
        return sum(1 for t, m in self.messages if since <= t <= until and field in m.split("\n"))

    def wait_for(self, field, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(field):
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def smaps_kb(pid, key):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory(pid):
    private = (smaps_kb(pid, "Private_Clean") or 0) + (smaps_kb(pid, "Private_Dirty") or 0)
    return {"rss": status_kb(pid, "VmRSS"), "hwm": status_kb(pid, "VmHWM"), "pss": smaps_kb(pid, "Pss"),
            "private": private}


def cpu(pid):
    """(utime+stime seconds, on-CPU seconds from schedstat) of PID (threads included)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu = int(f.read().split()[0]) / 1e9  # the main thread
        for tid in os.listdir(f"/proc/{pid}/task"):
            if tid != str(pid):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    on_cpu += int(f.read().split()[0]) / 1e9
    except OSError:
        on_cpu = None
    return ticks / TICK, on_cpu


def shared_objects(pid):
    """Basenames of the shared objects mapped into PID (native modules and libraries)."""
    names = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and ".so" in parts[5]:
                    name = os.path.basename(parts[5].strip())
                    names.add(name.split(".cpython-")[0] if ".cpython-" in name else name)
    except OSError:
        pass
    return names


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


CGROUP_ROOT = "/sys/fs/cgroup/systemd"  # the name=systemd hierarchy, where systemd puts each unit


def cgroup_base():
    """A cgroup parent of our own for the `reuse` variants, or None when we cannot make one."""
    if not (os.path.isdir(CGROUP_ROOT) and os.access(CGROUP_ROOT, os.W_OK)):
        return None
    base = os.path.join(CGROUP_ROOT, f"cortex-bench-{os.getpid()}.slice")
    try:
        os.mkdir(base)
    except OSError:
        return None
    return base


def remove_cgroups(base):
    """rmdir our cgroups (they are empty once their processes are gone; retry a moment)."""
    if not base:
        return
    for _ in range(50):
        try:
            for d in os.listdir(base):
                if os.path.isdir(os.path.join(base, d)):
                    os.rmdir(os.path.join(base, d))
            os.rmdir(base)
            return
        except OSError:
            time.sleep(0.1)
    C.log(f"could not remove cgroup {base}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=30.0, help="seconds of CPU measurement (default 30)")
    ap.add_argument("--watchdog-sec", type=float, default=4.0,
                    help="WatchdogSec= to simulate: WATCHDOG_USEC; supervise pings every half (default 4 -> 2 s)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    C.MARKDOWN = args.markdown
    info = C.setup(want_nvitop=False)
    print(f"# supervisor: {C.machine_info(info)}")
    cgbase = cgroup_base()
    kinds = ["self"] + (["reuse"] if cgbase else [])
    if not cgbase:
        print(f"(no writable {CGROUP_ROOT}: only the self-allocating supervisors are measured)")
    variants = [(kind, wd) for kind in kinds for wd in ("watchdog", "plain")]
    names = {f"bench-sup-{kind}-{wd}": C.free_port() for kind, wd in variants}
    box = C.Box([C.gpu_desc(i) for i in range(8)], services=services(names), name="supervisor")
    procs, listeners, wrapped = {}, {}, {}
    sleeper = None
    try:
        box.warm(next(iter(names)) + ".service")
        for (kind, wd), (name, port) in zip(variants, names.items()):
            unit = name + ".service"
            listeners[name] = NotifyListener(os.path.join(box.root, f"{name}.notify"))
            extra = {"NOTIFY_SOCKET": listeners[name].path}
            if wd == "watchdog":
                extra["WATCHDOG_USEC"] = str(int(args.watchdog_sec * 1e6))
            prefix = []
            if kind == "reuse":
                # what systemd does: the unit's cgroup and INVOCATION_ID for ExecStartPre=+allocate and
                # then for ExecStart=supervise, which reuses the decision (no driver call, no state write)
                cg = os.path.join(cgbase, unit)
                os.mkdir(cg)
                prefix = ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh"]
                extra["INVOCATION_ID"] = os.urandom(16).hex()
                r = subprocess.run(prefix + [C.CORTEX, "allocate", unit], env=box.env(**extra), cwd=C.CWD,
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"bench: allocate {unit} in its cgroup exited {r.returncode}: {r.stderr}")
                wrapped[name] = cg
            log = open(os.path.join(box.root, f"{name}.log"), "wb")
            procs[name] = subprocess.Popen(
                prefix + [C.CORTEX, "supervise", "--unit", name, "--", C.VENV_PY, C.STANDIN, "--host", "127.0.0.1",
                          "--port", str(port)], env=box.env(**extra), stdout=log, stderr=subprocess.STDOUT, cwd=C.CWD)
        sleeper = subprocess.Popen([C.VENV_PY, "-c", "import time; time.sleep(600)"], env=C.bench_env(), cwd=C.CWD)
        for name, lst in listeners.items():
            if not lst.wait_for("READY=1", 60):
                raise SystemExit(f"bench: {name} sent no READY=1 within 60 s:\n"
                                 + open(os.path.join(box.root, f"{name}.log")).read())
        time.sleep(1.0)  # let everything settle after READY=1
        # the reuse variants must really have reused: one lease per unit, held by the cgroup
        leases = box.cortex("leases", "--json").stdout
        import json
        held = {l["unit"]: l for l in json.loads(leases)["leases"]}
        for name, cg in wrapped.items():
            lease = held.get(name + ".service")
            if not lease or lease.get("cgroup") != cg:
                raise SystemExit(f"bench: {name} did not reuse the ExecStartPre lease: {lease}")
        pids = {}
        for (kind, wd), name in zip(variants, names):
            p = procs[name]
            kids = children(p.pid)
            if len(kids) != 1:
                raise SystemExit(f"bench: {name}: expected one child (the stand-in), found {kids}")
            label = "self-allocated" if kind == "self" else "reusing ExecStartPre"
            pids[f"supervise, {label}, {wd}"] = p.pid
            pids[f"stand-in under it ({kind}, {wd})"] = kids[0]
        pids["python sleep (baseline)"] = sleeper.pid
        mem = {label: memory(pid) for label, pid in pids.items()}
        base_so = shared_objects(sleeper.pid)
        extra_so = {label: sorted(shared_objects(pid) - base_so) for label, pid in pids.items()
                    if label.startswith("supervise")}
        C.log(f"measuring CPU for {args.window:g} s")
        t0 = time.monotonic()
        cpu0 = {label: cpu(pid) for label, pid in pids.items()}
        time.sleep(args.window)
        cpu1 = {label: cpu(pid) for label, pid in pids.items()}
        t1 = time.monotonic()
        window = t1 - t0
        base = mem["python sleep (baseline)"]
        standin = mem["stand-in under it (self, plain)"]
        rows = []
        for label in pids:
            m = mem[label]
            ticks = cpu1[label][0] - cpu0[label][0]
            on = (cpu1[label][1] - cpu0[label][1]) if cpu0[label][1] is not None else None
            rows.append([label, f"{m['rss'] / 1024:.1f}", f"{m['hwm'] / 1024:.1f}",
                         f"{m['pss'] / 1024:.1f}" if m["pss"] is not None else "-", f"{m['private'] / 1024:.1f}",
                         f"{m['rss'] / base['rss']:.2f}", f"{m['rss'] / standin['rss']:.2f}",
                         f"{ticks * 1e3:.0f}", f"{on * 1e3:.1f}" if on is not None else "-",
                         f"{(on if on is not None else ticks) / window * 3600:.2f}"])
        C.table(["process", "VmRSS MiB", "VmHWM MiB", "Pss MiB", "private MiB", "RSS × sleep", "RSS × stand-in",
                 "utime+stime ms", "on-CPU ms", "CPU s/hour"], rows,
                title=f"after READY=1; CPU over a {window:.1f} s window (utime+stime has 1/{TICK} s ticks; "
                      f"on-CPU from schedstat, used for s/hour); watchdog: WATCHDOG_USEC={int(args.watchdog_sec * 1e6)} "
                      f"-> a probe + WATCHDOG=1 every {args.watchdog_sec / 2:g} s:")
        print("\nshared objects (native modules, libraries) mapped beyond the python-sleep baseline's:")
        shown = {}
        for label, sos in extra_so.items():
            shown.setdefault(tuple(sos), []).append(label)
        for sos, labels in shown.items():
            print(f"  {' / '.join(labels)}: {', '.join(sos) or 'none'}")
        expect = window / (args.watchdog_sec / 2)
        pings = {name: listeners[name].count("WATCHDOG=1", t0, t1) for name in names}
        print("\nWATCHDOG=1 received in the window: " + ", ".join(f"{n[10:]} {c}" for n, c in pings.items())
              + f" (expected ~{expect:.0f} with the watchdog, 0 without)")
        # stop: SIGTERM to the supervisors (as systemd would), then ExecStopPost='s release for the
        # units whose lease ExecStartPre took
        codes = {name[10:]: C.terminate(p, timeout=15) for name, p in procs.items()}
        for name in wrapped:
            box.cortex("release", name)
        leases = box.cortex("leases").stdout.strip()
        print(f"supervise exit codes after SIGTERM: {codes} (expected 0); leases afterwards: {leases!r}")
    finally:
        for p in procs.values():
            C.terminate(p)
        if sleeper is not None:
            C.terminate(sleeper)
        for lst in listeners.values():
            lst.close()
        remove_cgroups(cgbase)
        box.cleanup()


if __name__ == "__main__":
    main()
