"""RFC 3339 parsing and formatting, and what InsertJobSchema accepts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from marshmallow import ValidationError

from scheduler.web import formats, schemas


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


ACCEPTED = [
    ("2021-04-15T14:17:00Z", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15T14:17:00z", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15t14:17:00Z", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15 14:17:00Z", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15T14:17:00+00:00", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15T14:17:00-00:00", utc(2021, 4, 15, 14, 17)),
    ("2021-04-15T14:17:00-07:00", utc(2021, 4, 15, 21, 17)),
    ("2021-04-15T14:17:00+05:30", utc(2021, 4, 15, 8, 47)),
    ("2021-04-15T14:17:00+23:59", utc(2021, 4, 14, 14, 18)),
    ("2021-04-15T22:30:00-03:00", utc(2021, 4, 16, 1, 30)),
    ("2021-04-15T14:17:00.5Z", utc(2021, 4, 15, 14, 17, 0, 500_000)),
    ("2021-04-15T14:17:00.123Z", utc(2021, 4, 15, 14, 17, 0, 123_000)),
    ("2021-04-15T14:17:00.123456Z", utc(2021, 4, 15, 14, 17, 0, 123_456)),
    # Nanoseconds are truncated, never rounded (…999 does not become the next second).
    ("2021-04-15T14:17:00.123456789Z", utc(2021, 4, 15, 14, 17, 0, 123_456)),
    ("2021-04-15T14:17:59.999999999+01:00", utc(2021, 4, 15, 13, 17, 59, 999_999)),
    ("2020-02-29T00:00:00Z", utc(2020, 2, 29)),
    ("1970-01-01T00:00:00Z", utc(1970, 1, 1)),
    ("1970-01-01T01:00:00+01:00", utc(1970, 1, 1)),
    ("9999-12-31T23:59:59.999999Z", utc(9999, 12, 31, 23, 59, 59, 999_999)),
    ("9999-12-31T23:59:59+01:00", utc(9999, 12, 31, 22, 59, 59)),
]


@pytest.mark.parametrize(("text", "instant"), ACCEPTED, ids=[text for text, _ in ACCEPTED])
def test_parse_rfc3339_accepts(text: str, instant: dt.datetime) -> None:
    parsed = formats.parse_rfc3339(text)

    assert parsed == instant
    assert parsed.utcoffset() == dt.timedelta(0)
    assert parsed.tzinfo is dt.UTC


REJECTED = [
    ("2021-04-15T14:17:00", "offset"),
    ("2021-04-15T14:17", "offset"),
    ("2021-04-15", "offset"),
    ("2021-04-15Z", "offset"),
    ("14:17:00Z", "offset"),
    ("2021-04-15T14:17Z", "RFC 3339"),
    ("2021-04-15T14:17:00+0100", "RFC 3339"),
    ("2021-04-15T14:17:00+01", "RFC 3339"),
    ("2021-04-15T14:17:00.Z", "RFC 3339"),
    ("2021-04-15T14:17:00.1234567890Z", "RFC 3339"),
    ("2021-04-15T14:17:00 Z", "RFC 3339"),
    ("20210415T141700Z", "RFC 3339"),
    (" 2021-04-15T14:17:00Z", "RFC 3339"),
    ("tomorrow", "e.g. 2021-04-15T14:17:00-07:00"),
    ("", "RFC 3339"),
    ("2021-02-30T00:00:00Z", "Not a valid date or time"),
    ("2021-02-29T00:00:00Z", "Not a valid date or time"),
    ("2021-13-01T00:00:00Z", "Not a valid date or time"),
    ("2021-04-15T24:00:00Z", "Not a valid date or time"),
    ("2021-04-15T14:60:00Z", "Not a valid date or time"),
    ("2021-04-15T14:17:60Z", "Not a valid date or time"),
    ("2021-04-15T14:17:00+25:00", "Not a valid date or time"),
    ("2021-04-15T14:17:00+24:00", "Not a valid date or time"),
    ("2021-04-15T14:17:00Z\n", "Not an RFC 3339 timestamp"),
    ("1969-12-31T23:59:59Z", "before 1970-01-01T00:00:00Z"),
    ("1969-07-20T20:17:00Z", "before 1970"),
    ("1970-01-01T00:30:00+01:00", "before 1970"),
    ("0001-01-01T00:00:00Z", "before 1970"),
    ("9999-12-31T23:59:59-01:00", "between 1970 and 9999"),
    ("9999-12-31T23:30:00-00:31", "between 1970 and 9999"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED, ids=[repr(text) for text, _ in REJECTED])
def test_parse_rfc3339_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^[A-Z].*\.\)?$") as caught:
        formats.parse_rfc3339(text)

    assert message in str(caught.value)


def test_parse_rfc3339_rejects_offset_minutes_over_59() -> None:
    with pytest.raises(ValueError):
        formats.parse_rfc3339("2021-04-15T14:17:00+05:60")


FORMATTED = [
    (utc(2021, 4, 15, 14, 17), "2021-04-15T14:17:00Z"),
    (utc(2021, 4, 15, 14, 17, 5, 250_000), "2021-04-15T14:17:05.250Z"),
    (utc(1970, 1, 1), "1970-01-01T00:00:00Z"),
    (utc(9999, 12, 31, 23, 59, 59, 999_000), "9999-12-31T23:59:59.999Z"),
    (
        dt.datetime(2021, 4, 15, 7, 17, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
        "2021-04-15T07:17:00-07:00",
    ),
]


@pytest.mark.parametrize(("value", "text"), FORMATTED, ids=[text for _, text in FORMATTED])
def test_format_timestamp_round_trips(value: dt.datetime, text: str) -> None:
    assert formats.format_timestamp(value) == text
    assert formats.parse_rfc3339(text) == value


def test_format_timestamp_keeps_microseconds_with_as_few_digits_as_needed() -> None:
    value = formats.parse_rfc3339("2021-04-15T14:17:00.123456789Z")

    assert formats.format_timestamp(value) == "2021-04-15T14:17:00.123456Z"
    assert (
        formats.format_timestamp(utc(2021, 4, 15, 14, 17, 0, 999)) == "2021-04-15T14:17:00.000999Z"
    )
    assert formats.format_timestamp(utc(2021, 4, 15, 14, 17, 0, 5000)) == "2021-04-15T14:17:00.005Z"
    assert formats.format_timestamp(utc(2021, 4, 15, 14, 17, 0)) == "2021-04-15T14:17:00Z"


@pytest.mark.parametrize("text", [text for text, _ in ACCEPTED])
def test_parse_format_parse_is_stable_to_the_microsecond(text: str) -> None:
    parsed = formats.parse_rfc3339(text)
    again = formats.parse_rfc3339(formats.format_timestamp(parsed))

    assert again == parsed
    assert formats.format_timestamp(again) == formats.format_timestamp(parsed)


# --- InsertJobSchema ----------------------------------------------------------------------------

WHEN = "2030-01-01T00:00:00Z"


def test_insert_job_defaults_body_max_attempts_and_endpoint() -> None:
    loaded = schemas.InsertJobSchema().load({"timestamp": WHEN})

    assert loaded == {
        "timestamp": utc(2030, 1, 1),
        "delay": None,
        "body": None,
        "max_attempts": None,
        "idempotency_key": None,
        "endpoint": "default",
    }


@pytest.mark.parametrize(
    "body",
    [None, {}, {"a": [1, 2, {"b": None}]}, [1, "two"], "text", 0, 1.5, True],
    ids=repr,
)
def test_insert_job_keeps_any_json_body(body: Any) -> None:
    loaded = schemas.InsertJobSchema().load({"timestamp": WHEN, "body": body})

    assert loaded["body"] == body
    assert type(loaded["body"]) is type(body)


@pytest.mark.parametrize("max_attempts", [1, 7, 100])
def test_insert_job_accepts_integer_max_attempts(max_attempts: int) -> None:
    loaded = schemas.InsertJobSchema().load({"timestamp": WHEN, "max_attempts": max_attempts})

    assert loaded["max_attempts"] == max_attempts


def test_insert_job_treats_null_max_attempts_as_unset() -> None:
    loaded = schemas.InsertJobSchema().load({"timestamp": WHEN, "max_attempts": None})

    assert loaded["max_attempts"] is None


@pytest.mark.parametrize(
    ("max_attempts", "message"),
    [
        # marshmallow 4's strict Integer refuses booleans although bool is an int subclass.
        (True, "Not a valid integer."),
        (False, "Not a valid integer."),
        (3.0, "Not a valid integer."),
        (1.5, "Not a valid integer."),
        ("3", "Not a valid integer."),
        ([3], "Not a valid integer."),
        (0, "greater than or equal to 1"),
        (-1, "greater than or equal to 1"),
        (101, "less than or equal to 100"),
    ],
    ids=repr,
)
def test_insert_job_rejects_max_attempts(max_attempts: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.InsertJobSchema().load({"timestamp": WHEN, "max_attempts": max_attempts})

    assert list(caught.value.messages) == ["max_attempts"]
    assert message in caught.value.messages["max_attempts"][0]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "timestamp,delay", "exactly one of timestamp and delay"),
        ({"timestamp": None}, "timestamp,delay", "exactly one of timestamp and delay"),
        ({"timestamp": WHEN, "delay": 5}, "timestamp,delay", "exactly one of timestamp and delay"),
        ({"delay": -1}, "delay", "between 0 and"),
        ({"delay": True}, "delay", "Not a number"),
        ({"delay": "P1M"}, "delay", "ISO 8601"),
        ({"delay": "PT"}, "delay", "ISO 8601"),
        ({"delay": "90"}, "delay", "ISO 8601"),
        ({"timestamp": 1618521420}, "timestamp", "Not a string."),
        ({"timestamp": "2021-04-15T14:17:00"}, "timestamp", "offset"),
        ({"timestamp": "1969-12-31T23:59:59Z"}, "timestamp", "1970"),
        ({"timestamp": WHEN, "bodyy": {}}, "bodyy", "Unknown field."),
    ],
    ids=repr,
)
def test_insert_job_rejects(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.InsertJobSchema().load(data)

    assert list(caught.value.messages) == field.split(",")
    for name in field.split(","):
        assert message in caught.value.messages[name][0]


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("PT90S", 90.0),
        ("PT1H30M", 5400.0),
        ("P1DT2H", 93600.0),
        ("P2W", 1209600.0),
        ("PT0.25S", 0.25),
    ],
)
def test_delay_accepts_seconds_and_iso_durations(delay: Any, seconds: float) -> None:
    loaded = schemas.InsertJobSchema().load({"delay": delay})
    assert loaded["delay"] == seconds
    assert loaded["timestamp"] is None


def test_a_debounce_takes_the_place_of_a_time_and_leaves_old_digests_alone() -> None:
    loaded = schemas.InsertJobSchema().load(
        {"debounce": {"key": "digest-42", "period": "PT5M", "max_wait": 3600}}
    )
    assert loaded["debounce"] == {"key": "digest-42", "period": 300.0, "max_wait": 3600.0}
    assert schemas.debounce_of(loaded) is not None
    # Without one, the loaded request (and so its idempotency digest) is what it was before.
    plain = schemas.InsertJobSchema().load({"delay": 5, "debounce": None})
    assert "debounce" not in plain and schemas.debounce_of(plain) is None


@pytest.mark.parametrize(
    ("debounce", "problems"),
    [
        (
            {"key": "k", "period": 0},
            {"period": ["Must be more than 0 seconds (and at most 316224000)."]},
        ),
        ({"key": "k", "period": 10, "max_wait": 9.5}, {"max_wait": ["Must be at least period."]}),
        ({"key": "\x00", "period": 10}, {"key": [schemas.KEY_MESSAGE]}),
    ],
)
def test_a_debounce_is_checked_field_by_field(
    debounce: dict[str, Any], problems: dict[str, list[str]]
) -> None:
    with pytest.raises(ValidationError) as refused:
        schemas.InsertJobSchema().load({"debounce": debounce})
    assert refused.value.messages == {"debounce": problems}


def test_an_edit_gives_something_and_at_most_one_time() -> None:
    assert schemas.PatchJobSchema().load({"body": None}) == {"body": None}
    assert schemas.PatchJobSchema().load({"flow": None, "max_attempts": None}) == {
        "flow": None,
        "max_attempts": None,
    }
    with pytest.raises(ValidationError) as empty:
        schemas.PatchJobSchema().load({})
    assert set(empty.value.messages) == set(schemas.PatchJobSchema().fields)
    with pytest.raises(ValidationError) as both:
        schemas.PatchJobSchema().load({"timestamp": "2031-01-01T00:00:00Z", "delay": 1})
    assert set(both.value.messages) == {"timestamp", "delay"}
