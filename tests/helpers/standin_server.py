"""A stand-in inference server that answers health checks the way llama-server does.

    standin_server.py --host 127.0.0.1 --port 8080 [--ready-file F] [--unhealthy-file F]
                      [--exit-before-ready CODE] [--record FILE] [other args are ignored]

GET /health: 503 {"error": {"message": "Loading model", ...}} until --ready-file exists (at once
without it), then 200 {"status": "ok"}; 500 while --unhealthy-file exists. --record writes
{"argv", "env", "pid", "uid"} as JSON at start, and appends each signal received to FILE.signals.
SIGTERM/SIGINT end it with exit 0 (like a server shutting down cleanly).

--flavour llama|vllm|triton|tgi|sglang|ollama: answer as that server does (FACTS.md section 3 and
tests/realservers/README.md: what the real servers answered here). `llama` (the default) is all of
the above, unchanged. The other flavours always bind to loopback unless told otherwise, keep
--ready-file, --unhealthy-file, --exit-before-ready and --record, print "standin: listening on
HOST:PORT (FLAVOUR)" once the port is open, and take --request-log FILE (one JSON line per request:
method, path, body). Unknown arguments are still ignored, so a real server's command line works.

  vllm    --host/--port (default 8000), --model ID (default standin-model). The port stays CLOSED
          until --ready-file exists. GET /health 200 empty body, 503 empty once --unhealthy-file
          exists. GET /v1/models lists ID. POST /v1/completions: 200 one-token completion; 404 for
          another model; 500 while `--completion-fails [FILE]` (always without FILE, else while
          FILE exists).
  triton  --http-address/--http-port (default 8000); port CLOSED until --ready-file exists.
          GET /v2/health/live 200 empty; GET /v2/health/ready 200 empty, or 400 empty when a
          `--broken-model NAME` is given (as with --exit-on-error=false; an explicit
          --exit-on-error=true exits 1 instead, as Triton does). POST /v2/repository/index lists
          `--ready-model NAME` (default identity) READY and each broken model UNAVAILABLE with a
          reason; GET on it is 405. GET /v2/models/NAME/ready 200, or 400 for a broken model.
  tgi     --hostname/--port/-p (default 3000). GET /health 503
          {"error":"unhealthy","error_type":"healthcheck"} until --ready-file exists (and while
          --unhealthy-file exists), then 200 empty.
  sglang  --host/--port (default 30000); port CLOSED until --ready-file exists. GET /health 200
          empty (503 empty while --unhealthy-file exists); GET /health_generate 200.
  ollama  listens on OLLAMA_HOST ([scheme://]host[:port], default 127.0.0.1:11434); port CLOSED
          until --ready-file exists. GET (or HEAD) / 200 "Ollama is running" (text/plain).
"""

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    flavour = _flavour_of(sys.argv[1:])
    if flavour != "llama":
        return serve_flavour(flavour)
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--ready-file")
    p.add_argument("--unhealthy-file")
    p.add_argument("--exit-before-ready", type=int)
    p.add_argument("--record")
    args, _unknown = p.parse_known_args()

    if args.record:
        with open(args.record + ".tmp", "w") as f:
            json.dump({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid(), "uid": os.getuid()}, f)
        os.replace(args.record + ".tmp", args.record)

    def on_signal(signum, frame):
        if args.record:
            with open(args.record + ".signals", "a") as f:
                f.write(f"{signal.Signals(signum).name}\n")
        threading.Thread(target=server.shutdown, daemon=True).start()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health":
                return self.reply(404, {"error": {"message": "File Not Found", "code": 404}})
            if args.unhealthy_file and os.path.exists(args.unhealthy_file):
                return self.reply(500, {"error": {"message": "engine dead", "code": 500}})
            if args.ready_file and not os.path.exists(args.ready_file):
                return self.reply(503, {"error": {"message": "Loading model", "type": "unavailable_error",
                                                  "code": 503}})
            return self.reply(200, {"status": "ok"})

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Health)
    if args.exit_before_ready is not None:
        print(f"standin: failing to load the model (exit {args.exit_before_ready})", flush=True)
        sys.exit(args.exit_before_ready)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"standin: listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    sys.exit(0)



# -- --flavour: the other servers ------------------------------------------------------------------
FLAVOURS = ("llama", "vllm", "triton", "tgi", "sglang", "ollama")
CLOSED_UNTIL_READY = ("vllm", "triton", "sglang", "ollama")  # no listening socket while loading
BROKEN_REASON = ("Internal: RuntimeError: cortex-hook test model: deliberately broken, fails to load\n\n"
                 "At:\n  /models/triton-broken-repo/{name}/1/model.py(6): initialize\n")
JSON_TYPE = "application/json"


def _flavour_of(argv):
    """The --flavour asked for (llama when none): parsed apart, so llama's own parsing is untouched."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--flavour", choices=FLAVOURS, default="llama")
    return pre.parse_known_args(argv)[0].flavour


def _flavour_parser(flavour):
    p = argparse.ArgumentParser(prog=f"standin_server.py --flavour {flavour}", allow_abbrev=False)
    p.add_argument("--flavour")
    if flavour == "triton":
        p.add_argument("--http-address", dest="host", default="127.0.0.1")
        p.add_argument("--http-port", dest="port", type=int, default=8000)
        p.add_argument("--broken-model", action="append", default=[])
        p.add_argument("--ready-model", action="append", default=[])
        p.add_argument("--exit-on-error")
    elif flavour == "tgi":
        p.add_argument("--hostname", dest="host", default="127.0.0.1")
        p.add_argument("--port", "-p", type=int, default=3000)
    elif flavour in ("vllm", "sglang"):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000 if flavour == "vllm" else 30000)
    if flavour == "vllm":
        p.add_argument("--model", default="standin-model")
        p.add_argument("--completion-fails", nargs="?", const=True, default=None)
    p.add_argument("--ready-file")
    p.add_argument("--unhealthy-file")
    p.add_argument("--exit-before-ready", type=int)
    p.add_argument("--record")
    p.add_argument("--request-log")
    return p


def _ollama_bind(value):
    """Where `ollama serve` listens for OLLAMA_HOST (the stand-in needs host:port or a bare host)."""
    text = (value or "").strip().split("://", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host or "127.0.0.1", int(port) if port.isdigit() else 11434


def _exists(path):
    return bool(path) and os.path.exists(path)


def _vllm(args, method, path, body):
    if path == "/health" and method == "GET":
        return (503, b"", None) if _exists(args.unhealthy_file) else (200, b"", None)
    if path == "/v1/models" and method == "GET":
        return 200, {"object": "list", "data": [{"id": args.model, "object": "model", "created": 0,
                                                 "owned_by": "vllm", "root": args.model, "parent": None,
                                                 "max_model_len": 256}]}, JSON_TYPE
    if path == "/v1/completions" and method == "POST":
        try:
            req = json.loads(body or b"null")
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return 400, {"error": {"message": "invalid JSON body", "type": "BadRequestError", "param": None,
                                   "code": 400}}, JSON_TYPE
        if req.get("model") != args.model:
            return 404, {"error": {"message": f"The model `{req.get('model')}` does not exist.",
                                   "type": "NotFoundError", "param": "model", "code": 404}}, JSON_TYPE
        fails = args.completion_fails
        if fails is True or (isinstance(fails, str) and os.path.exists(fails)):
            return 500, {"error": {"message": "EngineCore encountered an issue. See stack trace for the root cause.",
                                   "type": "InternalServerError", "param": None, "code": 500}}, JSON_TYPE
        return 200, {"id": "cmpl-standin", "object": "text_completion", "created": 0, "model": args.model,
                     "choices": [{"index": 0, "text": " hi", "logprobs": None, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 2, "total_tokens": 3, "completion_tokens": 1}}, JSON_TYPE
    if path in ("/health", "/v1/models", "/v1/completions"):
        return 405, {"detail": "Method Not Allowed"}, JSON_TYPE
    return 404, {"detail": "Not Found"}, JSON_TYPE


def _triton(args, method, path, body):
    ready = list(args.ready_model or ["identity"])
    broken = list(args.broken_model)
    if path in ("/v2/health/live", "/v2/health/ready") and method == "GET":
        return (400 if broken and path.endswith("ready") else 200), b"", None
    if path == "/v2/repository/index":
        if method != "POST":
            return 405, {"error": "Method Not Allowed"}, JSON_TYPE
        index = [{"name": n, "version": "1", "state": "READY"} for n in ready if n not in broken]
        index += [{"name": n, "version": "1", "state": "UNAVAILABLE", "reason": BROKEN_REASON.format(name=n)}
                  for n in broken]
        return 200, sorted(index, key=lambda m: m["name"]), JSON_TYPE
    parts = path.split("/")
    if len(parts) >= 4 and parts[1:3] == ["v2", "models"] and method == "GET":
        name, rest = parts[3], parts[4:]
        if rest == ["ready"]:
            if name in broken:
                return 400, {"error": "Model version not ready"}, JSON_TYPE
            if name in ready:
                return 200, b"", None
        elif not rest and name in ready and name not in broken:
            return 200, {"name": name, "versions": ["1"], "platform": "python",
                         "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
                         "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]}, JSON_TYPE
        return 404, {"error": f"Request for unknown model: '{name}' has no available versions"}, JSON_TYPE
    if path == "/v2" and method == "GET":
        return 200, {"name": "triton", "version": "2.51.0", "extensions": ["model_repository"]}, JSON_TYPE
    return 404, {"error": "Not Found"}, JSON_TYPE


def _tgi(args, method, path, body):
    if path == "/health" and method == "GET":
        loading = bool(args.ready_file) and not os.path.exists(args.ready_file)
        if loading or _exists(args.unhealthy_file):
            return 503, {"error": "unhealthy", "error_type": "healthcheck"}, JSON_TYPE
        return 200, b"", None
    if path == "/info" and method == "GET":
        return 200, {"model_id": "standin-model", "version": "standin"}, JSON_TYPE
    return 404, b"", None


def _sglang(args, method, path, body):
    if path in ("/health", "/health_generate") and method == "GET":
        return (503, b"", None) if _exists(args.unhealthy_file) else (200, b"", None)
    return 404, {"detail": "Not Found"}, JSON_TYPE


def _ollama(args, method, path, body):
    if path == "/" and method in ("GET", "HEAD"):
        return 200, b"Ollama is running", "text/plain; charset=utf-8"
    if path == "/api/version" and method == "GET":
        return 200, {"version": "0.0.0-standin"}, JSON_TYPE
    if path == "/api/tags" and method == "GET":
        return 200, {"models": []}, JSON_TYPE
    return 404, b"404 page not found", "text/plain"


ROUTES = {"vllm": _vllm, "triton": _triton, "tgi": _tgi, "sglang": _sglang, "ollama": _ollama}


def serve_flavour(flavour):
    """Run the stand-in as FLAVOUR (see the module docstring); exits like `main`."""
    args, _unknown = _flavour_parser(flavour).parse_known_args()
    if flavour == "ollama":
        args.host, args.port = _ollama_bind(os.environ.get("OLLAMA_HOST"))

    if args.record:
        with open(args.record + ".tmp", "w") as f:
            json.dump({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid(), "uid": os.getuid(),
                       "flavour": flavour}, f)
        os.replace(args.record + ".tmp", args.record)

    stop = threading.Event()
    holder = {}
    log_lock = threading.Lock()

    def on_signal(signum, frame):
        if args.record:
            with open(args.record + ".signals", "a") as f:
                f.write(f"{signal.Signals(signum).name}\n")
        stop.set()
        if "server" in holder:
            threading.Thread(target=holder["server"].shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.exit_before_ready is not None:
        print(f"standin: failing to load the model (exit {args.exit_before_ready})", flush=True)
        sys.exit(args.exit_before_ready)
    if flavour == "triton" and args.broken_model and str(args.exit_on_error).lower() in ("true", "1", "yes"):
        print("error: creating server: Internal - failed to load all models", file=sys.stderr, flush=True)
        sys.exit(1)
    if flavour in CLOSED_UNTIL_READY and args.ready_file:
        print(f"standin: loading; port {args.port} closed until {args.ready_file} exists ({flavour})", flush=True)
        while not os.path.exists(args.ready_file):
            if stop.wait(0.02):
                sys.exit(0)

    route = ROUTES[flavour]

    class Flavoured(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            path = self.path.split("?", 1)[0]
            if args.request_log:
                with log_lock, open(args.request_log, "a") as f:
                    f.write(json.dumps({"method": self.command, "path": path,
                                        "body": body.decode("utf-8", "replace")}) + "\n")
            code, payload, ctype = route(args, self.command, path, body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(code)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = handle_any

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Flavoured)
    holder["server"] = server
    if stop.is_set():
        sys.exit(0)
    print(f"standin: listening on {args.host}:{server.server_address[1]} ({flavour})", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
