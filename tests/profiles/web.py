"""POST /insert and GET /healthz through the web app's WSGI callable in this one process, for
callgrind to count (docs/profiles.md "Insert").

    valgrind --tool=callgrind --zero-before=os_getppid --dump-before=os_getpgrp \
        .venv/bin/python -m tests.profiles.web --requests 500

The app runs as gunicorn runs it (the WSGI callable and an environ of gunicorn's shape, minus the
socket and HTTP parsing) against a scratch database copied from the tests' migrated template on
DATABASE_URL's server (default: the local server's `test` database). Each measured stretch is
bracketed by os.getppid() and os.getpgrp(), which callgrind's --zero-before and --dump-before
options above turn into one dump per stretch: `callgrind.out.<pid>.<n>` for n = 1 (inserts) and
2 (no-ops), each holding that many requests' instructions and nothing else.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from scheduler import config
from scheduler.web import app as app_module
from tests import support

DEFAULT_SERVER = "postgresql://127.0.0.1:5432/test"
INSERT_BODY = b'{"timestamp": "2100-01-01T00:00:00Z", "body": {"order": 42, "note": "benchmark"}}'
WARMUP = 200


def environ(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    """What gunicorn's gthread worker hands the app for a keep-alive request from wrk."""
    env: dict[str, Any] = {
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "SERVER_SOFTWARE": "gunicorn/23.0.0",
        "REQUEST_METHOD": method,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
    }
    if body:
        env["HTTP_SCHEDULER_SECRET"] = support.SECRET
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    return env


def call(app: Callable[..., Iterable[bytes]], env: dict[str, Any]) -> tuple[str, bytes]:
    """One request as gunicorn makes it: the status, then the body iterated and closed."""
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status[0], body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests of each")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    with support.fresh_database(server, support.ensure_template(server)) as url:
        settings = config.Settings(
            database_url=url,
            secrets=(support.SECRET,),
            endpoint="http://127.0.0.1:9/hook",
            log_level=args.log_level,
        )
        app = app_module.create_app(settings)
        pool = app.extensions["scheduler.database"].pool
        pool.wait()
        insert = ("POST", "/insert", INSERT_BODY)
        noop = ("GET", "/healthz", b"")
        for method, path, body in (insert, noop) * WARMUP:
            status, answer = call(app, environ(method, path, body))
            assert status.startswith("200"), (status, answer)
        for method, path, body in (insert, noop):
            envs = [environ(method, path, body) for _ in range(args.requests)]
            os.getppid()
            for env in envs:
                call(app, env)
            os.getpgrp()
        pool.close()


if __name__ == "__main__":
    main()
