"""The same requests as tests.profiles.web, sent over loopback to the Procfile's gunicorn (one
worker) running under callgrind, so that gunicorn's own share of a request is counted too
(docs/profiles.md "Insert").

    .venv/bin/python -m tests.profiles.gunicorn --requests 500 --clients 1

Gunicorn and its worker run under `valgrind --tool=callgrind --trace-children=yes`; this process
sends the requests on keep-alive connections (one per client thread) and has callgrind zero the
worker's counts before each measured stretch and dump them after it, with callgrind_control.
The dumps are `callgrind.out.<worker pid>.<n>` in --output: n = 1 for the inserts, 2 for the
no-ops.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

from tests import support
from tests.profiles import web

WARMUP = 200


def send(port: int, requests: int, method: str, path: str, body: bytes) -> None:
    """`requests` requests, one after the other, on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Scheduler-Secret": support.SECRET, "Content-Type": "application/json"}
    for _ in range(requests):
        conn.request(method, path, body or None, headers if body else {})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
    conn.close()


def load(port: int, clients: int, requests: int, method: str, path: str, body: bytes) -> None:
    threads = [
        threading.Thread(target=send, args=(port, requests // clients, method, path, body))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def worker_pid(master: int) -> int:
    children = pathlib.Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests of each")
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections")
    parser.add_argument("--output", default=".", help="where callgrind writes its files")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", web.DEFAULT_SERVER)
    port = support.free_port()
    out = pathlib.Path(args.output).resolve()
    with support.fresh_database(server, support.ensure_template(server)) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET": support.SECRET,
            "ENDPOINT": "http://127.0.0.1:9/hook",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
        }
        command = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={out}/callgrind.out.%p",
            str(support.ROOT / ".venv" / "bin" / "gunicorn"),
            "-c",
            "python:scheduler.web.gunicorn_conf",
            "scheduler.web.app:create_app()",
        ]
        master = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            support.wait_until(lambda: _answers(port), timeout=300, interval=0.5)
            insert = ("POST", "/insert", web.INSERT_BODY)
            noop = ("GET", "/healthz", b"")
            for method, path, body in (insert, noop):
                load(port, args.clients, WARMUP, method, path, body)
            worker = worker_pid(master.pid)
            for method, path, body in (insert, noop):
                callgrind_control("-z", worker)
                load(port, args.clients, args.requests, method, path, body)
                callgrind_control("-d", worker)
            time.sleep(1)
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(timeout=300)
    for dump in sorted(out.glob("callgrind.out.*.*")):
        text = dump.read_text(errors="replace")
        summary = re.search(r"^summary: (\d+)", text, re.MULTILINE)
        if summary:
            print(f"{dump.name}: {int(summary[1]) / args.requests:,.0f} instructions per request")


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
