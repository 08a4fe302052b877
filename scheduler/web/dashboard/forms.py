"""What the dashboard's query strings and forms may hold, checked with marshmallow like the API's
requests; a problem is shown on the page, beside its field."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from scheduler import jobs, jsonb
from scheduler.web import schemas

# Jobs shown per page, and so the most one "cancel selected" can take.
PAGE_SIZE = 50
# The most jobs one bulk retry takes; it works through them in batches of RETRY_BATCH, each its
# own transaction, so a big retry never holds thousands of row locks at once.
MAX_BULK_RETRY = 10_000
RETRY_BATCH = 500


class WindowTime(fields.Field):
    """A time from a datetime-local input (no zone, read as UTC) or RFC 3339 with an offset."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise ValidationError("Not a string.")
        try:
            return schemas.parse_rfc3339(value)
        except ValueError:
            pass
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("Not a date and time such as 2026-11-27T14:30 (UTC).") from None
        if parsed.tzinfo is not None:
            raise ValidationError("Give the offset as Z or ±hh:mm.")
        return parsed.replace(tzinfo=dt.UTC)


def problems_of(exc: ValidationError) -> dict[str, Any]:
    """marshmallow's messages by field (a schema-wide problem under `form`)."""
    return exc.messages if isinstance(exc.messages, dict) else {"form": exc.messages}


def _known_kind(value: str) -> None:
    if not jobs.is_error_kind(value):
        known = ", ".join([*jobs.ERROR_KINDS, "http_<status>"])
        raise ValidationError(f"Not a kind of failure; one of {known}.")


class BlankIsNone(Schema):
    """Forms send empty inputs as empty strings; those mean 'not given'."""

    class Meta:
        unknown = EXCLUDE

    def load_form(self, values: dict[str, str]) -> dict[str, Any]:
        given = {key: value.strip() for key, value in values.items() if value.strip()}
        loaded: dict[str, Any] = self.load(given)
        return loaded


class JobFilterForm(BlankIsNone):
    state = fields.String(load_default=None, validate=validate.OneOf(jobs.JOB_STATES))
    cron_id = schemas.JobId(load_default=None)
    endpoint = fields.String(
        load_default=None,
        validate=validate.Regexp(jobs.NAME_PATTERN, error=schemas.ID_MESSAGE),
    )
    error_kind = fields.String(load_default=None, validate=_known_kind)
    after = WindowTime(load_default=None)
    before = WindowTime(load_default=None)
    cursor = schemas.JobId(load_default=None)

    @validates_schema
    def check_window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["after"] and data["before"] and data["after"] >= data["before"]:
            raise ValidationError("Must be after 'from'.", "before")


class BulkRetryForm(JobFilterForm):
    as_of = WindowTime(required=True)


class SelectedJobsForm(BlankIsNone):
    ids = fields.List(schemas.JobId(), required=True, validate=validate.Length(1, PAGE_SIZE))


def cron_edit(values: dict[str, str]) -> dict[str, Any]:
    """The cron form's values checked by the API's own PUT /cron/<id> schema, so the two cannot
    disagree; jitter may be seconds or an ISO 8601 duration, as there.

    :raise ValidationError: with the problems by field.
    """
    given: dict[str, Any] = {key: value.strip() for key, value in values.items() if value.strip()}
    given.pop("csrf_token", None)
    if "jitter" in given:
        # Not a number: an ISO 8601 duration, or a mistake the schema names.
        with contextlib.suppress(ValueError):
            given["jitter"] = float(given["jitter"])
    loaded: dict[str, Any] = schemas.PutCronSchema().load(given)
    return loaded


# The job form's inputs, each sent beside the value the page showed (`was_<name>`): only what
# the user changed is edited, so an input left alone never undoes a change made meanwhile (a
# debounced insert that moved the job, say).
JOB_EDIT_INPUTS = (
    "timestamp",
    "body",
    "max_attempts",
    "endpoint",
    "flow_key",
    "flow_rate",
    "flow_max_in_flight",
    "path",
    "method",
    "timeout",
)
FLOW_INPUTS = ("flow_key", "flow_rate", "flow_max_in_flight")


def _typed(text: str) -> str:
    # Browsers send \r\n in a textarea; a body left alone must compare equal to what was shown.
    return text.replace("\r\n", "\n").strip()


def job_changes(values: dict[str, str]) -> dict[str, Any]:
    """The PATCH /jobs/<id> request the job form makes: the inputs whose value differs from
    what the page showed, read as the API reads them (a time as WindowTime reads it, the body as
    JSON). The result goes through the API's own PatchJobSchema.

    :raise ValidationError: a problem with a typed value, by input.
    """
    changed = {
        name
        for name in JOB_EDIT_INPUTS
        if _typed(values.get(name, "")) != _typed(values.get(f"was_{name}", ""))
    }
    changes: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    if "timestamp" in changed:
        try:
            moment = WindowTime().deserialize(_typed(values.get("timestamp", "")))
            changes["timestamp"] = schemas.format_timestamp(moment)
        except ValidationError as exc:
            problems["timestamp"] = list(exc.messages)
    if "body" in changed:
        try:
            changes["body"] = _body(_typed(values.get("body", "")))
        except ValueError as exc:
            problems["body"] = [str(exc)]
    if "max_attempts" in changed:
        text = _typed(values.get("max_attempts", ""))
        changes["max_attempts"] = int(text) if text.isdecimal() else text or None
    if "endpoint" in changed:
        changes["endpoint"] = _typed(values.get("endpoint", ""))
    if changed & set(FLOW_INPUTS):
        changes["flow"] = _flow({name: _typed(values.get(name, "")) for name in FLOW_INPUTS})
    # An emptied path or timeout goes back to the default, as null does in the API.
    if "path" in changed:
        changes["path"] = _typed(values.get("path", "")) or None
    if "method" in changed:
        changes["method"] = _typed(values.get("method", ""))
    if "timeout" in changed:
        changes["timeout"] = _seconds_or_text(_typed(values.get("timeout", "")))
    if problems:
        raise ValidationError(problems)
    return changes


def _seconds_or_text(text: str) -> float | str | None:
    """A number of seconds as a number; other text (ISO 8601, or a mistake the schema names) as
    it is; nothing as None."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _body(text: str) -> Any:
    """The body typed, read with the API's rules: what cannot be stored is refused, and nesting
    is counted as in a request, whose object is the first level."""
    try:
        value, problem = jsonb.read_request(text.encode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"Not valid JSON: {exc}") from None
    if problem is None:
        problem = jsonb.find_problem({"body": value})
        path = problem.path[1:] if problem else ()
    else:
        path = problem.path
    if problem is not None:
        where = f"At {jsonb.pointer(path)}: " if path else ""
        raise ValueError(f"{where}{problem.reason[0].upper()}{problem.reason[1:]}.")
    return value


def _flow(given: dict[str, str]) -> dict[str, Any] | None:
    """The flow of the form's three flow inputs; no key is no flow."""
    if not given["flow_key"]:
        return None
    flow: dict[str, Any] = {"key": given["flow_key"], "rate": None, "max_in_flight": None}
    for name, field in (("flow_rate", "rate"), ("flow_max_in_flight", "max_in_flight")):
        text = given[name]
        if not text:
            continue
        try:
            number = float(text)
        except ValueError:
            flow[field] = text  # a mistake the schema names
            continue
        flow[field] = int(number) if number.is_integer() and field == "max_in_flight" else number
    return flow
