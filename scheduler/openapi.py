"""The OpenAPI 3.1 document, generated from the marshmallow schemas the routes use."""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from scheduler import __version__, schemas

SECURITY: list[dict[str, list[str]]] = [{"secret": []}]
JSON = "application/json"


class ErrorDetail(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    problems = fields.Dict(
        data_key="fields",
        metadata={"description": "Problems by field, as marshmallow reports them."},
    )


class ErrorResponse(Schema):
    error = fields.Nested(ErrorDetail, required=True)


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {JSON: {"schema": ref}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "Invalid input; `fields` names each problem.",
        401: "Missing or wrong Scheduler-Secret.",
        404: "Not found.",
        409: "Conflicts with the current state.",
        503: "The database is unavailable; see Retry-After.",
    }
    return {str(s): _json("Error", meaning[s]) for s in (*statuses, 401, 503)}


def _operation(
    summary: str,
    responses: dict[str, Any],
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        operation["parameters"] = params
    operation["security"] = [] if public else SECURITY
    if public:
        operation["responses"] = {k: v for k, v in responses.items() if k not in ("401",)}
    return operation


def _path_param(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


def _query(schema: type[Schema]) -> dict[str, Any]:
    return {"in": "query", "schema": schema}


EMPTY = {"description": "Done; empty body."}
NO_CONTENT = {"description": "Done."}


@functools.cache
def document() -> dict[str, Any]:
    """The whole document; built once per process."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="scheduler",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": "HTTP callbacks at the time you asked for."},
    )
    plugin.map_to_openapi_type(schemas.Timestamp, "string", "date-time")
    spec.components.security_scheme(
        "secret", {"type": "apiKey", "in": "header", "name": "Scheduler-Secret"}
    )
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for path, operations in PATHS.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorResponse,
    "InsertJob": schemas.InsertJobSchema,
    "JobSpec": schemas.JobSpecSchema,
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
}

JOB_ID = [_path_param("job_id")]
CRON_ID = [_path_param("cron_id")]

PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": _operation(
            "A one-line banner.",
            {"200": {"description": "Banner", "content": {"text/plain": {"schema": {}}}}},
            public=True,
        )
    },
    "/healthz": {
        "get": _operation("The process is alive.", {"200": {"description": "Alive"}}, public=True)
    },
    "/readyz": {
        "get": _operation(
            "Database reachable, schema current, dispatcher heartbeat fresh.",
            {"200": {"description": "Ready"}, "503": _json("Error", "Not ready, and why.")},
            public=True,
        )
    },
    "/insert": {
        "post": _operation(
            "Schedule one job.",
            {"200": _json("JobId", "Scheduled."), **_errors(400, 409)},
            body="InsertJob",
        )
    },
    "/delete": {
        "post": _operation(
            "Cancel a job; an unknown id is not an error.",
            {"200": EMPTY, **_errors(400)},
            body="DeleteJob",
        )
    },
    "/cron": {
        "post": _operation(
            "Replace the whole set of crons, atomically.",
            {"200": EMPTY, **_errors(400)},
            body="ReplaceCrons",
        ),
        "get": _operation("List crons.", {"200": _json("CronList", "Crons.")}),
    },
    "/cron/next": {
        "get": _operation(
            "Preview a spec's next fire times.",
            {"200": _json("CronPreview", "Fire times."), **_errors(400)},
            params=[_query(schemas.CronPreviewQuery)],
        )
    },
    "/cron/{cron_id}": {
        "get": _operation(
            "One cron.", {"200": _json("Cron", "The cron."), **_errors(404)}, params=CRON_ID
        ),
        "put": _operation(
            "Create or replace one cron.",
            {"200": _json("Cron", "The cron."), **_errors(400)},
            body="PutCron",
            params=CRON_ID,
        ),
        "delete": _operation(
            "Delete one cron.", {"204": NO_CONTENT, **_errors(400)}, params=CRON_ID
        ),
    },
    "/cron/{cron_id}/pause": {
        "post": _operation(
            "Pause a cron.", {"200": _json("Cron", "Paused."), **_errors(404)}, params=CRON_ID
        )
    },
    "/cron/{cron_id}/resume": {
        "post": _operation(
            "Resume a cron.", {"200": _json("Cron", "Resumed."), **_errors(404)}, params=CRON_ID
        )
    },
    "/cron/{cron_id}/run": {
        "post": _operation(
            "Fire a cron once, now.",
            {"202": _json("JobId", "Queued."), **_errors(404)},
            params=CRON_ID,
        )
    },
    "/cron/{cron_id}/runs": {
        "get": _operation(
            "A cron's runs, newest first.",
            {"200": _json("JobList", "A page of runs."), **_errors(400, 404)},
            params=[*CRON_ID, _query(schemas.CronRunsQuery)],
        )
    },
    "/jobs": {
        "get": _operation(
            "List jobs, newest first, a page at a time.",
            {"200": _json("JobList", "A page of jobs."), **_errors(400)},
            params=[_query(schemas.JobListQuery)],
        )
    },
    "/jobs/batch": {
        "post": _operation(
            "Schedule many jobs in one transaction.",
            {"200": _json("BatchIds", "Their ids, in order."), **_errors(400, 409)},
            body="Batch",
        )
    },
    "/jobs/{job_id}": {
        "get": _operation(
            "One job with its attempts.",
            {"200": _json("JobDetail", "The job."), **_errors(404)},
            params=JOB_ID,
        ),
        "delete": _operation("Cancel a job (as /delete).", {"204": NO_CONTENT}, params=JOB_ID),
    },
    "/jobs/{job_id}/run": {
        "post": _operation(
            "Deliver a scheduled job now.",
            {"202": _json("JobId", "Queued."), **_errors(404, 409)},
            params=JOB_ID,
        )
    },
    "/jobs/{job_id}/retry": {
        "post": _operation(
            "Re-queue a failed job with a fresh budget of attempts.",
            {"202": _json("JobId", "Queued."), **_errors(404, 409)},
            params=JOB_ID,
        )
    },
}
