"""Whatever an endpoint answers is an answer: hostile answers, written byte for byte by a raw
socket server, never make deliver() raise (which senders record as our own `internal` error),
a 2xx status line is a delivery whatever interim 1xx answers come before it and whatever follows
it, and what is kept of an answer is text PostgreSQL can store."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import encodings
import encodings.aliases
import gzip
import pkgutil
import zlib
from collections.abc import Iterator

import hypothesis
import psycopg
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from scheduler import config, jobs, policy
from scheduler.storage import outcomes
from scheduler.worker import attempt, watchdog
from tests import support
from tests.worker import test_attempt
from tests.worker.test_attempt import one_delivery

HOSTILE = hypothesis.settings(
    max_examples=200,
    deadline=None,  # a loaded machine is no counterexample
    database=None,  # a failure prints its falsifying example anyway
    suppress_health_check=[HealthCheck.too_slow],
)
# http.client's limits on an answer's head (_MAXLINE, _MAXHEADERS, which counts the blank line
# that ends the head): past them it reads no status at all, and the attempt is an
# `invalid_response`.
MAX_LINE = 65536
MAX_HEADERS = 99
# What RFC 9110 allows in a reason phrase: HTAB, SP, VCHAR, obs-text.
REASON_BYTES = frozenset([0x09, 0x20, *range(0x21, 0x7F), *range(0x80, 0x100)])

# Codec names an endpoint may put in its charset, by what they do to a decoder.
CHARSET_GROUPS = [
    # Text codecs that refuse errors="replace" (idna, punycode) or every input (undefined), and
    # a name codec lookup refuses.
    ["idna", "punycode", "undefined", "utf\x00"],
    # From bytes to bytes, not to text.
    ["base64", "rot13", "rot_13", "zlib", "hex", "bz2", "uu", "quopri"],
    # Text with NUL or lone surrogates in it.
    ["utf-7", "unicode_escape", "raw_unicode_escape"],
    # Wide and marked, for bodies of odd lengths.
    ["utf-16", "utf-16-le", "utf-32", "utf-32-be", "utf-8-sig"],
    ["utf-8", "latin-1", "ascii", "shift_jis", "iso2022_jp", "hz", "cp037", "cp65001"],
    # Windows-only, unknown, empty.
    ["mbcs", "oem", "no-such-charset", ""],
]
ODD_CHARSETS = [name for group in CHARSET_GROUPS for name in group]
# Every codec name Python knows, for the decoding alone.
KNOWN_CODECS = sorted(
    set(encodings.aliases.aliases)
    | set(encodings.aliases.aliases.values())
    | {module.name for module in pkgutil.iter_modules(encodings.__path__)}
)


def one_line(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


def latin1(text: str) -> bytes:
    return text.encode("latin-1")


latin1_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40)
field_bytes = st.binary(max_size=40).map(one_line)
retry_after_values = st.one_of(
    st.integers(min_value=0, max_value=10**40).map(str),
    st.datetimes(timezones=st.timezones()).map(
        lambda moment: moment.strftime("%a, %d %b %Y %T %z")
    ),
    st.sampled_from(
        [
            "",
            "soon",
            "-5",
            "1.5",
            "\N{SUPERSCRIPT TWO}",
            "Fri, 27 Nov 2026 12:00:30 GMT",
            "Mon, 01 Jan 2024 00:00:00 +9999999999999999999",
            "Fri, 27 Nov 99999 12:00:30 GMT",
            "9" * 400,
        ]
    ),
    latin1_text,
).map(latin1)
content_lengths = st.one_of(
    st.integers(min_value=-3, max_value=10**25).map(str),
    st.sampled_from(["", "abc", "1, 2", "5,5", " 7 ", "0x10", "1e3"]),
).map(latin1)
charsets = st.one_of(
    *map(st.sampled_from, CHARSET_GROUPS), latin1_text.filter(lambda text: ";" not in text)
)
content_types = st.one_of(
    st.builds("text/plain; charset={}".format, charsets),
    st.builds('application/json; charset="{}"'.format, charsets),
    st.sampled_from(["text/html", "application/json", "application/octet-stream", ";;;=", ""]),
).map(latin1)
encodings_named = st.sampled_from(
    ["gzip", "deflate", "br", "zstd", "x-gzip", "identity", "gzip, deflate", "deflate, gzip, br"]
).map(latin1)
transfer_encodings = st.sampled_from(
    ["chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked", "chunked, chunked"]
).map(latin1)
# Each header a hostile answer may carry, and how many copies of it (duplicates included).
header_kinds = [
    (b"Content-Type", content_types, 2),
    (b"Content-Length", content_lengths, 2),
    (b"Transfer-Encoding", transfer_encodings, 2),
    (b"Content-Encoding", encodings_named, 2),
    (b"Retry-After", retry_after_values, 2),
    (b"Location", field_bytes, 1),
    (b"Set-Cookie", field_bytes, 3),
]
# Any name, Latin-1 or not a token at all (the line may not even parse as a header).
any_header = st.tuples(st.binary(min_size=1, max_size=16).map(one_line).filter(bool), field_bytes)
# Huge: some past http.client's line limit.
huge_header = st.integers(min_value=1000, max_value=MAX_LINE + 100).map(
    lambda size: (b"X-Huge", b"h" * size)
)
reasons = st.one_of(
    st.sampled_from([b"OK", b""]),
    st.binary(max_size=30).map(lambda reason: bytes(set(reason) & REASON_BYTES)),
    field_bytes,
)
# Statuses that mean something to a sender, then any.
statuses = st.sampled_from([200, 201, 204, 299, 301, 302, 307, 308, 429, 503, 101, 102, 103])
statuses |= st.integers(min_value=100, max_value=999)
# Interim answers, which a client reads past to the answer (all 1xx but 101: RFC 9110 §15.2).
interim_statuses = st.sampled_from([100, 102, 103]) | st.integers(min_value=100, max_value=199)
interim_statuses = interim_statuses.filter(lambda status: status != 101)


def is_interim(status: int) -> bool:
    return 100 <= status < 200 and status != 101


def chunked(pieces: list[bytes], flaw: str) -> bytes:
    """`pieces` in chunked framing, made wrong as `flaw` says."""
    framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    if flaw == "bad size":
        return b"zz\r\n" + framed
    if flaw == "size lies":
        return b"ffff\r\nshort\r\n"
    if flaw == "no end":
        return framed
    return framed + b"0\r\n\r\n"


bodies = st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=2000).map(gzip.compress),
    st.binary(max_size=2000).map(zlib.compress),
    st.tuples(st.binary(min_size=1, max_size=2000).map(gzip.compress), st.integers(1, 30)).map(
        lambda cut: cut[0][: -cut[1]]
    ),
    st.builds(
        chunked,
        st.lists(st.binary(min_size=1, max_size=300), max_size=5),
        st.sampled_from(["none", "bad size", "size lies", "no end"]),
    ),
    st.tuples(st.text(max_size=200), st.sampled_from(["utf-16", "utf-32", "utf-7"])).map(
        lambda text: text[0].encode(text[1])[:-1]
    ),
    # Huge: far more than the excerpt reads.
    st.tuples(st.binary(min_size=1, max_size=16), st.integers(10**5, 2 * 10**6)).map(
        lambda huge: huge[0] * (huge[1] // len(huge[0]))
    ),
)


@dataclasses.dataclass(frozen=True)
class Head:
    """A status line and its header lines."""

    version: bytes
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @property
    def raw(self) -> bytes:
        lines = [b"%s %d %s\r\n" % (self.version, self.status, self.reason)]
        lines += [name + b": " + value + b"\r\n" for name, value in self.headers]
        return b"".join(lines) + b"\r\n"

    @property
    def is_valid(self) -> bool:
        """Whether HTTP reads it: valid, and within http.client's limits."""
        return (
            REASON_BYTES.issuperset(self.reason)
            and len(self.headers) <= MAX_HEADERS
            and all(len(name) + len(value) + 4 <= MAX_LINE for name, value in self.headers)
        )


@dataclasses.dataclass(frozen=True)
class Answer:
    """One answer as the endpoint writes it: interim 1xx heads, a status line, header lines, a
    body, and perhaps only its first `cut` bytes."""

    version: bytes
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    cut: int | None
    interims: tuple[Head, ...] = ()

    @property
    def final(self) -> Head:
        return Head(self.version, self.status, self.reason, self.headers)

    @property
    def head(self) -> bytes:
        return b"".join(interim.raw for interim in self.interims) + self.final.raw

    @property
    def raw(self) -> bytes:
        whole = self.head + self.body
        return whole if self.cut is None else whole[: self.cut]

    @property
    def head_is_read(self) -> bool:
        """Whether HTTP reads its heads: whole, valid, and within http.client's limits, each."""
        return len(self.raw) >= len(self.head) and all(
            head.is_valid for head in (*self.interims, self.final)
        )

    @property
    def lengths_disagree(self) -> bool:
        """Whether its Content-Length headers name different lengths: urllib3 then refuses the
        answer as ambiguous (a defence against response smuggling) and reads no status."""
        lengths = set()
        for name, value in self.headers:
            if name.lower() == b"content-length":
                for part in value.split(b","):
                    with contextlib.suppress(ValueError):
                        lengths.add(int(part))
        return len(lengths) > 1


@st.composite
def header_lists(draw: st.DrawFn) -> tuple[tuple[bytes, bytes], ...]:
    headers = []
    for name, values, most in header_kinds:
        # Mostly one copy or none; more, duplicates.
        copies = draw(st.sampled_from([0, 1, 1, most]))
        headers += [(name, draw(values)) for _ in range(copies)]
    headers += draw(st.lists(any_header, max_size=4))
    headers += draw(st.lists(huge_header, max_size=1))
    if draw(st.integers(0, 9)) == 0:
        # Many headers, some past http.client's limit.
        many = draw(st.integers(min_value=MAX_HEADERS - 10, max_value=MAX_HEADERS + 10))
        headers += [(b"X-Many", b"%d" % n) for n in range(many)]
    return tuple(draw(st.permutations(headers)))


versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"])
# As hostile as the answer's own head; what they say (a length, a Retry-After) is ignored.
interims = st.builds(Head, versions, interim_statuses, reasons, header_lists())


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    answer = Answer(
        version=draw(versions),
        status=draw(statuses),
        reason=draw(reasons),
        headers=draw(header_lists()),
        body=draw(bodies),
        cut=None,
        # Mostly none.
        interims=tuple(draw(st.lists(interims, max_size=3))) if draw(st.booleans()) else (),
    )
    if draw(st.integers(0, 3)):
        return answer
    # Cut off anywhere, the head included.
    return dataclasses.replace(answer, cut=draw(st.integers(0, len(answer.raw))))


def settings_for(url: str) -> config.Settings:
    return test_attempt.settings_for(url, SCHEDULER_CONNECT_TIMEOUT="2", SCHEDULER_READ_TIMEOUT="5")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[support.RawEndpoint]:
    server = support.RawEndpoint()
    yield server
    server.close()


@pytest.fixture(scope="module")
def guard() -> Iterator[watchdog.Watchdog]:
    running = watchdog.Watchdog()
    yield running
    running.stop()


def send(endpoint: support.RawEndpoint, guard: watchdog.Watchdog, raw: bytes) -> attempt.Outcome:
    """deliver() as a sending thread calls it, from a thread of its own so that no connection
    is reused from one answer to the next; whatever it raises is raised here."""
    endpoint.answer = raw
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(
            attempt.deliver, settings_for(endpoint.url), one_delivery(), guard
        ).result()


def assert_storable(text: str | None) -> None:
    """PostgreSQL's text holds no NUL and only what UTF-8 encodes (no lone surrogates)."""
    if text is not None:
        assert "\x00" not in text
        text.encode("utf-8")


def assert_an_answer(outcome: attempt.Outcome) -> None:
    assert outcome.error_kind != "internal"
    assert outcome.error_kind is None or jobs.is_error_kind(outcome.error_kind)
    assert outcome.ok is (outcome.error is None)
    assert_storable(outcome.error)
    assert_storable(outcome.response_excerpt)
    if outcome.response_excerpt is not None:
        assert len(outcome.response_excerpt) <= attempt.EXCERPT_LENGTH


@HOSTILE
@given(answer=answers())
@example(
    answer=Answer(
        b"HTTP/1.1",
        200,
        b"OK",
        ((b"Content-Type", b"text/plain; charset=idna"), (b"Content-Length", b"2")),
        b"ok",
        None,
    )
)
@example(answer=Answer(b"HTTP/1.1", 302, b"Found", ((b"Location", b"http://[::1"),), b"", None))
@example(answer=Answer(b"HTTP/1.1", 301, b"Moved", ((b"Location", b"\xff"),), b"", None))
@example(
    answer=Answer(
        b"HTTP/1.1",
        429,
        b"Slow down",
        ((b"Retry-After", b"Mon, 01 Jan 2024 00:00:00 +9999999999999999999"),),
        b"",
        None,
    )
)
@example(
    answer=Answer(
        b"HTTP/1.1",
        204,
        b"No Content",
        (),
        b"",
        None,
        (
            Head(b"HTTP/1.1", 102, b"Processing", ()),
            Head(b"HTTP/1.1", 103, b"Early Hints", ((b"Link", b"</a.css>; rel=preload"),)),
        ),
    )
)
def test_any_answer_is_an_outcome_and_any_2xx_a_delivery(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog, answer: Answer
) -> None:
    outcome = send(endpoint, guard, answer.raw)
    assert_an_answer(outcome)
    if not answer.head_is_read or answer.lengths_disagree:
        # Its status line may still have been read; otherwise it is no valid HTTP answer.
        assert outcome.status_code in (None, answer.status)
        if outcome.status_code is None:
            assert outcome.error_kind in ("invalid_response", "connection")
        return
    if is_interim(answer.status):
        # Interim heads only: the body is read as the next status line, and is none.
        if not answer.body.startswith(b"HTTP/"):
            assert outcome.status_code is None
            assert outcome.error_kind in ("invalid_response", "connection")
        return
    # Whatever interim heads came first, the answer is the final one's.
    assert outcome.status_code == answer.status
    if 200 <= answer.status < 300:
        assert outcome.ok, outcome
        assert outcome.error is None and outcome.error_kind is None
    else:
        assert not outcome.ok
        assert outcome.error_kind == jobs.http_error_kind(answer.status)


@HOSTILE
@given(
    heads=st.lists(interims.filter(lambda head: head.is_valid), min_size=1, max_size=5),
    status=st.integers(min_value=200, max_value=299),
    body=st.binary(max_size=100),
)
def test_any_interim_answers_before_a_2xx_make_it_a_delivery(
    endpoint: support.RawEndpoint,
    guard: watchdog.Watchdog,
    heads: list[Head],
    status: int,
    body: bytes,
) -> None:
    length = ((b"Content-Length", b"%d" % len(body)),)
    answer = Answer(b"HTTP/1.1", status, b"OK", length, body, None, tuple(heads))
    outcome = send(endpoint, guard, answer.raw)
    assert outcome.ok and outcome.status_code == status
    assert (outcome.error, outcome.error_kind) == (None, None)


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"


def test_an_answer_after_early_hints_is_the_answer(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog
) -> None:
    outcome = send(endpoint, guard, EARLY_HINTS + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert outcome.ok and outcome.status_code == 200
    assert (outcome.error, outcome.error_kind) == (None, None)
    assert outcome.response_excerpt == "ok"


def test_a_refusal_after_several_interim_answers_is_the_refusal(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog
) -> None:
    interims = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\nRetry-After: 999\r\n\r\n",
        EARLY_HINTS,
        # Unknown 1xx are interim too; what an interim head says of a body is not about one.
        b"HTTP/1.1 199 Whatever\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    final = b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy"
    outcome = send(endpoint, guard, b"".join(interims) + final)
    assert outcome.status_code == 503
    assert (outcome.error, outcome.error_kind) == ("HTTP 503", "http_503")
    assert outcome.retry_after == 7.0
    assert outcome.response_excerpt == "busy"


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 103 Early Hints\r\n" + b"Link: </a.css>\r\n" * (MAX_HEADERS + 1) + b"\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: " + b"a" * MAX_LINE + b"\r\n\r\n",
    ],
    ids=["too many headers", "too long a line"],
)
def test_an_interim_head_has_the_bounds_of_the_answer_s_own(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog, interim: bytes
) -> None:
    outcome = send(endpoint, guard, interim + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert outcome.status_code is None
    assert outcome.error_kind == "invalid_response"


def test_an_unasked_switch_of_protocols_is_a_failed_attempt(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    # What follows is another protocol, not an answer, however much it looks like one.
    outcome = send(endpoint, guard, switch + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert not outcome.ok and outcome.status_code == 101
    assert (outcome.error, outcome.error_kind) == ("HTTP 101", "http_101")


def test_an_endless_run_of_interim_answers_ends_at_the_attempt_deadline(
    endpoint: support.RawEndpoint,
) -> None:
    now = [0.0]
    guard = watchdog.Watchdog(lambda: now[0])
    settings = settings_for(endpoint.url)
    endpoint.answer, endpoint.tail, endpoint.tail_times = b"", EARLY_HINTS * 1000, 10**9
    endpoint.sent = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
            running = thread.submit(attempt.deliver, settings, one_delivery(), guard)
            try:
                # More than the sockets' buffers hold unread: it reads one head after another.
                support.wait_until(lambda: endpoint.sent > 16 * 2**20, timeout=30)
                assert not running.done()
            finally:
                now[0] += settings.attempt_deadline
                guard.poke()
            outcome = running.result(timeout=10)
    finally:
        endpoint.tail_times = 0
        guard.stop()
    assert outcome.status_code is None and outcome.error_kind == "timeout"
    assert outcome.error == f"timeout: no answer within {settings.attempt_deadline:g}s"


@HOSTILE
@given(
    status=st.sampled_from(attempt.RETRY_AFTER_STATUSES),
    value=retry_after_values.filter(lambda value: not value.startswith((b" ", b"\t"))),
)
def test_a_retry_after_that_is_no_valid_delay_is_ignored_and_noted(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog, status: int, value: bytes
) -> None:
    answer = Answer(b"HTTP/1.1", status, b"No", ((b"Retry-After", value),), b"", None)
    outcome = send(endpoint, guard, answer.raw)
    assert_an_answer(outcome)
    valid = policy.parse_retry_after(value.decode("latin-1"), dt.datetime.now(dt.UTC))
    assert outcome.error_kind == jobs.http_error_kind(status)
    assert (outcome.retry_after is None) is (valid is None)
    assert outcome.error is not None
    if valid is None:
        # The normal backoff applies (policy.next_try_in without a retry_after), and it says so.
        assert outcome.error.startswith(f"HTTP {status}; Retry-After ignored: ")
    else:
        assert outcome.error == f"HTTP {status}"


@HOSTILE
@given(st.sampled_from(ODD_CHARSETS + KNOWN_CODECS) | st.text(), st.binary(max_size=600))
def test_an_excerpt_decodes_in_any_charset_to_storable_text(charset: str, head: bytes) -> None:
    text = attempt.decode_excerpt(head, charset)
    assert_storable(text)
    if charset in ("utf-8", ""):
        assert text == head.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"a\x00b", "text/plain; charset=utf-8"),
        (b"+2AA-", "text/plain; charset=utf-7"),  # a lone surrogate
        (b"\\ud800\\x00", "text/plain; charset=unicode_escape"),
    ],
)
def test_what_an_attempt_keeps_of_an_answer_is_stored_as_it_is(
    endpoint: support.RawEndpoint,
    guard: watchdog.Watchdog,
    db: psycopg.Connection[tuple[object, ...]],
    body: bytes,
    content_type: str,
) -> None:
    head = f"HTTP/1.1 503 No\r\nContent-Type: {content_type}\r\nRetry-After: \x00\r\n\r\n"
    outcome = send(endpoint, guard, head.encode("latin-1") + body)
    assert outcome.status_code == 503
    assert outcome.error == "HTTP 503; Retry-After ignored: '\\x00'"
    texts = [outcome.error, outcome.response_excerpt]
    # As the recorder sends them: JSON rows (record_attempts in storage/outcomes.sql).
    rows = outcomes.json_rows([{"error": texts[0], "response_excerpt": texts[1]}])
    row = db.execute(
        "SELECT error, response_excerpt FROM json_to_recordset(%s::json)"
        " AS a (error text, response_excerpt text)",
        (rows,),
    ).fetchone()
    assert row is not None and list(row) == texts
    assert outcome.response_excerpt is not None and "\ufffd" in outcome.response_excerpt


def test_a_redirect_s_body_and_location_are_not_read(
    endpoint: support.RawEndpoint, guard: watchdog.Watchdog
) -> None:
    size = 400 * 1024 * 1024
    head = f"HTTP/1.1 302 Found\r\nLocation: http://[::1\xff\r\nContent-Length: {size}\r\n\r\n"
    endpoint.tail, endpoint.tail_times, endpoint.sent = b"x" * 65536, size // 65536, 0
    try:
        outcome = send(endpoint, guard, head.encode("latin-1"))
    finally:
        endpoint.tail_times = 0
    assert outcome.status_code == 302 and outcome.error_kind == "http_302"
    assert outcome.response_excerpt == "x" * attempt.EXCERPT_LENGTH
    # The connection was dropped instead of drained: most of the answer was never even sent.
    assert endpoint.sent < size // 4
