"""What every route shares: the secret check, JSON in and out, and the error body shape."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import logging
from typing import Any

from flask import Response, current_app, request
from marshmallow import Schema, ValidationError

from scheduler import config, credentials, errors, jobs, jsonb, tracing
from scheduler.storage import db
from scheduler.storage import jobs as job_rows
from scheduler.web import group_commit as group_commit_module
from scheduler.web import schemas

logger = logging.getLogger(__name__)

SECRET_HEADER = credentials.SECRET_HEADER
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Headers read on every insert, by their WSGI environ keys: what request.headers.get looks up,
# without building the lookup each time.
_SECRET_KEY = "HTTP_SCHEDULER_SECRET"
_IDEMPOTENCY_KEY = "HTTP_IDEMPOTENCY_KEY"
_CONTENT_ENCODING_KEY = "HTTP_CONTENT_ENCODING"
_TRACEPARENT_KEY = "HTTP_TRACEPARENT"
_TRACESTATE_KEY = "HTTP_TRACESTATE"
# The job field whose value is the client's own JSON: a problem inside it is reported on the
# field, with its place inside given as a JSON Pointer.
BODY_FIELD = "body"
PUBLIC_ENDPOINTS = frozenset({"api.banner", "api.healthz", "api.readyz", "api.openapi"})


class RequestRejected(Exception):
    """A client error with the shape of our JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[Any, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}


def error_body(
    status: int, code: str, message: str, fields: dict[Any, Any] | None = None
) -> Response:
    """The one JSON shape of every non-2xx answer."""
    return Response(
        errors.http_body(code, message, fields), status=status, mimetype="application/json"
    )


def settings() -> config.Settings:
    current: config.Settings = current_app.config["SETTINGS"]
    return current


def database() -> db.Database:
    current: db.Database = current_app.extensions["scheduler.database"]
    return current


def require_secret() -> None:
    """Reject the request unless it carries one of the accepted secrets (public routes aside)."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    given = request.environ.get(_SECRET_KEY, "")
    if not credentials.matches(given, settings().secrets):
        problem = "missing" if not given else "wrong"
        logger.warning(
            "rejected a request with a %s secret from %s",
            problem,
            request.remote_addr,
            extra={"action": "auth_failed"},
        )
        raise RequestRejected(401, "unauthorized", f"The {SECRET_HEADER} header is {problem}.")


def json_body() -> Any:
    """The request body as JSON that PostgreSQL can store, whatever its Content-Type.

    A Content-Encoding is refused (415), bodies over the size limit are refused (413) before they
    are read, and what jsonb.read_request finds is refused (400) naming the field it is in.
    """
    coding = request.environ.get(_CONTENT_ENCODING_KEY, "").strip().lower()
    if coding not in ("", "identity"):
        raise RequestRejected(
            415,
            "unsupported_media_type",
            "The body must be sent as it is: no Content-Encoding is supported.",
            headers={"Accept-Encoding": "identity"},
        )
    raw = _read_body(request.environ, settings().max_body_bytes)
    try:
        value, problem = jsonb.read_request(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestRejected(
            400, "invalid_json", f"The request body is not valid JSON: {exc}"
        ) from None
    if problem:
        raise RequestRejected(
            400,
            "invalid_json",
            f"The request body cannot be stored: {problem.reason}.",
            _problem_fields(problem),
        )
    return value


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body; a 413 beyond `limit` bytes.

    A server that ends the input stream at the body's end (gunicorn) and a Content-Length within
    the limit let the body be read in one call; Werkzeug would read it, to the same end, through a
    length-limiting wrapper in chunks. Anything else (a chunked body, a length over the limit, a
    server that does not end the stream) goes the way of request.get_data.
    """
    length = environ.get("CONTENT_LENGTH", "")
    if (
        environ.get("wsgi.input_terminated")
        and length.isascii()
        and length.isdigit()
        and int(length) <= limit
        and "HTTP_TRANSFER_ENCODING" not in environ
    ):
        body: bytes = environ["wsgi.input"].read(int(length))
        return body
    request.max_content_length = limit
    return request.get_data(cache=False)


def _problem_fields(problem: jsonb.Problem) -> dict[Any, Any] | None:
    """The problem by field, as marshmallow reports field errors (list items by index); a place
    inside a job's body is named in the message."""
    keys = list(problem.path)
    inside: tuple[str | int, ...] = ()
    if BODY_FIELD in keys:
        cut = keys.index(BODY_FIELD) + 1
        keys, inside = keys[:cut], problem.path[cut:]
    if not keys:
        return None
    if inside:
        message = f"At {jsonb.pointer(inside)}: {problem.reason}."
    else:
        message = f"{problem.reason[0].upper()}{problem.reason[1:]}."
    fields: Any = [message]
    for key in reversed(keys):
        fields = {key: fields}
    return dict(fields)


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
    """`value` as a JSON body, as it is (decimals exact); `dump` for anything a schema should
    shape."""
    return Response(jsonb.dumps(value), status=status, mimetype="application/json")


def job_id_response(job_id: str) -> Response:
    """`{"id": job_id}`, as json_response writes it; an id's characters need no escaping."""
    return Response('{"id": "' + job_id + '"}', mimetype="application/json")


def no_content() -> Response:
    return Response(status=204)


def new_jobs(items: list[dict[str, Any]], listed_in: str | None = None) -> list[jobs.NewJob]:
    """Jobs from validated request items (those of the list field `listed_in`, if given); a delay
    counts from when the database stores the job, by its clock. Each keeps the request's trace
    context (a malformed one is ignored, never refused).

    :raise RequestRejected: 413 when the bodies, counted as stored (1e300 as its 301 digits),
        take more than one delivery holds (SCHEDULER_MAX_BODY_BYTES less the envelope).
    """
    current = settings()
    budget = current.max_body_bytes - jobs.ENVELOPE_BYTES
    environ = request.environ
    traceparent, tracestate = tracing.stored_context(
        environ.get(_TRACEPARENT_KEY), environ.get(_TRACESTATE_KEY)
    )
    new = []
    for index, item in enumerate(items):
        try:
            body, size = jsonb.encode(item["body"], budget)
        except errors.BodyTooLarge:
            raise _too_large_as_stored(index, listed_in) from None
        budget -= size
        debounce = schemas.debounce_of(item)
        new.append(
            jobs.NewJob(
                id=jobs.new_job_id(),
                body=body,
                run_at=item["timestamp"],
                max_attempts=item["max_attempts"] or current.max_attempts,
                # A debounced job is due its period after the insert, as a delay would be.
                delay=item["delay"] if debounce is None else debounce.period,
                endpoint=known_endpoint(item["endpoint"], index, listed_in),
                traceparent=traceparent,
                tracestate=tracestate,
                flow=schemas.flow_of(item),
                debounce=debounce,
                http_options=checked_options(item, index, listed_in),
                callback=callback_of(item, index, listed_in),
            )
        )
    return new


def checked_options(
    item: dict[str, Any], index: int | None = None, listed_in: str | None = None
) -> jobs.HttpOptions | None:
    """The HTTP options of a validated item, its timeout within SCHEDULER_MAX_TIMEOUT.

    :raise RequestRejected: 400 naming `timeout` (or `<listed_in>.<index>.timeout`).
    """
    check_timeout(item.get("timeout"), index, listed_in)
    return schemas.http_options_of(item)


def check_timeout(
    timeout: float | None, index: int | None = None, listed_in: str | None = None
) -> None:
    """:raise RequestRejected: `timeout` is beyond SCHEDULER_MAX_TIMEOUT."""
    limit = settings().max_timeout
    if timeout is not None and timeout > limit:
        problem = [f"Must be at most {limit:g} seconds (SCHEDULER_MAX_TIMEOUT)."]
        raise _invalid_field("timeout", problem, index, listed_in)


def callback_of(
    item: dict[str, Any], index: int | None = None, listed_in: str | None = None
) -> str | None:
    """The callback endpoint a validated item names, checked to be configured."""
    name = item.get("callback")
    return None if name is None else known_endpoint(name, index, listed_in, "callback")


def job_edit(loaded: dict[str, Any]) -> jobs.JobEdit:
    """The edit a validated PatchJobSchema asks for: its body encoded once and checked against
    the size limit as an insert's is, its endpoint checked to be configured, a null max_attempts
    read as SCHEDULER_MAX_ATTEMPTS.

    :raise RequestRejected: 413 for a body too large as stored, 400 for an unknown endpoint.
    """
    current = settings()
    body = None
    if BODY_FIELD in loaded:
        try:
            body, _ = jsonb.encode(loaded[BODY_FIELD], current.max_body_bytes - jobs.ENVELOPE_BYTES)
        except errors.BodyTooLarge:
            raise _too_large_as_stored(0, None) from None
    max_attempts = None
    if "max_attempts" in loaded:
        max_attempts = loaded["max_attempts"] or current.max_attempts
    return jobs.JobEdit(
        body=body,
        run_at=loaded.get("timestamp"),
        delay=loaded.get("delay"),
        max_attempts=max_attempts,
        endpoint=known_endpoint(loaded["endpoint"]) if "endpoint" in loaded else None,
        set_flow="flow" in loaded,
        flow=schemas.flow_of(loaded),
        http_changes=_http_changes(loaded),
        set_callback="callback" in loaded,
        callback=callback_of(loaded),
    )


def _http_changes(loaded: dict[str, Any]) -> dict[str, Any]:
    check_timeout(loaded.get("timeout"))
    return schemas.http_changes_of(loaded)


def known_endpoint(
    name: str, index: int | None = None, listed_in: str | None = None, field: str = "endpoint"
) -> str:
    """`name` if it names a configured endpoint.

    :raise RequestRejected: 400 naming the field (`endpoint`, or `<listed_in>.<index>.endpoint`;
        `field` instead of `endpoint` when given).
    """
    known = settings().endpoints
    if name in known:
        return name
    problem = [f"Unknown endpoint {name!r}; configured: {', '.join(known)}."]
    raise _invalid_field(field, problem, index, listed_in)


def _invalid_field(
    field: str, problem: list[str], index: int | None, listed_in: str | None
) -> RequestRejected:
    fields: dict[Any, Any] = {field: problem}
    if listed_in is not None:
        fields = {listed_in: {index: fields}}
    return RequestRejected(400, "invalid_request", "The request has invalid fields.", fields)


def _too_large_as_stored(index: int, listed_in: str | None) -> RequestRejected:
    limit = settings().max_body_bytes
    problem = [
        f"Too large as stored: the job bodies of a request may take {limit - jobs.ENVELOPE_BYTES} "
        f"bytes together (SCHEDULER_MAX_BODY_BYTES, {limit}, less the delivery's envelope), "
        "counting numbers as PostgreSQL writes them (1e300 as 301 digits)."
    ]
    fields: dict[Any, Any] = {BODY_FIELD: problem}
    if listed_in is not None:
        fields = {listed_in: {index: fields}}
    return RequestRejected(
        413, "request_entity_too_large", "The request is too large as stored.", fields
    )


def group_commit() -> group_commit_module.GroupCommit:
    current: group_commit_module.GroupCommit = current_app.extensions["scheduler.group_commit"]
    return current


def insert(new: list[jobs.NewJob], key: job_rows.Idempotency | None) -> list[str]:
    """Store `new`; only jobs due before the dispatcher's next look for due jobs are announced
    to it (see Settings.announce_within)."""
    if key is None and len(new) == 1:
        # The common request: written together with those of concurrent requests.
        group_commit().insert(new[0])
        return [new[0].id]
    return job_rows.insert_jobs(database(), new, key, announce_within=settings().announce_within)


def insert_debounced(
    new: list[jobs.NewJob], key: job_rows.Idempotency | None
) -> list[job_rows.Scheduled]:
    """Store `new`, of which some are debounced, outside group commit: a debounced job may
    update a waiting one rather than add a row, which a group's one statement of new rows
    cannot. Announced as `insert` announces."""
    announce_within = settings().announce_within
    return job_rows.insert_debounced_jobs(database(), new, key, announce_within=announce_within)


def idempotency(loaded: dict[str, Any], field_key: str | None) -> job_rows.Idempotency | None:
    """The request's idempotency key (header or field) with a digest of what it asks for.

    The digest covers the validated request, so `90` and `90.0`, or `Z` and `+00:00`, are the
    same request.
    """
    header_key = request.environ.get(_IDEMPOTENCY_KEY)
    if header_key is not None and not 1 <= len(header_key) <= schemas.MAX_KEY_LENGTH:
        raise RequestRejected(
            400,
            "invalid_request",
            f"The {IDEMPOTENCY_HEADER} header must be 1 to {schemas.MAX_KEY_LENGTH} characters.",
        )
    unstorable = header_key is not None and jsonb.find_problem(header_key)
    if unstorable:
        raise RequestRejected(
            400,
            "invalid_request",
            f"The {IDEMPOTENCY_HEADER} header cannot be stored: {unstorable.reason}.",
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
    canonical = jsonb.dumps(
        [request.path, asked], default=_canonical, sort_keys=True, separators=(",", ":")
    )
    return job_rows.Idempotency(key, hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    raise TypeError(f"cannot digest {type(value).__name__}")


def checked_id(job_id: str) -> str:
    """A job id from a URL; one that cannot exist is simply not found."""
    if not schemas.ID_PATTERN.match(job_id):
        raise errors.JobNotFound(job_id)
    return job_id


def page_of_jobs(filters: job_rows.JobFilters) -> Response:
    """One page, newest first, with the cursor of the next page (null on the last)."""
    found = job_rows.list_jobs(database(), dataclasses.replace(filters, limit=filters.limit + 1))
    page = found[: filters.limit]
    next_cursor = page[-1].id if len(found) > filters.limit else None
    return dump(schemas.JobListResponse, {"jobs": page, "next_cursor": next_cursor})
