"""What an API view declares beside itself: its operation, and the answers and parameters shared."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from marshmallow import Schema

from scheduler import tracing
from scheduler.web import http, schemas
from scheduler.web.openapi import components

JSON = "application/json"
DECLARATION = "openapi_operation"

View = TypeVar("View", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Operation:
    """What a view says of itself; its rule gives the path, the method and the operationId."""

    summary: str
    tag: str
    responses: dict[int, dict[str, Any]]
    errors: dict[int, str]
    request: type[Schema] | None
    examples: dict[str, Any]
    parameters: tuple[dict[str, Any], ...]


def operation(
    *,
    summary: str,
    tag: str,
    responses: dict[int, dict[str, Any]],
    errors: dict[int, str] | None = None,
    request: type[Schema] | None = None,
    examples: dict[str, Any] | None = None,
    parameters: Iterable[dict[str, Any]] = (),
) -> Callable[[View], View]:
    """Declare the operation a view serves: `responses` are its answers below 400, `errors` its
    error statuses and why each happens, `request` its JSON body's schema and `examples` that
    body's examples by name.

    Every error answer has the `Error` body. The builder adds what follows from the rest: 401
    and 503 (the database, with Retry-After) unless the endpoint is in http.PUBLIC_ENDPOINTS,
    and 413 and 415 with a body.
    """
    declared = Operation(
        summary=summary,
        tag=tag,
        responses=responses,
        errors=errors or {},
        request=request,
        examples=examples or {},
        parameters=tuple(parameters),
    )

    def declare(view: View) -> View:
        setattr(view, DECLARATION, declared)
        return view

    return declare


def returns(schema: type[Schema] | dict[str, Any], description: str) -> dict[str, Any]:
    """A JSON answer: a marshmallow schema (see components.COMPONENTS) or a JSON Schema."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


EMPTY = {"description": "Done; empty body."}
NO_CONTENT = {"description": "Done."}
ERROR_MEANINGS = {
    400: "Invalid input; `fields` names each problem.",
    401: "Missing or wrong Scheduler-Secret.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "The body is larger than SCHEDULER_MAX_BODY_BYTES, as sent or as stored.",
    415: "The body has a Content-Encoding; none is supported.",
    503: "The database is unavailable; see Retry-After.",
}
INVALID = ERROR_MEANINGS[400]
REUSED_KEY = "The idempotency key was used for another request."


def _id_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": components.ID_PATTERN, **components.ID_LENGTH},
        "example": example,
    }


def query(schema: type[Schema]) -> dict[str, Any]:
    """Query parameters: apispec expands this into one parameter per field of the schema."""
    return {"in": "query", "schema": schema}


# Examples, as in docs/api.md; the fuzz tests seed a cron and a job with these ids.
EXAMPLE_JOB_ID = "01m8dd8yqdh7n7gfnsea966a31"
EXAMPLE_CRON_ID = "nightly"
EXAMPLE_SPEC = "0 30 9 * * mon-fri"
EXAMPLE_TIME = "2030-01-01T00:00:00Z"
QUERY_EXAMPLES: dict[str, Any] = {
    "spec": EXAMPLE_SPEC,
    "after": EXAMPLE_TIME,
    "before": "2031-01-01T00:00:00+01:00",
    "count": 3,
    "state": "failed",
    "limit": 10,
}

IDEMPOTENCY_KEY = {
    "in": "header",
    "name": http.IDEMPOTENCY_HEADER,
    "required": False,
    "description": "Repeats of the same request with the same key answer the first answer and "
    "schedule nothing; the same key with another request is a 409. Kept for "
    "SCHEDULER_IDEMPOTENCY_TTL.",
    "schema": {"type": "string", "minLength": 1, "maxLength": schemas.MAX_KEY_LENGTH},
}
TRACE_HEADERS = [
    {
        "in": "header",
        "name": tracing.TRACEPARENT_HEADER,
        "required": False,
        "description": "W3C Trace Context. Stored with the job (each job of a batch) and sent on "
        "each delivery attempt with the same trace id and flags and a new parent id; a "
        "malformed value is ignored, never refused.",
        "schema": {"type": "string"},
        "example": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
    {
        "in": "header",
        "name": tracing.TRACESTATE_HEADER,
        "required": False,
        "description": "W3C Trace Context, kept only with a valid traceparent and when valid "
        f"itself, cut by whole members to {tracing.MAX_TRACESTATE_LENGTH} characters; sent "
        "with the traceparent.",
        "schema": {"type": "string"},
    },
]
JOB_ID = _id_param(
    "job_id", "A job id; one that cannot exist (see the pattern) is a 404.", EXAMPLE_JOB_ID
)
CRON_ID = _id_param(
    "cron_id", "A cron id; one that cannot exist (see the pattern) is a 404.", EXAMPLE_CRON_ID
)
NEW_CRON_ID = _id_param(
    "cron_id", "The cron's id; one that breaks the pattern is a 400.", EXAMPLE_CRON_ID
)
ENDPOINT_NAME = _id_param("name", "An endpoint's name; `default` is ENDPOINT.", "billing")
