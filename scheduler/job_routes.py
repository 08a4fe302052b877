"""Routes under /jobs: schedule in batches, look up, list, cancel, run now and retry."""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from scheduler import schemas, store, web

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


@bp.post("/batch")
def insert_batch() -> Response:
    data = web.load(schemas.BatchSchema, web.json_body())
    limit = web.settings().batch_limit
    if not 1 <= len(data["jobs"]) <= limit:
        raise web.RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"jobs": [f"Give between 1 and {limit} jobs."]},
        )
    new = web.new_jobs(data["jobs"], "jobs")
    ids = web.insert(new, web.idempotency(data, None))
    logger.info("inserted a batch of %d jobs", len(ids), extra={"action": "insert_batch"})
    return web.dump(schemas.BatchResponse, {"ids": ids})


@bp.get("")
def list_jobs() -> Response:
    query = web.load_query(schemas.JobListQuery)
    return web.page_of_jobs(store.JobFilters(**query))


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    job, attempts = web.db().get_job(web.checked_id(job_id))
    return web.dump(schemas.JobDetailSchema, {**vars(job), "history": attempts})


@bp.delete("/<job_id>")
def delete_job(job_id: str) -> Response:
    web.db().cancel_job(web.checked_id(job_id))
    logger.info("deleted job %s", job_id, extra={"action": "delete_job", "job_id": job_id})
    return web.no_content()


@bp.post("/<job_id>/run")
def run_job(job_id: str) -> Response:
    web.db().run_job_now(web.checked_id(job_id))
    logger.info("job %s runs now", job_id, extra={"action": "run_job", "job_id": job_id})
    return web.dump(schemas.JobIdResponse, {"id": job_id}, status=202)


@bp.post("/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    web.db().retry_job(web.checked_id(job_id))
    logger.info("job %s re-queued", job_id, extra={"action": "retry_job", "job_id": job_id})
    return web.dump(schemas.JobIdResponse, {"id": job_id}, status=202)
