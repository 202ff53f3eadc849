"""Where each server plugin probes (host and port from flags, environment, defaults) and when it
calls the server ready, against the stand-in server's flavour of each (a real HTTP server)."""

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from cortex_hook.probe import FAILED, READY, WAITING, CompletionSmokeProbe, HttpProbe

from ..helpers.instruments import STANDIN
from ..helpers.servers import probe_for


# -- probe addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("server, argv, env, host, port", [
    ("llama.cpp", ["llama-server"], {}, "127.0.0.1", 8080),
    ("llama.cpp", ["llama-server", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("llama.cpp", ["llama-server", "--port=18123", "--host=127.0.0.5"], {}, "127.0.0.5", 18123),
    ("llama.cpp", ["llama-server", "--host", "0.0.0.0", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("llama.cpp", ["llama-server"], {"LLAMA_ARG_PORT": "18123", "LLAMA_ARG_HOST": "127.0.0.6"}, "127.0.0.6", 18123),
    ("llama.cpp", ["llama-server", "--port", "18124"], {"LLAMA_ARG_PORT": "18123"}, "127.0.0.1", 18124),
    ("llama.cpp", None, {"LLAMA_ARG_PORT": "18123"}, "127.0.0.1", 18123),
    ("vllm", ["vllm", "serve", "m"], {}, "127.0.0.1", 8000),
    ("vllm", ["vllm", "serve", "m", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("vllm", ["vllm", "serve", "m", "--port=18123", "--host", "::"], {}, "127.0.0.1", 18123),
    ("triton", ["tritonserver"], {}, "127.0.0.1", 8000),
    ("triton", ["tritonserver", "--http-port", "18123"], {}, "127.0.0.1", 18123),
    ("triton", ["tritonserver", "--http-port=18123", "--http-address=127.0.0.7"], {}, "127.0.0.7", 18123),
    ("triton", ["tritonserver", "--grpc-port", "18124"], {}, "127.0.0.1", 8000),
    ("sglang", ["python", "-m", "sglang.launch_server"], {}, "127.0.0.1", 30000),
    ("sglang", ["python", "-m", "sglang.launch_server", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("sglang", ["python", "-m", "sglang.launch_server", "--port=18123"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher"], {}, "127.0.0.1", 3000),
    ("tgi", ["text-generation-launcher", "--port", "18123"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher", "-p", "18123", "--hostname", "0.0.0.0"], {}, "127.0.0.1", 18123),
    ("tgi", ["text-generation-launcher"], {"PORT": "18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {}, "127.0.0.1", 11434),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "127.0.0.1:18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "http://127.0.0.1:18123/"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "0.0.0.0:18123"}, "127.0.0.1", 18123),
    ("ollama", ["ollama", "serve"], {"OLLAMA_HOST": "0.0.0.0"}, "127.0.0.1", 11434),
    ("ollama", ["ollama", "serve", "--port", "18123"], {}, "127.0.0.1", 11434),
], ids=lambda v: v if isinstance(v, str) else None)
def test_probe_address(plugins, server, argv, env, host, port):
    probe = probe_for(plugins, server, argv, env)
    assert isinstance(probe, HttpProbe)
    assert (probe.host, probe.port) == (host, port)


@pytest.mark.parametrize("where", ["launch-env", "unit-env"])
def test_probe_address_from_the_units_environment(plugins, monkeypatch, where):
    """The wrapper runs with the unit's Environment=: the probe reads it as the server does."""
    env = {"LLAMA_ARG_PORT": "18123"}
    if where == "unit-env":
        monkeypatch.setenv("LLAMA_ARG_PORT", "18123")
        env = {}
    probe = probe_for(plugins, "llama.cpp", ["llama-server"], env)
    assert (probe.host, probe.port, probe.path) == ("127.0.0.1", 18123, "/health")


@pytest.mark.parametrize("value, host, port", [
    pytest.param("[::1]:18123", "::1", 18123, id="ipv6-loopback-with-port"),
    pytest.param("http://127.0.0.1", "127.0.0.1", 80, id="scheme-without-port"),
])
def test_ollama_host_parsed_as_ollama_does(plugins, value, host, port):
    """Ollama's envconfig.Host(): net.SplitHostPort strips IPv6 brackets; a scheme without a port
    means 80/443. The probe must knock where `ollama serve` listens."""
    probe = probe_for(plugins, "ollama", ["ollama", "serve"], {"OLLAMA_HOST": value})
    assert (probe.host, probe.port) == (host, port)


@pytest.mark.parametrize("server, path", [("llama.cpp", "/health"), ("vllm", "/health"),
                                          ("triton", "/v2/health/ready"), ("sglang", "/health"),
                                          ("tgi", "/health"), ("ollama", "/")])
def test_probe_paths(plugins, server, path):
    assert probe_for(plugins, server, ["x"]).path == path


def test_vllm_smoke_test_wraps_the_health_probe(plugins):
    probe = probe_for(plugins, "vllm", ["vllm", "serve", "m", "--port", "18123"], options={"smoke_test": True})
    assert isinstance(probe, CompletionSmokeProbe)
    assert (probe.inner.host, probe.inner.port, probe.inner.path) == ("127.0.0.1", 18123, "/health")
    assert isinstance(probe_for(plugins, "vllm", ["vllm"], options={"smoke_test": False}), HttpProbe)


def test_policy_readiness_url_beats_the_plugin(plugins):
    probe = probe_for(plugins, "vllm", ["vllm", "serve", "m", "--port", "18123"], readiness="http://127.0.0.1:18999/ping")
    assert (probe.port, probe.path) == (18999, "/ping")


# -- readiness against the stand-in ------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standin:
    """The stand-in server in a subprocess; stopped by PID."""

    def __init__(self, argv, env=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []

    def wait_for(self, needle, timeout=30.0):
        """Read stdout lines until one contains NEEDLE (polling, no sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if needle in line:
                return line
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        raise AssertionError(f"{needle!r} not seen; stdout: {self.lines}; rc {self.proc.poll()}; stderr: {err}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@contextlib.contextmanager
def standin(argv, env=None):
    s = Standin(argv, env)
    try:
        yield s
    finally:
        s.stop()


def standin_cmd(*args):
    return [sys.executable, "-u", STANDIN, *args]


ADDRESSING = {  # how each server is told to listen on PORT
    "llama.cpp": lambda p: (["llama-server", "--port", str(p)], {}),
    "vllm": lambda p: (["vllm", "serve", "m", "--port", str(p)], {}),
    "triton": lambda p: (["tritonserver", "--http-port", str(p)], {}),
    "sglang": lambda p: (["python", "-m", "sglang.launch_server", "--port", str(p)], {}),
    "tgi": lambda p: (["text-generation-launcher", "--port", str(p)], {}),
    "ollama": lambda p: (["ollama", "serve"], {"OLLAMA_HOST": f"127.0.0.1:{p}"}),
}


@pytest.mark.parametrize("server", sorted(ADDRESSING))
def test_closed_port_is_waiting(plugins, server):
    port = free_port()
    argv, env = ADDRESSING[server](port)
    probe = probe_for(plugins, server, argv, env)
    assert probe.port == port
    result = probe.check()
    assert (result.state, result.detail) == (WAITING, "not listening yet")


def test_llama_loading_then_ready(plugins, tmp_path):
    port, ready, sick = free_port(), tmp_path / "loaded", tmp_path / "sick"
    argv = standin_cmd(f"--port={port}", "--ready-file", str(ready), "--unhealthy-file", str(sick))
    probe = probe_for(plugins, "llama.cpp", argv)
    assert probe.check().state == WAITING
    with standin(argv) as s:
        s.wait_for("listening")
        first = probe.check()
        assert (first.state, first.detail) == (WAITING, "503 Loading model")
        assert probe.check().state == WAITING  # still loading: no change without the file
        ready.touch()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 ok")
        sick.touch()
        assert probe.check().state == WAITING  # llama's plugin never calls a running server failed


def test_vllm_closed_until_ready_then_unhealthy(plugins, tmp_path):
    port, ready, sick = free_port(), tmp_path / "loaded", tmp_path / "dead"
    argv = standin_cmd("--flavour", "vllm", "--model", "tiny", "--port", str(port), "--ready-file", str(ready),
                       "--unhealthy-file", str(sick))
    probe = probe_for(plugins, "vllm", argv)
    with standin(argv) as s:
        s.wait_for("closed until")
        result = probe.check()
        assert (result.state, result.detail) == (WAITING, "not listening yet")
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")
        sick.touch()
        result = probe.check()
        assert result.state != READY and result.detail == "503 Service Unavailable"


def completions(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        rows = [json.loads(line) for line in f]
    return [json.loads(r["body"]) for r in rows if (r["method"], r["path"]) == ("POST", "/v1/completions")]


def test_vllm_smoke_test_ready_only_after_a_completion(plugins, tmp_path):
    port, ready, failing, log = free_port(), tmp_path / "loaded", tmp_path / "failing", str(tmp_path / "req.log")
    failing.touch()
    argv = standin_cmd("--flavour", "vllm", f"--port={port}", "--model", "tiny", "--ready-file", str(ready),
                       "--request-log", log, "--completion-fails", str(failing))
    probe = probe_for(plugins, "vllm", argv, options={"smoke_test": True})
    with standin(argv) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for("listening")
        result = probe.check()  # /health is 200, but the engine cannot generate
        assert result.state == WAITING
        assert result.detail == ("one-token completion: 500 EngineCore encountered an issue. "
                                 "See stack trace for the root cause.")
        assert probe.label == "/health + one-token completion"
        assert completions(log) == [{"model": "tiny", "prompt": "Hello", "max_tokens": 1}]
        failing.unlink()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK; one-token completion ok")
        assert len(completions(log)) == 2
        assert probe.check().state == READY and len(completions(log)) == 2  # once passed: /health alone
        assert probe.label == "/health"


def test_vllm_smoke_test_never_ready_while_completions_fail(plugins, tmp_path):
    port, log = free_port(), str(tmp_path / "req.log")
    argv = standin_cmd("--flavour", "vllm", "--port", str(port), "--model", "tiny", "--request-log", log,
                       "--completion-fails")
    probe = probe_for(plugins, "vllm", argv, options={"smoke_test": True})
    with standin(argv) as s:
        s.wait_for("listening")
        assert HttpProbe("127.0.0.1", port, "/health").check().state == READY  # health alone would say ready
        states = [probe.check().state for _ in range(3)]
        assert states == [WAITING] * 3
        assert len(completions(log)) == 3


def test_triton_closed_until_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "triton", "--model-repository", "/models", "--http-address", "127.0.0.1",
                       "--http-port", str(port), "--grpc-port", "0", "--ready-file", str(ready))
    probe = probe_for(plugins, "triton", argv)
    assert probe.port == port
    with standin(argv) as s:
        s.wait_for("closed until")
        assert (probe.check().state, probe.check().detail) == (WAITING, "not listening yet")
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_triton_broken_model_fails_the_start_naming_it(plugins, tmp_path):
    port = free_port()
    argv = standin_cmd("--flavour", "triton", "--model-repository", "/models", f"--http-port={port}",
                       "--exit-on-error=false", "--broken-model", "broken")
    probe = probe_for(plugins, "triton", argv)
    with standin(argv) as s:
        s.wait_for("listening")
        result = probe.check()
    assert result.state == FAILED
    assert result.detail.startswith("400 Bad Request; model broken unavailable: Internal: RuntimeError: "
                                    "cortex-hook test model: deliberately broken, fails to load"), result.detail
    assert "identity" not in result.detail  # the model that loaded is not blamed


def test_triton_broken_model_with_exit_on_error_never_listens(plugins, tmp_path):
    """Triton's default (--exit-on-error=true): exit 1, the port never opens (the stand-in too)."""
    port = free_port()
    argv = standin_cmd("--flavour", "triton", f"--http-port={port}", "--exit-on-error=true", "--broken-model", "b")
    with standin(argv) as s:
        assert s.proc.wait(timeout=30) == 1
        assert probe_for(plugins, "triton", argv).check().detail == "not listening yet"


def test_tgi_loading_then_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "tgi", "--model-id", "/models/m", "-p", str(port), "--ready-file", str(ready))
    probe = probe_for(plugins, "tgi", argv)
    with standin(argv) as s:
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (WAITING, "503 unhealthy")
        ready.touch()
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_sglang_closed_until_ready(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "loaded"
    argv = standin_cmd("--flavour", "sglang", "--model-path", "/models/m", "--port", str(port),
                       "--ready-file", str(ready))
    probe = probe_for(plugins, "sglang", argv)
    with standin(argv) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for("listening")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 OK")


def test_ollama_ready_on_ollama_host(plugins, tmp_path):
    port, ready = free_port(), tmp_path / "up"
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}"}
    argv = standin_cmd("--flavour", "ollama", "serve", "--ready-file", str(ready))
    probe = probe_for(plugins, "ollama", argv, env)
    assert probe.port == port
    with standin(argv, env) as s:
        s.wait_for("closed until")
        assert probe.check().detail == "not listening yet"
        ready.touch()
        s.wait_for(f"listening on 127.0.0.1:{port}")
        result = probe.check()
        assert (result.state, result.detail) == (READY, "200 Ollama is running")


def test_standin_flavour_stops_cleanly_on_sigterm(tmp_path):
    port, record = free_port(), str(tmp_path / "rec.json")
    with standin(standin_cmd("--flavour", "sglang", "--port", str(port), "--record", record)) as s:
        s.wait_for("listening")
        os.kill(s.proc.pid, signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0
    with open(record + ".signals") as f:
        assert f.read() == "SIGTERM\n"
    with open(record) as f:
        assert json.load(f)["flavour"] == "sglang"


def test_standin_default_is_still_llama(tmp_path):
    """No --flavour: the llama.cpp answers other tests rely on, byte for byte."""
    port = free_port()
    with standin(standin_cmd("--host", "127.0.0.1", "--port", str(port))) as s:
        assert s.wait_for("listening") == f"standin: listening on 127.0.0.1:{port}\n"
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert (resp.status, resp.read(), resp.version) == (200, b'{"status": "ok"}', 10)
            conn.close()
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            assert resp.status == 404 and json.loads(resp.read())["error"]["message"] == "File Not Found"
        finally:
            conn.close()
