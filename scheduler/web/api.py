"""The API blueprint: the seed's endpoints, health checks, the OpenAPI document, and the
job and cron route modules nested under it."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from flask import Blueprint, Response

from scheduler import cron, errors, jobs
from scheduler.storage import cluster, crons, migrate
from scheduler.storage import jobs as job_rows
from scheduler.web import (
    cron_routes,
    endpoint_routes,
    flow_routes,
    http,
    job_routes,
    openapi,
    schemas,
)

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__)
bp.before_request(http.require_secret)
bp.register_blueprint(job_routes.bp)
bp.register_blueprint(cron_routes.bp)
bp.register_blueprint(endpoint_routes.bp)
bp.register_blueprint(flow_routes.bp)

BANNER = "scheduler: HTTP callbacks at the time you asked for\n"
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


@bp.get("/")
@openapi.operation(
    summary="A one-line banner.",
    tag="health",
    responses={
        200: {"description": "Banner", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def banner() -> Response:
    return Response(BANNER, mimetype="text/plain")


@bp.post("/insert")
@openapi.operation(
    summary="Schedule one job.",
    tag="jobs",
    request=schemas.InsertJobSchema,
    examples={
        "at": {"timestamp": openapi.EXAMPLE_TIME, "body": {"foo": "bar"}, "max_attempts": 5},
        "after": {"delay": "PT90S", "body": {"foo": "bar"}, "idempotency_key": "order-42"},
        "debounced": {
            "body": {"user": 42},
            "debounce": {"key": "digest-42", "period": 300, "max_wait": 3600},
        },
    },
    parameters=[openapi.IDEMPOTENCY_KEY, *openapi.TRACE_HEADERS],
    responses={
        200: openapi.returns(
            schemas.InsertedJobResponse,
            "Scheduled (or, for a repeated idempotent request, was); a debounced insert also "
            "says whether it joined a waiting job.",
        )
    },
    errors={400: openapi.INVALID, 409: openapi.REUSED_KEY},
)
def insert_job() -> Response:
    data = http.load(schemas.InsertJobSchema, http.json_body())
    (job,) = http.new_jobs([data])
    key = http.idempotency(data, data["idempotency_key"])
    if job.debounce is not None:
        return _insert_debounced(job, key)
    (job_id,) = http.insert([job], key)
    # DEBUG: at thousands of inserts a second an INFO line each would cost more than the insert
    # itself, and the job's row already records it (GET /jobs/{id}). Checked first, so that its
    # arguments are not written out only to be dropped.
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "inserted job %s due %s",
            job_id,
            job.run_at.isoformat() if job.run_at else f"in {job.delay:g}s",
            extra={"action": "insert_job", "job_id": job_id},
        )
    # The seed's answer; JobIdResponse in the OpenAPI document, without a schema's dump per job.
    return http.job_id_response(job_id)


def _insert_debounced(job: jobs.NewJob, key: job_rows.Idempotency | None) -> Response:
    (scheduled,) = http.insert_debounced([job], key)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "debounced job %s %s",
            scheduled.id,
            "joined" if scheduled.debounced else "inserted",
            extra={"action": "debounce_job", "job_id": scheduled.id},
        )
    return http.dump(
        schemas.InsertedJobResponse, {"id": scheduled.id, "debounced": scheduled.debounced}
    )


@bp.post("/delete")
@openapi.operation(
    summary="Cancel a job; an unknown id is not an error.",
    tag="jobs",
    request=schemas.DeleteJobSchema,
    examples={"one": {"id": openapi.EXAMPLE_JOB_ID}},
    responses={200: openapi.EMPTY},
    errors={400: openapi.INVALID},
)
def delete_job() -> Response:
    data = http.load(schemas.DeleteJobSchema, http.json_body())
    job_rows.cancel_job(http.database(), data["id"])
    logger.info("deleted job %s", data["id"], extra={"action": "delete_job", "job_id": data["id"]})
    return Response(status=200)


@bp.post("/cron")
@openapi.operation(
    summary="Replace the whole set of crons, atomically.",
    tag="crons",
    request=schemas.ReplaceCronsSchema,
    examples={
        "two": {
            "jobs": [
                {"id": openapi.EXAMPLE_CRON_ID, "spec": openapi.EXAMPLE_SPEC},
                {"id": "hourly", "spec": "@every 1h"},
            ]
        }
    },
    responses={200: openapi.EMPTY},
    errors={400: openapi.INVALID},
)
def replace_crons() -> Response:
    data = http.load(schemas.ReplaceCronsSchema, http.json_body())
    parsed = [(entry, cron.parse_spec(entry["spec"])) for entry in data["jobs"]]
    definitions = [
        jobs.CronDefinition(
            id=entry["id"],
            spec=spec.spec,
            timezone=spec.timezone,
            jitter=entry["jitter"],
            overlap=entry["overlap"],
            endpoint=http.known_endpoint(entry["endpoint"], index, "jobs"),
            flow=schemas.flow_of(entry),
            catchup_window=entry["catchup_window"],
            start_at=entry["start_at"],
            end_at=entry["end_at"],
            max_runs=entry["max_runs"],
            delete_after_end=entry["delete_after_end"],
            http_options=http.checked_options(entry, index, "jobs"),
            callback=http.callback_of(entry, index, "jobs"),
        )
        for index, (entry, spec) in enumerate(parsed)
    ]
    crons.replace_crons(http.database(), definitions)
    logger.info("cron set replaced with %d crons", len(definitions), extra={"action": "set_crons"})
    for entry, spec in parsed:
        cron_routes.warn_if_never_fires(entry["id"], spec)
    return Response(status=200)


@bp.get("/cron/next")
@openapi.operation(
    summary="Preview a spec's next fire times.",
    tag="crons",
    parameters=[openapi.query(schemas.CronPreviewQuery)],
    responses={200: openapi.returns(schemas.CronPreviewResponse, "Fire times.")},
    errors={400: openapi.INVALID},
)
def preview_cron() -> Response:
    query = http.load_query(schemas.CronPreviewQuery)
    try:
        spec = cron.parse_spec(query["spec"])
    except errors.InvalidCronSpec as exc:
        raise http.RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"spec": [f"Invalid spec {exc.spec!r}: {exc.reason}"]},
        ) from None
    after = query["after"] or dt.datetime.now(dt.UTC)
    count = min(query["count"], query["max_runs"] or query["count"])
    upcoming = cron.bounded_fire_times(spec, after, count, query["start_at"], query["end_at"])
    return http.dump(schemas.CronPreviewResponse, {"spec": query["spec"], "next": upcoming})


@bp.get("/healthz")
@openapi.operation(
    summary="The process is alive (nothing else is checked).",
    tag="health",
    responses={200: openapi.returns(HEALTH, "Alive.")},
)
def healthz() -> Response:
    """The process answers; nothing else is checked."""
    return Response(json.dumps({"status": "ok"}), mimetype="application/json")


@bp.get("/readyz")
@openapi.operation(
    summary="Database reachable, schema current, dispatcher heartbeat fresh, every dispatcher "
    "thread running.",
    tag="health",
    responses={200: openapi.returns(READY, "Ready.")},
    errors={503: "Not ready, and why."},
)
def readyz() -> Response:
    """Ready when the database answers, its schema is current, a dispatcher leads and no live
    dispatcher reports a thread restarting or dead."""
    try:
        pending = migrate.pending_migrations(http.database())
        leader = cluster.read_leader(http.database())
        down = cluster.threads_down(http.database(), http.settings().leader_timeout)
    except errors.StoreUnavailable:
        return http.error_body(503, "not_ready", "The database is unavailable.")
    if pending:
        return http.error_body(
            503, "not_ready", f"The schema is not current: {', '.join(pending)} not applied."
        )
    age = leader["age"].total_seconds()
    limit = http.settings().heartbeat_max_age
    if leader["epoch"] == 0 or age > limit:
        return http.error_body(
            503,
            "not_ready",
            f"No active dispatcher: its last heartbeat is {age:.0f}s old (limit {limit:.0f}s)."
            if leader["epoch"]
            else "No dispatcher has ever been active.",
        )
    if down:
        threads = "; ".join(
            f"dispatcher {dispatcher_id}: "
            + ", ".join(f"{name} {state}" for name, state in states.items())
            for dispatcher_id, states in down.items()
        )
        return http.error_body(503, "not_ready", f"Dispatcher threads are not running: {threads}.")
    body = {"status": "ready", "dispatcher_heartbeat_age_seconds": round(age, 3)}
    return Response(json.dumps(body), mimetype="application/json")


@bp.get("/dispatchers")
@openapi.operation(
    summary="The live dispatchers (heartbeat younger than SCHEDULER_LEADER_TIMEOUT), the "
    "leader first.",
    tag="dispatchers",
    responses={200: openapi.returns(schemas.DispatchersResponse, "Dispatchers.")},
)
def list_dispatchers() -> Response:
    """The live dispatchers: those whose heartbeat is younger than the leader timeout."""
    live = cluster.list_dispatchers(http.database(), http.settings().leader_timeout)
    return http.dump(schemas.DispatchersResponse, {"dispatchers": live})


@bp.get("/openapi.json", endpoint="openapi")
@openapi.operation(
    summary="This document.",
    tag="health",
    responses={200: openapi.returns({"type": "object"}, "The OpenAPI 3.1 document.")},
)
def openapi_document() -> Response:
    return Response(json.dumps(openapi.document(bp)), mimetype="application/json")
