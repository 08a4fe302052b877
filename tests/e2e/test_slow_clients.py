"""End to end: the Procfile's web process, with its defaults, keeps answering while clients send
their requests a byte at a time; such a request that never ends is answered 408."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from scheduler import config, tuning
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 48
DRIP_SECONDS = 2.0
# A whole request, which at a byte every 2 s would take half an hour to arrive.
SLOW_REQUEST = (
    b"POST /insert HTTP/1.1\r\nHost: scheduler.test\r\nContent-Type: application/json\r\n"
    b"Scheduler-Secret: " + support.SECRET.encode() + b"\r\nContent-Length: 2\r\n\r\n{}"
)


class SlowClients:
    """`count` connections that each send SLOW_REQUEST a byte every DRIP_SECONDS, opening a new
    one whenever the server closes one (as a slowloris attack does), until stopped."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.sockets = [self._connect() for _ in range(count)]
        self.opened_at = [time.monotonic()] * count
        self.sent = [0] * count
        # How long each connection the server ended had lasted.
        self.lifetimes: list[float] = []
        self.answers: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        return sock

    def _drip(self) -> None:
        while True:
            for index, sock in enumerate(self.sockets):
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    answer = None
                except OSError:
                    answer = b""
                if answer is not None:
                    # Answered or closed by the server: open another connection in its place.
                    if answer:
                        self.answers.append(answer)
                    sock.close()
                    self.lifetimes.append(time.monotonic() - self.opened_at[index])
                    self.sockets[index] = self._connect()
                    self.opened_at[index] = time.monotonic()
                    self.sent[index] = 0
                    continue
                offset = self.sent[index] % len(SLOW_REQUEST)
                try:
                    sock.send(SLOW_REQUEST[offset : offset + 1])
                    self.sent[index] += 1
                except OSError:
                    pass
            # The attack's own pace, not a wait for the system under test.
            if self._stop.wait(DRIP_SECONDS):
                return

    def dripping(self) -> int:
        """How many connections are open and have sent part of a request."""
        return sum(1 for sent in self.sent if sent > 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def web(system: System) -> Iterator[System]:
    """The web process as the Procfile runs it, with every default (WEB_CONCURRENCY too)."""
    del system.env["WEB_CONCURRENCY"]
    system.start("web")
    yield system


def healthz_seconds(system: System) -> float:
    started = time.monotonic()
    answer = requests.get(system.url + "/healthz", timeout=10)
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


def test_the_api_answers_while_48_clients_drip_their_requests(web: System) -> None:
    slow = SlowClients(web.port, SLOW_CLIENTS)
    try:
        support.wait_until(lambda: slow.dripping() == SLOW_CLIENTS, timeout=10)
        # Without buffering the threads were all taken by now: 2 workers x 8 threads.
        latencies = [healthz_seconds(web) for _ in range(20)]
        job_id = web.client.insert({"during": "the drip"}, delay=3600)
        more = [healthz_seconds(web) for _ in range(20)]
        still_dripping = slow.dripping()
    finally:
        slow.close()

    with psycopg.connect(web.db_url) as conn:
        row = conn.execute("SELECT body FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ({"during": "the drip"},)
    assert still_dripping == SLOW_CLIENTS
    # The server held them (it did not simply hang up on them) until their deadline.
    assert all(t >= tuning.REQUEST_READ_SECONDS for t in slow.lifetimes), slow.lifetimes
    # A correctness bound, generous for a loaded machine: a stalled API answers in never.
    assert max(latencies + more) < 5.0, sorted(latencies + more)


def test_a_request_that_does_not_arrive_in_time_is_answered_408(web: System) -> None:
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(SLOW_REQUEST[:20])
        sock.settimeout(tuning.REQUEST_READ_SECONDS + 10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(body)["error"]["code"] == "request_timeout"
    # The API still answers, and the half-sent insert wrote nothing.
    assert healthz_seconds(web) < 5.0
    with psycopg.connect(web.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def read_answer(stream: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from a socket's file: status, headers (lower-cased) and body."""
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, stream.read(int(headers.get("content-length", 0)))


def insert_request(body: bytes, *, chunked: bool = False, expect: bool = False) -> bytes:
    head = (
        b"POST /insert HTTP/1.1\r\nHost: scheduler.test\r\nContent-Type: application/json\r\n"
        b"Scheduler-Secret: " + support.SECRET.encode() + b"\r\n"
    )
    if expect:
        head += b"Expect: 100-continue\r\n"
    if chunked:
        middle = len(body) // 2
        chunks = [body[:middle], body[middle:]]
        framed = b"".join(b"%x;x=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + framed
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_requests_pipelined_chunked_or_sent_in_pieces_are_each_served(web: System) -> None:
    job = json.dumps({"delay": 3600, "body": {"n": 1}}).encode()
    requests_ = (
        b"GET /healthz HTTP/1.1\r\nHost: scheduler.test\r\n\r\n"
        + insert_request(job)
        + insert_request(job, chunked=True)
    )
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        # Pieces of every size, cutting the heads, the bodies and the chunk framing anywhere.
        for start in range(0, len(requests_), 7):
            sock.sendall(requests_[start : start + 7])
        stream = sock.makefile("rb")
        answers = [read_answer(stream) for _ in range(3)]

    assert [status for status, _, _ in answers] == [200, 200, 200], answers
    ids = [json.loads(body)["id"] for _, _, body in answers[1:]]
    with psycopg.connect(web.db_url) as conn:
        rows = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (ids,)).fetchone()
    assert rows == (2,)


def test_a_client_expecting_100_continue_gets_it_before_sending_its_body(web: System) -> None:
    job = json.dumps({"delay": 3600, "body": {"n": 2}}).encode()
    head, _, body = insert_request(job, expect=True).partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        stream = sock.makefile("rb")
        interim = read_answer(stream)
        sock.sendall(body)
        answers = [read_answer(stream)]
        # gunicorn sends its own once a thread has the request: any number may come first.
        while answers[-1][0] == 100:
            answers.append(read_answer(stream))

    assert interim[0] == 100
    assert answers[-1][0] == 200, answers


def test_a_body_over_the_limit_is_refused_before_it_is_sent(web: System) -> None:
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(
            b"POST /insert HTTP/1.1\r\nHost: scheduler.test\r\nContent-Length: %d\r\n\r\n"
            % (config.DEFAULT_MAX_BODY_BYTES + 1)
        )
        status, headers, body = read_answer(sock.makefile("rb"))

    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_entity_too_large"
