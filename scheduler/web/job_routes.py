"""Routes under /jobs: schedule in batches, look up, list, cancel, run now and retry."""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from scheduler import store
from scheduler.web import http, schemas

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


@bp.post("/batch")
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
    ids = http.insert(new, http.idempotency(data, None))
    logger.info("inserted a batch of %d jobs", len(ids), extra={"action": "insert_batch"})
    return http.dump(schemas.BatchResponse, {"ids": ids})


@bp.get("")
def list_jobs() -> Response:
    query = http.load_query(schemas.JobListQuery)
    return http.page_of_jobs(store.JobFilters(**query))


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    job, attempts = http.db().get_job(http.checked_id(job_id))
    return http.dump(schemas.JobDetailSchema, {**vars(job), "history": attempts})


@bp.delete("/<job_id>")
def delete_job(job_id: str) -> Response:
    http.db().cancel_job(http.checked_id(job_id))
    logger.info("deleted job %s", job_id, extra={"action": "delete_job", "job_id": job_id})
    return http.no_content()


@bp.post("/<job_id>/run")
def run_job(job_id: str) -> Response:
    http.db().run_job_now(http.checked_id(job_id))
    logger.info("job %s runs now", job_id, extra={"action": "run_job", "job_id": job_id})
    return http.dump(schemas.JobIdResponse, {"id": job_id}, status=202)


@bp.post("/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    http.db().retry_job(http.checked_id(job_id))
    logger.info("job %s re-queued", job_id, extra={"action": "retry_job", "job_id": job_id})
    return http.dump(schemas.JobIdResponse, {"id": job_id}, status=202)
