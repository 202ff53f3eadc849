"""cortex-hook supervise in front of the REAL llama-server, vLLM (CPU) and Triton, with tiny
random-weight models and GPUs from the fake NVML driver: READY only after the server's own health
endpoint says so, the env and argv as planned, stop releases the lease, a broken model fails the
start with a clear status and no lease. llama-server also runs under the real systemd.

Run with `make e2e` (provisions the servers into ~/.cache/cortex-hook-e2e first).
"""

import http.client
import signal
import subprocess
import sys

import pytest

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.processes import end_group, free_port, read_until, start_group

pytestmark = pytest.mark.realserver


def health(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def server_of(supervisor_pid):
    with open(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children") as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(x.decode().split("=", 1) for x in f.read().split(b"\0") if b"=" in x)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [x.decode() for x in f.read().split(b"\0")[:-1]]
    return pid, env, argv


@pytest.fixture
def nvml(nvml_box):
    nvml_box.write_gpus([gpu_desc(0, memory_total="24GiB"), gpu_desc(1, memory_total="48GiB")])
    return nvml_box


def run_supervised(box, server, gpus, command, extra_policy="", timeout=240, **env):
    """Supervise COMMAND until it reports ready; returns (process, its status lines so far)."""
    box.write_policy(f"services:\n  - match: llm.service\n    server: {server}\n    gpus: {gpus}\n{extra_policy}",
                     inventory="nvml")
    proc = start_group([sys.executable, "-m", "cortex_hook", "supervise", "--unit", "llm", "--", *command],
                       env=box.env(**env), stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(proc.stderr, "ready on", timeout=timeout)
    except AssertionError:
        end_group(proc)
        raise
    return proc, lines


def stop(proc, box):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert box.json("leases")["leases"] == []


def test_llama_server(nvml, e2e_cache):
    port = free_port()
    cmd = [f"{e2e_cache}/bin/llama-server", "-m", f"{e2e_cache}/models/tiny-llama.gguf", "--host", "127.0.0.1",
           "--port", str(port), "-c", "256"]
    proc, lines = run_supervised(nvml, "llama.cpp", 2, cmd)
    try:
        assert health(port, "/health") == 200  # what READY=1 was based on, still true
        pid, env, argv = server_of(proc.pid)
        assert env["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(0)},{uuid_of(1)}"
        assert env["GGML_VK_VISIBLE_DEVICES"] == "0,1"
        assert argv[-4:] == ["--tensor-split", "24,48", "--main-gpu", "0"]  # the real server took them
        assert lines[-1] == f"cortex-hook: ready on {uuid_of(0)},{uuid_of(1)} (priority -, -)"
    finally:
        stop(proc, nvml)


def test_llama_server_broken_model_fails_the_start(nvml, e2e_cache, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    nvml.write_policy("services:\n  - match: llm.service\n    server: llama.cpp\n", inventory="nvml")
    r = subprocess.run([sys.executable, "-m", "cortex_hook", "supervise", "--unit", "llm", "--",
                        f"{e2e_cache}/bin/llama-server", "-m", str(broken), "--port", str(free_port())],
                       env=nvml.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "cortex-hook: server exited with code 1 before it was ready" in r.stderr.splitlines()
    assert nvml.json("leases")["leases"] == []


def test_vllm(nvml, e2e_cache):
    port = free_port()
    cmd = [f"{e2e_cache}/venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server",
           "--model", f"{e2e_cache}/models/tiny-llama-hf", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "256", "--enforce-eager"]
    proc, lines = run_supervised(nvml, "vllm", 1, cmd, "    options: {smoke_test: true}\n", timeout=600,
                                 HF_HUB_OFFLINE=1, VLLM_CPU_KVCACHE_SPACE=1)
    try:
        assert any("waiting for /health + one-token completion: not listening yet" in l for l in lines)
        assert lines[-1].startswith("cortex-hook: ready on GPU-00000000")
        assert health(port, "/health") == 200
        pid, env, argv = server_of(proc.pid)
        assert env["CUDA_VISIBLE_DEVICES"] == "0"  # an index: vLLM crashes on UUIDs
        assert argv[-2:] == ["--tensor-parallel-size", "1"]
    finally:
        stop(proc, nvml)


def test_triton(nvml, e2e_cache):
    port = free_port()
    cmd = [f"{e2e_cache}/bin/tritonserver", f"--model-repository={e2e_cache}/models/triton-repo",
           "--http-address=127.0.0.1", f"--http-port={port}", "--allow-grpc=false", "--allow-metrics=false"]
    proc, lines = run_supervised(nvml, "triton", 1, cmd, "    options: {cuda_memory_pool: 64MiB}\n")
    try:
        assert health(port, "/v2/health/ready") == 200
        pid, env, argv = server_of(proc.pid)
        assert env["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
        assert argv[-1] == f"--cuda-memory-pool-byte-size=0:{64 * 2**20}"
    finally:
        stop(proc, nvml)


def test_triton_broken_model_fails_the_start_naming_it(nvml, e2e_cache):
    port = free_port()
    nvml.write_policy("services:\n  - match: llm.service\n    server: triton\n", inventory="nvml")
    r = subprocess.run([sys.executable, "-m", "cortex_hook", "supervise", "--unit", "llm", "--",
                        f"{e2e_cache}/bin/tritonserver", f"--model-repository={e2e_cache}/models/triton-broken-repo",
                        "--http-address=127.0.0.1", f"--http-port={port}", "--allow-grpc=false",
                        "--allow-metrics=false", "--exit-on-error=false"],
                       env=nvml.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    ours = [l for l in r.stderr.splitlines() if l.startswith("cortex-hook: failed:")]  # Triton logs too
    assert len(ours) == 1, r.stderr
    assert ours[0].startswith("cortex-hook: failed: /v2/health/ready: 400")
    assert "model broken unavailable" in ours[0] and "deliberately broken" in ours[0]
    assert nvml.json("leases")["leases"] == []


def test_llama_server_under_systemd(sandbox, nvml, e2e_cache):
    """The real llama-server as a supervised unit of the real systemd: start returns once it is
    ready, the main process is the wrapper, the server has the planned GPUs, stop releases."""
    from ..helpers.sandbox import Host, host_root
    with host_root(sandbox) as root:
        host = Host(sandbox, root, nvml.lib)
        host.setup("services:\n  - match: llama.service\n    server: llama.cpp\n")
        sandbox.write_unit("llama.service", f"[Service]\nExecStart={e2e_cache}/bin/llama-server -m "
                                            f"{e2e_cache}/models/tiny-llama.gguf --host 127.0.0.1 --port 8080 -c 256\n")
        host.install("llama.service", "supervise")
        sandbox.daemon_reload()
        sandbox.systemctl("start", "llama.service", check=True)
        st = sandbox.show("llama.service", "ActiveState", "StatusText", "MainPID")
        assert st["ActiveState"] == "active"
        assert st["StatusText"] == f"ready on {uuid_of(0)} (priority -)"
        assert sandbox.run("python3", "-c", "import urllib.request as u; print(u.urlopen("
                           "'http://127.0.0.1:8080/health').status)").stdout.strip() == "200"
        (server,) = sandbox.children(int(st["MainPID"]))
        assert sandbox.environ(server)["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
        sandbox.stop("llama.service")  # and wait for its lease unit's release
        assert sandbox.prop("llama.service", "Result") == "success"
        assert host.leases() == []
