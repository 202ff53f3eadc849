"""Readiness probes: is the server up, still loading, or failed? HTTP, plain TCP, or a smoke test.

A probe's `check()` returns a ProbeResult: READY, WAITING (not listening yet, or e.g. llama.cpp's
`503 Loading model`) or FAILED (e.g. Triton's 400 when a model failed to load). Server plugins
build probes for their own endpoints; a policy's `readiness:` URL gives one to any server.
"""

import json
import socket

READY, WAITING, FAILED = "ready", "waiting", "failed"


class ProbeResult:
    """The outcome of one check, with a short detail for STATUS= lines."""

    __slots__ = ("state", "detail")

    def __init__(self, state, detail):
        self.state, self.detail = state, detail

    def __repr__(self):
        return f"ProbeResult({self.state!r}, {self.detail!r})"


def summarize_body(body):
    """A few words from a response body: JSON error/message/status if any, else its first line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        for key in ("error", "message", "status"):
            if isinstance(data.get(key), str):
                return data[key]
    return text.splitlines()[0][:80] if text else ""


class HttpProbe:
    """GET URL; 200 (or READY_CODES) is ready, FAILED_CODES is failed, anything else is waiting."""

    def __init__(self, host, port, path="/health", ready_codes=(200,), failed_codes=(), timeout=3.0,
                 failed_detail=None):
        self.host, self.port, self.path = host, int(port), path or "/"
        self.ready_codes, self.failed_codes = tuple(ready_codes), tuple(failed_codes)
        self.timeout = timeout
        self.failed_detail = failed_detail

    @property
    def label(self):
        return self.path

    def __repr__(self):
        return f"HttpProbe(http://{self.host}:{self.port}{self.path})"

    def check(self):
        import http.client
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"User-Agent": "cortex-hook"})
            resp = conn.getresponse()
            body = resp.read(65536)
        except ConnectionRefusedError:
            return ProbeResult(WAITING, "not listening yet")
        except (OSError, http.client.HTTPException) as exc:
            return ProbeResult(WAITING, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            conn.close()
        words = summarize_body(body)
        detail = f"{resp.status} {words or resp.reason}".strip()
        if resp.status in self.ready_codes:
            return ProbeResult(READY, detail)
        if resp.status in self.failed_codes:
            extra = self.failed_detail() if self.failed_detail else ""
            return ProbeResult(FAILED, f"{detail}{'; ' + extra if extra else ''}")
        return ProbeResult(WAITING, detail)


class TcpProbe:
    """Ready once HOST:PORT accepts a connection."""

    def __init__(self, host, port, timeout=3.0):
        self.host, self.port, self.timeout = host, int(port), timeout

    @property
    def label(self):
        return f"port {self.port}"

    def __repr__(self):
        return f"TcpProbe({self.host}:{self.port})"

    def check(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return ProbeResult(READY, "accepting connections")
        except ConnectionRefusedError:
            return ProbeResult(WAITING, "not listening yet")
        except OSError as exc:
            return ProbeResult(WAITING, str(exc))


def probe_from_url(url):
    """A probe for a policy `readiness:` URL (http://HOST:PORT/PATH or tcp://HOST:PORT)."""
    scheme, _, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    if scheme == "tcp":
        return TcpProbe(host, port)
    return HttpProbe(host, port, "/" + path if slash else "/")


class CompletionSmokeProbe:
    """Ready only once the inner probe is ready AND a one-token completion works (then the inner
    probe alone, e.g. for the watchdog). OpenAI API: the first model of /v1/models."""

    def __init__(self, inner, timeout=60.0):
        self.inner = inner
        self.timeout = timeout
        self.passed = False

    @property
    def label(self):
        return self.inner.label if self.passed else f"{self.inner.label} + one-token completion"

    def __repr__(self):
        return f"CompletionSmokeProbe({self.inner!r})"

    def check(self):
        result = self.inner.check()
        if result.state != READY or self.passed:
            return result
        import http.client
        conn = http.client.HTTPConnection(self.inner.host, self.inner.port, timeout=self.timeout)
        try:
            conn.request("GET", "/v1/models")
            models = json.loads(conn.getresponse().read(1 << 20)).get("data") or [{}]
            body = json.dumps({"model": models[0].get("id"), "prompt": "Hello", "max_tokens": 1})
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read(1 << 20)
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
            return ProbeResult(WAITING, f"one-token completion: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
        if resp.status != 200:
            return ProbeResult(WAITING, f"one-token completion: {resp.status} {summarize_body(answer)}")
        self.passed = True
        return ProbeResult(READY, f"{result.detail}; one-token completion ok")
