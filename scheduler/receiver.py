"""A demo receiver that prints each delivery it gets, for trying the scheduler out locally."""

from __future__ import annotations

import hmac
import http.server
import json
import sys
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    secret: bytes = b""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        given = self.headers.get("Scheduler-Secret", "").encode("utf-8")
        if not hmac.compare_digest(given, self.secret):
            self.send_response(401)
            self.end_headers()
            print("rejected a request with a wrong Scheduler-Secret", flush=True)
            return
        try:
            message: Any = json.loads(raw)
        except ValueError:
            message = raw.decode("utf-8", "replace")
        kind = f"cron {message['cron_id']}" if message.get("cron_id") else f"job {message['id']}"
        print(
            f"delivery #{self.headers.get('Scheduler-Attempt')} of {kind} "
            f"(scheduled {self.headers.get('Scheduler-Scheduled-At')}): {json.dumps(message)}",
            flush=True,
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log; each delivery prints one line of its own."""


def serve(host: str, port: int, secret: str) -> None:
    """Serve until interrupted."""
    handler = type("Handler", (_Handler,), {"secret": secret.encode("utf-8")})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    print(f"demo receiver listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()
