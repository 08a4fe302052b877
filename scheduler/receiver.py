"""A demo receiver that checks each delivery's signature and prints it, for trying the
scheduler out locally."""

from __future__ import annotations

import http.server
import json
import sys
from typing import Any

from scheduler import signing


class _Handler(http.server.BaseHTTPRequestHandler):
    secrets: tuple[str, ...] = ()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            signing.verify(
                raw,
                self.headers.get(signing.HEADER),
                self.secrets,
                method=self.command,
                target=self.path,
            )
        except signing.SignatureError as exc:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            print(f"rejected a delivery: {exc}", flush=True)
            return
        try:
            message: Any = json.loads(raw)
        except ValueError:
            message = raw.decode("utf-8", "replace")
        kind = f"cron {message['cron_id']}" if message.get("cron_id") else f"job {message['id']}"
        scheduled = self.headers.get("Scheduler-Scheduled-At")
        print(
            f"delivery #{self.headers.get('Scheduler-Attempt')} of {kind} "
            f"({self.command} {self.path}, scheduled {scheduled}): {json.dumps(message)}",
            flush=True,
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # A job may choose its method; each is signed (v2) and checked the same way.
    do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log; each delivery prints one line of its own."""


def make_server(host: str, port: int, secrets: tuple[str, ...]) -> http.server.HTTPServer:
    """A receiver accepting deliveries signed with any of `secrets` (not yet serving)."""
    handler = type("Handler", (_Handler,), {"secrets": secrets})
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(host: str, port: int, secrets: tuple[str, ...]) -> None:
    """Serve until interrupted."""
    server = make_server(host, port, secrets)
    print(f"demo receiver listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()
