"""Readiness probes: is the server up, still loading, or failed? HTTP, plain TCP, or a smoke test.

A probe's `check()` returns a ProbeResult: READY, WAITING (not listening yet, or e.g. llama.cpp's
`503 Loading model`) or FAILED (e.g. Triton's 400 when a model failed to load). Server plugins
build probes for their own endpoints; a policy's `readiness:` URL gives one to any server.
"""

import json
import socket

READY, WAITING, FAILED = "ready", "waiting", "failed"
MAX_BODY = 1 << 20


def http_request(host, port, method="GET", path="/", body=None, timeout=3.0):
    """(status, reason, body bytes) of one HTTP/1.0 request over a plain socket.

    Deliberately not http.client: it imports ssl, which would add ~6 MiB to every long-lived
    supervisor for probing plain-HTTP health endpoints on loopback. Raises OSError (including
    ConnectionRefusedError) or ValueError for a malformed answer.
    """
    payload = body or b""
    head = (f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: cortex-hook\r\n"
            f"Accept: */*\r\nConnection: close\r\n")
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(head.encode("latin-1") + b"\r\n" + payload)
        chunks, size = [], 0
        while size <= MAX_BODY:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    raw = b"".join(chunks)
    header, sep, content = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    if b"transfer-encoding: chunked" in header.lower():
        content = _dechunk(content)
    return int(parts[1]), parts[2] if len(parts) > 2 else "", content


def _dechunk(data):
    out, pos = [], 0
    while pos < len(data):
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            break
        size = int(data[pos:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(data[line_end + 2:line_end + 2 + size])
        pos = line_end + 2 + size + 2
    return b"".join(out)


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
        """The path it asks, for STATUS= lines."""
        return self.path

    def __repr__(self):
        return f"HttpProbe(http://{self.host}:{self.port}{self.path})"

    def check(self):
        """GET the path once: READY, WAITING or FAILED with a short detail."""
        try:
            status, reason, body = http_request(self.host, self.port, "GET", self.path, timeout=self.timeout)
        except ConnectionRefusedError:
            return ProbeResult(WAITING, "not listening yet")
        except (OSError, ValueError) as exc:
            return ProbeResult(WAITING, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        words = summarize_body(body)
        detail = f"{status} {words or reason}".strip()
        if status in self.ready_codes:
            return ProbeResult(READY, detail)
        if status in self.failed_codes:
            extra = self.failed_detail() if self.failed_detail else ""
            return ProbeResult(FAILED, f"{detail}{'; ' + extra if extra else ''}")
        return ProbeResult(WAITING, detail)


class TcpProbe:
    """Ready once HOST:PORT accepts a connection."""

    def __init__(self, host, port, timeout=3.0):
        self.host, self.port, self.timeout = host, int(port), timeout

    @property
    def label(self):
        """The port it knocks on, for STATUS= lines."""
        return f"port {self.port}"

    def __repr__(self):
        return f"TcpProbe({self.host}:{self.port})"

    def check(self):
        """Try to connect once: READY once the port accepts."""
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
        """What it is waiting for, for STATUS= lines."""
        return self.inner.label if self.passed else f"{self.inner.label} + one-token completion"

    def __repr__(self):
        return f"CompletionSmokeProbe({self.inner!r})"

    def check(self):
        """The inner probe, then (once) a one-token completion."""
        result = self.inner.check()
        if result.state != READY or self.passed:
            return result
        host, port = self.inner.host, self.inner.port
        try:
            _, _, listing = http_request(host, port, "GET", "/v1/models", timeout=self.timeout)
            models = json.loads(listing).get("data") or [{}]
            body = json.dumps({"model": models[0].get("id"), "prompt": "Hello", "max_tokens": 1}).encode()
            status, _, answer = http_request(host, port, "POST", "/v1/completions", body, timeout=self.timeout)
        except (OSError, ValueError, AttributeError) as exc:
            return ProbeResult(WAITING, f"one-token completion: {type(exc).__name__}: {exc}")
        if status != 200:
            return ProbeResult(WAITING, f"one-token completion: {status} {summarize_body(answer)}")
        self.passed = True
        return ProbeResult(READY, f"{result.detail}; one-token completion ok")
