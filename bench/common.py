"""Shared helpers for the cortex-hook benchmarks (standard library only).

- `ensure_venv()`: bench/.venv, with cortex-hook installed from a snapshot of this checkout (NOT
  editable: the bytecode is compiled by pip the way a real install does) and nvitop's `nvisel` when
  it installs. It is refreshed when cortex_hook/, plugins/ or pyproject.toml change (a hash of them
  is stored in the venv).
- `build_fake_nvml()`: the fake libnvidia-ml.so.1, built by tests/helpers/fakegpu.py as the tests build it.
- `Box`: a throw-away host (policy with `inventory: nvml`, GPU JSON, state, runtime dir).
- `run_interleaved()`: run every variant once per round, rotating the order each round, so load
  from other work on this shared machine hits every variant alike; wall time per run.
- `stats()`, `print_table()`: median / p90 / min and ratios to a named baseline.

Every subprocess runs with `bench_env()`: PYTHONDONTWRITEBYTECODE and PYTHONPATH removed (a real
machine caches bytecode), nothing from systemd or a caller's CUDA_VISIBLE_DEVICES leaking in.
"""

import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
SHARED = os.environ.get("CORTEX_HOOK_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
FAKE_NVML_SRC = os.path.join(SHARED, "tools", "fake-nvml")
CACHE = os.path.join(REPO, ".cache")
VENV = os.path.join(BENCH_DIR, ".venv")
VENV_BIN = os.path.join(VENV, "bin")
VENV_PY = os.path.join(VENV_BIN, "python")
CORTEX = os.path.join(VENV_BIN, "cortex-hook")
NVISEL = os.path.join(VENV_BIN, "nvisel")
SOURCE_STAMP = os.path.join(VENV, ".cortex-hook-source.json")
NVITOP_STAMP = os.path.join(VENV, ".nvitop.json")
STANDIN = os.path.join(REPO, "tests", "helpers", "standin_server.py")


def _load_fakegpu():
    """tests/helpers/fakegpu.py (simulated GPUs, the fake driver's build), loaded by path: putting the
    checkout on sys.path could let a bench process import the checkout's cortex_hook."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("cortex_bench_fakegpu", os.path.join(REPO, "tests", "helpers", "fakegpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fakegpu = _load_fakegpu()
gpu_desc = _fakegpu.gpu_desc  # one simulated GPU, as the tests describe it
# measured processes run in / as systemd runs them (and so `python -c`/`-m`, which put the working
# directory first on sys.path, cannot pick up the checkout instead of the installed copy)
CWD = "/"

# the parts of the checkout whose change means "reinstall"
SOURCE_PARTS = ("cortex_hook", "plugins", "pyproject.toml")
# what the build needs besides them
BUILD_EXTRAS = ("README.md", "LICENSE")

# environment variables that must not reach a measured process
_STRIP_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONPYCACHEPREFIX",
              "PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONMALLOC", "PYTHONTRACEMALLOC",
              "PYTHONWARNINGS", "PYTHONVERBOSE", "PYTHONINSPECT", "PYTHONSAFEPATH",
              "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CORTEX_HOOK_UNIT", "CORTEX_HOOK_POLICY",
              "CORTEX_HOOK_STATE", "CORTEX_HOOK_RUNTIME_DIR", "CORTEX_HOOK_DISABLE_PLUGINS",
              "CORTEX_HOOK_TRACE_PLUGINS", "CORTEX_HOOK_DEBUG", "INVOCATION_ID", "JOURNAL_STREAM",
              "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
              "LD_PRELOAD", "FAKE_NVML_CONFIG", "FAKE_NVML_DEBUG", "VIRTUAL_ENV")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- the benchmark venv -------------------------------------------------------------------------
def _walk_files(root, rel):
    top = os.path.join(root, rel)
    if os.path.isfile(top):
        yield rel
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")) or name.startswith(".#"):
                continue
            yield os.path.relpath(os.path.join(dirpath, name), root)


def source_hash(root=REPO):
    """sha256 over the paths and contents of cortex_hook/, plugins/ and pyproject.toml under ROOT."""
    h = hashlib.sha256()
    for part in SOURCE_PARTS:
        for rel in _walk_files(root, part):
            h.update(rel.encode() + b"\0")
            try:
                with open(os.path.join(root, rel), "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(b"<unreadable>")
            h.update(b"\0")
    return h.hexdigest()


def _base_python():
    """The interpreter to create the venv with: the base of the one running us (python3 -m venv)."""
    if sys.prefix != sys.base_prefix:
        base = getattr(sys, "_base_executable", None)
        if base and os.path.exists(base) and not base.startswith(VENV):
            return base
        for name in ("python3", "python"):
            cand = os.path.join(sys.base_prefix, "bin", name)
            if os.path.exists(cand):
                return cand
    return sys.executable


def _git(*args):
    """Read-only git query in the checkout (rev-parse, status); '' on failure."""
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _pip(*args):
    env = bench_env()
    env.pop("PIP_NO_COMPILE", None)
    cmd = [VENV_PY, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return r


def _site_packages():
    out = subprocess.run([VENV_PY, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         env=bench_env(), capture_output=True, text=True, check=True).stdout.strip()
    return out


def ensure_venv(want_nvitop=True):
    """Create or refresh bench/.venv; returns a dict describing what is installed.

    Holds a lock (bench/.cache/venv.lock) so two benchmarks started together do not both install."""
    import fcntl
    os.makedirs(os.path.join(BENCH_DIR, ".cache"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, ".cache", "venv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_venv(want_nvitop)


def _ensure_venv(want_nvitop):
    if not os.path.exists(VENV_PY):
        base = _base_python()
        log(f"creating {VENV} with {base} -m venv")
        subprocess.run([base, "-m", "venv", VENV], check=True, env=bench_env())
    try:
        with open(SOURCE_STAMP) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        stamp = {}
    current = source_hash()
    if stamp.get("hash") != current or not os.path.exists(CORTEX):
        _install_snapshot(first=not os.path.exists(CORTEX))
        with open(SOURCE_STAMP) as f:
            stamp = json.load(f)
    nvitop = _ensure_nvitop() if want_nvitop else {"ok": False, "why": "not wanted"}
    return {"source": stamp, "nvitop": nvitop}


def _install_snapshot(first):
    """Copy the source parts to a temp dir (the checkout is being edited meanwhile; pip builds in
    the tree it is given, so this also keeps build/ and *.egg-info out of the checkout), then
    pip install it (not editable) and make sure everything has its bytecode."""
    tmp = tempfile.mkdtemp(prefix="cortex-bench-src-")
    try:
        for part in SOURCE_PARTS + BUILD_EXTRAS:
            src = os.path.join(REPO, part)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp, part),
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            elif os.path.exists(src):
                shutil.copy2(src, os.path.join(tmp, part))
        digest = source_hash(tmp)
        log(f"installing cortex-hook from a snapshot of {REPO} (source hash {digest[:12]}) into {VENV}")
        args = ["install", tmp] if first else ["install", "--force-reinstall", "--no-deps", tmp]
        r = _pip(*args)
        if r.returncode != 0 and not first:  # dependencies changed: full install
            r = _pip("install", "--force-reinstall", tmp)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit("bench: pip install of cortex-hook failed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _compile_site_packages()
    head = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", *SOURCE_PARTS))
    with open(SOURCE_STAMP, "w") as f:
        json.dump({"hash": digest, "head": head, "dirty": dirty,
                   "installed_at": datetime.datetime.now().isoformat(timespec="seconds")}, f)


def _compile_site_packages():
    """pip compiles what it installs; compile anything left (idempotent: only stale files)."""
    subprocess.run([VENV_PY, "-m", "compileall", "-q", "-j", "0", _site_packages()],
                   env=bench_env(), capture_output=True)
    pyc = os.path.join(_site_packages(), "cortex_hook", "__pycache__")
    if not (os.path.isdir(pyc) and os.listdir(pyc)):
        raise SystemExit(f"bench: no bytecode in {pyc} after install")


def _ensure_nvitop():
    """Install nvitop (for nvisel) once; remember the outcome. It must not change nvidia-ml-py:
    cortex-hook and the pynvml baseline have to use the same pynvml as a real install."""
    try:
        with open(NVITOP_STAMP) as f:
            info = json.load(f)
        if not info.get("ok") or os.path.exists(NVISEL):
            return info
    except (OSError, ValueError):
        pass
    before = _pynvml_version()
    log("installing nvitop (for nvisel) into the bench venv")
    r = _pip("install", "nvitop", f"nvidia-ml-py=={before}" if before else "nvidia-ml-py")
    if r.returncode != 0:
        info = {"ok": False, "why": (r.stderr or r.stdout).strip().splitlines()[-1:] or ["pip failed"]}
    else:
        _compile_site_packages()
        ver = subprocess.run([VENV_PY, "-c", "import nvitop; print(nvitop.__version__)"], env=bench_env(),
                             capture_output=True, text=True).stdout.strip()
        info = {"ok": os.path.exists(NVISEL), "version": ver, "nvidia_ml_py": _pynvml_version()}
    with open(NVITOP_STAMP, "w") as f:
        json.dump(info, f)
    return info


def _pynvml_version():
    r = subprocess.run([VENV_PY, "-c", "import importlib.metadata as m; print(m.version('nvidia-ml-py'))"],
                       env=bench_env(), capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def have_nvisel():
    return os.path.exists(NVISEL)


# -- the fake driver ------------------------------------------------------------------------------
FAKE_NVML_MAX_GPUS = 32  # fake_nvml.c's MAX_GPUS: a larger `count` or list is cut to it, silently


def build_fake_nvml(outdir=None, max_gpus=None):
    """Directory holding the fake libnvidia-ml.so.1 (tests/helpers/fakegpu.py's build, as the tests use).

    MAX_GPUS above the shared source's limit (32) builds a copy with a larger table into
    bench/.cache/ (the source is otherwise unchanged)."""
    src = os.path.join(FAKE_NVML_SRC, "fake_nvml.c")
    if not os.path.exists(src):
        raise SystemExit(f"bench: fake NVML source {src} missing (../shared/tools/fake-nvml)")
    if max_gpus and max_gpus > FAKE_NVML_MAX_GPUS:
        return _build_fake_nvml_larger(src, max_gpus)
    prebuilt = os.environ.get("FAKE_NVML_LIB_DIR")
    if prebuilt and os.path.exists(os.path.join(prebuilt, "libnvidia-ml.so.1")):
        return prebuilt
    outdir = outdir or os.path.join(CACHE, "fake-nvml", "lib")
    _gcc(src, outdir)
    return outdir


def _gcc(src, outdir):
    try:
        _fakegpu.build_fake_nvml(src, outdir)
    except _fakegpu.MissingTool:
        raise SystemExit("bench: gcc is needed to build the fake NVML driver") from None


def _build_fake_nvml_larger(src, max_gpus):
    import re
    outdir = os.path.join(BENCH_DIR, ".cache", f"fake-nvml-max{max_gpus}")
    patched = os.path.join(outdir, "fake_nvml.c")
    with open(src) as f:
        text = f.read()
    new, n = re.subn(r"^#define MAX_GPUS\s+\d+", f"#define MAX_GPUS   {max_gpus}", text, flags=re.M)
    if n != 1:
        raise SystemExit(f"bench: cannot raise MAX_GPUS in {src} (no `#define MAX_GPUS` line)")
    os.makedirs(outdir, exist_ok=True)
    try:
        with open(patched) as f:
            same = f.read() == new
    except OSError:
        same = False
    if not same:
        with open(patched, "w") as f:
            f.write(new)
    _gcc(patched, outdir)
    return outdir


# -- environments and boxes ---------------------------------------------------------------------
def state_rows(db, sql, args=()):
    """Rows of SQL on the state database DB opened read-only (a fresh connection); [] if it cannot
    be read (being created, or locked for longer than 2 s)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def wait_for(predicate, what, timeout=60.0, interval=0.005, detail=None):
    """PREDICATE()'s first truthy value, polled every INTERVAL; SystemExit naming WHAT (and
    DETAIL(), if given) after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:g} s waiting for {what}"
                             + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def bench_env(**extra):
    """os.environ without anything that would change what a measured process does."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", os.defpath)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def mig_gpu_desc(i, instances=7):
    """An A100 40GB in MIG mode with INSTANCES 1g.5gb instances."""
    migs = [{"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
             "uuid": f"MIG-00000000-0000-4000-8000-{i:06x}{k:06x}",
             "memory_total": "4864MiB", "memory_used": 0,
             "gpu_instance_id": 7 + k, "compute_instance_id": 0} for k in range(instances)]
    return gpu_desc(i, name="NVIDIA A100-SXM4-40GB", memory_total="40GiB", compute_capability="8.0",
                    mig_mode=1, mig_devices=migs)


def _tmpfs():
    """A tmpfs directory for runtime dirs (/dev/shm), or None."""
    try:
        with open("/proc/mounts") as f:
            mounts = {line.split()[1]: line.split()[2] for line in f if len(line.split()) > 2}
    except OSError:
        return None
    for path in ("/dev/shm",):
        if mounts.get(path) == "tmpfs" and os.access(path, os.W_OK):
            return path
    return None


TMPFS = _tmpfs()

DEFAULT_SERVICES = """\
services:
  - match: "*.service"
    gpus: 1
    min_free_memory: 4GiB
"""


class Box:
    """A throw-away host: policy (inventory: nvml), the fake driver's GPU JSON, state, runtime dir.

    Use as a context manager (or call cleanup()) so the temp dir goes away."""

    def __init__(self, gpus, services=DEFAULT_SERVICES, extra_policy="", lib=None, name="box"):
        self.name = name
        self.root = tempfile.mkdtemp(prefix=f"cortex-bench-{name}-")
        os.chmod(self.root, 0o755)
        self.lib = lib or build_fake_nvml()
        self.policy = os.path.join(self.root, "policy.yaml")
        self.gpus_file = os.path.join(self.root, "gpus.json")
        self.state = os.path.join(self.root, "state", "state.db")
        # the runtime dir on tmpfs when there is one, as /run is on a real machine (the state stays
        # on disk, as /var/lib/cortex-hook is): an fsync there costs what it costs in production
        self.runroot = tempfile.mkdtemp(prefix=f"cortex-bench-{name}-", dir=TMPFS) if TMPFS else None
        if self.runroot:
            os.chmod(self.runroot, 0o755)
        self.runtime = os.path.join(self.runroot or self.root, "run")
        self.gpus = gpus
        with open(self.gpus_file, "w") as f:
            json.dump({"gpus": gpus}, f, indent=1)
        with open(self.policy, "w") as f:
            f.write("version: 1\ninventory: nvml\n" + extra_policy + services)
        os.chmod(self.policy, 0o644)

    def env(self, **extra):
        return bench_env(CORTEX_HOOK_POLICY=self.policy, CORTEX_HOOK_STATE=self.state,
                         CORTEX_HOOK_RUNTIME_DIR=self.runtime, LD_LIBRARY_PATH=self.lib,
                         FAKE_NVML_CONFIG=self.gpus_file, **extra)

    def warm(self, unit):
        """Fill the runtime dir's memos (parsed policy, hook plan) with a `plan UNIT`, as the first
        start since boot does on a real server."""
        os.makedirs(self.runtime, mode=0o755, exist_ok=True)
        self.cortex("plan", unit)

    def cortex(self, *args, check=True, **kw):
        """Run the installed cortex-hook (untimed helper); returns CompletedProcess."""
        kw.setdefault("cwd", CWD)
        r = subprocess.run([CORTEX, *args], env=self.env(), capture_output=True, text=True, timeout=120, **kw)
        if check and r.returncode != 0:
            raise SystemExit(f"bench: cortex-hook {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)
        if self.runroot:
            shutil.rmtree(self.runroot, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


# -- timing -------------------------------------------------------------------------------------
class Step:
    """One timed command: NAME, argv, env; CHECK: the exit codes that count as a good run."""

    def __init__(self, name, argv, env, check=(0,)):
        self.name, self.argv, self.env, self.check = name, list(argv), env, tuple(check)

    def run(self):
        t0 = time.perf_counter()
        r = subprocess.run(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=CWD)
        dt = time.perf_counter() - t0
        if self.check and r.returncode not in self.check:
            raise SystemExit(f"bench: {self.name}: {' '.join(self.argv)} exited {r.returncode}\n"
                             f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
        return dt


def run_interleaved(groups, rounds, warmup=2, progress=True):
    """Run GROUPS (lists of Steps, run in order: e.g. allocate then release) once per round, the
    order of the groups rotated each round. Returns {step name: [seconds, ...]} (warm-up excluded).
    """
    samples = {s.name: [] for g in groups for s in g}
    n = len(groups)
    for r in range(-warmup, rounds):
        order = groups[r % n:] + groups[: r % n] if r >= 0 else groups
        for group in order:
            for step in group:
                dt = step.run()
                if r >= 0:
                    samples[step.name].append(dt)
        if progress and r >= 0 and (r + 1) % 10 == 0:
            log(f"round {r + 1}/{rounds}")
    return samples


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(-(-q * len(v) // 100)) - 1))
    return v[k]


def stats(values):
    import statistics
    return {"n": len(values), "median": statistics.median(values), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values)}


MARKDOWN = False  # set by --markdown: print tables as Markdown (for bench/README.md)


def table(headers, rows, title=None):
    """Print ROWS (lists of cells) under HEADERS, as aligned text or as Markdown."""
    if title:
        print(f"\n{title}")
    cells = [[str(c) for c in r] for r in rows]
    if MARKDOWN:
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
        for r in cells:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(headers))
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))


def print_table(samples, baseline=None, title=None, order=None, extra_baselines=()):
    """Median / p90 / min (ms) per step and median ratios to BASELINE (and EXTRA_BASELINES)."""
    names = [n for n in (order or list(samples)) if samples.get(n)]
    st = {n: stats(samples[n]) for n in names}
    bases = [b for b in ((baseline,) + tuple(extra_baselines)) if b and b in st]
    headers = ["variant", "n", "median ms", "p90 ms", "min ms"] + [f"× {b}" for b in bases]
    rows = []
    for n in names:
        s = st[n]
        rows.append([n, s["n"], f"{s['median'] * 1e3:.1f}", f"{s['p90'] * 1e3:.1f}", f"{s['min'] * 1e3:.1f}"]
                    + [f"{s['median'] / st[b]['median']:.2f}" for b in bases])
    table(headers, rows, title)
    return st


def add_common_args(parser, rounds=30):
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds (default {rounds})")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")


def apply_common_args(args):
    global MARKDOWN
    MARKDOWN = args.markdown


# -- facts about the run ------------------------------------------------------------------------
def machine_info(venv_info=None):
    """One line: date, nproc, python, load average, what was measured."""
    py = subprocess.run([VENV_PY, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                        text=True, env=bench_env()).stdout.strip() if os.path.exists(VENV_PY) else "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), f"nproc {os.cpu_count()}",
             f"python {py}", f"{platform.system()} {platform.release()}", f"loadavg {load}",
             f"state on {_fstype(tempfile.gettempdir())}, runtime dir on {_fstype(TMPFS) if TMPFS else 'the same'}"]
    if venv_info:
        src = venv_info["source"]
        parts.append(f"cortex-hook source {src.get('hash', '?')[:12]} (HEAD {src.get('head', '?')}"
                     f"{' + uncommitted changes' if src.get('dirty') else ''})")
        nv = venv_info["nvitop"]
        if nv.get("ok"):
            parts.append(f"nvitop {nv.get('version')}")
        elif nv.get("why") != "not wanted":
            parts.append("nvitop: not installed")
    return "; ".join(parts)


def _fstype(path):
    """The filesystem type PATH is on (longest mount prefix in /proc/mounts)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc, timeout=10):
    """Stop a process WE started (by its pid): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def setup(want_nvitop=True):
    """Venv + fake driver; returns the venv info (for machine_info)."""
    info = ensure_venv(want_nvitop=want_nvitop)
    build_fake_nvml()
    return info
