"""jsonb: exact numbers in, what PostgreSQL refuses found with its place, jsonb's text form out.

What PostgreSQL itself prints is checked against the real server in
tests/integration/test_differential.py; these are the module's own rules.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import errors, jsonb

# Each token and the text `SELECT '<token>'::jsonb::text` gives (PostgreSQL 16 to 18).
PRINTED = [
    ("-0", "0"),
    ("-0.0", "0.0"),
    ("0e-5", "0.00000"),
    ("-0.00", "0.00"),
    ("1.0e2", "100"),
    ("1E+2", "100"),
    ("0e99999", "0"),
    ("123E-5", "0.00123"),
    ("-1.50e1", "-15.0"),
    ("1e-7", "0.0000001"),
    ("1.50", "1.50"),
    ("1e300", "1" + "0" * 300),
    ("1.5e-300", "0." + "0" * 299 + "15"),
    ("123456789012345678901234567890", "123456789012345678901234567890"),
]


@pytest.mark.parametrize(("token", "printed"), PRINTED)
def test_numbers_are_written_as_jsonb_prints_them(token: str, printed: str) -> None:
    value = jsonb.loads(token)
    text, size = jsonb.encode([value], 10**6)
    assert text == f"[{printed}]"
    assert size == len(printed) + 2


TOKENS = st.builds(
    lambda sign, digits, fraction, exponent: (
        f"{sign}{digits}{'.' + fraction if fraction else ''}"
        f"{'' if exponent is None else 'e' + str(exponent)}"
    ),
    st.sampled_from(["", "-"]),
    st.from_regex(r"\A(0|[1-9][0-9]{0,30})\Z"),
    st.from_regex(r"\A[0-9]{0,30}\Z"),
    st.none() | st.integers(-400, 400),
)


@given(TOKENS)
def test_a_numbers_length_is_known_before_it_is_written(token: str) -> None:
    number = Decimal(token)
    assert jsonb.numeric_length(number) == len(jsonb.numeric_text(number))
    assert Decimal(jsonb.numeric_text(number)) == number


def test_numbers_are_read_exactly() -> None:
    value = jsonb.loads(b'{"a": 0.1000000000000000000001, "b": 12345678901234567890123, "c": 1.50}')
    assert value == {
        "a": Decimal("0.1000000000000000000001"),
        "b": 12345678901234567890123,
        "c": Decimal("1.50"),
    }
    assert (
        jsonb.dumps(value)
        == '{"a": 0.1000000000000000000001, "b": 12345678901234567890123, "c": 1.50}'
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("1e400", "beyond a 64-bit float's range"),
        ("-1e400", "beyond a 64-bit float's range"),
        ("1" * 400, "beyond a 64-bit float's range"),
        ("1.8e308", "beyond a 64-bit float's range"),
        ("1e-16384", "16384 digits after the decimal point"),
        ("0e1073741823", "exponent"),
        ("0e-1073741823", "exponent"),
        ("1e" + "9" * 5000, "beyond a 64-bit float's range"),
    ],
)
def test_numbers_that_cannot_be_kept_are_found_in_their_place(token: str, reason: str) -> None:
    problem = jsonb.find_problem(jsonb.loads('{"a": [1, {"b": ' + token + "}]}"))
    assert problem is not None
    assert problem.path == ("a", 1, "b")
    assert reason in problem.reason


@pytest.mark.parametrize(
    "token", ["1.7976931348623157e308", "-" + "9" * 308, "1e-16383", "0e1073741822", "0e-16383"]
)
def test_numbers_at_the_limits_are_kept(token: str) -> None:
    value = jsonb.loads(token)
    assert jsonb.find_problem(value) is None
    assert Decimal(jsonb.encode(value, 10**6)[0]) == Decimal(token)


def nested(levels: int) -> object:
    """`levels` levels of nesting: lists around a number."""
    value: object = 1
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"k": ["ok", "nul\x00"]}, ("k", 1), "\\u0000"),
        ({"k": {"\ud800": 1}}, ("k",), "a key contains a lone UTF-16 surrogate"),
        ({"k": nested(64)}, ("k", *[0] * 63), "nesting deeper than 64"),
    ],
)
def test_unstorable_strings_and_nesting_are_found_in_their_place(
    value: object, path: tuple[object, ...], reason: str
) -> None:
    problem = jsonb.find_problem(value)
    assert problem is not None
    assert problem.path == path
    assert reason in problem.reason
    assert jsonb.find_problem({"k": nested(63)}) is None


def test_a_pointer_escapes_its_keys() -> None:
    assert jsonb.pointer(("a/b", 0, "c~d")) == "/a~1b/0/c~0d"
    assert jsonb.pointer(("x" * 500,)).endswith("…")


def test_the_size_limit_is_checked_before_numbers_are_written_out() -> None:
    value = jsonb.loads("[" + ", ".join(["1e-16383"] * 10_000) + "]")
    with pytest.raises(errors.BodyTooLarge) as caught:
        jsonb.encode(value, 1024 * 1024)
    assert caught.value.size == 10_000 * 16385 + 9_999 * 2 + 2


STORABLE_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | STORABLE_TEXT,
        lambda children: st.lists(children) | st.dictionaries(STORABLE_TEXT, children),
        max_leaves=20,
    )
)
def test_without_decimals_the_text_is_json_dumps_as_jsonb_spaces_it(value: object) -> None:
    text, size = jsonb.encode(value, 10**9)
    assert text == json.dumps(value, ensure_ascii=False)
    assert size == len(text.encode("utf-8"))


def test_stored_text_is_read_back_exactly_whatever_its_size() -> None:
    huge = "1" + "0" * 5000  # more digits than Python reads into an int; jsonb holds it
    value = jsonb.read('{"a": [' + huge + ", 0.10, 7]}")
    assert value == {"a": [Decimal(huge), Decimal("0.10"), 7]}
    assert jsonb.dumps(value) == '{"a": [' + huge + ", 0.10, 7]}"


ANY_TEXT = st.text(st.characters(codec=None)) | st.sampled_from(["nul\x00", "\ud800", "é", "\\u"])
# Numbers are written into the text as these tokens, in place of their marks.
NUMBER_TOKENS = ["1", "-0.50", "1e400", "1" * 400, "1e-16384", "0e1073741823", "1.5e300", "7e-3"]
NUMBER_MARKS = {json.dumps(f"\x01{n}\x01"): token for n, token in enumerate(NUMBER_TOKENS)}


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | ANY_TEXT
        | st.sampled_from([f"\x01{n}\x01" for n in range(len(NUMBER_TOKENS))]),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3)
        ),
        max_leaves=30,
    ),
    st.booleans(),
    st.sampled_from(["utf-8", "utf-16", "utf-32-le"]),
)
def test_read_request_finds_what_find_problem_finds(
    value: object, ascii_only: bool, encoding: str
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    for mark, token in NUMBER_MARKS.items():
        text = text.replace(mark, token)
    raw = text.encode(encoding, "surrogatepass")
    read, problem = jsonb.read_request(raw)
    assert problem == jsonb.find_problem(jsonb.loads(raw))
    if problem is None:
        assert jsonb.dumps(read) == jsonb.dumps(jsonb.loads(raw))


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"k": nested(63)}),
        json.dumps({"k": nested(64)}),
        '{"k": "nul\\u0000"}',
        '{"k\\ud800": 1}',
        '{"k": [1, 1e400]}',
        '{"k": "\\u00e9"}',
        '{"k": "plain", "n": [1, 2.50]}',
    ],
)
def test_read_request_on_plain_text_finds_what_find_problem_finds(text: str) -> None:
    _, problem = jsonb.read_request(text.encode())
    assert problem == jsonb.find_problem(jsonb.loads(text))
