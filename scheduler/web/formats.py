"""The API's value formats (ids, RFC 3339 timestamps, delays, numbers) as parsers and fields."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

from scheduler import jobs as jobs_module

# Dots alone are refused: clients collapse "." and ".." in URL paths.
ID_PATTERN = jobs_module.NAME_PATTERN
ID_MESSAGE = "Must be 1 to 128 characters of letters, digits, '_', '.', ':' or '-', not only dots."
MAX_DELAY_SECONDS = 10 * 366 * 24 * 3600
_DURATION = re.compile(
    r"P(?:(?P<weeks>[0-9]+)W)?(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+(?:\.[0-9]+)?)S)?)?"
)
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(?P<offset>[Zz]|[+-](?P<hours>[0-9]{2}):(?P<minutes>[0-9]{2}))"
)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_rfc3339(value: str) -> dt.datetime:
    """An RFC 3339 timestamp with an explicit offset, as an aware datetime; ValueError otherwise."""
    match = _RFC3339.fullmatch(value)
    if not match:
        raise ValueError(
            "Not an RFC 3339 timestamp with an offset (e.g. 2021-04-15T14:17:00-07:00)."
        )
    if match["hours"] and (int(match["hours"]) > 23 or int(match["minutes"]) > 59):
        raise ValueError("Not a valid date or time (the UTC offset is out of range).")
    # Python's parser keeps microseconds only.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = dt.datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError:
        raise ValueError("Not a valid date or time (no such day, hour or minute).") from None
    try:
        in_utc = parsed.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("Must be between 1970 and 9999.") from None
    if in_utc < EARLIEST:
        raise ValueError("Must not be before 1970-01-01T00:00:00Z.")
    return in_utc


class Timestamp(fields.Field):
    """RFC 3339 with an offset; loads to an aware UTC datetime."""

    default_error_messages = {"invalid": "Not a string."}  # noqa: RUF012 (marshmallow API)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_timestamp(value)


def format_timestamp(value: dt.datetime) -> str:
    """RFC 3339 with as many fraction digits as needed (none, 3 or 6), `Z` for UTC."""
    if not value.microsecond:
        timespec = "seconds"
    elif value.microsecond % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    text = value.isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


class JobId(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(ID_PATTERN, error=ID_MESSAGE), **kwargs)


def parse_duration(value: str) -> float:
    """Seconds in an ISO 8601 duration of weeks, days, hours, minutes and seconds (PT90S)."""
    match = _DURATION.fullmatch(value)
    if not match or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(
            "Not a number of seconds or an ISO 8601 duration such as PT90S or P1DT2H "
            "(years and months are not accepted: their length varies)."
        )
    parts = {name: float(number) for name, number in match.groupdict(default="0").items()}
    return (
        parts["weeks"] * 604800
        + parts["days"] * 86400
        + parts["hours"] * 3600
        + parts["minutes"] * 60
        + parts["seconds"]
    )


class Delay(fields.Field):
    """Seconds (from now, for a job's delay): a non-negative number, or an ISO 8601 duration
    string; at most `maximum`, and more than 0 when `above_zero`. Its messages name the
    maximum as `maximum_named` when it is a setting's (its value is checked apart)."""

    def __init__(
        self,
        maximum: int = MAX_DELAY_SECONDS,
        above_zero: bool = False,
        maximum_named: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.maximum = maximum
        self.above_zero = above_zero
        self.maximum_named = maximum_named or str(maximum)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        # Request numbers arrive exact: an int, or a Decimal (jsonb.loads).
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise ValidationError("Not a number of seconds or an ISO 8601 duration string.")
        try:
            seconds = parse_duration(value) if isinstance(value, str) else float(value)
        except OverflowError:
            raise ValidationError(f"Must be between 0 and {self.maximum_named} seconds.") from None
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if not 0 <= seconds <= self.maximum:
            raise ValidationError(f"Must be between 0 and {self.maximum_named} seconds.")
        if self.above_zero and seconds == 0:
            raise ValidationError(
                f"Must be more than 0 seconds (and at most {self.maximum_named})."
            )
        return seconds


class Number(fields.Float):
    """A JSON number only: a string that holds one ("5") is refused, as a strict Integer refuses
    it (marshmallow's Float would read it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        # Request numbers arrive exact: an int, or a Decimal (jsonb.loads); the base refuses bools.
        if not isinstance(value, int | float | Decimal):
            raise self.make_error("invalid", input=value)
        number: float = super()._deserialize(value, attr, data, **kwargs)
        return number


class EndpointName(fields.String):
    """The name of a configured endpoint (the web process checks it is one); `default` is
    ENDPOINT."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("load_default", jobs_module.DEFAULT_ENDPOINT)
        kwargs.setdefault(
            "metadata", {"description": "A name from SCHEDULER_ENDPOINTS, or `default`."}
        )
        super().__init__(validate=validate.Regexp(ID_PATTERN, error=ID_MESSAGE), **kwargs)


RESERVED_CRON_IDS = frozenset({"next"})


class CronId(JobId):
    """A cron id; `next` is refused because /cron/next is the preview route."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        cron_id: str = super()._deserialize(value, attr, data, **kwargs)
        if cron_id in RESERVED_CRON_IDS:
            raise ValidationError(f"{cron_id!r} is reserved (GET /cron/{cron_id} is the preview).")
        return cron_id
