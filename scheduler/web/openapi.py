"""The OpenAPI 3.1 document, generated from the marshmallow schemas the routes use.

`GET /openapi.json` serves it; `python -m scheduler.web.openapi > docs/openapi.json` rewrites the
committed copy (tests/integration/test_openapi.py checks that the two agree).

Each operation's `operationId` is the Flask endpoint that serves it, so the tests can match the
document against the app's URL map rule by rule.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

from scheduler import __version__, config, jobs, tracing
from scheduler.web import schemas

SECURITY_SCHEME = "SchedulerSecret"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
JSON = "application/json"


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


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {JSON: {"schema": ref}}}


ERROR_MEANINGS = {
    400: "Invalid input; `fields` names each problem.",
    401: "Missing or wrong Scheduler-Secret.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "The body is larger than SCHEDULER_MAX_BODY_BYTES, as sent or as stored.",
    415: "The body has a Content-Encoding; none is supported.",
    503: "The database is unavailable; see Retry-After.",
}


def _errors(given: dict[int, str] | None = None) -> dict[str, Any]:
    """Error responses: the given ones (status: why) plus 401 and 503, which any route can give."""
    given = given or {}
    statuses = sorted({*given, 401, 503})
    responses = {str(s): _json("Error", given.get(s) or ERROR_MEANINGS[s]) for s in statuses}
    responses["503"]["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return responses


def _operation(
    endpoint: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
        "security": [] if public else SECURITY,
    }
    if body:
        media_type = {"schema": {"$ref": f"#/components/schemas/{body}"}}
        if body in BODY_EXAMPLES:
            media_type["examples"] = BODY_EXAMPLES[body]
        operation["requestBody"] = {"required": True, "content": {JSON: media_type}}
        responses.setdefault("413", _json("Error", ERROR_MEANINGS[413]))
        responses.setdefault("415", _json("Error", ERROR_MEANINGS[415]))
        responses["415"]["headers"] = {
            "Accept-Encoding": {
                "description": "`identity`: the body must be sent as it is.",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    if params:
        operation["parameters"] = params
    return operation


def _id_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": ID_PATTERN, **ID_LENGTH},
        "example": example,
    }


def _query(schema: type[Schema]) -> dict[str, Any]:
    """apispec expands this into one query parameter per field."""
    return {"in": "query", "schema": schema}


# Examples, as in docs/api.md; the fuzz tests seed a cron and a job with these ids.
EXAMPLE_JOB_ID = "01m8dd8yqdh7n7gfnsea966a31"
EXAMPLE_CRON_ID = "nightly"
EXAMPLE_SPEC = "0 30 9 * * mon-fri"
EXAMPLE_TIME = "2030-01-01T00:00:00Z"
BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "InsertJob": {
        "at": {"value": {"timestamp": EXAMPLE_TIME, "body": {"foo": "bar"}, "max_attempts": 5}},
        "after": {
            "value": {"delay": "PT90S", "body": {"foo": "bar"}, "idempotency_key": "order-42"}
        },
    },
    "Batch": {
        "two": {
            "value": {"jobs": [{"timestamp": EXAMPLE_TIME, "body": 1}, {"delay": 60, "body": 2}]}
        }
    },
    "DeleteJob": {"one": {"value": {"id": EXAMPLE_JOB_ID}}},
    "ReplaceCrons": {
        "two": {
            "value": {
                "jobs": [
                    {"id": EXAMPLE_CRON_ID, "spec": EXAMPLE_SPEC},
                    {"id": "hourly", "spec": "@every 1h"},
                ]
            }
        }
    },
    "PutCron": {
        "zoned": {"value": {"spec": EXAMPLE_SPEC, "timezone": "Europe/Paris"}},
        "spread": {"value": {"spec": "@hourly", "jitter": 300, "overlap": "skip"}},
    },
    "Backfill": {
        "day": {"value": {"from": "2029-12-31T00:00:00Z", "to": "2030-01-01T00:00:00Z"}},
    },
}
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
    "name": "Idempotency-Key",
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
EMPTY = {"description": "Done; empty body."}
NO_CONTENT = {"description": "Done."}
JOB_ID = [
    _id_param(
        "job_id", "A job id; one that cannot exist (see the pattern) is a 404.", EXAMPLE_JOB_ID
    )
]
CRON_ID = [
    _id_param(
        "cron_id", "A cron id; one that cannot exist (see the pattern) is a 404.", EXAMPLE_CRON_ID
    )
]
NEW_CRON_ID = [
    _id_param("cron_id", "The cron's id; one that breaks the pattern is a 400.", EXAMPLE_CRON_ID)
]
INVALID = ERROR_MEANINGS[400]
NO_CRON = "No such cron."
NO_ENDPOINT = "No endpoint of that name is configured."
ENDPOINT_NAME = [_id_param("name", "An endpoint's name; `default` is ENDPOINT.", "billing")]
NO_JOB = "No such job."
REUSED_KEY = "The idempotency key was used for another request."

HEALTH: dict[str, Any] = {
    "type": "object",
    "properties": {"status": {"const": "ok"}},
    "required": ["status"],
    "additionalProperties": False,
}
READY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"const": "ready"},
        "dispatcher_heartbeat_age_seconds": {"type": "number", "minimum": 0},
    },
    "required": ["status", "dispatcher_heartbeat_age_seconds"],
    "additionalProperties": False,
}

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


def _paths() -> dict[str, dict[str, Any]]:
    """Every route, by path and method; built afresh because apispec edits operations."""
    return {
        "/": {
            "get": _operation(
                "api.banner",
                "A one-line banner.",
                {
                    "200": {
                        "description": "Banner",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tag="health",
                public=True,
            )
        },
        "/healthz": {
            "get": _operation(
                "api.healthz",
                "The process is alive (nothing else is checked).",
                {"200": _json(HEALTH, "Alive.")},
                tag="health",
                public=True,
            )
        },
        "/readyz": {
            "get": _operation(
                "api.readyz",
                "Database reachable, schema current, dispatcher heartbeat fresh.",
                {"200": _json(READY, "Ready."), "503": _json("Error", "Not ready, and why.")},
                tag="health",
                public=True,
            )
        },
        "/endpoints": {
            "get": _operation(
                "api.endpoints.list_endpoints",
                "Every configured endpoint: the limits in force, paused, in flight and due.",
                {"200": _json("Endpoints", "Endpoints."), **_errors()},
                tag="endpoints",
            )
        },
        "/endpoints/{name}": {
            "get": _operation(
                "api.endpoints.get_endpoint",
                "One endpoint.",
                {"200": _json("Endpoint", "The endpoint."), **_errors({404: NO_ENDPOINT})},
                tag="endpoints",
                params=ENDPOINT_NAME,
            ),
            "patch": _operation(
                "api.endpoints.patch_endpoint",
                "Change an endpoint's limits at run time (a field left out is unchanged; null: "
                "unlimited). They win over SCHEDULER_RATE_LIMIT and SCHEDULER_MAX_IN_FLIGHT and "
                "hold on every dispatcher within a second.",
                {
                    "200": _json("Endpoint", "The endpoint."),
                    **_errors({400: INVALID, 404: NO_ENDPOINT}),
                },
                tag="endpoints",
                body="PatchEndpoint",
                params=ENDPOINT_NAME,
            ),
        },
        "/endpoints/{name}/reset": {
            "post": _operation(
                "api.endpoints.reset_endpoint",
                "Return an endpoint to the environment's limits.",
                {"200": _json("Endpoint", "The endpoint."), **_errors({404: NO_ENDPOINT})},
                tag="endpoints",
                params=ENDPOINT_NAME,
            )
        },
        "/endpoints/{name}/pause": {
            "post": _operation(
                "api.endpoints.pause_endpoint",
                "Hold an endpoint's deliveries (jobs stay scheduled, cron ticks are recorded).",
                {"200": _json("Endpoint", "Paused."), **_errors({404: NO_ENDPOINT})},
                tag="endpoints",
                params=ENDPOINT_NAME,
            )
        },
        "/endpoints/{name}/resume": {
            "post": _operation(
                "api.endpoints.resume_endpoint",
                "Deliver again, in due order and within the limits.",
                {"200": _json("Endpoint", "Resumed."), **_errors({404: NO_ENDPOINT})},
                tag="endpoints",
                params=ENDPOINT_NAME,
            )
        },
        "/dispatchers": {
            "get": _operation(
                "api.list_dispatchers",
                "The live dispatchers (heartbeat younger than SCHEDULER_LEADER_TIMEOUT), the "
                "leader first.",
                {"200": _json("Dispatchers", "Dispatchers."), **_errors()},
                tag="dispatchers",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "api.openapi",
                "This document.",
                {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
                tag="health",
                public=True,
            )
        },
        "/insert": {
            "post": _operation(
                "api.insert_job",
                "Schedule one job.",
                {
                    "200": _json(
                        "JobId", "Scheduled (or, for a repeated idempotent request, was)."
                    ),
                    **_errors({400: INVALID, 409: REUSED_KEY}),
                },
                tag="jobs",
                body="InsertJob",
                params=[IDEMPOTENCY_KEY, *TRACE_HEADERS],
            )
        },
        "/delete": {
            "post": _operation(
                "api.delete_job",
                "Cancel a job; an unknown id is not an error.",
                {"200": EMPTY, **_errors({400: INVALID})},
                tag="jobs",
                body="DeleteJob",
            )
        },
        "/cron": {
            "post": _operation(
                "api.replace_crons",
                "Replace the whole set of crons, atomically.",
                {"200": EMPTY, **_errors({400: INVALID})},
                tag="crons",
                body="ReplaceCrons",
            ),
            "get": _operation(
                "api.crons.list_crons",
                "List crons, sorted by id.",
                {"200": _json("CronList", "Crons."), **_errors()},
                tag="crons",
            ),
        },
        "/cron/next": {
            "get": _operation(
                "api.preview_cron",
                "Preview a spec's next fire times.",
                {"200": _json("CronPreview", "Fire times."), **_errors({400: INVALID})},
                tag="crons",
                params=[_query(schemas.CronPreviewQuery)],
            )
        },
        "/cron/{cron_id}": {
            "get": _operation(
                "api.crons.get_cron",
                "One cron.",
                {"200": _json("Cron", "The cron."), **_errors({404: NO_CRON})},
                tag="crons",
                params=CRON_ID,
            ),
            "put": _operation(
                "api.crons.put_cron",
                "Create or replace one cron.",
                {"200": _json("Cron", "The cron."), **_errors({400: INVALID})},
                tag="crons",
                body="PutCron",
                params=NEW_CRON_ID,
            ),
            "delete": _operation(
                "api.crons.delete_cron",
                "Delete one cron, whether or not it existed.",
                {"204": NO_CONTENT, **_errors({404: "The id cannot exist."})},
                tag="crons",
                params=CRON_ID,
            ),
        },
        "/cron/{cron_id}/pause": {
            "post": _operation(
                "api.crons.pause_cron",
                "Pause a cron.",
                {"200": _json("Cron", "Paused."), **_errors({404: NO_CRON})},
                tag="crons",
                params=CRON_ID,
            )
        },
        "/cron/{cron_id}/resume": {
            "post": _operation(
                "api.crons.resume_cron",
                "Resume a cron, from now.",
                {"200": _json("Cron", "Resumed."), **_errors({404: NO_CRON})},
                tag="crons",
                params=CRON_ID,
            )
        },
        "/cron/{cron_id}/run": {
            "post": _operation(
                "api.crons.run_cron",
                "Fire a cron once, now.",
                {"202": _json("JobId", "Queued."), **_errors({404: NO_CRON})},
                tag="crons",
                params=CRON_ID,
            )
        },
        "/cron/{cron_id}/backfill": {
            "post": _operation(
                "api.crons.backfill_cron",
                f"Record every tick of a cron in a window (at most {schemas.MAX_BACKFILL_TICKS}); "
                "each is delivered once, however often asked.",
                {
                    "200": _json("BackfillResult", "Recorded."),
                    **_errors(
                        {
                            400: INVALID,
                            404: NO_CRON,
                            409: "The cron was redefined or removed meanwhile; ask again.",
                        }
                    ),
                },
                tag="crons",
                body="Backfill",
                params=CRON_ID,
            )
        },
        "/cron/{cron_id}/runs": {
            "get": _operation(
                "api.crons.cron_runs",
                "A cron's runs, newest first, a page at a time.",
                {
                    "200": _json("JobList", "A page of runs."),
                    **_errors({400: INVALID, 404: NO_CRON}),
                },
                tag="crons",
                params=[*CRON_ID, _query(schemas.CronRunsQuery)],
            )
        },
        "/jobs": {
            "get": _operation(
                "api.jobs.list_jobs",
                "List jobs, newest first, a page at a time.",
                {"200": _json("JobList", "A page of jobs."), **_errors({400: INVALID})},
                tag="jobs",
                params=[_query(schemas.JobListQuery)],
            )
        },
        "/jobs/batch": {
            "post": _operation(
                "api.jobs.insert_batch",
                "Schedule 1 to SCHEDULER_BATCH_LIMIT jobs in one transaction.",
                {
                    "200": _json("BatchIds", "Their ids, in order."),
                    **_errors({400: INVALID, 409: REUSED_KEY}),
                },
                tag="jobs",
                body="Batch",
                params=[IDEMPOTENCY_KEY, *TRACE_HEADERS],
            )
        },
        "/jobs/{job_id}": {
            "get": _operation(
                "api.jobs.get_job",
                "One job with its attempts.",
                {"200": _json("JobDetail", "The job."), **_errors({404: NO_JOB})},
                tag="jobs",
                params=JOB_ID,
            ),
            "delete": _operation(
                "api.jobs.delete_job",
                "Cancel a job (as /delete), whether or not it existed.",
                {"204": NO_CONTENT, **_errors({404: "The id cannot exist."})},
                tag="jobs",
                params=JOB_ID,
            ),
        },
        "/jobs/{job_id}/run": {
            "post": _operation(
                "api.jobs.run_job",
                "Deliver a scheduled job now.",
                {
                    "202": _json("JobId", "Queued."),
                    **_errors({404: NO_JOB, 409: "The job is not scheduled."}),
                },
                tag="jobs",
                params=JOB_ID,
            )
        },
        "/jobs/{job_id}/retry": {
            "post": _operation(
                "api.jobs.retry_job",
                "Re-queue a failed job with a fresh budget of attempts.",
                {
                    "202": _json("JobId", "Queued."),
                    **_errors({404: NO_JOB, 409: "The job has not failed."}),
                },
                tag="jobs",
                params=JOB_ID,
            )
        },
    }


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
def document() -> dict[str, Any]:
    """The whole document; built once per process."""
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
            "name": "Scheduler-Secret",
            "description": "One of the comma-separated values of SECRET.",
        },
    )
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for path, operations in _paths().items():
        spec.path(path=path, operations=operations)
    # A round trip through JSON: plain data, no shared sub-objects, nothing unserialisable.
    built: dict[str, Any] = json.loads(json.dumps(spec.to_dict()))
    return _refine(built)


def render() -> str:
    """The document as committed in docs/openapi.json."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
