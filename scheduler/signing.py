"""Signatures on deliveries, and their verification for receivers.

The header is `Scheduler-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, each `v1` an
HMAC-SHA256 of `b"<t>." + body` keyed with one secret (one per secret while secrets rotate).
The timestamp inside the signed text stops an old delivery from being replayed later.

This module uses the standard library only, so receivers can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER = "Scheduler-Signature"
DEFAULT_TOLERANCE = 300


class SignatureError(Exception):
    """The signature does not prove the delivery came from the scheduler."""


class MalformedSignature(SignatureError):
    """The header is missing or not of the form t=<seconds>,v1=<hex>."""


class StaleSignature(SignatureError):
    """The signed timestamp is too far from now: a replay, or a badly wrong clock."""


class SignatureMismatch(SignatureError):
    """No signature matches the body with any of the secrets."""


def sign(body: bytes, secrets: Iterable[str], timestamp: int | None = None) -> str:
    """The header value for `body`, with one signature per secret."""
    moment = int(time.time()) if timestamp is None else timestamp
    signatures = ",".join(f"v1={_mac(secret, moment, body)}" for secret in secrets)
    return f"t={moment},{signatures}"


def verify(
    body: bytes,
    header: str | None,
    secrets: str | Iterable[str],
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a delivery's signature; return its timestamp.

    `secrets` may be one secret or several (accept any while rotating). The signature must be no
    older and no further in the future than `tolerance` seconds.

    :raise MalformedSignature, StaleSignature, SignatureMismatch: see each class.
    """
    timestamp, signatures = _parse(header)
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
        expected = _mac(key, timestamp, body)
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureMismatch("no v1 signature matches the body with the given secrets")
    return timestamp


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise MalformedSignature(f"the {HEADER} header is missing")
    timestamp: int | None = None
    signatures = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif name == "v1" and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            signatures.append(value)
        elif name not in ("t", "v1"):
            continue  # a later scheme (v2=...) that this version does not know
        else:
            raise MalformedSignature(f"bad {name!r} element in the {HEADER} header")
    if timestamp is None or not signatures:
        raise MalformedSignature(f"the {HEADER} header needs t=<seconds> and at least one v1=")
    return timestamp, signatures
