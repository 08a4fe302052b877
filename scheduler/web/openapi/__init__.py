"""The OpenAPI 3.1 document, built from the operation each API view declares beside itself.

A view declares its operation with `@openapi.operation(...)` under its route decorator; `document()`
walks the URL rules of the API blueprint, so each operation's path and method are its rule's and its
`operationId` is the Flask endpoint that serves it (the tests match the document against the app's
URL map rule by rule), and a view that declares nothing stops the build. This module keeps what the
operations share: the components built from the marshmallow schemas in web.schemas, the error
responses, the security scheme and the common parameters.

`GET /openapi.json` serves the document; `python -m scheduler.web.openapi > docs/openapi.json`
rewrites the committed copy (tests/integration/test_openapi.py checks that the two agree).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask
from marshmallow import Schema, fields, validate

from scheduler import __version__, config, jobs, tracing
from scheduler.web import http, schemas

SECURITY_SCHEME = "SchedulerSecret"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
JSON = "application/json"
# Werkzeug adds HEAD to every GET rule and OPTIONS to every rule; neither is documented.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
DECLARATION = "openapi_operation"

View = TypeVar("View", bound=Callable[..., Any])


class UndocumentedRoute(LookupError):
    """An API route whose view declares no operation."""

    def __init__(self, endpoint: str, rule: str) -> None:
        super().__init__(
            f"{endpoint} ({rule}) declares no operation: add @openapi.operation(...) under its "
            "route decorator"
        )
        self.endpoint = endpoint


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


ID_PATTERN = ecma_pattern(schemas.ID_PATTERN)
ID_LENGTH = {"minLength": 1, "maxLength": jobs.NAME_MAX_LENGTH}
# schemas.parse_duration as one regular expression: no years or months, and neither a bare `P`
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


def _custom_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """JSON Schema for the custom fields in web.schemas (an apispec attribute function)."""
    if isinstance(field, schemas.JobId):
        return {"pattern": ID_PATTERN, **ID_LENGTH}
    regexes = [v.regex for v in field.validators if isinstance(v, validate.Regexp)]
    if regexes:
        return {"pattern": ecma_pattern(regexes[0])}
    if isinstance(field, schemas.Delay):
        choices: list[dict[str, Any]] = [
            {"type": "number", "minimum": 0, "maximum": field.maximum},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
        if field.allow_none:
            choices.append({"type": "null"})
        return {"anyOf": choices}
    if isinstance(field, schemas.Timestamp) and "description" not in field.metadata:
        return {"description": TIMESTAMP_DESCRIPTION}
    return {}


def returns(schema: type[Schema] | dict[str, Any], description: str) -> dict[str, Any]:
    """A JSON answer: a marshmallow schema (see COMPONENTS) or a JSON Schema."""
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
RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
ACCEPT_ENCODING = {
    "description": "`identity`: the body must be sent as it is.",
    "required": True,
    "schema": {"type": "string"},
}


def _id_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": ID_PATTERN, **ID_LENGTH},
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

COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorResponse,
    "JobSpec": schemas.JobSpecSchema,
    "InsertJob": schemas.InsertJobSchema,
    "Batch": schemas.BatchSchema,
    "BatchIds": schemas.BatchResponse,
    "JobId": schemas.JobIdResponse,
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
}
# Marshmallow dumps every field of these, so each property is always present in an answer.
RESPONSE_COMPONENTS = (
    "BatchIds",
    "JobId",
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
)
# "Give exactly one of timestamp and delay" (a null counts as absent).
ONE_OF_WHEN: list[dict[str, Any]] = [
    {"required": ["timestamp"], "properties": {"timestamp": {"type": "string"}}},
    {"required": ["delay"], "properties": {"delay": {"type": ["number", "string"]}}},
]


def _operation(endpoint: str, declared: Operation) -> dict[str, Any]:
    """One operation object, afresh: apispec edits the operations it is given in place."""
    public = endpoint in http.PUBLIC_ENDPOINTS
    errors = dict(declared.errors)
    if not public:
        errors.setdefault(401, ERROR_MEANINGS[401])
        errors.setdefault(503, ERROR_MEANINGS[503])
    if declared.request:
        errors.setdefault(413, ERROR_MEANINGS[413])
        errors.setdefault(415, ERROR_MEANINGS[415])
    responses = {str(status): answer for status, answer in declared.responses.items()}
    for status, why in sorted(errors.items()):
        responses[str(status)] = returns(ErrorResponse, why)
    # Retry-After comes with the database's 503, which a public route (/readyz) does not give.
    if not public:
        responses["503"]["headers"] = {"Retry-After": RETRY_AFTER}
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": declared.summary,
        "tags": [declared.tag],
        "responses": responses,
        "security": [] if public else SECURITY,
    }
    if declared.request:
        media_type: dict[str, Any] = {"schema": declared.request}
        if declared.examples:
            media_type["examples"] = {
                name: {"value": value} for name, value in declared.examples.items()
            }
        operation["requestBody"] = {"required": True, "content": {JSON: media_type}}
        responses["415"]["headers"] = {"Accept-Encoding": ACCEPT_ENCODING}
    if declared.parameters:
        operation["parameters"] = list(declared.parameters)
    return copy.deepcopy(operation)


def _paths(api: Blueprint) -> dict[str, dict[str, Any]]:
    """Every route of the blueprint, by path and method, from its view's declaration.

    :raise UndocumentedRoute: a view declares no operation.
    """
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(api)
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        declared = getattr(app.view_functions[rule.endpoint], DECLARATION, None)
        if not isinstance(declared, Operation):
            raise UndocumentedRoute(rule.endpoint, rule.rule)
        methods = sorted((rule.methods or set()) - IMPLICIT_METHODS)
        if len(methods) != 1:
            # The operationId is the endpoint, and two operations cannot share one.
            raise ValueError(f"{rule.endpoint} serves {methods}: give each method its own view")
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        paths.setdefault(path, {})[methods[0].lower()] = _operation(rule.endpoint, declared)
    return paths


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the null that `load_default=None` implies: a query
    string has no null, only an absent parameter."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema.get("type"), list):
        types = [t for t in schema["type"] if t != "null"]
        schema["type"] = types[0] if len(types) == 1 else types
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]
    return schema


def _refine(document: dict[str, Any]) -> dict[str, Any]:
    """What marshmallow's fields cannot say on their own."""
    components = document["components"]["schemas"]
    for name in RESPONSE_COMPONENTS:
        components[name]["required"] = sorted(components[name]["properties"])
    for name in ("JobSpec", "InsertJob"):
        components[name]["oneOf"] = ONE_OF_WHEN
        components[name]["description"] = "Give exactly one of `timestamp` and `delay`."
    batch = components["Batch"]["properties"]["jobs"]
    batch["minItems"] = 1
    batch["description"] = (
        f"1 to SCHEDULER_BATCH_LIMIT (by default {config.DEFAULT_BATCH_LIMIT}) jobs; "
        "invalid items are reported by their index."
    )
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["schema"] = _without_null(parameter["schema"])
                    if parameter["name"] in QUERY_EXAMPLES:
                        parameter["example"] = QUERY_EXAMPLES[parameter["name"]]
    return document


@functools.cache
def document(api: Blueprint) -> dict[str, Any]:
    """The document of every route the blueprint registers; built once per process.

    :raise UndocumentedRoute: a view declares no operation.
    """
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="scheduler",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "HTTP callbacks at the time you asked for. Every non-2xx answer has "
            "the JSON body of the `Error` schema; see docs/api.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        security=SECURITY,
        tags=[
            {"name": "jobs", "description": "One-off callbacks."},
            {"name": "crons", "description": "Recurring callbacks."},
            {"name": "endpoints", "description": "Where deliveries go, and how fast."},
            {"name": "dispatchers", "description": "The processes that send deliveries."},
            {"name": "health", "description": "Probes and this document; no secret needed."},
        ],
    )
    plugin.map_to_openapi_type(schemas.Timestamp, "string", "date-time")
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_custom_fields)
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "apiKey",
            "in": "header",
            "name": http.SECRET_HEADER,
            "description": "One of the comma-separated values of SECRET.",
        },
    )
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for path, operations in _paths(api).items():
        spec.path(path=path, operations=operations)
    # A round trip through JSON: plain data, no shared sub-objects, nothing unserialisable.
    built: dict[str, Any] = json.loads(json.dumps(spec.to_dict()))
    return _refine(built)


def render(api: Blueprint) -> str:
    """The document as committed in docs/openapi.json."""
    return json.dumps(document(api), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
