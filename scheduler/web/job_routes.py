"""Routes under /jobs: schedule in batches, look up, list, edit, cancel, run now and retry."""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from scheduler.storage import jobs as job_rows
from scheduler.web import http, openapi, schemas

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

NO_JOB = "No such job."


@bp.post("/batch")
@openapi.operation(
    summary="Schedule 1 to SCHEDULER_BATCH_LIMIT jobs in one transaction.",
    tag="jobs",
    request=schemas.BatchSchema,
    examples={
        "two": {"jobs": [{"timestamp": openapi.EXAMPLE_TIME, "body": 1}, {"delay": 60, "body": 2}]}
    },
    parameters=[openapi.IDEMPOTENCY_KEY, *openapi.TRACE_HEADERS],
    responses={200: openapi.returns(schemas.BatchResponse, "Their ids, in order.")},
    errors={400: openapi.INVALID, 409: openapi.REUSED_KEY},
)
def insert_batch() -> Response:
    data = http.load(schemas.BatchSchema, http.json_body())
    limit = http.settings().batch_limit
    if not 1 <= len(data["jobs"]) <= limit:
        raise http.RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"jobs": [f"Give between 1 and {limit} jobs."]},
        )
    new = http.new_jobs(data["jobs"], "jobs")
    key = http.idempotency(data, None)
    if any(job.debounce is not None for job in new):
        scheduled = http.insert_debounced(new, key)
        logger.info(
            "inserted a batch of %d jobs, %d of them joining waiting ones",
            len(scheduled),
            sum(s.debounced for s in scheduled),
            extra={"action": "insert_batch"},
        )
        answer = {"ids": [s.id for s in scheduled], "debounced": [s.debounced for s in scheduled]}
        return http.dump(schemas.BatchResponse, answer)
    ids = http.insert(new, key)
    logger.info("inserted a batch of %d jobs", len(ids), extra={"action": "insert_batch"})
    return http.dump(schemas.BatchResponse, {"ids": ids})


@bp.get("")
@openapi.operation(
    summary="List jobs, newest first, a page at a time.",
    tag="jobs",
    parameters=[openapi.query(schemas.JobListQuery)],
    responses={200: openapi.returns(schemas.JobListResponse, "A page of jobs.")},
    errors={400: openapi.INVALID},
)
def list_jobs() -> Response:
    query = http.load_query(schemas.JobListQuery)
    return http.page_of_jobs(job_rows.JobFilters(**query))


@bp.get("/<job_id>")
@openapi.operation(
    summary="One job with its attempts.",
    tag="jobs",
    parameters=[openapi.JOB_ID],
    responses={200: openapi.returns(schemas.JobDetailSchema, "The job.")},
    errors={404: NO_JOB},
)
def get_job(job_id: str) -> Response:
    job, attempts = job_rows.get_job(http.database(), http.checked_id(job_id))
    return http.dump(schemas.JobDetailSchema, {**vars(job), "history": attempts})


@bp.patch("/<job_id>")
@openapi.operation(
    summary="Change a scheduled job in place: its time, body, endpoint, attempts or flow key.",
    tag="jobs",
    request=schemas.PatchJobSchema,
    examples={
        "later": {"delay": "PT1H"},
        "all": {
            "timestamp": openapi.EXAMPLE_TIME,
            "body": {"foo": "baz"},
            "max_attempts": 5,
            "endpoint": "default",
            "flow": None,
        },
    },
    parameters=[openapi.JOB_ID],
    responses={200: openapi.returns(schemas.JobDetailSchema, "The job as edited.")},
    errors={
        400: openapi.INVALID,
        404: NO_JOB,
        409: "The job is not scheduled (the message gives its state), is a cron's run or a "
        "notification, or has made as many attempts as the new max_attempts.",
    },
)
def edit_job(job_id: str) -> Response:
    job_id = http.checked_id(job_id)
    edit = http.job_edit(http.load(schemas.PatchJobSchema, http.json_body()))
    job, attempts = job_rows.edit_job(
        http.database(), job_id, edit, announce_within=http.settings().announce_within
    )
    logger.info("edited job %s", job_id, extra={"action": "edit_job", "job_id": job_id})
    return http.dump(schemas.JobDetailSchema, {**vars(job), "history": attempts})


@bp.delete("/<job_id>")
@openapi.operation(
    summary="Cancel a job (as /delete), whether or not it existed.",
    tag="jobs",
    parameters=[openapi.JOB_ID],
    responses={204: openapi.NO_CONTENT},
    errors={404: "The id cannot exist."},
)
def delete_job(job_id: str) -> Response:
    job_rows.cancel_job(http.database(), http.checked_id(job_id))
    logger.info("deleted job %s", job_id, extra={"action": "delete_job", "job_id": job_id})
    return http.no_content()


@bp.post("/<job_id>/run")
@openapi.operation(
    summary="Deliver a scheduled job now.",
    tag="jobs",
    parameters=[openapi.JOB_ID],
    responses={202: openapi.returns(schemas.JobIdResponse, "Queued.")},
    errors={404: NO_JOB, 409: "The job is not scheduled."},
)
def run_job(job_id: str) -> Response:
    job_rows.run_job_now(http.database(), http.checked_id(job_id))
    logger.info("job %s runs now", job_id, extra={"action": "run_job", "job_id": job_id})
    return http.dump(schemas.JobIdResponse, {"id": job_id}, status=202)


@bp.post("/<job_id>/retry")
@openapi.operation(
    summary="Re-queue a failed job with a fresh budget of attempts.",
    tag="jobs",
    parameters=[openapi.JOB_ID],
    responses={202: openapi.returns(schemas.JobIdResponse, "Queued.")},
    errors={404: NO_JOB, 409: "The job has not failed."},
)
def retry_job(job_id: str) -> Response:
    job_rows.retry_job(http.database(), http.checked_id(job_id))
    logger.info("job %s re-queued", job_id, extra={"action": "retry_job", "job_id": job_id})
    return http.dump(schemas.JobIdResponse, {"id": job_id}, status=202)
