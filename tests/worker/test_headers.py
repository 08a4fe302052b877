"""An answer's header block reads the same through headers.parse_headers as through http.client's
own parser (email's feed parser), plain or hostile: the same pairs in the same order, the same
defects, the same errors at the same bounds."""

from __future__ import annotations

import http.client
import io
from typing import Any

import hypothesis
from hypothesis import example, given
from hypothesis import strategies as st

from scheduler.worker import headers

EQUIVALENT = hypothesis.settings(max_examples=500, deadline=None, database=None)

TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=12)
PLAIN_VALUE = st.binary(max_size=30).filter(lambda value: b"\r" not in value and b"\n" not in value)
# Lines as endpoints send them, and the odd ones email's parser must take: folds, bare CRs,
# names that are not tokens, a leading colon, NUL, obs-text, a multipart or message type.
ODD_LINE = st.sampled_from(
    [
        b" folded continuation\r\n",
        b"\tfolded\r\n",
        b"No-Colon-Here\r\n",
        b": empty name\r\n",
        b"Bare: carriage\rreturn\r\n",
        b"From someone\r\n",
        b"Spa ce: x\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"content-type:  Message/rfc822\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"X-Nul: a\x00b\r\n",
        b"X-Latin: caf\xe9\r\n",
        b"X-Trailing: spaces   \r\n",
        b"X-Lf-Only: yes\n",
        b"Name:\r\n",
    ]
)
LINE = st.one_of(
    st.builds(lambda name, value: name.encode() + b": " + value + b"\r\n", TOKEN, PLAIN_VALUE),
    st.builds(lambda name, value: name.encode() + b":" + value + b"\n", TOKEN, PLAIN_VALUE),
    ODD_LINE,
)
END = st.sampled_from([b"\r\n", b"\n", b""])


def parsed(parse: Any, block: bytes) -> Any:
    """What a parse of `block` gives, comparable: the pairs, defect types, payload and what is
    left unread; or the error it raised."""
    fp = io.BytesIO(block)
    try:
        message = parse(fp)
    except http.client.HTTPException as exc:
        return type(exc), str(exc)
    return (
        message.items(),
        [type(defect) for defect in message.defects],
        message.is_multipart(),
        None if message.is_multipart() else message.get_payload(),
        fp.read(),
    )


@EQUIVALENT
@given(st.lists(LINE, max_size=12), END, st.binary(max_size=8))
@example([b"Content-Length: 2\r\n", b"Connection: keep-alive\r\n"], b"\r\n", b"ok")
@example([], b"\r\n", b"body")
@example([b"X-Partial: no end"], b"", b"")
def test_a_header_block_reads_as_http_client_reads_it(
    lines: list[bytes], end: bytes, body: bytes
) -> None:
    block = b"".join(lines) + end + (body if end else b"")
    assert parsed(headers.parse_headers, block) == parsed(headers.stdlib_parse_headers, block)


def test_the_bounds_are_http_client_s() -> None:
    too_long = b"X-Long: " + b"a" * headers.MAX_LINE + b"\r\n\r\n"
    too_many = b"X-A: b\r\n" * (headers.MAX_HEADERS + 1) + b"\r\n"
    for block in (too_long, too_many):
        assert parsed(headers.parse_headers, block) == parsed(headers.stdlib_parse_headers, block)
    assert parsed(headers.parse_headers, too_long)[0] is http.client.LineTooLong


def test_install_makes_http_client_use_it() -> None:
    headers.install()
    assert http.client.parse_headers is headers.parse_headers
