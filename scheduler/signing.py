"""Signatures on deliveries, and their verification for receivers.

The header is `Scheduler-Signature: t=<unix seconds>,<scheme>=<hex>[,<scheme>=<hex>...]`, one
HMAC-SHA256 per secret while secrets rotate. A delivery is signed with one scheme:

- `v1` over `b"<t>." + body`, for a job that sets neither method nor path (sent as POST to the
  endpoint's URL, as always);
- `v2` over `b"<t>.<METHOD> <target> " + body`, for a job that sets either, so that a captured
  delivery cannot be replayed with another method or to another path.

The timestamp inside the signed text stops an old delivery from being replayed later.

This module uses the standard library only, so receivers can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

HEADER = "Scheduler-Signature"
DEFAULT_TOLERANCE = 300

# RFC 9110's token: what an HTTP method is made of. It may contain '.', never a space.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A request target as sent on the wire: never whitespace, nor a fragment.
_TARGET = re.compile(r"[^\s#]+")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# RFC 3986's pchar and '/': what a percent-encoded path leaves as it is.
_PATH_SAFE = "/!$&'()*+,;=:@~"


class SignatureError(Exception):
    """The signature does not prove the delivery came from the scheduler."""


class MalformedSignature(SignatureError):
    """The header is missing or not of the form t=<seconds>,v1=<hex> or t=<seconds>,v2=<hex>."""


class StaleSignature(SignatureError):
    """The signed timestamp is too far from now: a replay, or a badly wrong clock."""


class SignatureMismatch(SignatureError):
    """No signature matches the request with any of the secrets."""


class MissingMethodOrTarget(SignatureError):
    """The delivery is signed with v2, which binds its method and target: verify needs both."""


class V2Required(SignatureError):
    """The delivery has only v1 signatures, which bind neither method nor target, and the
    receiver requires v2."""


def sign(body: bytes, secrets: Iterable[str], timestamp: int | None = None) -> str:
    """The v1 header value for `body`, with one signature per secret."""
    moment = int(time.time()) if timestamp is None else timestamp
    signatures = ",".join(f"v1={_mac(secret, _v1_text(moment, body))}" for secret in secrets)
    return f"t={moment},{signatures}"


def sign_request(
    method: str,
    target: str,
    body: bytes,
    secrets: Iterable[str],
    timestamp: int | None = None,
) -> str:
    """The v2 header value for a request, with one signature per secret.

    `target` is the request target exactly as sent: the percent-encoded path, then `?query` if
    there is one (`/hooks/orders/42?src=x`).

    :raise ValueError: when `method` is not an HTTP token or `target` could not be sent as is.
    """
    moment = int(time.time()) if timestamp is None else timestamp
    signed = _v2_text(moment, method, target, body)
    signatures = ",".join(f"v2={_mac(secret, signed)}" for secret in secrets)
    return f"t={moment},{signatures}"


def verify(
    body: bytes,
    header: str | None,
    secrets: str | Iterable[str],
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
    method: str | None = None,
    target: str | None = None,
    require_v2: bool = False,
) -> int:
    """Check a delivery's signature; return its timestamp.

    `secrets` may be one secret or several (accept any while rotating). The signature must be no
    older and no further in the future than `tolerance` seconds. A header with v2 signatures is
    checked by those alone, against `method` and `target` (the request target as received, see
    `request_target`); one with only v1 signatures is checked over the body alone, unless
    `require_v2` refuses it.

    :raise MalformedSignature, StaleSignature, SignatureMismatch, MissingMethodOrTarget,
        V2Required: see each class.
    """
    timestamp, signatures = _parse(header)
    if signatures["v2"]:
        if method is None or target is None:
            raise MissingMethodOrTarget(
                "the delivery is signed with v2: pass its method and request target to verify"
            )
        try:
            signed = _v2_text(timestamp, method, target, body)
        except ValueError as exc:
            raise SignatureMismatch(f"no v2 signature can match: {exc}") from exc
        scheme = "v2"
    elif require_v2:
        raise V2Required("the delivery has only v1 signatures and this receiver requires v2")
    else:
        signed, scheme = _v1_text(timestamp, body), "v1"
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise StaleSignature(
            f"signed at {timestamp}, {abs(current - timestamp):.0f}s from now (limit {tolerance}s)"
        )
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("no secret to verify with")
    matched = False
    # Every pair is compared, so the time taken says nothing about which one matched.
    for key in keys:
        expected = _mac(key, signed)
        for signature in signatures[scheme]:
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureMismatch(f"no {scheme} signature matches the request with the given secrets")
    return timestamp


def request_target(environ: Mapping[str, Any]) -> str:
    """The request target a WSGI request was sent with, for `verify`'s `target`.

    Servers that keep it give it as is (`RAW_URI` in gunicorn and Werkzeug, `REQUEST_URI` in
    uWSGI and others); elsewhere it is rebuilt from the decoded path, which gives back the
    scheduler's target only where that encoded no more than it had to.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if raw.startswith("/"):
            return str(raw)
        # The absolute form (`http://host/path?query`), which a client sends through a proxy:
        # the server routes it by its path and query, and those are what the scheduler signed.
        parts = urllib.parse.urlsplit(raw)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # PEP 3333 hands the path over decoded, each byte as one latin-1 character.
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    target = urllib.parse.quote(path.encode("latin-1"), safe=_PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def _v1_text(timestamp: int, body: bytes) -> bytes:
    return f"{timestamp}.".encode("ascii") + body


def _v2_text(timestamp: int, method: str, target: str, body: bytes) -> bytes:
    # The signed text parses back into one request only: the timestamp is digits and ends at the
    # first '.', the method is a token and ends at the first space, the target has no space and
    # ends at the second, and the body is the rest. With '.' in place of those spaces it would
    # not: a method may contain '.' (any token may), and so may a target, so
    # ("/a.b", b"x") and ("/a", b"b.x") would sign the same bytes.
    if not _METHOD.fullmatch(method):
        raise ValueError(f"{method!r} is not an HTTP method")
    if not _TARGET.fullmatch(target):
        raise ValueError(f"{target!r} is not a request target as sent (no space, no '#')")
    return f"{timestamp}.{method.upper()} {target} ".encode() + body


def _mac(secret: str, signed: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _parse(header: str | None) -> tuple[int, dict[str, list[str]]]:
    if not header:
        raise MalformedSignature(f"the {HEADER} header is missing")
    timestamp: int | None = None
    signatures: dict[str, list[str]] = {"v1": [], "v2": []}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif name in signatures and _SIGNATURE.fullmatch(value):
            signatures[name].append(value)
        elif name != "t" and name not in signatures:
            continue  # a later scheme (v3=...) that this version does not know
        else:
            raise MalformedSignature(f"bad {name!r} element in the {HEADER} header")
    if timestamp is None or not any(signatures.values()):
        raise MalformedSignature(
            f"the {HEADER} header needs t=<seconds> and at least one v1= or v2="
        )
    return timestamp, signatures
