"""One deadline for a whole HTTP attempt: connect, send, headers and body.

urllib3's timeouts bound each socket operation, so an endpoint that drips a byte a second holds
a sending thread for as long as it likes. A single watchdog thread (not one per attempt) shuts
down the socket of any attempt past its deadline, which makes the blocked call fail at once.
Attempts find their socket through the connection pool: `WatchedAdapter`'s pools hand every
connection they lend to the watch of the thread that borrows it, and every answer read on one
tells the watch its socket too (an answer that ends its connection takes the socket from it).
Their connections also read past interim 1xx answers to the final one.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter
from requests.models import PreparedRequest, Response
from requests.utils import get_encoding_from_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from scheduler import tuning
from scheduler.worker import headers, supervisor

_current = threading.local()


class Watch:
    """The deadline of one attempt and the connection it is using."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.connection: Any = None
        # The socket its answer is read from: an answer that ends with its connection (no
        # length, or `Connection: close`) takes it, and the connection's `sock` is None then.
        self.answer_socket: socket.socket | None = None


class Watchdog:
    """Ends attempts that outlive their deadline, or the dispatcher's own vouch: `vouched_until()`
    is the moment (on `clock`) until which its last heartbeat lets it act. Past that the leader
    may hand its claims on, so an attempt still on the wire would overlap its re-send (and count
    twice against a max_in_flight): it is ended first. `clock` is injectable for tests."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        supervising: supervisor.Supervisor | None = None,
        vouched_until: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self._clock = clock
        self._vouched_until = vouched_until
        self._watches: set[Watch] = set()
        self._changed = threading.Condition()
        # When the watchdog next looks by itself (its clock); a deadline armed before then wakes
        # it, a later one (every attempt's, while one is in flight) need not.
        self._wake_at = math.inf
        self._stopping = False
        self._thread = (supervising or supervisor.Supervisor()).start("watchdog", self._run)

    @contextlib.contextmanager
    def watch(self, seconds: float) -> Iterator[Watch]:
        """Arm a deadline `seconds` from now for what this thread sends inside the block."""
        armed = Watch(self._clock() + seconds)
        with self._changed:
            self._watches.add(armed)
            if armed.deadline < self._wake_at:
                self._changed.notify()
        _current.watch = armed
        try:
            yield armed
        finally:
            _current.watch = None
            with self._changed:
                # Under the lock the watchdog shuts sockets down with: once disarmed, the
                # connection can go back to the pool and never be shut down by this watch.
                self._watches.discard(armed)

    def poke(self) -> None:
        """Look at the deadlines now rather than when the next one falls due (after the
        injected clock moved)."""
        with self._changed:
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        with self._changed:
            while not self._stopping:
                now = self._clock()
                vouched = self._vouched_until()
                waiting = False
                for armed in list(self._watches):
                    if min(armed.deadline, vouched) > now:
                        continue
                    armed.expired = True
                    if _shut_down(armed):
                        self._watches.discard(armed)
                    else:
                        waiting = True
                # While attempts are in flight, it also looks when the vouch runs out; a heartbeat
                # renewed meanwhile only moves it later.
                pending = [min(armed.deadline, vouched) for armed in self._watches]
                pending = [moment for moment in pending if moment > now]
                timeout = min(pending, default=now + 3600) - now
                if waiting:
                    timeout = min(timeout, tuning.WATCHDOG_RECHECK_SECONDS)
                self._wake_at = now + timeout
                self._changed.wait(timeout)


def _shut_down(armed: Watch) -> bool:
    """Shut the attempt's socket down; False while it has none yet."""
    sock = armed.answer_socket or getattr(armed.connection, "sock", None)
    if sock is None:
        return False
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    return True


def _attach(connection: Any) -> Any:
    armed: Watch | None = getattr(_current, "watch", None)
    if armed is not None:
        armed.connection = connection
    return connection


def _is_interim(status: int) -> bool:
    # A 101 is final: after it the connection speaks another protocol, and no answer follows.
    return 100 <= status < 200 and status != http.client.SWITCHING_PROTOCOLS


class _FinalResponse(http.client.HTTPResponse):
    """An answer read past its interim 1xx heads, which a client must parse and ignore (RFC 9110
    §15.2); http.client skips only a `100 Continue`, and took a `103 Early Hints` before a 200
    for the answer. A skipped head has the bounds of the final one (line length, header count);
    an endless run of them is one more read the attempt's deadline ends."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        armed: Watch | None = getattr(_current, "watch", None)
        if armed is not None:
            armed.answer_socket = sock

    def _read_status(self) -> tuple[str, int, str]:
        # The method begin() calls (in a loop of its own that skips a 100) for each status line,
        # and urllib3 for a proxy's answer to CONNECT; not part of http.client's typed surface.
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not _is_interim(status):
                return version, status, reason
            http.client.parse_headers(self.fp)

    def begin(self) -> None:
        super().begin()
        if self.status == http.client.SWITCHING_PROTOCOLS:
            # Nobody asked it to switch: the attempt fails on its status, and the connection,
            # speaking some other protocol now, is not lent to the next delivery.
            self.will_close = True


def _put_header(self: Any, header: Any, *values: Any) -> None:
    """A header put as http.client puts it, which checks its name and values. urllib3 first
    looks through every value for its SKIP_HEADER marker, which no delivery's headers carry."""
    http.client.HTTPConnection.putheader(self, header, *values)


class _WatchedHTTPConnection(HTTPConnection):
    response_class = _FinalResponse
    putheader = _put_header


class _WatchedHTTPSConnection(HTTPSConnection):
    response_class = _FinalResponse
    putheader = _put_header


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _attach(super()._get_conn(timeout))


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _attach(super()._get_conn(timeout))


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
# How many pools (one per host) an adapter's pool manager keeps open: requests' default.
POOLS_KEPT = DEFAULT_POOLSIZE


@functools.cache
def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """One TLS context per CA bundle for the whole process, shared by every sending thread's
    adapter: loading the bundle takes about 20 ms, which sixteen threads paid one after another
    when their first deliveries came, making those deliveries hundreds of milliseconds late."""
    in_dir = os.path.isdir(ca_bundle)
    return ssl.create_default_context(
        cafile=None if in_dir else ca_bundle, capath=ca_bundle if in_dir else None
    )


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections are visible to the watch of the sending thread.

    `ca_bundle` (a file or a directory) is loaded once into the pools' TLS context: given to
    requests as `verify`, it would be looked up on disk for every request, plain HTTP included.

    Each adapter belongs to one sending thread and sends to the few URLs the endpoints have, so
    the pool and the URL to ask for, which requests works out again for each request (proxy
    selection, the pool's key, parsing the URL), are kept by URL, for at most POOLS_KEPT URLs (as
    many pools as the pool manager keeps); a pool closed since is looked up again.
    """

    def __init__(self, ca_bundle: str | None = None) -> None:
        self.ssl_context = tls_context(ca_bundle) if ca_bundle is not None else None
        self._pools: dict[tuple[Any, ...], Any] = {}
        self._request_urls: dict[tuple[Any, ...], str] = {}
        headers.install()
        super().__init__()

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: Any = None,
    ) -> Any:
        key = (request.url, verify, cert, tuple(sorted((proxies or {}).items())))
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:
            if len(self._pools) >= POOLS_KEPT:
                self._pools.clear()
            pool = self._pools[key] = super().get_connection_with_tls_context(
                request, verify, proxies, cert
            )
        return pool

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """requests' Response without what deliveries never use: a case-insensitive copy of
        urllib3's headers (which are case-insensitive already) and the answer's cookies (no
        jar is kept, and none is sent back)."""
        response = Response()
        response.status_code = resp.status
        response.headers = resp.headers
        response.encoding = get_encoding_from_headers(resp.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url or ""
        response.request = req
        response.connection = self
        return response

    def request_url(self, request: PreparedRequest, proxies: Mapping[str, str] | None) -> str:
        key = (request.url, tuple(sorted((proxies or {}).items())))
        url = self._request_urls.get(key)
        if url is None:
            if len(self._request_urls) >= POOLS_KEPT:
                self._request_urls.clear()
            url = self._request_urls[key] = super().request_url(request, proxies)
        return url

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager
