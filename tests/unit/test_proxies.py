"""The trusted-proxy middleware: which address and scheme a request is taken to come from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from scheduler.web import proxies


def seen_by_app(
    trusted: tuple[str, ...], peer: str, forwarded_for: str | None, proto: str | None = None
) -> dict[str, Any]:
    """The environ the wrapped application gets for one request."""
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.update(environ)
        return [b""]

    environ: dict[str, Any] = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http"}
    if forwarded_for is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded_for
    if proto is not None:
        environ["HTTP_X_FORWARDED_PROTO"] = proto
    proxies.TrustedProxies(app, trusted)(environ, lambda status, headers: None)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded_for", "client"),
    [
        # Nothing trusted: the headers mean nothing.
        ((), "203.0.113.5", "198.51.100.1", "203.0.113.5"),
        # An untrusted peer's headers are its own words.
        (("10.0.0.0/8",), "203.0.113.5", "198.51.100.1", "203.0.113.5"),
        # One trusted proxy: the address it appended.
        (("10.0.0.1/32",), "10.0.0.1", "198.51.100.1", "198.51.100.1"),
        # What the client wrote itself, left of the proxy's entry, is never read.
        (("10.0.0.1/32",), "10.0.0.1", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
        # A chain of trusted proxies is walked from the right to the first untrusted address.
        (("10.0.0.0/8",), "10.0.0.1", "1.2.3.4, 198.51.100.1, 10.0.0.7", "198.51.100.1"),
        # Every hop trusted: the leftmost one is as far as we can see.
        (("10.0.0.0/8",), "10.0.0.1", "10.0.0.9, 10.0.0.7", "10.0.0.9"),
        # A trusted peer without the header is the client.
        (("10.0.0.0/8",), "10.0.0.1", None, "10.0.0.1"),
        # An entry that is no address stops the walk at the last proxy known.
        (("10.0.0.0/8",), "10.0.0.1", "198.51.100.1, unknown, 10.0.0.7", "10.0.0.7"),
        (("10.0.0.0/8",), "10.0.0.1", "", "10.0.0.1"),
        # IPv6 proxies and clients, written as ipaddress writes them.
        (("fd00::/8",), "fd00::1", "2001:DB8::0:1", "2001:db8::1"),
        # A dual-stack socket's IPv4 peer matches an IPv4 network.
        (("10.0.0.0/8",), "::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
        # With *, the direct peer is a router that appends the address it saw: the rightmost.
        (("*",), "10.1.2.3", "1.2.3.4, 198.51.100.20", "198.51.100.20"),
        (("*",), "10.1.2.3", "1.2.3.4, garbage", "10.1.2.3"),
        (("*",), "10.1.2.3", None, "10.1.2.3"),
        # A peer that is not an IP address (a UNIX socket) is trusted only with *.
        (("10.0.0.0/8",), "", "198.51.100.1", ""),
    ],
)
def test_client_address(
    trusted: tuple[str, ...], peer: str, forwarded_for: str | None, client: str
) -> None:
    seen = seen_by_app(trusted, peer, forwarded_for)

    assert seen["REMOTE_ADDR"] == client
    # Consumed either way: nothing after the middleware can read them differently.
    assert "HTTP_X_FORWARDED_FOR" not in seen


@pytest.mark.parametrize(
    ("trusted", "peer", "proto", "scheme"),
    [
        ((), "127.0.0.1", "https", "http"),
        (("10.0.0.0/8",), "203.0.113.5", "https", "http"),
        (("10.0.0.0/8",), "10.0.0.1", "https", "https"),
        (("10.0.0.0/8",), "10.0.0.1", "HTTPS", "https"),
        (("*",), "10.1.2.3", "https", "https"),
        # Several proxies: the nearest one's word.
        (("*",), "10.1.2.3", "http, https", "https"),
        (("*",), "10.1.2.3", "https, http", "http"),
        # Anything else leaves the scheme as the connection's.
        (("*",), "10.1.2.3", "ftp", "http"),
        (("*",), "10.1.2.3", None, "http"),
    ],
)
def test_scheme(trusted: tuple[str, ...], peer: str, proto: str | None, scheme: str) -> None:
    seen = seen_by_app(trusted, peer, None, proto)

    assert seen["wsgi.url_scheme"] == scheme
    assert "HTTP_X_FORWARDED_PROTO" not in seen
