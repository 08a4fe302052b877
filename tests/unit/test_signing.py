"""Delivery signatures: round trips, rotation, and every way verification fails."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from scheduler import signing

BODY = b'{"id": "01m8", "cron_id": "", "body": {"a": 1}}'
NOW = 1_800_000_000


def test_round_trip_returns_the_timestamp() -> None:
    header = signing.sign(BODY, ["s3cret-one"], timestamp=NOW)
    assert signing.verify(BODY, header, "s3cret-one", now=NOW + 10) == NOW


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = signing.sign(BODY, ["k"], timestamp=NOW)
    expected = hmac.new(b"k", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_rotation_signs_with_every_secret_and_verifies_with_any() -> None:
    header = signing.sign(BODY, ["old-secret", "new-secret"], timestamp=NOW)
    assert header.count("v1=") == 2
    assert signing.verify(BODY, header, ["new-secret"], now=NOW) == NOW
    assert signing.verify(BODY, header, ["old-secret"], now=NOW) == NOW
    assert signing.verify(BODY, header, ["unrelated", "new-secret"], now=NOW) == NOW
    only_new = signing.sign(BODY, ["new-secret"], timestamp=NOW)
    assert signing.verify(BODY, only_new, ["old-secret", "new-secret"], now=NOW) == NOW


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, signing.MalformedSignature),
        ("", signing.MalformedSignature),
        ("garbage", signing.MalformedSignature),
        (f"t={NOW}", signing.MalformedSignature),
        ("v1=" + "0" * 64, signing.MalformedSignature),
        (f"t=soon,v1={'0' * 64}", signing.MalformedSignature),
        (f"t={NOW},v1=xyz", signing.MalformedSignature),
        (f"t={NOW},v1={'0' * 64}", signing.SignatureMismatch),
    ],
)
def test_malformed_or_wrong_headers(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        signing.verify(BODY, header, "k", now=NOW)


def test_tampered_body_or_other_secret_do_not_match() -> None:
    header = signing.sign(BODY, ["k"], timestamp=NOW)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY + b" ", header, "k", now=NOW)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY, header, "other", now=NOW)
    retimed = header.replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY, retimed, "k", now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_stale_or_future_timestamps_are_refused(offset: int) -> None:
    header = signing.sign(BODY, ["k"], timestamp=NOW)
    with pytest.raises(signing.StaleSignature):
        signing.verify(BODY, header, "k", now=NOW - offset)


def test_tolerance_is_configurable_and_unknown_schemes_are_ignored() -> None:
    header = signing.sign(BODY, ["k"], timestamp=NOW) + ",v2=future-scheme"
    assert signing.verify(BODY, header, "k", tolerance=3600, now=NOW + 3000) == NOW
    with pytest.raises(signing.StaleSignature):
        signing.verify(BODY, header, "k", tolerance=60, now=NOW + 61)


def test_all_failures_share_one_base_class() -> None:
    for error in (signing.MalformedSignature, signing.StaleSignature, signing.SignatureMismatch):
        assert issubclass(error, signing.SignatureError)
    with pytest.raises(ValueError):
        signing.verify(BODY, signing.sign(BODY, ["k"], timestamp=NOW), [], now=NOW)
