"""Marshmallow schemas for requests in and responses out; nothing else."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from scheduler import config, cron, errors

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
ID_MESSAGE = "Must be 1 to 128 characters of letters, digits, '_', '.', ':' or '-'."
MAX_CRONS = 10_000
MAX_PREVIEW = 100
MAX_SPEC_LENGTH = 200
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
    """RFC 3339, second precision unless there is a fraction, `Z` for UTC."""
    text = value.isoformat(timespec="seconds" if not value.microsecond else "milliseconds")
    return text.replace("+00:00", "Z")


class JobId(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(ID_PATTERN, error=ID_MESSAGE), **kwargs)


class InsertJobSchema(Schema):
    timestamp = Timestamp(required=True)
    body = fields.Raw(load_default=None, allow_none=True)
    max_attempts = fields.Integer(
        load_default=None,
        strict=True,
        validate=validate.Range(1, config.MAX_ATTEMPTS_LIMIT),
    )


class InsertJobResponse(Schema):
    id = fields.String()


class DeleteJobSchema(Schema):
    id = JobId(required=True)


class CronEntrySchema(Schema):
    id = JobId(required=True)
    spec = fields.String(required=True, validate=validate.Length(1, MAX_SPEC_LENGTH))


class ReplaceCronsSchema(Schema):
    jobs = fields.List(
        fields.Nested(CronEntrySchema), required=True, validate=validate.Length(max=MAX_CRONS)
    )

    @validates_schema
    def check_specs(self, data: dict[str, Any], **kwargs: Any) -> None:
        problems: dict[int, dict[str, list[str]]] = {}
        seen: set[str] = set()
        for index, entry in enumerate(data["jobs"]):
            if entry["id"] in seen:
                problems[index] = {"id": [f"Duplicate cron id {entry['id']!r}."]}
                continue
            seen.add(entry["id"])
            try:
                cron.parse_spec(entry["spec"])
            except errors.InvalidCronSpec as exc:
                problems[index] = {
                    "spec": [f"Cron {entry['id']!r}: invalid spec {entry['spec']!r}: {exc.reason}"]
                }
        if problems:
            raise ValidationError({"jobs": problems})


class CronPreviewQuery(Schema):
    spec = fields.String(required=True, validate=validate.Length(1, MAX_SPEC_LENGTH))
    after = Timestamp(load_default=None)
    count = fields.Integer(load_default=5, validate=validate.Range(1, MAX_PREVIEW))


class CronPreviewResponse(Schema):
    spec = fields.String()
    next = fields.List(Timestamp())


class CronJobResponse(Schema):
    id = fields.String()
    spec = fields.String()
    timezone = fields.String()
    next_fire_at = Timestamp(allow_none=True)
    last_fire_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class CronListResponse(Schema):
    jobs = fields.List(fields.Nested(CronJobResponse))
