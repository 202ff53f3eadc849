"""A stand-in inference server that answers health checks the way llama-server does.

    standin_server.py --host 127.0.0.1 --port 8080 [--ready-file F] [--unhealthy-file F]
                      [--exit-before-ready CODE] [--record FILE] [other args are ignored]

GET /health: 503 {"error": {"message": "Loading model", ...}} until --ready-file exists (at once
without it), then 200 {"status": "ok"}; 500 while --unhealthy-file exists. --record writes
{"argv", "env", "pid", "uid"} as JSON at start, and appends each signal received to FILE.signals.
SIGTERM/SIGINT end it with exit 0 (like a server shutting down cleanly).
"""

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
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


if __name__ == "__main__":
    main()
