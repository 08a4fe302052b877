"""A job's path, method and headers: examples of each rule, and the properties that a path never
leads away from its endpoint's host and that accepted headers are ones HTTP clients send."""

from __future__ import annotations

import http.client
import string
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import hypothesis
import pytest
import requests
import urllib3.util
from hypothesis import given
from hypothesis import strategies as st

from scheduler import http_options

PROPERTIES = hypothesis.settings(
    deadline=None,  # a loaded machine is no counterexample; timings belong in `make bench`
    database=None,  # a failure prints its falsifying example anyway
    max_examples=500,
)

ENDPOINTS = [
    "http://example.com",
    "https://example.com/",
    "http://user:pass@example.com:8080/hooks",
    "https://example.com/hooks/?k=v",
    "http://127.0.0.1:9000/a/b?x=1&y=2",
    "http://[::1]:8080/p",
    "HTTPS://Example.COM:443/Mixed/Case",
]

ACCEPTED_PATHS = [
    "a",
    "/a",
    "orders/42",
    "/orders/42/",
    "v1/projects/p:run",
    "a.b/c.json",
    "file-_~!$&'()*+,;=:",
    "%C3%A9t%C3%A9",  # UTF-8
    "a%20b",
    "%3A%3B%41",
    "a?b=1",
    "a?b=1&c=2?d",
    "a?next=%2Fhome&q=a%26b%23c%40d%25",  # a query may encode what a path may not
    "a?range=1..2",
    "a?url=http:/x",
    "x" * http_options.MAX_PATH_LENGTH,
]

REFUSED_PATHS = [
    ("", "Must name a path"),
    ("/", "Must name a path"),
    ("?a=1", "Must name a path"),
    ("/?a=1", "Must name a path"),
    ("x" * (http_options.MAX_PATH_LENGTH + 1), "at most 2048 characters"),
    ("..", "'..'"),
    ("../admin", "'..'"),
    ("a/../../b", "'..'"),
    ("a/..", "'..'"),
    ("a..b", "'..'"),
    ("a/..;/b", "'..'"),
    (".", "'.' segment"),
    ("./a", "'.' segment"),
    ("a/./b", "'.' segment"),
    ("a/.", "'.' segment"),
    ("a//b", "'//'"),
    ("//evil.example/x", "'//'"),
    ("a?u=http://evil.example", "'//'"),
    ("@evil.example", "'@'"),
    ("a?u=x@y", "'@'"),
    ("a\\b", "'\\'"),
    ("\\\\evil.example", "'\\'"),
    ("a#b", "'#'"),
    ("a?b#c", "'#'"),
    ("a b", "whitespace or control"),
    ("a\tb", "whitespace or control"),
    ("a\r\nHost: evil", "whitespace or control"),
    ("a\x00", "whitespace or control"),
    ("a\x7f", "whitespace or control"),
    ("é", "ASCII"),
    ("a\u2024b", "ASCII"),
    ("a\uff0fb", "ASCII"),
    ("%2e%2e/admin", "Must not encode '.'"),
    ("a/%2E", "Must not encode '.'"),
    ("a%2Fb", "Must not encode '/'"),
    ("a%2fb", "Must not encode '/'"),
    ("a%5Cb", "Must not encode '\\'"),
    ("a%252e", "Must not encode '%'"),
    ("a%3Fb", "Must not encode '?'"),
    ("a%23b", "Must not encode '#'"),
    ("a%40b", "Must not encode '@'"),
    ("a%00", "control character (found '%00')"),
    ("a%0d%0aHost:x", "control character (found '%0d')"),
    ("a%7F", "control character (found '%7F')"),
    ("a%C2%85", "control character (found U+0085)"),  # NEL, a C1 control
    ("a%C0%AE%C0%AE", "UTF-8 only"),  # the overlong '.'
    ("a%E0%80%AE", "UTF-8 only"),
    ("a%FF", "UTF-8 only"),
    ("a%EF%BC%8Fb", "reads as one of"),  # fullwidth '/'
    ("a%EF%BC%8E", "reads as one of"),  # fullwidth '.'
    ("a%E2%80%A5", "reads as one of"),  # two dot leader, '..' under NFKC
    ("a%EF%BC%BC", "reads as one of"),  # fullwidth '\'
    ("a%", "two hexadecimal digits"),
    ("a%4", "two hexadecimal digits"),
    ("a%zz", "two hexadecimal digits"),
    ("a%%41", "two hexadecimal digits"),
    ("a?b=%", "two hexadecimal digits"),
    ("a?", "empty query"),
    ("a?b=%0A", "control character (found '%0A')"),
    ("a<b", "Must not contain '<' in the path"),
    ("a[0]", "Must not contain '[' in the path"),
    ("a?b=[0]", "Must not contain '[' in the query"),
    ('a?b="', "Must not contain '\"' in the query"),
    ("a|b", "Must not contain '|' in the path"),
]

JOINED = [
    ("http://example.com", "a", "http://example.com/a"),
    ("http://example.com", "/a", "http://example.com/a"),
    ("http://example.com/", "a", "http://example.com/a"),
    ("http://example.com/", "/a", "http://example.com/a"),
    ("http://example.com/hooks", "a/b", "http://example.com/hooks/a/b"),
    ("http://example.com/hooks/", "/a/b/", "http://example.com/hooks/a/b/"),
    ("http://example.com/hooks?k=v", "a", "http://example.com/hooks/a?k=v"),
    ("http://example.com/hooks/?k=v", "/a", "http://example.com/hooks/a?k=v"),
    ("http://example.com/hooks", "a?x=1", "http://example.com/hooks/a?x=1"),
    ("http://example.com/hooks?k=v", "a?x=1&y=2", "http://example.com/hooks/a?k=v&x=1&y=2"),
    ("http://example.com?k=v", "a?x=1", "http://example.com/a?k=v&x=1"),
    ("http://example.com/hooks?", "a", "http://example.com/hooks/a?"),
    ("http://example.com/hooks?", "a?x=1", "http://example.com/hooks/a?x=1"),
    ("http://example.com/hooks#top", "a?x=1", "http://example.com/hooks/a?x=1#top"),
    ("https://u:p%40ss@example.com:8443/h", "a", "https://u:p%40ss@example.com:8443/h/a"),
    ("http://user@example.com:8080", "/a", "http://user@example.com:8080/a"),
    ("http://[::1]:8080/p", "a", "http://[::1]:8080/p/a"),
    ("HTTP://Example.COM:80/Hooks", "a", "HTTP://Example.COM:80/Hooks/a"),
]

ACCEPTED_HEADERS = [
    ("Authorization", "Bearer abc.def"),
    ("Proxy-Authorization", "Basic dTpw"),
    ("X-Api-Key", "k"),
    ("user-agent", "billing/1.0"),
    ("Accept", "application/json"),
    ("Cookie", "a=b; c=d"),
    ("X-Empty", ""),
    ("X-Inner-Space", "a b\tc"),
    ("X-Symbols", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    ("!#$%&'*+-.^_`|~09Az", "token characters only"),
    ("Scheduler", "not the Scheduler- prefix"),
    ("X-Scheduler-Id", "the prefix starts the name only"),
    ("n" * http_options.MAX_HEADER_NAME_LENGTH, "v" * http_options.MAX_HEADER_VALUE_LENGTH),
]

REFUSED_HEADERS = [
    ("", "v", "Not a header name"),
    ("X Space", "v", "Not a header name"),
    ("X-Colon:", "v", "Not a header name"),
    (" X-Lead", "v", "Not a header name"),
    ("X-Tab\t", "v", "Not a header name"),
    ("X-Crlf\r\n", "v", "Not a header name"),
    ("X-Ünicode", "v", "Not a header name"),
    ("X(paren)", "v", "Not a header name"),
    ("n" * (http_options.MAX_HEADER_NAME_LENGTH + 1), "v", "at most 256 characters"),
    ("X-A", "a\r\nInjected: 1", "printable ASCII"),
    ("X-A", "a\nb", "printable ASCII"),
    ("X-A", "a\rb", "printable ASCII"),
    ("X-A", "a\x00b", "printable ASCII"),
    ("X-A", "a\x7fb", "printable ASCII"),
    ("X-A", "a\x1bb", "printable ASCII"),
    ("X-A", "é", "printable ASCII"),
    ("X-A", " lead", "printable ASCII"),
    ("X-A", "trail ", "printable ASCII"),
    ("X-A", "\ttab", "printable ASCII"),
    ("X-A", " ", "printable ASCII"),
    ("X-A", "v" * (http_options.MAX_HEADER_VALUE_LENGTH + 1), "at most 8192 characters"),
    ("Connection", "close", "hop-by-hop"),
    ("keep-alive", "timeout=5", "hop-by-hop"),
    ("Proxy-Connection", "close", "hop-by-hop"),
    ("Proxy-Authenticate", "Basic", "hop-by-hop"),
    ("TE", "trailers", "hop-by-hop"),
    ("Trailer", "X", "hop-by-hop"),
    ("Transfer-Encoding", "chunked", "hop-by-hop"),
    ("UPGRADE", "websocket", "hop-by-hop"),
    ("Host", "evil.example", "endpoint's URL"),
    ("host", "evil.example", "endpoint's URL"),
    ("Content-Length", "0", "from the body"),
    ("Content-Type", "text/plain", "always JSON"),
    ("Content-Encoding", "gzip", "never encoded"),
    ("Accept-Encoding", "gzip", "identity"),
    ("Expect", "100-continue", "100 Continue"),
    ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "trace context"),
    ("TraceState", "a=b", "trace context"),
    ("Scheduler-Secret", "s", "scheduler's own"),
    ("scheduler-signature", "t=1", "scheduler's own"),
    ("SCHEDULER-ANYTHING", "x", "scheduler's own"),
]


@pytest.mark.parametrize("path", ACCEPTED_PATHS)
def test_accepted_paths_are_stored_as_given(path: str) -> None:
    assert http_options.check_path(path) == path


@pytest.mark.parametrize(("path", "message"), REFUSED_PATHS)
def test_refused_paths_say_what_is_wrong(path: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        http_options.check_path(path)
    assert message in str(refused.value)


@pytest.mark.parametrize(("endpoint", "path", "url"), JOINED)
def test_a_path_joins_its_endpoint_with_one_slash_and_before_its_query(
    endpoint: str, path: str, url: str
) -> None:
    http_options.check_path(path)
    assert http_options.join_url(endpoint, path) == url
    assert_under_endpoint(endpoint, url)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_path_leaves_the_endpoint_as_it_is(endpoint: str) -> None:
    assert http_options.join_url(endpoint, None) == endpoint


@pytest.mark.parametrize(
    ("value", "method"),
    [("POST", "POST"), ("put", "PUT"), ("Patch", "PATCH"), ("delete", "DELETE")],
)
def test_methods_are_accepted_in_any_case(value: str, method: str) -> None:
    assert http_options.check_method(value) == method


@pytest.mark.parametrize(
    "value", ["GET", "head", "OPTIONS", "", "POST ", " post", "po\u017ft", "P0ST"]
)
def test_other_methods_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"^Must be one of POST, PUT, PATCH, DELETE\.$"):
        http_options.check_method(value)


def test_the_default_method_is_one_of_the_methods() -> None:
    assert http_options.DEFAULT_METHOD == "POST"
    assert http_options.DEFAULT_METHOD in http_options.METHODS


def test_accepted_headers_keep_their_names_values_and_order() -> None:
    headers = dict(ACCEPTED_HEADERS)
    checked = http_options.check_headers(headers)
    assert checked == headers
    assert list(checked) == [name for name, _ in ACCEPTED_HEADERS]


@pytest.mark.parametrize(("name", "value", "message"), REFUSED_HEADERS)
def test_refused_headers_say_which_and_why(name: str, value: str, message: str) -> None:
    with pytest.raises(http_options.HeaderRefused) as refused:
        http_options.check_headers({"X-Fine": "1", name: value, "X-Also-Fine": "2"})
    assert refused.value.name == name
    assert message in refused.value.message
    assert str(refused.value) == refused.value.message
    assert isinstance(refused.value, ValueError)


def test_a_name_given_twice_in_another_case_is_refused() -> None:
    with pytest.raises(http_options.HeaderRefused, match="Given twice") as refused:
        http_options.check_headers({"X-Request-Id": "1", "Accept": "*/*", "x-request-ID": "2"})
    assert refused.value.name == "x-request-ID"


def test_at_most_max_headers() -> None:
    headers = {f"X-{n}": str(n) for n in range(http_options.MAX_HEADERS + 1)}
    with pytest.raises(http_options.HeaderRefused, match="at most 20 headers") as refused:
        http_options.check_headers(headers)
    assert refused.value.name is None
    headers.popitem()
    assert http_options.check_headers(headers) == headers


def test_no_headers_are_fine() -> None:
    assert http_options.check_headers({}) == {}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("proxy-authorization", True),
        ("COOKIE", True),
        ("Set-Cookie", True),
        ("X-Api-Key", True),
        ("apikey", True),
        ("X-Auth-Token", True),
        ("X-Client-Secret", True),
        ("Accept", False),
        ("User-Agent", False),
        ("X-Request-Id", False),
        ("X-Authorization-Hint", False),
        ("X-Cookies-Accepted", False),
    ],
)
def test_secret_headers(name: str, secret: bool) -> None:
    assert http_options.is_secret_header(name) is secret


def test_redact_hides_only_secret_values() -> None:
    headers = {"Authorization": "Bearer x", "X-Api-Key": "k", "Accept": "*/*"}
    assert http_options.redact(headers) == {
        "Authorization": "[redacted]",
        "X-Api-Key": "[redacted]",
        "Accept": "*/*",
    }
    assert headers["Authorization"] == "Bearer x"  # the stored headers are left alone
    assert http_options.redact({}) == {}
    assert http_options.redact(None) is None


def assert_under_endpoint(endpoint: str, url: str) -> None:
    """`url` reaches the endpoint's host the same way by urllib, by urllib3 (which requests
    parses with) and after requests prepares it, under the endpoint's path, with no dot
    segment even once percent-decoded."""
    split_endpoint, split_url = urlsplit(endpoint), urlsplit(url)
    for part in ("scheme", "netloc", "hostname", "port", "username", "password"):
        assert getattr(split_url, part) == getattr(split_endpoint, part), part
    assert split_url.path.startswith(directory(split_endpoint.path))

    parsed_endpoint, parsed_url = urllib3.util.parse_url(endpoint), urllib3.util.parse_url(url)
    for part in ("scheme", "auth", "host", "port"):
        assert getattr(parsed_url, part) == getattr(parsed_endpoint, part), part
    assert (parsed_url.path or "").startswith(directory(parsed_endpoint.path or ""))

    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    assert prepared.url is not None
    split_prepared = urlsplit(prepared.url)
    for part in ("hostname", "port", "username", "password"):
        assert getattr(split_prepared, part) == getattr(split_endpoint, part), part
    assert split_prepared.path.startswith(directory(split_endpoint.path))

    for path in (split_url.path, parsed_url.path or "", split_prepared.path):
        segments = unquote(path).split("/")
        assert "." not in segments
        assert ".." not in segments


def directory(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def check_and_join(endpoint: str, path: str) -> str | None:
    """The URL a job with `path` is sent to, or None if the path is refused."""
    try:
        stored = http_options.check_path(path)
    except ValueError as refused:
        assert str(refused)
        return None
    assert stored == path
    url = http_options.join_url(endpoint, stored)
    assert_under_endpoint(endpoint, url)
    return url


PATH_ALPHABET = (
    string.ascii_letters + string.digits + "-._~!$&'()*+,;=:/?%" + "0123456789abcdefABCDEF"
)


@PROPERTIES
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    path=st.one_of(st.text(), st.text(alphabet=PATH_ALPHABET, min_size=1)),
)
@hypothesis.example(endpoint=ENDPOINTS[2], path="a/b%C3%A9?c=d")
def test_any_accepted_path_stays_under_its_endpoint(endpoint: str, path: str) -> None:
    check_and_join(endpoint, path)


HOSTILE_PIECES = [
    "..",
    ".",
    "%2e",
    "%2E",
    "%2F",
    "%2f",
    "%5C",
    "%25",
    "%40",
    "%23",
    "%3F",
    "//",
    "/",
    "@",
    "\\",
    "%00",
    "%0d%0a",
    "\r\n",
    "\t",
    " ",
    "http://",
    "https:",
    "evil.example",
    ":",
    ":8080",
    "#",
    "?",
    "&",
    "=",
    ";",
    "%",
    "é",
    "\uff0f",
    "%EF%BC%8F",
    "%C0%AE",
    "%E2%80%A5",
    "a",
    "b",
]
# What a real path is made of: hostile pieces among them make the hostile paths that nearly pass.
HARMLESS_PIECES = ["a", "b9", "/", "?", "=", "&", ":", "-", "_", "%41", "%C3%A9"]
# Never in an accepted path, anywhere or in its path part (before the first '?').
NEVER_ANYWHERE = ("//", "@", "\\", "#", "\r", "\n", "\t", " ", "\x00")
NEVER_IN_PATH = ("..", "%2e", "%2f", "%5c", "%25", "%40", "%23", "%3f", "%00", "%0d", "%c0")


@PROPERTIES
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    pieces=st.lists(
        st.one_of(st.sampled_from(HOSTILE_PIECES), *[st.sampled_from(HARMLESS_PIECES)] * 3),
        min_size=1,
        max_size=12,
    ),
)
def test_hostile_paths_never_leave_the_endpoint(endpoint: str, pieces: list[str]) -> None:
    path = "".join(pieces)
    accepted = check_and_join(endpoint, path) is not None
    hypothesis.event(f"accepted: {accepted}")
    if not accepted:
        return
    assert path.isascii()
    assert not any(piece in path for piece in NEVER_ANYWHERE)
    path_part = path.partition("?")[0].lower()
    assert not any(piece in path_part for piece in NEVER_IN_PATH)


TOKEN_CHARACTERS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
header_names = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=TOKEN_CHARACTERS, min_size=1, max_size=12),
    st.sampled_from(
        ["Host", "content-type", "Scheduler-Attempt", "TE", "Authorization", "X-Key", "x-key"]
    ),
)
header_values = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=string.printable, max_size=12),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12),
)


@PROPERTIES
@given(headers=st.dictionaries(header_names, header_values, max_size=http_options.MAX_HEADERS + 2))
def test_accepted_headers_are_valid_to_http_clients_and_refusals_name_the_header(
    headers: dict[str, str],
) -> None:
    try:
        checked = http_options.check_headers(headers)
    except http_options.HeaderRefused as refused:
        assert refused.message
        assert_names_the_first_refused_header(headers, refused)
        return
    assert checked == headers
    assert list(checked) == list(headers)
    for name, value in checked.items():
        requests.utils.check_header_validity((name, value))
        assert http.client._is_legal_header_name(name.encode("ascii"))
        assert not http.client._is_illegal_header_value(value.encode("latin-1"))


def assert_names_the_first_refused_header(
    headers: Mapping[str, str], refused: http_options.HeaderRefused
) -> None:
    if refused.name is None:
        assert len(headers) > http_options.MAX_HEADERS
        return
    names = list(headers)
    before = names[: names.index(refused.name)]
    for name in before:
        http_options.check_headers({name: headers[name]})
    if refused.name.lower() not in {name.lower() for name in before}:
        with pytest.raises(http_options.HeaderRefused) as alone:
            http_options.check_headers({refused.name: headers[refused.name]})
        assert alone.value.name == refused.name
