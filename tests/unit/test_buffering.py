"""RequestReader: when the bytes of a request, however they are split, hold all of it; and the
answers the web worker's event loop gives without a thread."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import tuning
from scheduler.web import buffering
from scheduler.web.buffering import Verdict

MAX_BODY = 1000

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b'POST /insert HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"body": 1}'
CHUNKED = (
    b"POST /insert HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4\r\n{"bo\r\n7;ext=1\r\ndy": 1}\r\n0\r\n\r\n'
)
TRAILERS = (
    b"POST /insert HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"2\r\n{}\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"
)
# Whole requests, each READY only once its last byte is in.
WHOLE = [
    GET,
    POST,
    CHUNKED,
    TRAILERS,
    b"\r\n" + GET,  # one empty line before the request line is allowed
    b"POST /x HTTP/1.1\r\ncontent-length:0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000,
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3E8\r\n"
    + b"x" * 1000
    + b"\r\n0\r\n\r\n",
]


def feed_all(pieces: list[bytes]) -> list[Verdict]:
    reader = buffering.RequestReader(MAX_BODY)
    return [reader.feed(piece) for piece in pieces]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize("request_bytes", WHOLE)
def test_a_whole_request_is_ready_at_its_last_byte_and_not_before(request_bytes: bytes) -> None:
    one_by_one = feed_all([request_bytes[i : i + 1] for i in range(len(request_bytes))])

    assert one_by_one[-1] is Verdict.READY
    assert set(one_by_one[:-1]) == {Verdict.WAIT}
    assert feed_all([request_bytes]) == [Verdict.READY]


@given(st.sampled_from(WHOLE), st.lists(st.integers(min_value=0), max_size=12))
def test_however_a_request_is_split_it_is_ready_exactly_at_its_end(
    request_bytes: bytes, cuts: list[int]
) -> None:
    verdicts = feed_all(split(request_bytes, cuts))

    assert verdicts[-1] is Verdict.READY
    assert set(verdicts[:-1]) <= {Verdict.WAIT}


def test_the_start_of_the_next_request_does_not_delay_the_first() -> None:
    assert feed_all([POST + b"GET /he"]) == [Verdict.READY]


@pytest.mark.parametrize(
    "head",
    [
        # gunicorn refuses these from the head alone, without reading a body: hand them over.
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ],
)
def test_a_head_gunicorn_refuses_is_handed_over_at_once(head: bytes) -> None:
    assert feed_all([head]) == [Verdict.READY]


@pytest.mark.parametrize(
    ("pieces", "verdict"),
    [
        # Refused before the body is read, however little of it has come.
        ([b"POST /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"], Verdict.BODY_TOO_LARGE),
        (
            [b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3E9\r\n"],
            Verdict.BODY_TOO_LARGE,
        ),
        (
            [b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"1" * 2000],
            Verdict.BAD_CHUNK,
        ),
        ([b"GET / HTTP/1.1\r\nX: " + b"x" * tuning.REQUEST_HEAD_MAX_BYTES], Verdict.HEAD_TOO_LARGE),
        (
            [b"GET / HTTP/1.1\r\nX: " + b"x" * tuning.REQUEST_HEAD_MAX_BYTES + b"\r\n\r\n"],
            Verdict.HEAD_TOO_LARGE,
        ),
        # A bad chunk-size or a chunk without its CRLF: gunicorn refuses it from what is here.
        ([b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], Verdict.READY),
        ([b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n"], Verdict.READY),
        ([b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"], Verdict.READY),
    ],
)
def test_what_cannot_be_served_is_decided_as_soon_as_it_shows(
    pieces: list[bytes], verdict: Verdict
) -> None:
    assert feed_all(pieces)[-1] is verdict


@pytest.mark.parametrize(
    ("head", "expects"),
    [
        (b"POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", True),
        (b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", False),
        (b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n", False),
    ],
)
def test_a_client_waiting_for_100_continue_is_noticed(head: bytes, expects: bool) -> None:
    reader = buffering.RequestReader(MAX_BODY)

    assert reader.feed(head) is Verdict.WAIT
    assert reader.head_read
    assert reader.expects_continue is expects


@pytest.mark.parametrize(
    ("verdict", "status", "code"),
    [
        (Verdict.TIMED_OUT, b"408 Request Timeout", "request_timeout"),
        (Verdict.BODY_TOO_LARGE, b"413 Request Entity Too Large", "request_entity_too_large"),
        (Verdict.HEAD_TOO_LARGE, b"431 ", "request_header_fields_too_large"),
        (Verdict.BAD_CHUNK, b"400 Bad Request", "invalid_request"),
    ],
)
def test_the_loop_s_own_answers_are_our_json_error_body(
    verdict: Verdict, status: bytes, code: str
) -> None:
    head, _, body = buffering.refusal(verdict).partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 " + status)
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert b"\r\nConnection: close" in head
    assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head
    assert json.loads(body)["error"]["code"] == code
