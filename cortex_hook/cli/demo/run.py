"""`cortex-hook demo`: the main job on a simulated box, told as a sysadmin would do it.

Every step is a real `cortex-hook` command, in its own process, against a throw-away state dir,
so the output is exactly what those commands print on a server.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

STEPS = [
    ("The box: 6 GPUs as the driver sees them (simulated)", [["status"]]),
    ("The admin's order: the 24 GB L4s first (small jobs), then the H100 NVLink pair", [
        ["priority", "order", "2", "3", "0", "1"]]),
    ("chat.service (llama.cpp, critical) starts: its lease unit runs `cortex-hook allocate`", [
        ["allocate", "chat.service"]]),
    ("vllm@llama-70b.service (vLLM, 2 GPUs with 90% free, prefer NVLink) starts", [
        ["allocate", "vllm@llama-70b.service"]]),
    ("triton.service starts: its reserved L4 is waiting for it", [["allocate", "triton.service"]]),
    ("A second vLLM model starts: nothing suitable is left, so its start fails (exit 69)", [
        ["allocate", "vllm@mistral-7b.service"]]),
    ("Who holds what", [["status"]]),
    ("vllm@llama-70b stops (its lease unit runs `cortex-hook release`); the second model retries", [
        ["release", "vllm@llama-70b.service"], ["allocate", "vllm@mistral-7b.service"]]),
    ("Everything stops: every GPU is given back", [
        ["release", "chat.service"], ["release", "triton.service"], ["release", "vllm@mistral-7b.service"],
        ["leases"]]),
]


def run_demo(keep=None):
    """Run the demo in a temp dir (or KEEP); returns 0 when every step behaved as described."""
    workdir = keep or tempfile.mkdtemp(prefix="cortex-hook-demo-")
    os.makedirs(workdir, exist_ok=True)
    for name in ("policy.yaml", "gpus.yaml"):
        shutil.copyfile(os.path.join(HERE, name), os.path.join(workdir, name))
        os.chmod(os.path.join(workdir, name), 0o644)
    paths = {"--policy": os.path.join(workdir, "policy.yaml"),
             "--state": os.path.join(workdir, "state", "state.db"),
             "--runtime-dir": os.path.join(workdir, "run")}
    flags = [word for pair in paths.items() for word in pair]
    # every step is its own process, as on a server; the demo box has no outer allocator
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "CORTEX_HOOK_UNIT", "NOTIFY_SOCKET", "INVOCATION_ID")}
    print("cortex-hook demo: a simulated 6-GPU box, a sample policy, a throw-away state dir.")
    print(f"  policy: {paths['--policy']}")
    print(f"  (every command below runs for real, with --policy, --state and --runtime-dir in {workdir})")
    expected = {"allocate vllm@mistral-7b.service": [69, 0]}
    failures = []
    try:
        for title, commands in STEPS:
            print(f"\n== {title}")
            for argv in commands:
                key = " ".join(argv)
                print(f"$ cortex-hook {key}", flush=True)
                rc = subprocess.run([sys.executable, "-m", "cortex_hook", *flags, *argv], env=env).returncode
                want = expected.get(key)
                if rc:
                    print(f"(exit {rc})")
                if rc != (want.pop(0) if want else 0):
                    failures.append(f"{key}: exit {rc}")
                if argv[0] == "allocate" and rc == 0:
                    path = os.path.join(paths["--runtime-dir"], argv[1] + ".env")
                    print(f"--- {path} (EnvironmentFile= of the unit)")
                    with open(path) as f:
                        print(f.read().rstrip(), flush=True)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print("\ndemo: unexpected results: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("\ndemo finished: every GPU was chosen, explained and given back.")
    return 0
