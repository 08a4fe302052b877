"""Who the client is behind a router: X-Forwarded-For and X-Forwarded-Proto, believed only from
the proxies SCHEDULER_TRUSTED_PROXIES names."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from scheduler import config

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"
FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO"
SCHEMES = ("http", "https")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; trusted networks say a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: str, trusted: Callable[[str], bool]) -> str:
    """The client's address: `peer` unless it is trusted, then X-Forwarded-For walked from the
    right past trusted proxies to the first address that is not one.

    Each proxy appends the address it received the request from, so entries left of an
    untrusted one may have been written by the client itself and are never read. An entry that
    is not an IP address stops the walk at the last proxy known.
    """
    client = peer
    if not trusted(client):
        return client
    for entry in reversed(forwarded_for.split(",")):
        address = _address(entry)
        if address is None:
            break
        client = str(address)
        if not trusted(client):
            break
    return client


def forwarded_scheme(forwarded_proto: str) -> str | None:
    """The scheme the nearest proxy reports (the rightmost value), if it is http or https."""
    scheme = forwarded_proto.split(",")[-1].strip().lower()
    return scheme if scheme in SCHEMES else None


class TrustedProxies:
    """WSGI middleware setting REMOTE_ADDR and wsgi.url_scheme from the forwarded headers of a
    trusted peer, and removing those headers from every request so nothing after it reads them."""

    def __init__(self, app: WSGIApplication, trusted: Iterable[str]) -> None:
        self.app = app
        entries = tuple(trusted)
        self.any_peer = config.ANY_PROXY in entries
        self.networks = tuple(ipaddress.ip_network(e) for e in entries if e != config.ANY_PROXY)

    def trusts(self, address: str) -> bool:
        """True when `address` is one of the trusted proxies (any peer, with `*`)."""
        if self.any_peer:
            return True
        parsed = _address(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client's address, for a request from the trusted proxy `peer`."""
        if not self.any_peer:
            return client_address(peer, forwarded_for, self.trusts)
        # A router in front of every request (Heroku) appends the address it received it from.
        address = _address(forwarded_for.split(",")[-1])
        return str(address) if address is not None else peer

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        forwarded_for = environ.pop(FORWARDED_FOR, "")
        forwarded_proto = environ.pop(FORWARDED_PROTO, "")
        peer = environ.get("REMOTE_ADDR", "")
        if self.trusts(peer):
            environ["REMOTE_ADDR"] = self.client(peer, forwarded_for)
            scheme = forwarded_scheme(forwarded_proto)
            if scheme is not None:
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)
