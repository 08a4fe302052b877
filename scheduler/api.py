"""HTTP routes: authenticate, load a schema, call the store, dump a schema."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from marshmallow import Schema, ValidationError

from scheduler import config, cron, errors, jobs, schemas, store

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

BANNER = "scheduler: HTTP callbacks at the time you asked for\n"
SECRET_HEADER = "Scheduler-Secret"


class RequestRejected(Exception):
    """A client error with the shape of our JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def _settings() -> config.Settings:
    settings: config.Settings = current_app.config["SETTINGS"]
    return settings


def _store() -> store.Store:
    db: store.Store = current_app.extensions["scheduler.store"]
    return db


@bp.before_request
def require_secret() -> None:
    if request.endpoint == "api.banner":
        return
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8")
    # Compare against every accepted secret, never stopping early, so timing reveals nothing.
    matched = False
    for secret in _settings().secrets:
        matched |= hmac.compare_digest(given, secret.encode("utf-8"))
    if not matched:
        problem = "missing" if not given else "wrong"
        logger.warning(
            "rejected request with %s secret from %s",
            problem,
            request.remote_addr,
            extra={"action": "auth_failed"},
        )
        raise RequestRejected(401, "unauthorized", f"The {SECRET_HEADER} header is {problem}.")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RequestRejected(
            400, "invalid_json", f"The request body is not valid JSON: {exc}"
        ) from None


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RequestRejected(400, "invalid_request", "The request body must be a JSON object.")
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        raise RequestRejected(
            400, "invalid_request", "The request has invalid fields.", exc.normalized_messages()
        ) from None
    return loaded


def _json(schema: Schema, obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(schema.dump(obj)), status=status, mimetype="application/json")


@bp.get("/")
def banner() -> Response:
    return Response(BANNER, mimetype="text/plain")


@bp.post("/insert")
def insert_job() -> Response:
    data = _load(schemas.InsertJobSchema(), _json_body())
    job = jobs.NewJob(
        id=jobs.new_job_id(),
        body=data["body"],
        run_at=data["timestamp"],
        max_attempts=data["max_attempts"] or _settings().max_attempts,
    )
    _store().insert_job(job)
    logger.info(
        "inserted job %s due %s",
        job.id,
        job.run_at.isoformat(),
        extra={"action": "insert_job", "job_id": job.id},
    )
    return _json(schemas.InsertJobResponse(), {"id": job.id})


@bp.post("/delete")
def delete_job() -> Response:
    data = _load(schemas.DeleteJobSchema(), _json_body())
    _store().cancel_job(data["id"])
    logger.info("deleted job %s", data["id"], extra={"action": "delete_job", "job_id": data["id"]})
    return Response(status=200)


@bp.post("/cron")
def replace_crons() -> Response:
    data = _load(schemas.ReplaceCronsSchema(), _json_body())
    definitions = [
        jobs.CronDefinition(
            id=entry["id"], spec=entry["spec"], timezone=cron.parse_spec(entry["spec"]).timezone
        )
        for entry in data["jobs"]
    ]
    _store().replace_crons(definitions)
    logger.info("cron set replaced with %d crons", len(definitions), extra={"action": "set_crons"})
    return Response(status=200)


@bp.get("/cron")
def list_crons() -> Response:
    now = dt.datetime.now(dt.UTC)
    listed = []
    for job in _store().list_crons():
        upcoming = cron.next_fire_times(cron.parse_spec(job.spec), now, 1)
        listed.append({**vars(job), "next_fire_at": upcoming[0] if upcoming else None})
    return _json(schemas.CronListResponse(), {"jobs": listed})


@bp.get("/cron/next")
def preview_cron() -> Response:
    query = _load(schemas.CronPreviewQuery(), request.args.to_dict())
    try:
        spec = cron.parse_spec(query["spec"])
    except errors.InvalidCronSpec as exc:
        raise RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"spec": [f"Invalid spec {exc.spec!r}: {exc.reason}"]},
        ) from None
    after = query["after"] or dt.datetime.now(dt.UTC)
    upcoming = cron.next_fire_times(spec, after, query["count"])
    return _json(schemas.CronPreviewResponse(), {"spec": query["spec"], "next": upcoming})
