"""JSON as PostgreSQL's jsonb keeps it: exact decimal numbers, what it refuses, and its text form.

jsonb stores every number as an exact decimal (`numeric`) and prints it without an exponent, so
the `1e300` a client sends in 5 bytes is stored, listed and delivered as 301 digits. Requests are
read with the same exactness (a number is never rounded to a float), what jsonb would refuse is
found before anything is written, and sizes are counted in the form jsonb prints.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from scheduler import errors

MAX_DEPTH = 64
# numeric keeps at most this many digits after the decimal point (NUMERIC_DSCALE_MAX). Before
# it, 131072 digits fit (NUMERIC_WEIGHT_MAX): more than any number within a float's range.
MAX_FRACTION_DIGITS = 16383
# The largest exponent, as written, that numeric_in takes whatever the digits (even for zero)
# in every PostgreSQL: 15 and older refuse INT_MAX / 2 and beyond, 16 and later only beyond it.
MAX_EXPONENT = (2**31 - 1) // 2 - 1
# A JSON integer of this many digits or fewer is below 1e308, within a float's range.
_FLOAT_SAFE_DIGITS = 308
_SHOWN_TOKEN = 40
_SHOWN_POINTER = 200
_SURROGATE = re.compile("[\ud800-\udfff]")
# Stands in for each Decimal while json.dumps writes a document. No storable string holds
# U+0000, so its JSON form cannot be mistaken for a real string.
_MARK = "\x00"
_MARK_JSON = json.dumps(_MARK)


# Whether the document this thread is reading holds an Unstorable (see read_request).
_reading = threading.local()


class Unstorable:
    """A number read from a request that is refused, kept in its place so that the problem can
    be reported with the field it is in."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem
        _reading.unstorable = True


class Problem(NamedTuple):
    """Why a document cannot be stored, and where: object keys and array indices from its root."""

    path: tuple[str | int, ...]
    reason: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _shown(token: str) -> str:
    if len(token) <= _SHOWN_TOKEN:
        return token
    return f"{token[: _SHOWN_TOKEN // 2]}…{token[-_SHOWN_TOKEN // 4 :]} ({len(token)} characters)"


def _too_large(token: str) -> Unstorable:
    return Unstorable(f"the number {_shown(token)} is beyond a 64-bit float's range (±1.8e308)")


def _read_int(token: str) -> int | Unstorable:
    if len(token) - token.startswith("-") > _FLOAT_SAFE_DIGITS and math.isinf(float(token)):
        return _too_large(token)
    return int(token)


def _read_decimal(token: str) -> Decimal | Unstorable:
    mark = max(token.find("e"), token.find("E"))
    if mark >= 0:
        written = token[mark + 1 :].lstrip("+-").lstrip("0")
        if len(written) > len(str(MAX_EXPONENT)) or int(written or 0) > MAX_EXPONENT:
            if math.isinf(float(token)):
                return _too_large(token)
            return Unstorable(
                f"the exponent of {_shown(token)} is beyond PostgreSQL's range (±{MAX_EXPONENT})"
            )
    number = Decimal(token)
    if number.adjusted() >= _FLOAT_SAFE_DIGITS and math.isinf(float(token)):
        return _too_large(token)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int), "a JSON number is finite"
    if -exponent > MAX_FRACTION_DIGITS:
        return Unstorable(
            f"the number {_shown(token)} has {-exponent} digits after the decimal point; "
            f"PostgreSQL keeps at most {MAX_FRACTION_DIGITS}"
        )
    return number


# json.loads with hooks builds a decoder per call; a decoder keeps no state between documents.
_REQUEST_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_read_decimal, parse_int=_read_int
)


def loads(raw: bytes | str) -> Any:
    """A request's JSON, with numbers as exact `int` and `Decimal` values.

    A number that cannot be kept becomes an `Unstorable` (see `find_problem`); NaN and Infinity,
    which are not JSON, raise ValueError as any other invalid JSON does.
    """
    # What json.loads does before decoding.
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return _REQUEST_DECODER.decode(raw)
    return _REQUEST_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def read_request(raw: bytes) -> tuple[Any, Problem | None]:
    """loads(raw), and what find_problem finds in it.

    The document is only walked when its text leaves a problem possible: it is not plain ASCII,
    or it holds a \\u escape (the only way to write U+0000 or a surrogate in ASCII), more
    brackets than MAX_DEPTH allows levels, or a number that loads could not keep.
    """
    _reading.unstorable = False
    value = loads(raw)
    plain = (
        raw.isascii()
        # NUL bytes mean UTF-16 or UTF-32, where an escape is not these bytes.
        and b"\x00" not in raw
        and b"\\u" not in raw
        and raw.count(b"[") + raw.count(b"{") < MAX_DEPTH
    )
    if plain and not _reading.unstorable:
        return value, None
    return value, find_problem(value)


def _read_stored_int(token: str) -> int | Decimal:
    # Python refuses to read an integer of more than 4300 digits, which jsonb can hold when a
    # row was written by other means than the API (which keeps to a float's 309).
    return int(token) if len(token) <= _FLOAT_SAFE_DIGITS + 2 else Decimal(token)


def read(text: str | bytes) -> Any:
    """JSON text that jsonb printed, with its numbers kept exact."""
    return json.loads(text, parse_float=Decimal, parse_int=_read_stored_int)


def _string_problem(text: str, what: str) -> str | None:
    if "\x00" in text:
        return f"{what} contains \\u0000, which PostgreSQL cannot store"
    if _SURROGATE.search(text):
        return f"{what} contains a lone UTF-16 surrogate (not valid Unicode)"
    return None


def _path(node: tuple[Any, ...] | None) -> tuple[str | int, ...]:
    keys: list[str | int] = []
    while node is not None:
        key, node = node
        keys.append(key)
    return tuple(reversed(keys))


def find_problem(value: Any) -> Problem | None:
    """Why jsonb (or a float, or our nesting limit) would refuse `value`; None when it is fine.

    The document itself is the first level of nesting.
    """
    # Each entry: the item, its depth, and its path as a linked list (key, parent's path),
    # which is only turned into a tuple for the one item reported.
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 1, None)]
    while stack:
        item, depth, node = stack.pop()
        if depth > MAX_DEPTH:
            return Problem(_path(node), f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                reason = _string_problem(key, "a key")
                if reason:
                    return Problem(_path(node), reason)
                stack.append((child, depth + 1, (key, node)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, (index, node)) for index, child in enumerate(item))
        elif isinstance(item, str):
            reason = _string_problem(item, "a string")
            if reason:
                return Problem(_path(node), reason)
        elif isinstance(item, Unstorable):
            return Problem(_path(node), item.problem)
    return None


def pointer(path: tuple[str | int, ...]) -> str:
    """An RFC 6901 JSON Pointer to `path`, shortened for a message."""
    text = "".join("/" + str(key).replace("~", "~0").replace("/", "~1") for key in path)
    return text if len(text) <= _SHOWN_POINTER else text[:_SHOWN_POINTER] + "…"


def numeric_text(number: Decimal) -> str:
    """`number` as jsonb prints it: every digit, no exponent, and zero without a sign."""
    text = format(number, "f")
    return text[1:] if text.startswith("-") and number.is_zero() else text


def numeric_length(number: Decimal) -> int:
    """len(numeric_text(number)), without writing its possibly many thousand digits."""
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int), "a JSON number is finite"
    fraction = max(0, -exponent)
    point = fraction + 1 if fraction else 0
    if number.is_zero():
        return 1 + point
    return sign + max(1, len(digits) + exponent) + point


def _marked(
    value: Any, numbers: list[Decimal], default: Callable[[Any], Any] | None, **options: Any
) -> str:
    def mark(item: Any) -> Any:
        if isinstance(item, Decimal):
            numbers.append(item)
            return _MARK
        if default is not None:
            return default(item)
        raise TypeError(f"{type(item).__name__} is not JSON")

    return json.dumps(value, default=mark, allow_nan=False, **options)


def _unmarked(text: str, numbers: list[Decimal]) -> str:
    if not numbers:
        return text
    parts = text.split(_MARK_JSON)
    assert len(parts) == len(numbers) + 1, "only a Decimal is written as the mark"
    pieces = [parts[0]]
    for number, part in zip(numbers, parts[1:], strict=True):
        pieces.append(numeric_text(number))
        pieces.append(part)
    return "".join(pieces)


def dumps(value: Any, default: Callable[[Any], Any] | None = None, **options: Any) -> str:
    """json.dumps (with its `options`) that writes a Decimal as the exact number it is."""
    numbers: list[Decimal] = []
    return _unmarked(_marked(value, numbers, default, **options), numbers)


class _HoldsDecimal(Exception):
    pass


def _refuse_decimal(item: Any) -> Any:
    if isinstance(item, Decimal):
        raise _HoldsDecimal
    raise TypeError(f"{type(item).__name__} is not JSON")


# What _marked writes for a document without a Decimal, with one encoder for every call (json.dumps
# with options builds one each time); a Decimal sends the document the marked way.
_PLAIN_ENCODER = json.JSONEncoder(default=_refuse_decimal, allow_nan=False, ensure_ascii=False)


def encode(value: Any, limit: int) -> tuple[str, int]:
    """`value` as the text jsonb prints for it, and that text's length in UTF-8 bytes.

    jsonb orders object keys its own way, so the text may differ, but never in length.

    :raise errors.BodyTooLarge: the text would be longer than `limit` bytes; found before any
        number is written out in full.
    """
    numbers: list[Decimal] = []
    try:
        text = _PLAIN_ENCODER.encode(value)
    except _HoldsDecimal:
        text = _marked(value, numbers, None, ensure_ascii=False)
    size = len(text.encode("utf-8"))
    if numbers:
        size += sum(numeric_length(n) for n in numbers) - len(_MARK_JSON) * len(numbers)
    if size > limit:
        raise errors.BodyTooLarge(size, limit)
    return _unmarked(text, numbers), size
