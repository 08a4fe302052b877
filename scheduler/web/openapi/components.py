"""The document's components: the API's schemas, the error body and custom fields as JSON Schema."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, fields, validate

from scheduler import jobs
from scheduler.web import formats, schemas


def ecma_pattern(regex: re.Pattern[Any]) -> str:
    """A JSON Schema (ECMA 262) pattern for a regex that marshmallow applies with re.match.

    JSON Schema patterns match anywhere unless anchored, and `\\Z` means nothing there.
    """
    text = regex.pattern
    if (
        not isinstance(text, str)
        or "(?P" in text
        or "\\A" in text
        or "\\z" in text
        or regex.flags & ~re.UNICODE
    ):
        raise ValueError(f"no ECMA 262 equivalent written for {text!r}")
    return "^" + text.replace("\\Z", "$")


ID_PATTERN = ecma_pattern(formats.ID_PATTERN)
ID_LENGTH = {"minLength": 1, "maxLength": jobs.NAME_MAX_LENGTH}
# formats.parse_duration as one regular expression: no years or months, and neither a bare `P`
# nor a `T` without a number after it.
DURATION_PATTERN = (
    r"^P(?!$)(?:[0-9]+W)?(?:[0-9]+D)?"
    r"(?:T(?=[0-9])(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+(?:\.[0-9]+)?S)?)?$"
)
TIMESTAMP_DESCRIPTION = (
    "RFC 3339 with an offset (`Z` or `±hh:mm`), between 1970-01-01T00:00:00Z and "
    "9999-12-31T23:59:59Z."
)


class ErrorDetail(Schema):
    code = fields.String(
        required=True,
        metadata={
            "description": "Machine-readable: `invalid_json`, `invalid_request`, `unauthorized`, "
            "`not_found`, `conflict`, `method_not_allowed`, `request_entity_too_large`, "
            "`unsupported_media_type`, `unavailable`, `not_ready` or `internal`."
        },
    )
    message = fields.String(required=True, metadata={"description": "For people."})
    problems = fields.Dict(
        data_key="fields",
        metadata={
            "description": "Problems by field, as marshmallow reports them: a list of messages "
            "per field, list items keyed by their index."
        },
    )


class ErrorResponse(Schema):
    error = fields.Nested(ErrorDetail, required=True)


def describe_custom_field(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """JSON Schema for the custom fields of web.formats (an apispec attribute function)."""
    if isinstance(field, formats.JobId):
        return {"pattern": ID_PATTERN, **ID_LENGTH}
    regexes = [v.regex for v in field.validators if isinstance(v, validate.Regexp)]
    if regexes:
        return {"pattern": ecma_pattern(regexes[0])}
    if isinstance(field, formats.Delay):
        lowest = {"exclusiveMinimum": 0} if field.above_zero else {"minimum": 0}
        choices: list[dict[str, Any]] = [
            {"type": "number", **lowest, "maximum": field.maximum},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
        if field.allow_none:
            choices.append({"type": "null"})
        return {"anyOf": choices}
    if isinstance(field, formats.Timestamp) and "description" not in field.metadata:
        return {"description": TIMESTAMP_DESCRIPTION}
    return {}


COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorResponse,
    "JobSpec": schemas.JobSpecSchema,
    "InsertJob": schemas.InsertJobSchema,
    "Batch": schemas.BatchSchema,
    "BatchIds": schemas.BatchResponse,
    "JobId": schemas.JobIdResponse,
    "InsertedJob": schemas.InsertedJobResponse,
    "PatchJob": schemas.PatchJobSchema,
    "DeleteJob": schemas.DeleteJobSchema,
    "Job": schemas.JobSchema,
    "JobDetail": schemas.JobDetailSchema,
    "JobList": schemas.JobListResponse,
    "ReplaceCrons": schemas.ReplaceCronsSchema,
    "PutCron": schemas.PutCronSchema,
    "Cron": schemas.CronJobResponse,
    "CronList": schemas.CronListResponse,
    "CronPreview": schemas.CronPreviewResponse,
    "Backfill": schemas.BackfillSchema,
    "BackfillResult": schemas.BackfillResponse,
    "Dispatchers": schemas.DispatchersResponse,
    "Endpoints": schemas.EndpointsResponse,
    "PatchEndpoint": schemas.PatchEndpointSchema,
    "Flows": schemas.FlowsResponse,
}
# Marshmallow dumps every field of these, so each property is always present in an answer.
RESPONSE_COMPONENTS = (
    "BatchIds",
    "JobId",
    "InsertedJob",
    "Job",
    "JobDetail",
    "JobList",
    "Attempt",
    "Cron",
    "CronList",
    "CronPreview",
    "BackfillResult",
    "Dispatchers",
    "Dispatcher",
    "Endpoints",
    "Endpoint",
    "Flows",
    "FlowFigures",
)
# Properties of those answers that only some answers carry (a debounced insert's).
OPTIONAL_PROPERTIES = {"BatchIds": {"debounced"}, "InsertedJob": {"debounced"}}
# "Give exactly one of timestamp, delay and debounce" (a null counts as absent).
ONE_OF_WHEN: list[dict[str, Any]] = [
    {"required": ["timestamp"], "properties": {"timestamp": {"type": "string"}}},
    {"required": ["delay"], "properties": {"delay": {"type": ["number", "string"]}}},
    {"required": ["debounce"], "properties": {"debounce": {"type": "object"}}},
]
# An edit gives something, and not both a time and a delay.
EDIT_RULES: dict[str, Any] = {
    "minProperties": 1,
    "not": {"required": ["timestamp", "delay"]},
    "description": "A field left out stays as it is; give at least one, and at most one of "
    "`timestamp` and `delay`.",
}
