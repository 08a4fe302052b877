"""Delivery signatures: round trips, rotation, and every way verification fails."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scheduler import signing
from tests import support

BODY = b'{"id": "01m8", "cron_id": "", "body": {"a": 1}}'
NOW = 1_800_000_000
TARGET = "/hooks/orders/42?src=x"


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
    header = signing.sign(BODY, ["k"], timestamp=NOW) + ",v3=future-scheme"
    assert signing.verify(BODY, header, "k", tolerance=3600, now=NOW + 3000) == NOW
    with pytest.raises(signing.StaleSignature):
        signing.verify(BODY, header, "k", tolerance=60, now=NOW + 61)


def test_all_failures_share_one_base_class() -> None:
    for error in (signing.MalformedSignature, signing.StaleSignature, signing.SignatureMismatch):
        assert issubclass(error, signing.SignatureError)
    with pytest.raises(ValueError):
        signing.verify(BODY, signing.sign(BODY, ["k"], timestamp=NOW), [], now=NOW)


def test_request_round_trip_returns_the_timestamp() -> None:
    header = signing.sign_request("PUT", TARGET, BODY, ["k"], timestamp=NOW)
    assert header.startswith(f"t={NOW},v2=") and "v1=" not in header
    assert signing.verify(BODY, header, "k", now=NOW + 10, method="PUT", target=TARGET) == NOW


def test_v2_is_hmac_sha256_of_timestamp_method_target_and_body() -> None:
    header = signing.sign_request("patch", TARGET, BODY, ["k"], timestamp=NOW)
    signed = f"{NOW}.PATCH {TARGET} ".encode() + BODY
    assert header == f"t={NOW},v2={hmac.new(b'k', signed, hashlib.sha256).hexdigest()}"
    assert signing.verify(BODY, header, "k", now=NOW, method="PATCH", target=TARGET) == NOW


@pytest.mark.parametrize(
    ("method", "target", "body", "secret"),
    [
        ("POST", TARGET, BODY, "k"),
        ("DELETE", TARGET, BODY, "k"),
        ("PUT", "/hooks/orders/43?src=x", BODY, "k"),
        ("PUT", "/hooks/orders/42", BODY, "k"),
        ("PUT", "/hooks/orders/42?src=y", BODY, "k"),
        ("PUT", "/hooks/orders/42%3Fsrc=x", BODY, "k"),
        ("PUT", TARGET, BODY + b" ", "k"),
        ("PUT", TARGET, BODY, "other"),
    ],
)
def test_another_method_target_body_or_secret_does_not_match(
    method: str, target: str, body: bytes, secret: str
) -> None:
    header = signing.sign_request("PUT", TARGET, BODY, ["k"], timestamp=NOW)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(body, header, secret, now=NOW, method=method, target=target)


def test_a_dot_cannot_move_between_target_and_body() -> None:
    header = signing.sign_request("POST", "/files/a.b", b"x", ["k"], timestamp=NOW)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(b"b.x", header, "k", now=NOW, method="POST", target="/files/a")


def test_a_decoded_target_with_a_space_is_refused() -> None:
    # Where a receiver passes a decoded path, "/a b" with body "c" would otherwise sign the same
    # bytes as "/a" with body "b c".
    header = signing.sign_request("POST", "/a", b"b c", ["k"], timestamp=NOW)
    with pytest.raises(signing.SignatureMismatch, match="space"):
        signing.verify(b"c", header, "k", now=NOW, method="POST", target="/a b")


@pytest.mark.parametrize(
    ("method", "target"),
    [("", "/"), ("PO ST", "/"), ("PÖST", "/"), ("POST", ""), ("POST", "/a b"), ("POST", "/a#b")],
)
def test_sign_request_refuses_what_cannot_be_sent(method: str, target: str) -> None:
    with pytest.raises(ValueError):
        signing.sign_request(method, target, BODY, ["k"], timestamp=NOW)


def test_v2_rotation_signs_with_every_secret_and_verifies_with_any() -> None:
    header = signing.sign_request("PUT", TARGET, BODY, ["old-secret", "new-secret"], timestamp=NOW)
    assert header.count("v2=") == 2
    for secrets in (["new-secret"], ["old-secret"], ["unrelated", "new-secret"]):
        assert signing.verify(BODY, header, secrets, now=NOW, method="PUT", target=TARGET) == NOW
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY, header, ["unrelated"], now=NOW, method="PUT", target=TARGET)
    only_new = signing.sign_request("PUT", TARGET, BODY, ["new-secret"], timestamp=NOW)
    both = ["old-secret", "new-secret"]
    assert signing.verify(BODY, only_new, both, now=NOW, method="PUT", target=TARGET) == NOW


def test_a_v2_header_needs_the_method_and_target() -> None:
    header = signing.sign_request("PUT", TARGET, BODY, ["k"], timestamp=NOW)
    with pytest.raises(signing.MissingMethodOrTarget):
        signing.verify(BODY, header, "k", now=NOW)
    with pytest.raises(signing.MissingMethodOrTarget):
        signing.verify(BODY, header, "k", now=NOW, method="PUT")
    with pytest.raises(signing.MissingMethodOrTarget):
        signing.verify(BODY, header, "k", now=NOW, target=TARGET)


def test_only_v2_is_checked_when_the_header_has_both() -> None:
    v1 = signing.sign(BODY, ["k"], timestamp=NOW)
    v2 = signing.sign_request("PUT", TARGET, BODY, ["k"], timestamp=NOW).removeprefix(f"t={NOW},")
    header = f"{v1},{v2}"
    assert signing.verify(BODY, header, "k", now=NOW, method="PUT", target=TARGET) == NOW
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY, header, "k", now=NOW, method="POST", target="/")
    with pytest.raises(signing.MissingMethodOrTarget):
        signing.verify(BODY, header, "k", now=NOW)


def test_v1_is_checked_as_before_unless_v2_is_required() -> None:
    header = signing.sign(BODY, ["k"], timestamp=NOW)
    assert signing.verify(BODY, header, "k", now=NOW, method="POST", target="/any") == NOW
    with pytest.raises(signing.V2Required):
        signing.verify(BODY, header, "k", now=NOW, method="POST", target="/", require_v2=True)


@pytest.mark.parametrize(
    "header",
    [f"t={NOW},v2=xyz", f"t={NOW},v2={'0' * 63}", f"t={NOW},v1={'0' * 64},v2=", "v2=" + "0" * 64],
)
def test_malformed_v2_elements(header: str) -> None:
    with pytest.raises(signing.MalformedSignature):
        signing.verify(BODY, header, "k", now=NOW, method="PUT", target=TARGET)


def test_v2_tolerance_and_unknown_schemes() -> None:
    header = signing.sign_request("PUT", TARGET, BODY, ["k"], timestamp=NOW) + ",v3=future"
    request = {"method": "PUT", "target": TARGET}
    assert signing.verify(BODY, header, "k", now=NOW - 300, **request) == NOW
    assert signing.verify(BODY, header, "k", tolerance=3600, now=NOW + 3000, **request) == NOW
    for now, tolerance in ((NOW + 301, 300), (NOW - 301, 300), (NOW + 61, 60)):
        with pytest.raises(signing.StaleSignature):
            signing.verify(BODY, header, "k", tolerance=tolerance, now=now, **request)
    retimed = header.replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(BODY, retimed, "k", now=NOW, **request)


# Few letters, '.', '?' and '=' among them, so that near misses (a '.' or a letter moved from one
# field to the next) come up often.
METHODS = st.text("PoST.", min_size=1, max_size=6)
TARGETS = st.text("/a.?=%", min_size=1, max_size=8)
BODIES = st.binary(max_size=8) | st.text("a. /", max_size=8).map(str.encode)


@given(
    request=st.tuples(METHODS, TARGETS, BODIES),
    changes=st.tuples(st.none() | METHODS, st.none() | TARGETS, st.none() | BODIES),
)
def test_any_change_to_method_target_or_body_breaks_the_signature(
    request: tuple[str, str, bytes], changes: tuple[str | None, str | None, bytes | None]
) -> None:
    method, target, body = (
        new if new is not None else old for new, old in zip(changes, request, strict=True)
    )
    assert isinstance(method, str) and isinstance(target, str) and isinstance(body, bytes)
    assume((method.upper(), target, body) != (request[0].upper(), request[1], request[2]))
    header = signing.sign_request(*request, ["k"], timestamp=NOW)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(body, header, "k", now=NOW, method=method, target=target)


@pytest.mark.parametrize(
    ("environ", "target"),
    [
        ({"RAW_URI": "/hooks/a%20b?x=1", "PATH_INFO": "/hooks/a b"}, "/hooks/a%20b?x=1"),
        ({"REQUEST_URI": "/hooks/a%2Fb", "PATH_INFO": "/hooks/a/b"}, "/hooks/a%2Fb"),
        ({"RAW_URI": "//double/slash"}, "//double/slash"),
        ({"RAW_URI": "http://example.com/hooks/1?x=1"}, "/hooks/1?x=1"),
        ({"RAW_URI": "http://example.com"}, "/"),
        (
            {"SCRIPT_NAME": "/app", "PATH_INFO": "/hooks/1", "QUERY_STRING": "a=%20"},
            "/app/hooks/1?a=%20",
        ),
        ({"PATH_INFO": "/a b/c?d#e/(x);y=1:@!"}, "/a%20b/c%3Fd%23e/(x);y=1:@!"),
        ({"PATH_INFO": "/caf\xc3\xa9/100%"}, "/caf%C3%A9/100%25"),
        ({"PATH_INFO": "", "QUERY_STRING": ""}, "/"),
    ],
)
def test_request_target_from_a_wsgi_environ(environ: dict[str, str], target: str) -> None:
    assert signing.request_target(environ) == target


def test_the_documented_example_is_what_sign_request_computes() -> None:
    doc = (support.ROOT / "docs" / "receiving.md").read_text("utf-8")
    body = b'{"id": "01j9", "cron_id": "", "body": {"qty": 2}}'
    header = signing.sign_request("PUT", TARGET, body, ["example-secret"], timestamp=NOW)
    assert f"{NOW}.PUT {TARGET} ".encode() + body in doc.encode()
    assert header in doc
