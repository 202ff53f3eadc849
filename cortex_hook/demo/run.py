"""`cortex-hook demo`: the main job on a simulated box, told as a sysadmin would do it.

Every step is a real `cortex-hook` command (run in-process) against a throw-away state dir, so the
output is exactly what those commands print on a server.
"""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

STEPS = [
    ("The box: 6 GPUs as the driver sees them (simulated)", [["status"]]),
    ("The admin's order: the 24 GB L4s first (small jobs), then the H100 NVLink pair", [
        ["priority", "order", "2", "3", "0", "1"]]),
    ("chat.service (llama.cpp, critical) starts: ExecStartPre=+cortex-hook allocate %n", [
        ["allocate", "chat.service"]]),
    ("vllm@llama-70b.service (vLLM, 2 GPUs with 90% free, prefer NVLink) starts", [
        ["allocate", "vllm@llama-70b.service"]]),
    ("triton.service starts: its reserved L4 is waiting for it", [["allocate", "triton.service"]]),
    ("A second vLLM model starts: nothing suitable is left, so its start fails (exit 69)", [
        ["allocate", "vllm@mistral-7b.service"]]),
    ("Who holds what", [["status"]]),
    ("vllm@llama-70b stops (ExecStopPost=+cortex-hook release %n); the second model retries", [
        ["release", "vllm@llama-70b.service"], ["allocate", "vllm@mistral-7b.service"]]),
    ("Everything stops: every GPU is given back", [
        ["release", "chat.service"], ["release", "triton.service"], ["release", "vllm@mistral-7b.service"],
        ["leases"]]),
]


def run_demo(keep=None):
    """Run the demo in a temp dir (or KEEP); returns 0 when every step behaved as described."""
    from ..cli import main

    workdir = keep or tempfile.mkdtemp(prefix="cortex-hook-demo-")
    os.makedirs(workdir, exist_ok=True)
    for name in ("policy.yaml", "gpus.yaml"):
        shutil.copyfile(os.path.join(HERE, name), os.path.join(workdir, name))
        os.chmod(os.path.join(workdir, name), 0o644)
    env = {
        "CORTEX_HOOK_POLICY": os.path.join(workdir, "policy.yaml"),
        "CORTEX_HOOK_STATE": os.path.join(workdir, "state", "state.db"),
        "CORTEX_HOOK_RUNTIME_DIR": os.path.join(workdir, "run"),
    }
    saved = {k: os.environ.get(k) for k in list(env) + ["CUDA_VISIBLE_DEVICES", "CORTEX_HOOK_UNIT"]}
    os.environ.update(env)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # the demo box has no outer allocator
    os.environ.pop("CORTEX_HOOK_UNIT", None)
    print("cortex-hook demo: a simulated 6-GPU box, a sample policy, a throw-away state dir.")
    print(f"  policy: {env['CORTEX_HOOK_POLICY']}")
    print(f"  (every command below runs for real with CORTEX_HOOK_POLICY/STATE/RUNTIME_DIR set to {workdir})")
    expected = {"allocate vllm@mistral-7b.service": [69, 0]}
    failures = []
    try:
        for title, commands in STEPS:
            print(f"\n== {title}")
            for argv in commands:
                key = " ".join(argv)
                print(f"$ cortex-hook {key}")
                sys.stdout.flush()
                rc = main(argv)
                sys.stderr.flush()
                want = expected.get(key)
                ok = rc == (want.pop(0) if want else 0)
                if rc:
                    print(f"(exit {rc})")
                if not ok:
                    failures.append(f"{key}: exit {rc}")
                if argv[0] == "allocate" and rc == 0:
                    path = os.path.join(env["CORTEX_HOOK_RUNTIME_DIR"], argv[1] + ".env")
                    print(f"--- {path} (EnvironmentFile= of the unit)")
                    with open(path) as f:
                        print(f.read().rstrip())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print("\ndemo: unexpected results: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("\ndemo finished: every GPU was chosen, explained and given back.")
    return 0
