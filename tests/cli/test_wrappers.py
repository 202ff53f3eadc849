"""The exec/supervise wrappers and readiness probes, run directly (no systemd): what they do with
their own lease, the status lines, signals and exit codes, against the stand-in server."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from cortex_hook.probe import FAILED, READY, WAITING, HttpProbe, TcpProbe, probe_from_url

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.instruments import STANDIN
from ..helpers.processes import end_group, free_port, read_until, start_group



@pytest.fixture
def served(box, tmp_path):
    """A box whose one service probes the stand-in's /health on a free port."""
    port = free_port()
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy(f"services:\n  - match: '*'\n    readiness: http://127.0.0.1:{port}/health\n")
    box.port = port
    box.standin = [sys.executable, "-u", STANDIN, "--port", str(port), "--record", str(tmp_path / "rec.json")]
    box.record = tmp_path / "rec.json"
    return box


def supervise(box, *server_args):
    return start_group([sys.executable, "-m", "cortex_hook", "supervise", "--unit", "llm", "--",
                        *box.standin, *server_args], env=box.env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)


def test_supervise_waits_reports_and_stops_cleanly(served, tmp_path):
    ready = tmp_path / "loaded"
    proc = supervise(served, "--ready-file", str(ready))
    try:
        lines = read_until(proc.stderr, "503 Loading model")
        assert "cortex-hook: allocating GPUs for llm.service…" in lines
        assert any(l.startswith("cortex-hook: starting python") and uuid_of(0)[:12] in l for l in lines)
        leases = served.json("leases")["leases"]
        assert [(l["unit"], l["pid"]) for l in leases] == [("llm.service", proc.pid)]
        ready.touch()
        line = read_until(proc.stderr, "ready on")[-1]
        assert line == f"cortex-hook: ready on {uuid_of(0)} (priority -)"
        server = json.loads(served.record.read_text())
        assert server["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        end_group(proc)
    assert (tmp_path / "rec.json.signals").read_text() == "SIGTERM\n"  # passed on exactly once
    assert served.json("leases")["leases"] == []  # it took the lease itself, so it gave it back
    assert not os.path.exists(served.env_file("llm.service"))


def test_supervise_fails_with_the_servers_code_when_it_dies_first(served):
    proc = supervise(served, "--exit-before-ready", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert err.strip().splitlines()[-1] == "cortex-hook: server exited with code 3 before it was ready"
    assert served.json("leases")["leases"] == []


def test_supervise_without_gpu_fails_before_starting_anything(served):
    served.write_gpus([gpu_desc(0, temperature=99)])
    proc = supervise(served)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 69
    assert not served.record.exists()  # the server never ran
    assert "failed: llm.service needs 1 GPU" in err


def test_exec_becomes_the_command_with_the_planned_env(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n    visible_devices: index\n")
    code = ("import os, json; print(json.dumps({'pid': os.getpid(), 'argv0': __import__('sys').argv[0], "
            "'env': {k: v for k, v in os.environ.items() if k.startswith(('CUDA', 'CORTEX_GPU'))}}))")
    proc = subprocess.Popen([sys.executable, "-m", "cortex_hook", "exec", "--unit", "job", "--argv0", "my-job",
                             "--", sys.executable, "-c", code], env=box.env(), stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    seen = json.loads(out)
    assert seen["pid"] == proc.pid  # exec: the same process, no wrapper left behind
    assert seen["env"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0", "CORTEX_GPU_COUNT": "1",
                           "CORTEX_GPU_UUIDS": uuid_of(0), "CORTEX_GPU_INDICES": "0"}
    leases = box.json("leases")["leases"]
    assert [(l["unit"], l["pid"], l["alive"]) for l in leases] == [("job.service", proc.pid, False)]
    assert box.json("leases", "--reap")["leases"] == []  # its holder (the server) is gone


def test_exec_reuses_the_lease_of_this_start(box):
    """Under systemd the wrapper finds ExecStartPre's record for its INVOCATION_ID: no new lease."""
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n")
    first = box.json("allocate", "job")  # made outside a cgroup: the record has no invocation id
    from cortex_hook.files import memo
    from cortex_hook.files.record import RECORD_VERSION
    key = (RECORD_VERSION, "job.service")
    record = memo.load(box.runtime, "job.service.record", key)
    record["invocation"] = "0123456789abcdef0123456789abcdef"
    with open(os.path.join(box.runtime, "job.service.record"), "wb") as f:
        f.write(memo.encode(key, record))
    env = box.env(INVOCATION_ID=record["invocation"], CORTEX_HOOK_STATE="/nonexistent/state.db")
    r = subprocess.run([sys.executable, "-m", "cortex_hook", "exec", "--unit", "job", "--", "sh", "-c",
                        "echo $CUDA_VISIBLE_DEVICES"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == first["gpus"][0]  # from the record; the state was never opened


def test_exec_unknown_command_is_one_line(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("exec", "--unit", "job", "--", "no-such-server-binary")
    assert r.returncode == 2
    assert r.stderr.strip().endswith("no-such-server-binary: command not found on PATH=" + box.env()["PATH"])


# -- probes --------------------------------------------------------------------------------------
def test_http_probe_states(tmp_path):
    port = free_port()
    probe = HttpProbe("127.0.0.1", port, "/health", failed_codes=(500,))
    assert (probe.check().state, probe.check().detail) == (WAITING, "not listening yet")
    ready, sick = tmp_path / "ready", tmp_path / "sick"
    server = subprocess.Popen([sys.executable, STANDIN, "--port", str(port), "--ready-file", str(ready),
                               "--unhealthy-file", str(sick)], stdout=subprocess.PIPE, text=True)
    try:
        read_until(server.stdout, "listening")
        result = probe.check()
        assert (result.state, result.detail) == (WAITING, "503 Loading model")
        ready.touch()
        assert (probe.check().state, probe.check().detail) == (READY, "200 ok")
        sick.touch()
        assert (probe.check().state, probe.check().detail) == (FAILED, "500 engine dead")
        assert TcpProbe("127.0.0.1", port).check().state == READY
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_probe_from_url():
    assert repr(probe_from_url("http://127.0.0.1:8000/v2/health/ready")) == \
        "HttpProbe(http://127.0.0.1:8000/v2/health/ready)"
    assert repr(probe_from_url("tcp://localhost:11434")) == "TcpProbe(localhost:11434)"
    assert repr(probe_from_url("http://127.0.0.1:8000")) == "HttpProbe(http://127.0.0.1:8000/)"


def test_http_request_reads_plain_chunked_and_refuses_garbage():
    """The probes' socket HTTP client (no http.client: it would load ssl into every supervisor)."""
    import threading
    from cortex_hook.probe import http_request
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
               b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLoadi\r\n"
               b"7\r\nng mode\r\n1\r\nl\r\n0\r\n\r\n",
               b"SSH-2.0-OpenSSH_9.2\r\n"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(3)
    port = server.getsockname()[1]

    def serve():
        for answer in answers:
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(answer)
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert http_request("127.0.0.1", port, "GET", "/health") == (200, "OK", b"ok")
        assert http_request("127.0.0.1", port, "GET", "/health") == (503, "Service Unavailable", b"Loading model")
        with pytest.raises(ValueError):
            http_request("127.0.0.1", port, "GET", "/")
    finally:
        thread.join(timeout=10)
        server.close()
