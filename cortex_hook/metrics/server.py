"""The monitor's /metrics endpoint: a small HTTP server on the address the policy gives
(`metrics: listen:`), in threads of its own, so a scrape never waits for the monitor's loop, the
loop never waits for a scrape, and a client that connects and stays silent holds only its own
thread, for at most CLIENT_TIMEOUT_S. Each scrape reads the state afresh (its own connection) and
takes the GPUs from the monitor's last poll: a scrape never asks the driver, so a hung driver
cannot hang it."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .exposition import CONTENT_TYPE

CLIENT_TIMEOUT_S = 10  # a client that connects and says nothing holds one thread this long, no more


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(host, port, scrape, on_error):
    """Start serving SCRAPE() (exposition text) at http://HOST:PORT/metrics; returns the server
    (`shutdown()` then `server_close()` to stop). A failing SCRAPE answers 500 and calls ON_ERROR
    with the exception. OSError when the address cannot be bound."""

    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT_S  # (a thread per request: a silent client never blocks a scrape)

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, "text/plain; charset=utf-8", b"cortex-hook: see /metrics\n")
                return
            try:
                body = scrape().encode("utf-8")
            except Exception as exc:  # noqa: BLE001 (a scrape must answer, whatever broke)
                on_error(exc)
                self._send(500, "text/plain; charset=utf-8", f"cortex-hook: scrape failed: {exc}\n".encode())
                return
            self._send(200, CONTENT_TYPE, body)

        def _send(self, code, kind, body):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # no line per scrape in the journal
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = type("MetricsServer", (_Server,), {"address_family": family})((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
