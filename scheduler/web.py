"""What every route shares: the secret check, JSON in and out, and the error body shape."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import re
from typing import Any

from flask import Response, current_app, request
from marshmallow import Schema, ValidationError

from scheduler import config, errors, jobs, schemas, store
from scheduler import group_commit as group_commit_module

logger = logging.getLogger(__name__)

SECRET_HEADER = "Scheduler-Secret"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
PUBLIC_ENDPOINTS = frozenset({"api.banner", "api.healthz", "api.readyz", "api.openapi"})


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


def error_body(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> Response:
    """The one JSON shape of every non-2xx answer."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return Response(json.dumps({"error": error}), status=status, mimetype="application/json")


def settings() -> config.Settings:
    current: config.Settings = current_app.config["SETTINGS"]
    return current


def db() -> store.Store:
    current: store.Store = current_app.extensions["scheduler.store"]
    return current


def require_secret() -> None:
    """Reject the request unless it carries one of the accepted secrets (public routes aside)."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    given = request.headers.get(SECRET_HEADER, "")
    # Digests have one length whatever was sent, and every secret is compared without stopping
    # early, so the time taken reveals neither the length nor the closeness of a guess.
    given_digest = _digest(given)
    matched = False
    for secret_digest in _secret_digests(settings().secrets):
        matched |= hmac.compare_digest(given_digest, secret_digest)
    if not matched:
        problem = "missing" if not given else "wrong"
        logger.warning(
            "rejected a request with a %s secret from %s",
            problem,
            request.remote_addr,
            extra={"action": "auth_failed"},
        )
        raise RequestRejected(401, "unauthorized", f"The {SECRET_HEADER} header is {problem}.")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


@functools.cache
def _secret_digests(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(_digest(secret) for secret in secrets)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> Any:
    """The request body as JSON that PostgreSQL can store, whatever its Content-Type.

    Bodies over the size limit are refused (413) before they are read; NaN, Infinity, nesting
    deeper than MAX_DEPTH, NUL characters and lone surrogates are refused (400).
    """
    request.max_content_length = settings().max_body_bytes
    raw = request.get_data(cache=False)
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RequestRejected(
            400, "invalid_json", f"The request body is not valid JSON: {exc}"
        ) from None
    problem = unstorable(value)
    if problem:
        raise RequestRejected(400, "invalid_json", f"The request body cannot be stored: {problem}")
    return value


def unstorable(value: Any) -> str | None:
    """Why PostgreSQL's jsonb (or sanity) would refuse `value`, or None when it is fine."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nesting deeper than {MAX_DEPTH} levels."
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, depth))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "a string contains \\u0000, which PostgreSQL cannot store."
            if _SURROGATE.search(item):
                return "a string contains a lone UTF-16 surrogate (not valid Unicode)."
    return None


@functools.cache
def _instance(schema: type[Schema]) -> Schema:
    # Building a schema costs more than using it, and loading keeps no state on the instance.
    return schema()


def load(schema: type[Schema], data: Any) -> dict[str, Any]:
    """Validate with `schema`; a 400 naming every bad field otherwise."""
    if not isinstance(data, dict):
        raise RequestRejected(400, "invalid_request", "The request body must be a JSON object.")
    try:
        loaded: dict[str, Any] = _instance(schema).load(data)
    except ValidationError as exc:
        raise RequestRejected(
            400, "invalid_request", "The request has invalid fields.", exc.normalized_messages()
        ) from None
    return loaded


def load_query(schema: type[Schema]) -> dict[str, Any]:
    return load(schema, request.args.to_dict())


def dump(schema: type[Schema], obj: Any, status: int = 200) -> Response:
    return json_response(_instance(schema).dump(obj), status)


def json_response(value: Any, status: int = 200) -> Response:
    """`value` as a JSON body, as it is; `dump` for anything a schema should shape."""
    return Response(json.dumps(value), status=status, mimetype="application/json")


def no_content() -> Response:
    return Response(status=204)


def new_jobs(items: list[dict[str, Any]]) -> list[jobs.NewJob]:
    """Jobs from validated request items; a delay counts from now."""
    now = dt.datetime.now(dt.UTC)
    return [
        jobs.NewJob(
            id=jobs.new_job_id(),
            body=item["body"],
            run_at=item["timestamp"] or now + dt.timedelta(seconds=item["delay"]),
            max_attempts=item["max_attempts"] or settings().max_attempts,
        )
        for item in items
    ]


def group_commit() -> group_commit_module.GroupCommit:
    current: group_commit_module.GroupCommit = current_app.extensions["scheduler.group_commit"]
    return current


def insert(new: list[jobs.NewJob], key: store.Idempotency | None) -> list[str]:
    """Store `new`; only jobs due before the dispatcher's next look for due jobs are announced
    to it (see Settings.announce_within)."""
    if key is None and len(new) == 1:
        # The common request: written together with those of concurrent requests.
        group_commit().insert(new[0])
        return [new[0].id]
    horizon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings().announce_within)
    return db().insert_jobs(new, key, announce_before=horizon)


def idempotency(loaded: dict[str, Any], field_key: str | None) -> store.Idempotency | None:
    """The request's idempotency key (header or field) with a digest of what it asks for.

    The digest covers the validated request, so `90` and `90.0`, or `Z` and `+00:00`, are the
    same request.
    """
    header_key = request.headers.get(IDEMPOTENCY_HEADER)
    if header_key is not None and not 1 <= len(header_key) <= schemas.MAX_KEY_LENGTH:
        raise RequestRejected(
            400,
            "invalid_request",
            f"The {IDEMPOTENCY_HEADER} header must be 1 to {schemas.MAX_KEY_LENGTH} characters.",
        )
    if header_key is not None and field_key is not None and header_key != field_key:
        raise RequestRejected(
            400,
            "invalid_request",
            "The request has invalid fields.",
            {"idempotency_key": [f"Differs from the {IDEMPOTENCY_HEADER} header."]},
        )
    key = header_key or field_key
    if key is None:
        return None
    asked = {k: v for k, v in loaded.items() if k != "idempotency_key"}
    canonical = json.dumps(
        [request.path, asked], sort_keys=True, separators=(",", ":"), default=_canonical
    )
    return store.Idempotency(key, hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    raise TypeError(f"cannot digest {type(value).__name__}")


def checked_id(job_id: str) -> str:
    """A job id from a URL; one that cannot exist is simply not found."""
    if not schemas.ID_PATTERN.match(job_id):
        raise errors.JobNotFound(job_id)
    return job_id


def page_of_jobs(filters: store.JobFilters) -> Response:
    """One page, newest first, with the cursor of the next page (null on the last)."""
    found = db().list_jobs(dataclasses.replace(filters, limit=filters.limit + 1))
    page = found[: filters.limit]
    next_cursor = page[-1].id if len(found) > filters.limit else None
    return dump(schemas.JobListResponse, {"jobs": page, "next_cursor": next_cursor})
