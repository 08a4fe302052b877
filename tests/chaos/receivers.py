"""The soak's endpoints: real HTTP servers that log every attempt, server side, as a JSON line.

Each line holds the attempt's arrival (its first byte) and its end (its answer going out, or the
sender gone), the job id and attempt the scheduler's headers carry, and the answer. A receiver
answers in one of a few modes, which a fault switches for a while: normal, errors, slow (some
answers held past every deadline, until the sender gives up) and Retry-After. Each answer is
drawn from the soak's seed.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import random
import select
import socket
import threading
import time
from typing import Any

from tests import support

NORMAL = "normal"
ERRORS = "errors"
SLOW = "slow"
RETRY_AFTER = "retry_after"
MODES = (ERRORS, SLOW, RETRY_AFTER)
# A slow answer is held at most this long: well inside any read timeout the soak sets, so it is
# never mistaken for a timeout at the sender.
SLOW_MOST_SECONDS = 1.0
_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Unavailable"}


class Decision:
    """How to answer one attempt: `status` after `hold` seconds, or hang until the sender
    leaves (`hang`)."""

    def __init__(
        self, status: int, hold: float = 0.0, hang: bool = False, retry_after: int | None = None
    ) -> None:
        self.status = status
        self.hold = hold
        self.hang = hang
        self.retry_after = retry_after


class ChaosReceiver(support.RawServer):
    """One endpoint of the soak. `hang_seconds` bounds how long a hanging answer waits for its
    sender to give up: past it the receiver answers 503 and the line shows the attempt outlived
    every deadline. `base_hold` is the longest ordinary answer time (it gives limits something
    to count)."""

    def __init__(
        self, name: str, log_path: pathlib.Path, seed: int, hang_seconds: float, base_hold: float
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.hang_seconds = hang_seconds
        self.base_hold = base_hold
        self.mode = NORMAL
        self.logged = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._log = log_path.open("a", encoding="utf-8")
        super().__init__()

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    def decide(self) -> Decision:
        with self._lock:
            draw, mode = self._random.random(), self.mode
            hold = self._random.uniform(0.0, self.base_hold)
            slow = self._random.uniform(0.1, SLOW_MOST_SECONDS)
            retry_after = self._random.choice((1, 2))
            error = self._random.choice((500, 503))
        if mode == ERRORS and draw < 0.6:
            return Decision(error, hold)
        if mode == SLOW and draw < 0.5:
            return Decision(200, slow)
        if mode == SLOW and draw < 0.7:
            return Decision(200, hang=True)
        if mode == RETRY_AFTER and draw < 0.6:
            return Decision(429 if error == 500 else 503, hold, retry_after=retry_after)
        # Even a healthy endpoint fails now and then.
        if draw > 0.97:
            return Decision(500, hold)
        return Decision(200, hold)

    def close(self) -> None:
        super().close()
        with self._lock:
            self._log.close()

    def _serve(self, conn: socket.socket) -> None:
        # requests keeps connections alive: serve each request on this one in turn.
        pending = b""
        while not self._stop.is_set():
            request = _read_request(conn, pending)
            if request is None:
                return
            headers, pending, arrived = request
            if not self._answer_one(conn, headers, arrived):
                return

    def _answer_one(self, conn: socket.socket, headers: dict[str, str], arrived: float) -> bool:
        decision = self.decide()
        status: int | None = decision.status
        if decision.hang:
            stayed = _hold(conn, self.hang_seconds, self._stop)
            status = 503 if stayed else None
        elif not _hold(conn, decision.hold, self._stop):
            status = None
        # Read before the answer goes out: the sender may start its next attempt as soon as it
        # has the answer, before this thread gets the processor back.
        ended = time.time()
        answered = False
        if status is not None:
            extra = f"Retry-After: {decision.retry_after}\r\n" if decision.retry_after else ""
            body = b"ok" if status < 300 else b"nope"
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                conn.sendall(head.encode() + body)
                answered = True
        self._write(
            {
                "endpoint": self.name,
                "job_id": headers.get("scheduler-delivery-id", ""),
                "attempt": int(headers.get("scheduler-attempt") or 0),
                "scheduled_at": headers.get("scheduler-scheduled-at", ""),
                "arrived": arrived,
                "ended": ended,
                "status": status if answered else None,
                "retry_after": decision.retry_after if answered else None,
                "mode": self.mode,
            }
        )
        return answered

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if not self._log.closed:
                self._log.write(line)
                self._log.flush()
                self.logged += 1


def _read_request(
    conn: socket.socket, pending: bytes
) -> tuple[dict[str, str], bytes, float] | None:
    """The next request's headers (lower-case names), what followed it, and when its first byte
    arrived; None when the connection ended first."""
    arrived = time.time()
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        if not pending:
            arrived = time.time()
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return headers, rest[length:], arrived


def _hold(conn: socket.socket, seconds: float, stop: threading.Event) -> bool:
    """Wait `seconds` before answering, watching the connection: False as soon as the sender
    hangs up (a dispatcher's deadline, or its death), so that the log ends the attempt then."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([conn], [], [], left)
        if not readable:
            continue
        try:
            if not conn.recv(1, socket.MSG_PEEK):
                return False
        except OSError:  # reset: a dispatcher killed mid-attempt
            return False
        # The sender sent more before its answer (it does not pipeline): wait the rest out.
        return not stop.wait(left)
    return True


def read_log(path: pathlib.Path) -> list[dict[str, Any]]:
    """Every attempt a receiver logged, in the order logged."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
