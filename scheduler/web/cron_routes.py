"""Routes for single crons: list, create or replace, delete, pause, resume, run now, backfill,
history."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Blueprint, Response
from marshmallow import ValidationError

from scheduler import cron, errors, jobs
from scheduler.storage import crons
from scheduler.storage import jobs as job_rows
from scheduler.web import http, openapi, schemas

logger = logging.getLogger(__name__)

bp = Blueprint("crons", __name__, url_prefix="/cron")

NO_CRON = "No such cron."


def describe(status: jobs.CronStatus, now: dt.datetime) -> dict[str, Any]:
    """A cron as the API shows it, with its next fire time computed by the dispatcher's code."""
    job = status.cron
    parsed = cron.parse_spec(job.spec)
    upcoming = cron.bounded_fire_times(parsed, now, 1, job.start_at, job.end_at)
    return {
        **vars(job),
        "flow": job.flow,
        "state": job.state,
        "runs_left": job.runs_left,
        "next_fire_at": upcoming[0] if upcoming and job.state == "active" else None,
        "last_state": status.last_state,
        "last_status": status.last_status,
        "warning": cron.NEVER_FIRES if parsed.never_fires else None,
    }


def warn_if_never_fires(cron_id: str, spec: cron.CronSpec) -> None:
    """Log a warning for a cron being set to a spec that never fires."""
    if spec.never_fires:
        logger.warning(
            "cron %s set to %r, which never fires: %s",
            cron_id,
            spec.spec,
            cron.NEVER_FIRES,
            extra={"action": "cron_never_fires", "cron_id": cron_id},
        )


def one_cron(cron_id: str) -> Response:
    statuses = crons.cron_statuses(http.database(), cron_id)
    if not statuses:
        raise errors.CronNotFound(cron_id)
    return http.dump(schemas.CronJobResponse, describe(statuses[0], dt.datetime.now(dt.UTC)))


def checked_cron_id(cron_id: str) -> str:
    """A cron id from a URL; one that cannot exist is simply not found."""
    if not schemas.ID_PATTERN.match(cron_id):
        raise errors.CronNotFound(cron_id)
    return cron_id


def new_cron_id(cron_id: str) -> str:
    """A cron id to create: an invalid one is the client's mistake to fix."""
    try:
        return str(schemas.CronId().deserialize(cron_id))
    except ValidationError as exc:
        raise http.RequestRejected(
            400, "invalid_request", "The cron id is not valid.", {"id": exc.messages}
        ) from None


@bp.get("")
@openapi.operation(
    summary="List crons, sorted by id.",
    tag="crons",
    responses={200: openapi.returns(schemas.CronListResponse, "Crons.")},
)
def list_crons() -> Response:
    now = dt.datetime.now(dt.UTC)
    listed = [describe(status, now) for status in crons.cron_statuses(http.database())]
    return http.dump(schemas.CronListResponse, {"jobs": listed})


@bp.get("/<cron_id>")
@openapi.operation(
    summary="One cron.",
    tag="crons",
    parameters=[openapi.CRON_ID],
    responses={200: openapi.returns(schemas.CronJobResponse, "The cron.")},
    errors={404: NO_CRON},
)
def get_cron(cron_id: str) -> Response:
    return one_cron(checked_cron_id(cron_id))


@bp.put("/<cron_id>")
@openapi.operation(
    summary="Create or replace one cron.",
    tag="crons",
    request=schemas.PutCronSchema,
    examples={
        "zoned": {"spec": openapi.EXAMPLE_SPEC, "timezone": "Europe/Paris"},
        "spread": {"spec": "@hourly", "jitter": 300, "overlap": "skip"},
    },
    parameters=[openapi.NEW_CRON_ID],
    responses={200: openapi.returns(schemas.CronJobResponse, "The cron.")},
    errors={400: openapi.INVALID},
)
def put_cron(cron_id: str) -> Response:
    data = http.load(schemas.PutCronSchema, http.json_body())
    definition = definition_of(new_cron_id(cron_id), data)
    crons.put_cron(http.database(), definition)
    logger.info(
        "cron %s set to %r",
        cron_id,
        definition.spec,
        extra={"action": "put_cron", "cron_id": cron_id},
    )
    return one_cron(cron_id)


def definition_of(cron_id: str, data: dict[str, Any]) -> jobs.CronDefinition:
    """The cron that PutCronSchema's `data` defines, warning if it never fires.

    :raise http.RequestRejected: 400 when it names an unknown endpoint.
    """
    spec = schemas.zoned_spec(data["spec"], data["timezone"])
    parsed = cron.parse_spec(spec)
    definition = jobs.CronDefinition(
        id=cron_id,
        spec=spec,
        timezone=parsed.timezone,
        endpoint=http.known_endpoint(data["endpoint"]),
        jitter=data["jitter"],
        overlap=data["overlap"],
        flow=schemas.flow_of(data),
        catchup_window=data["catchup_window"],
        start_at=data["start_at"],
        end_at=data["end_at"],
        max_runs=data["max_runs"],
        delete_after_end=data["delete_after_end"],
        http_options=http.checked_options(data),
        callback=http.callback_of(data),
    )
    warn_if_never_fires(cron_id, parsed)
    return definition


@bp.delete("/<cron_id>")
@openapi.operation(
    summary="Delete one cron, whether or not it existed.",
    tag="crons",
    parameters=[openapi.CRON_ID],
    responses={204: openapi.NO_CONTENT},
    errors={404: "The id cannot exist."},
)
def delete_cron(cron_id: str) -> Response:
    if crons.delete_cron(http.database(), checked_cron_id(cron_id)):
        logger.info("cron %s deleted", cron_id, extra={"action": "delete_cron", "cron_id": cron_id})
    return http.no_content()


@bp.post("/<cron_id>/pause")
@openapi.operation(
    summary="Pause a cron.",
    tag="crons",
    parameters=[openapi.CRON_ID],
    responses={200: openapi.returns(schemas.CronJobResponse, "Paused.")},
    errors={404: NO_CRON},
)
def pause_cron(cron_id: str) -> Response:
    crons.set_cron_paused(http.database(), checked_cron_id(cron_id), paused=True)
    logger.info("cron %s paused", cron_id, extra={"action": "pause_cron", "cron_id": cron_id})
    return one_cron(cron_id)


@bp.post("/<cron_id>/resume")
@openapi.operation(
    summary="Resume a cron, from now.",
    tag="crons",
    parameters=[openapi.CRON_ID],
    responses={200: openapi.returns(schemas.CronJobResponse, "Resumed.")},
    errors={404: NO_CRON},
)
def resume_cron(cron_id: str) -> Response:
    crons.set_cron_paused(http.database(), checked_cron_id(cron_id), paused=False)
    logger.info("cron %s resumed", cron_id, extra={"action": "resume_cron", "cron_id": cron_id})
    return one_cron(cron_id)


@bp.post("/<cron_id>/run")
@openapi.operation(
    summary="Fire a cron once, now.",
    tag="crons",
    parameters=[openapi.CRON_ID],
    responses={202: openapi.returns(schemas.JobIdResponse, "Queued.")},
    errors={404: NO_CRON},
)
def run_cron(cron_id: str) -> Response:
    job_id = crons.run_cron_now(
        http.database(), checked_cron_id(cron_id), jobs.new_job_id(), http.settings().max_attempts
    )
    logger.info(
        "cron %s runs now as job %s",
        cron_id,
        job_id,
        extra={"action": "run_cron", "cron_id": cron_id, "job_id": job_id},
    )
    return http.dump(schemas.JobIdResponse, {"id": job_id}, status=202)


@bp.post("/<cron_id>/backfill")
@openapi.operation(
    summary=f"Record every tick of a cron in a window (at most {schemas.MAX_BACKFILL_TICKS}); "
    "each is delivered once, however often asked.",
    tag="crons",
    request=schemas.BackfillSchema,
    examples={"day": {"from": "2029-12-31T00:00:00Z", "to": "2030-01-01T00:00:00Z"}},
    parameters=[openapi.CRON_ID],
    responses={200: openapi.returns(schemas.BackfillResponse, "Recorded.")},
    errors={
        400: openapi.INVALID,
        404: NO_CRON,
        409: "The cron was redefined or removed meanwhile; ask again.",
    },
)
def backfill_cron(cron_id: str) -> Response:
    """Record every tick of the cron in [from, to), each sent once however often asked."""
    checked_cron_id(cron_id)
    data = http.load(schemas.BackfillSchema, http.json_body())
    statuses = crons.cron_statuses(http.database(), cron_id)
    if not statuses:
        raise errors.CronNotFound(cron_id)
    job = statuses[0].cron
    most = schemas.MAX_BACKFILL_TICKS
    times = cron.fire_times_between(cron.parse_spec(job.spec), data["start"], data["end"], most)
    if len(times) > most:
        raise http.RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"to": [f"The window holds more than {most} ticks of this cron; ask for less."]},
        )
    ticks = [jobs.CronTick(job.revision, jobs.new_job_id(), t) for t in times]
    recorded = crons.backfill_cron(http.database(), job, ticks, http.settings().max_attempts)
    logger.info(
        "cron %s backfilled: %d of %d ticks recorded",
        cron_id,
        recorded,
        len(ticks),
        extra={"action": "backfill_cron", "cron_id": cron_id},
    )
    return http.dump(schemas.BackfillResponse, {"recorded": recorded, "ticks": len(ticks)})


@bp.get("/<cron_id>/runs")
@openapi.operation(
    summary="A cron's runs, newest first, a page at a time.",
    tag="crons",
    parameters=[openapi.CRON_ID, openapi.query(schemas.CronRunsQuery)],
    responses={200: openapi.returns(schemas.JobListResponse, "A page of runs.")},
    errors={400: openapi.INVALID, 404: NO_CRON},
)
def cron_runs(cron_id: str) -> Response:
    if not crons.cron_statuses(http.database(), checked_cron_id(cron_id)):
        raise errors.CronNotFound(cron_id)
    query = http.load_query(schemas.CronRunsQuery)
    return http.page_of_jobs(job_rows.JobFilters(cron_id=cron_id, **query))
