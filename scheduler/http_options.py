"""What a job may set about its HTTP request (a path under its endpoint, a method, headers), the
URL the path makes, and which header values are hidden when shown; pure, no I/O.

An endpoint's URL comes from the operator; a job's path may extend it but never change its
scheme, userinfo, host or port, nor climb out of its path. ``check_path`` accepts exactly:

- ASCII only, at most MAX_PATH_LENGTH characters, no whitespace or control characters, and
  none of ``#`` (a fragment is never sent), ``@``, ``\\``, nor ``//``, anywhere.
- An optional leading ``/``, then a path part that is not empty, then an optional ``?query``
  that is not empty either.
- The path part: RFC 3986 ``pchar`` characters but ``@`` (letters, digits, ``-._~!$&'()*+,;=:``,
  ``%XX``) and ``/``. No ``..`` anywhere in it, and no segment ``.``. A ``%`` is followed by
  two hex digits and encodes none of ``/ \\ . % ? # @`` nor a control character, so that no
  server or proxy that decodes the path (requests itself decodes ``%2E`` to ``.``) finds a
  separator or a dot segment there. Encoded bytes of 0x80 and above must be UTF-8 and decode to
  no C1 control and to no character that Unicode compatibility (NFKC) turns into one of those
  ASCII characters (``%EF%BC%8F``, a fullwidth solidus, reads as ``/`` to some).
- The query: the same characters plus ``/`` and ``?``; ``..`` is allowed there, and ``%XX``
  may encode any byte but a control character, since values such as ``next=%2Fhome`` or
  ``q=a%26b`` need it and a query never chooses the host or the path.

The path is stored as given: nothing is normalised. Each refusal raises ValueError (a header's,
HeaderRefused) whose message says what is wrong, for the API's 400.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

# An endpoint's own URL comes on top; 2048 leaves the whole well under the 8 KiB request line
# that common servers and proxies accept.
MAX_PATH_LENGTH = 2048

METHODS = ("POST", "PUT", "PATCH", "DELETE")
DEFAULT_METHOD = "POST"

# Each job stores its headers and sends them on every attempt: a bound on what one row holds.
MAX_HEADERS = 20
# No registered field name comes near this.
MAX_HEADER_NAME_LENGTH = 256
# Common servers refuse a header line much over 8 KiB (nginx's buffers, Apache's 8190 bytes).
MAX_HEADER_VALUE_LENGTH = 8192

REDACTED = "[redacted]"

# Connection-specific (RFC 9110 section 7.6.1): they describe one hop, which the sender owns.
_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
# Lower case, each with why a job may not set it.
_REFUSED_HEADERS = {
    **{name: "A hop-by-hop header: the scheduler's HTTP client sets it." for name in _HOP_BY_HOP},
    "host": "The endpoint's URL sets the host.",
    "content-length": "The scheduler sets it from the body.",
    "content-type": "The body is always JSON: the scheduler sets it.",
    "content-encoding": "The body is sent as it is, never encoded: the scheduler sends none.",
    # A compressed answer could inflate far beyond the excerpt the scheduler reads of it.
    "accept-encoding": "Answers are read identity-encoded: the scheduler sets it.",
    "expect": "The scheduler sends the body without waiting for 100 Continue.",
    "traceparent": "It comes from the trace context the job was scheduled with.",
    "tracestate": "It comes from the trace context the job was scheduled with.",
}
_RESERVED_PREFIX = "scheduler-"
_SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie"))
_SECRET_WORDS = ("key", "token", "secret")

# Not RFC 3986 pchar (less "@", refused everywhere) nor "/"; "%" is checked on its own.
_NOT_PATH_CHARACTER = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:/%]")
_NOT_QUERY_CHARACTER = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:/?%]")
_ENCODED = re.compile(r"%(.?.?)")
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")
_NOT_IN_PATH_ENCODED = frozenset("/\\.%?#@")
# RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 field-value in ASCII: visible characters, with spaces and tabs only inside.
_FIELD_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?)?")
# The start of a URL by RFC 3986 appendix B: scheme and authority, kept byte for byte.
_URL = re.compile(r"([^:/?#]+:)?(//[^/?#]*)?([^?#]*)(\?[^#]*)?(#.*)?", re.DOTALL)


class HeaderRefused(ValueError):
    """A header a job may not send; `name` is None when the headers as a whole are refused."""

    def __init__(self, name: str | None, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def check_path(path: str) -> str:
    """The path to store, which is `path` itself; raises ValueError saying what is wrong."""
    if not isinstance(path, str):
        raise ValueError("Must be a string.")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"Must be at most {MAX_PATH_LENGTH} characters.")
    if not path.isascii():
        raise ValueError("Must be ASCII: percent-encode other characters as UTF-8.")
    if any(character <= " " or character == "\x7f" for character in path):
        raise ValueError("Must not contain whitespace or control characters.")
    for piece in ("#", "@", "\\", "//"):
        if piece in path:
            raise ValueError(f"Must not contain '{piece}'.")
    path_part, question_mark, query = path.removeprefix("/").partition("?")
    if not path_part:
        raise ValueError("Must name a path after the endpoint's, not only '/' or a query.")
    _check_path_part(path_part)
    if question_mark:
        _check_query(query)
    return path


def _check_path_part(path_part: str) -> None:
    outside = _NOT_PATH_CHARACTER.search(path_part)
    if outside:
        raise ValueError(f"Must not contain '{outside[0]}' in the path: percent-encode it.")
    for encoded in _ENCODED.finditer(path_part):
        byte = _encoded_byte(encoded)
        if chr(byte) in _NOT_IN_PATH_ENCODED or _is_control(byte):
            raise ValueError(
                f"Must not encode '{chr(byte)}' in the path (found '{encoded[0]}')."
                if 0x20 < byte < 0x7F
                else f"Must not encode a control character (found '{encoded[0]}')."
            )
    _check_decoded(path_part)
    if ".." in path_part:
        raise ValueError("Must not contain '..' in the path.")
    if "." in path_part.split("/"):
        raise ValueError("Must not contain a '.' segment.")


def _check_decoded(path_part: str) -> None:
    """Refuse encoded bytes that are not UTF-8 (overlong forms of '.' and '/' among them) or
    that decode to a character some server could read as a separator or a dot."""
    try:
        decoded = unquote_to_bytes(path_part).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("Must percent-encode UTF-8 only.") from None
    for character in decoded:
        if character.isascii():
            continue  # written as itself, or encoded and checked already
        if unicodedata.category(character) == "Cc":
            raise ValueError(f"Must not encode a control character (found U+{ord(character):04X}).")
        if _NOT_IN_PATH_ENCODED.intersection(unicodedata.normalize("NFKC", character)):
            raise ValueError(
                f"Must not encode a character that reads as one of / \\ . % ? # @ "
                f"(found U+{ord(character):04X})."
            )


def _check_query(query: str) -> None:
    if not query:
        raise ValueError("Must not end with an empty query: drop the '?'.")
    outside = _NOT_QUERY_CHARACTER.search(query)
    if outside:
        raise ValueError(f"Must not contain '{outside[0]}' in the query: percent-encode it.")
    for encoded in _ENCODED.finditer(query):
        if _is_control(_encoded_byte(encoded)):
            raise ValueError(f"Must not encode a control character (found '{encoded[0]}').")


def _encoded_byte(encoded: re.Match[str]) -> int:
    if not _HEX_PAIR.fullmatch(encoded[1]):
        raise ValueError("Must follow each '%' with two hexadecimal digits.")
    return int(encoded[1], 16)


def _is_control(byte: int) -> bool:
    return byte < 0x20 or byte == 0x7F


def join_url(endpoint_url: str, path: str | None) -> str:
    """The endpoint's URL with a path that passed `check_path` after its own, one '/' between;
    a query in `path` follows the endpoint's, after '&'.

    The scheme and authority (userinfo, host, port) are kept character for character, and so is
    the endpoint's path, which the result's path starts with.
    """
    if path is None:
        return endpoint_url
    found = _URL.fullmatch(endpoint_url)
    assert found is not None  # every group is optional and the last takes anything
    scheme, authority, endpoint_path, endpoint_query, fragment = found.groups()
    job_path, question_mark, job_query = path.removeprefix("/").partition("?")
    separator = "" if endpoint_path.endswith("/") else "/"
    url = f"{scheme or ''}{authority or ''}{endpoint_path}{separator}{job_path}"
    if endpoint_query not in (None, "?") and question_mark:
        url += f"{endpoint_query}&{job_query}"
    elif question_mark:
        url += f"?{job_query}"
    elif endpoint_query is not None:
        url += endpoint_query
    return url + (fragment or "")


def check_method(value: str) -> str:
    """The method in upper case; raises ValueError unless it is one of METHODS, in any case."""
    # ASCII first: "po\u017ft".upper() (a long s) is "POST".
    if isinstance(value, str) and value.isascii() and value.upper() in METHODS:
        return value.upper()
    raise ValueError(f"Must be one of {', '.join(METHODS)}.")


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers to store, names as given and in order; raises HeaderRefused for the first
    header a job may not send, or with name None for more than MAX_HEADERS."""
    if len(headers) > MAX_HEADERS:
        raise HeaderRefused(None, f"Must hold at most {MAX_HEADERS} headers.")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str):
            raise HeaderRefused(None, "Header names must be strings.")
        lowered = name.lower()
        if lowered in seen:
            raise HeaderRefused(name, "Given twice: header names are case-insensitive.")
        seen.add(lowered)
        _check_header_name(name)
        _check_header_value(name, value)
        checked[name] = value
    return checked


def _check_header_name(name: str) -> None:
    if len(name) > MAX_HEADER_NAME_LENGTH:
        raise HeaderRefused(name, f"Must be at most {MAX_HEADER_NAME_LENGTH} characters long.")
    if not _TOKEN.fullmatch(name):
        raise HeaderRefused(
            name, "Not a header name: use letters, digits and !#$%&'*+-.^_`|~ only."
        )
    lowered = name.lower()
    if lowered in _REFUSED_HEADERS:
        raise HeaderRefused(name, _REFUSED_HEADERS[lowered])
    if lowered.startswith(_RESERVED_PREFIX):
        raise HeaderRefused(name, "Scheduler-* headers are the scheduler's own.")


def _check_header_value(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise HeaderRefused(name, "Must be a string.")
    if len(value) > MAX_HEADER_VALUE_LENGTH:
        raise HeaderRefused(name, f"Must be at most {MAX_HEADER_VALUE_LENGTH} characters long.")
    if not _FIELD_VALUE.fullmatch(value):
        raise HeaderRefused(
            name,
            "Must be printable ASCII, with no control character but tab "
            "and no space or tab at either end.",
        )


def is_secret_header(name: str) -> bool:
    """Whether the header's value is hidden wherever a job is shown."""
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_WORDS)


def redact(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The headers to show: each secret header's value replaced by REDACTED."""
    if headers is None:
        return None
    return {name: REDACTED if is_secret_header(name) else value for name, value in headers.items()}
