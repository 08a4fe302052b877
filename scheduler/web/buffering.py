"""The web process's gunicorn worker: gthread, but a thread gets a request only once all of it
has arrived.

gunicorn's gthread hands a connection to a thread at its first byte, and the thread then reads
the rest of the request blocking, for as long as the client takes: clients that send their
headers a byte every 2 s held every thread of the web process, and /healthz waited behind them.
gunicorn 27 sets such a connection aside only while it sends nothing at all
(benoitc/gunicorn#3519), and gives no deadline for the rest (benoitc/gunicorn#2255, closed; its
maintainers advise a buffering proxy in front). Here the worker's event loop reads each request,
head and body, without blocking, and hands it to a thread whole, so no thread waits on a client:
a slow one costs a socket and its bytes until REQUEST_READ_SECONDS, then gets a 408.

It overrides gthread's ThreadWorker where a connection goes to a thread (enqueue_req) and where
waiting connections expire (murder_pending), as they are in gunicorn 27; setup.cfg holds gunicorn
to that major version.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import re
import selectors
import socket
import time
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.workers import gthread

from scheduler import config, errors, tuning

_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"
_HEX = re.compile(rb"[0-9A-Fa-f]+")
# A chunk-size line is a few hex digits and perhaps an extension; longer is not a request.
_MAX_CHUNK_LINE = 1024
_RECV_BYTES = 65536


class Verdict(enum.Enum):
    """What the bytes of a request so far call for."""

    WAIT = "wait"
    # Whole, or refused by gunicorn from what has arrived (a bad Content-Length, say): a thread
    # can take it without waiting on the client.
    READY = "ready"
    HEAD_TOO_LARGE = "head_too_large"
    BODY_TOO_LARGE = "body_too_large"
    BAD_CHUNK = "bad_chunk"
    TIMED_OUT = "timed_out"


# The answers the event loop gives itself: (status line, code, message) of our JSON error body.
REFUSALS = {
    Verdict.HEAD_TOO_LARGE: (
        "431 Request Header Fields Too Large",
        "request_header_fields_too_large",
        f"The request's headers take more than {tuning.REQUEST_HEAD_MAX_BYTES} bytes.",
    ),
    Verdict.BODY_TOO_LARGE: (
        "413 Request Entity Too Large",
        "request_entity_too_large",
        "The request body is larger than SCHEDULER_MAX_BODY_BYTES allows.",
    ),
    Verdict.BAD_CHUNK: (
        "400 Bad Request",
        "invalid_request",
        "The request's chunked body is malformed.",
    ),
    Verdict.TIMED_OUT: (
        "408 Request Timeout",
        "request_timeout",
        f"The request did not arrive whole within {tuning.REQUEST_READ_SECONDS:g} seconds.",
    ),
}


class RequestReader:
    """Follows one request's framing as its bytes arrive, and says when all of it is here.

    It frames the request as gunicorn's parser does, or more leniently where gunicorn refuses
    (a request it refuses is READY: gunicorn answers it 400 without reading on). Each byte is
    looked at about once however the request is split, so a client dripping a large body costs
    no more than one sending it at once.
    """

    def __init__(self, max_body: int) -> None:
        self.data = bytearray()
        self._max_body = max_body
        self._searched = 0
        self._head_end: int | None = None
        self.expects_continue = False
        # The end of the body when its length is known; for a chunked one, where its next
        # chunk-size line starts.
        self._body_end = 0
        self._chunked = False
        self._chunk_total = 0
        self._in_trailers = False

    @property
    def head_read(self) -> bool:
        return self._head_end is not None

    def feed(self, data: bytes) -> Verdict:
        self.data += data
        if self._head_end is None:
            end = self.data.find(_HEAD_END, self._searched)
            if end < 0:
                self._searched = max(0, len(self.data) - len(_HEAD_END) + 1)
                too_large = len(self.data) > tuning.REQUEST_HEAD_MAX_BYTES
                return Verdict.HEAD_TOO_LARGE if too_large else Verdict.WAIT
            self._head_end = end + len(_HEAD_END)
            if self._head_end > tuning.REQUEST_HEAD_MAX_BYTES:
                return Verdict.HEAD_TOO_LARGE
            verdict = self._read_head(bytes(self.data[: self._head_end]))
            if verdict is not None:
                return verdict
        if self._chunked:
            return self._follow_chunks()
        return Verdict.READY if len(self.data) >= self._body_end else Verdict.WAIT

    def _read_head(self, head: bytes) -> Verdict | None:
        """Learn the body's framing from the head; a verdict if the head alone decides it."""
        lengths: list[str] = []
        codings: list[str] = []
        lines = head.decode("latin-1").split("\r\n")
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.strip(" \t").lower()
            if not colon:
                continue
            if name == "content-length":
                lengths.append(value.strip(" \t"))
            elif name == "transfer-encoding":
                codings += [c.strip(" \t").lower() for c in value.split(",")]
            elif name == "expect":
                self.expects_continue = value.strip(" \t").lower() == "100-continue"
        self.expects_continue &= lines[0].endswith("HTTP/1.1")
        assert self._head_end is not None
        if codings:
            if codings[-1] != "chunked" or lengths:
                return Verdict.READY
            self._chunked = True
            self._body_end = self._head_end
            return None
        if not lengths:
            return Verdict.READY
        if len(lengths) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            return Verdict.READY
        if int(lengths[0]) > self._max_body:
            return Verdict.BODY_TOO_LARGE
        self._body_end = self._head_end + int(lengths[0])
        return None

    def _follow_chunks(self) -> Verdict:
        data = self.data
        while True:
            if len(data) < self._body_end:
                return Verdict.WAIT
            if self._in_trailers:
                return self._follow_trailers()
            if self._chunk_total and data[self._body_end - 2 : self._body_end] != _CRLF:
                return Verdict.READY
            line_end = data.find(_CRLF, self._body_end)
            if line_end < 0:
                too_long = len(data) - self._body_end > _MAX_CHUNK_LINE
                return Verdict.BAD_CHUNK if too_long else Verdict.WAIT
            size = bytes(data[self._body_end : line_end]).split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size):
                return Verdict.READY
            length = int(size, 16)
            self._chunk_total += length
            if self._chunk_total > self._max_body:
                return Verdict.BODY_TOO_LARGE
            self._body_end = line_end + len(_CRLF)
            if length == 0:
                self._in_trailers = True
                self._searched = self._body_end
            else:
                self._body_end += length + len(_CRLF)

    def _follow_trailers(self) -> Verdict:
        if self.data.startswith(_CRLF, self._body_end):
            return Verdict.READY
        if self.data.find(_HEAD_END, max(self._searched, self._body_end - 2)) >= 0:
            return Verdict.READY
        self._searched = max(self._body_end, len(self.data) - len(_HEAD_END) + 1)
        too_large = len(self.data) - self._body_end > tuning.REQUEST_HEAD_MAX_BYTES
        return Verdict.HEAD_TOO_LARGE if too_large else Verdict.WAIT


def refusal(verdict: Verdict) -> bytes:
    """The whole HTTP answer the event loop sends for `verdict`, then closing the connection."""
    status, code, message = REFUSALS[verdict]
    body = errors.http_body(code, message).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class BufferingThreadWorker(gthread.ThreadWorker):
    """gthread whose threads only ever get whole requests (see the module's docstring).

    It leaves TLS, HTTP/2, uWSGI and the PROXY protocol to gthread as it is: a connection then
    goes to a thread at its first byte.
    """

    max_body_bytes = config.DEFAULT_MAX_BODY_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        plain = (cfg.protocol, cfg.http2_cleartext, cfg.proxy_protocol) == ("http", "off", "off")
        self.buffering = plain and not cfg.is_ssl
        # Connections whose next request is arriving, by the deadline for all of it (in the
        # order they began, so the first ones are the first to expire).
        self.reading: dict[Any, tuple[RequestReader, float]] = {}

    def enqueue_req(self, conn: Any) -> None:
        """Hand `conn` to a thread if its next request is all here, else read it in the loop.

        Every way to a thread passes here: a new connection, a kept-alive one turned readable,
        and one whose previous request left the start of the next one read.
        """
        if not self.buffering:
            super().enqueue_req(conn)
            return
        reader = RequestReader(self.max_body_bytes)
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        verdict: Verdict | None = reader.feed(ahead) if ahead else Verdict.WAIT
        if verdict is Verdict.WAIT:
            # Most requests have arrived by now (the connection turned readable, or the client
            # sent right after connecting): read before waiting for the poller to say so.
            verdict = self._receive(conn, reader)
        if verdict is None:
            self._close(conn)
        elif verdict is not Verdict.WAIT:
            self._decide(conn, reader, verdict)
        else:
            try:
                self.poller.register(
                    conn.sock, selectors.EVENT_READ, functools.partial(self._readable, conn)
                )
            except (OSError, ValueError):
                # Closed meanwhile: an exception here would end the worker's event loop.
                self._close(conn)
                return
            self.reading[conn] = (reader, time.monotonic() + tuning.REQUEST_READ_SECONDS)
            self._continue_if_expected(conn, reader)

    def _readable(self, conn: Any, _sock: Any) -> None:
        reader, _ = self.reading[conn]
        verdict = self._receive(conn, reader)
        if verdict is Verdict.WAIT:
            self._continue_if_expected(conn, reader)
            return
        self._forget(conn)
        if verdict is None:
            self._close(conn)
        else:
            self._decide(conn, reader, verdict)

    def _receive(self, conn: Any, reader: RequestReader) -> Verdict | None:
        """What `reader` makes of the bytes that arrived; None once the client closed."""
        try:
            if conn.sock.getblocking():
                conn.sock.setblocking(False)
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return Verdict.WAIT
        except OSError:
            return None
        return reader.feed(data) if data else None

    def _continue_if_expected(self, conn: Any, reader: RequestReader) -> None:
        if reader.expects_continue and reader.head_read:
            # The client waits for this before it sends the body. gunicorn sends its own once a
            # thread has the request, and a client takes any number of 1xx answers (RFC 9110,
            # 15.2).
            reader.expects_continue = False
            self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _decide(self, conn: Any, reader: RequestReader, verdict: Verdict) -> None:
        if verdict is not Verdict.READY:
            self._refuse(conn, verdict)
            return
        if conn.parser is None:
            # TConn.init() keeps a parser it finds; this one starts with what was read.
            conn.parser = gunicorn_http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(reader.data))
        conn.data_ready = True
        super().enqueue_req(conn)

    def murder_pending(self) -> None:
        """Also end the requests that did not arrive in time: a 408, or nothing if nothing came."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading:
            conn, (reader, deadline) = next(iter(self.reading.items()))
            if deadline > now:
                break
            self._forget(conn)
            if reader.data:
                self._refuse(conn, Verdict.TIMED_OUT)
            else:
                self._close(conn)

    def _forget(self, conn: Any) -> None:
        del self.reading[conn]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _refuse(self, conn: Any, verdict: Verdict) -> None:
        self.log.debug("answered %s to %s without a thread", verdict.value, conn.client)
        self._send(conn, refusal(verdict))
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        self._close(conn)

    def _send(self, conn: Any, data: bytes) -> None:
        # Small enough for an empty send buffer; a client that has not read what it was sent
        # before loses the rest, since the loop never waits on a client.
        with contextlib.suppress(OSError):
            conn.sock.setblocking(False)
            conn.sock.send(data)

    def _close(self, conn: Any) -> None:
        self.nr_conns -= 1
        conn.close()


def worker_class(max_body_bytes: int) -> type[BufferingThreadWorker]:
    """The worker class for gunicorn's `worker_class`, refusing bodies over `max_body_bytes`
    before reading them, as the app does."""
    return type(
        "BufferingThreadWorker", (BufferingThreadWorker,), {"max_body_bytes": max_body_bytes}
    )
