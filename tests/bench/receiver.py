"""A receiver far faster than the dispatcher, in a process of its own: it records when each
delivery arrives and answers 200 at once.

One asyncio loop with a hand-rolled HTTP/1.1 parser (keep-alive, Content-Length bodies only, which
is all `requests` sends here) costs a few microseconds per request, so the receiver is never what
limits a delivery rate; the benchmark measures its ceiling to show it. Run it with
`python -m tests.bench.receiver`; it prints its port, then serves until stdin closes.

`POST /hook` and `POST /hook/<name>` are recorded: the mixed scenario gives each endpoint a path
of its own, and `?delay=<seconds>` in a path's query holds that request's answer so long (the
connection's later requests wait behind it, as HTTP/1.1 orders answers). `/__bench/count`,
`/__bench/dump?since=N` and `/__bench/reset` are the benchmark's controls; any other path is
answered without being recorded (the load generator's own ceiling is measured on one).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from typing import Any

from tests import support

HOOK_PATH = b"/hook"
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
_FIELDS = {
    b"scheduler-delivery-id": 1,
    b"scheduler-scheduled-at": 2,
    b"scheduler-attempt": 3,
}


class Recorder:
    """Every recorded delivery: [arrival epoch, delivery id, scheduled-at, attempt, body, path
    name ("" for /hook), answer epoch]. A delayed request is recorded when it is answered, so
    that its record holds both ends of the time it kept a connection busy."""

    def __init__(self) -> None:
        self.records: list[list[Any]] = []

    def answer(self, head: bytes, body: bytes, arrived: float) -> tuple[bytes, float, list[Any]]:
        """The answer, how many seconds to hold it, and the record to keep once it is sent
        (empty for a request that is not recorded)."""
        line_end = head.find(b"\r\n")
        target = head[:line_end].split(b" ", 2)[1]
        path, _, query = target.partition(b"?")
        if path == HOOK_PATH or path.startswith(HOOK_PATH + b"/"):
            record: list[Any] = [arrived, "", "", "", body.decode("utf-8", "replace")]
            for line in head[line_end + 2 :].split(b"\r\n"):
                name, _, value = line.partition(b":")
                index = _FIELDS.get(name.strip().lower())
                if index is not None:
                    record[index] = value.strip().decode("latin-1")
            record += [path[len(HOOK_PATH) + 1 :].decode("latin-1"), arrived]
            return _OK, _delay(query), record
        if path.startswith(b"/__bench/"):
            return self._control(target.decode("latin-1")), 0.0, []
        return _OK, 0.0, []

    def keep(self, record: list[Any], answered: float) -> None:
        if record:
            record[-1] = answered
            self.records.append(record)

    def _control(self, path: str) -> bytes:
        if path == "/__bench/count":
            payload: Any = {"count": len(self.records)}
        elif path.startswith("/__bench/dump"):
            since = int(path.partition("since=")[2] or 0)
            payload = self.records[since:]
        elif path == "/__bench/reset":
            self.records = []
            payload = {"count": 0}
        else:
            payload = {"error": "unknown control"}
        data = json.dumps(payload, separators=(",", ":")).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n"
        return head.encode() + b"Content-Type: application/json\r\n\r\n" + data


def _delay(query: bytes) -> float:
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"delay":
            return float(value)
    return 0.0


class _Protocol(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        # A delayed answer not yet sent: the requests behind it wait in the buffer.
        self.holding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _release(self, answer: bytes, record: list[Any]) -> None:
        self.holding = False
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(answer)
        self.recorder.keep(record, time.time())
        self._serve()

    def _serve(self) -> None:
        while not self.holding:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = _content_length(head)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            answer, delay, record = self.recorder.answer(head, body, time.time())
            if delay > 0:
                self.holding = True
                asyncio.get_running_loop().call_later(delay, self._release, answer, record)
                return
            assert self.transport is not None
            self.transport.write(answer)
            self.recorder.keep(record, record[0] if record else 0.0)


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    start = at + len(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", start)
    return int(head[start : stop if stop >= 0 else len(head)])


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    server = await loop.create_server(lambda: _Protocol(recorder), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    # The parent owns our lifetime: when its end of stdin closes, we stop.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


class ReceiverProcess:
    """The receiver as a child process, and the benchmark's side of its controls."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.receiver"],
            cwd=support.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.base = f"http://127.0.0.1:{self.port}"
        self.null_url = f"http://127.0.0.1:{self.port}/null"

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", "/__bench/" + path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def hook(self, name: str, delay: float = 0.0) -> str:
        """The URL of a recorded path of its own, answered after `delay` seconds."""
        return f"{self.url}/{name}" + (f"?delay={delay:g}" if delay else "")

    def count(self) -> int:
        return int(self._get("count")["count"])

    def records(self, since: int = 0) -> list[list[Any]]:
        records: list[list[Any]] = self._get(f"dump?since={since}")
        return records

    def reset(self) -> None:
        self._get("reset")

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())
    os._exit(0)
