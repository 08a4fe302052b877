"""Marshmallow schemas for requests in and responses out; their value formats are web.formats."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    missing,
    post_load,
    validate,
    validates_schema,
)

from scheduler import config, cron, errors, http_options
from scheduler import jobs as jobs_module

# Callers import the value formats from here too.
from scheduler.web.formats import EARLIEST as EARLIEST
from scheduler.web.formats import ID_MESSAGE as ID_MESSAGE
from scheduler.web.formats import ID_PATTERN as ID_PATTERN
from scheduler.web.formats import MAX_DELAY_SECONDS as MAX_DELAY_SECONDS
from scheduler.web.formats import RESERVED_CRON_IDS as RESERVED_CRON_IDS
from scheduler.web.formats import CronId as CronId
from scheduler.web.formats import Delay as Delay
from scheduler.web.formats import EndpointName as EndpointName
from scheduler.web.formats import JobId as JobId
from scheduler.web.formats import Number as Number
from scheduler.web.formats import Timestamp as Timestamp
from scheduler.web.formats import format_timestamp as format_timestamp
from scheduler.web.formats import parse_duration as parse_duration
from scheduler.web.formats import parse_rfc3339 as parse_rfc3339

ZONE_PATTERN = re.compile(r"[A-Za-z0-9_+/-]{1,64}\Z")
MAX_CRONS = 10_000
MAX_PREVIEW = 100
MAX_SPEC_LENGTH = cron.MAX_SPEC_LENGTH
MAX_RATE_LIMIT = config.MAX_RATE_LIMIT
MAX_IN_FLIGHT_LIMIT = config.MAX_IN_FLIGHT_LIMIT
MAX_WEIGHT = config.MAX_WEIGHT
MAX_KEY_LENGTH = 255
# GET /endpoints/<name>/flows lists this many keys, with their due jobs counted up to MAX_FLOW_DUE.
FLOWS_LISTED = 100
MAX_FLOW_DUE = 1000
# A flow or debounce key: any text PostgreSQL can store that reads as one line (no control
# characters, no lone surrogates, which JSON's \u escapes can make).
KEY_PATTERN = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,200}\Z")
KEY_MESSAGE = "1 to 200 characters, none of them a control character."
FLOW_KEY_PATTERN = KEY_PATTERN
# A tick's delivery may wait up to this for its cron's jitter: enough to spread a daily cron over
# its whole day.
MAX_JITTER_SECONDS = 24 * 3600
# A cron may deliver its missed ticks for up to a year late (Temporal's schedules default to it).
MAX_CATCHUP_WINDOW_SECONDS = 366 * 24 * 3600
# A cron's max_runs fits the database's integer.
MAX_CRON_RUNS = 2**31 - 1
# A job's own retry backoff: up to a week, the longest a failing endpoint is waited for.
MAX_RETRY_SECONDS = 7 * 24 * 3600
MAX_BACKFILL_TICKS = 1000
DEFAULT_PAGE = 50
ERROR_KIND_DESCRIPTION = (
    "Why it failed, for grouping: `http_<status>` for an answer outside 2xx, else one of "
    + ", ".join(f"`{kind}`" for kind in jobs_module.ERROR_KINDS)
    + " (docs/api.md); null when it did not fail, or failed before kinds were recorded."
)
MAX_PAGE = 500
CANCEL_REQUESTED_DESCRIPTION = (
    "When a cancel was first asked for; null if none was. A job being delivered when it came "
    "stays `delivering` until its attempt ends, then ends `cancelled`, or `delivered` if that "
    "attempt delivered it; no other attempt starts."
)


class FlowSchema(Schema):
    """A flow-control key (docs/api.md, "Flow control"): the jobs of an endpoint that share a key
    share its limits across every dispatcher, and keys take turns."""

    key = fields.String(required=True, validate=validate.Regexp(KEY_PATTERN, error=KEY_MESSAGE))
    rate = Number(
        load_default=None,
        allow_nan=False,
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_RATE_LIMIT),
        metadata={"description": "Deliveries per second to start, at most; null: no limit."},
    )
    max_in_flight = fields.Integer(
        load_default=None,
        strict=True,
        allow_none=True,
        validate=validate.Range(1, MAX_IN_FLIGHT_LIMIT),
        metadata={"description": "Deliveries in progress at once, at most; null: no limit."},
    )


class FlowFiguresSchema(Schema):
    key = fields.String()
    rate = fields.Float(
        attribute="rate_limit",
        allow_none=True,
        metadata={"description": "Deliveries started per second, at most; null: no limit."},
    )
    max_in_flight = fields.Integer(
        allow_none=True, metadata={"description": "Deliveries in progress at once; null: none."}
    )
    due = fields.Integer(
        metadata={"description": f"Jobs due and not yet sent, counted up to {MAX_FLOW_DUE:,}."}
    )
    in_flight = fields.Integer(metadata={"description": "Deliveries in progress now."})
    used_at = Timestamp(metadata={"description": "When a job last named it or was claimed."})


class FlowsResponse(Schema):
    flows = fields.List(fields.Nested(FlowFiguresSchema))


def flow_of(item: dict[str, Any]) -> jobs_module.Flow | None:
    """The jobs.Flow of a validated item with a `flow` field."""
    flow = item.get("flow")
    if flow is None:
        return None
    return jobs_module.Flow(flow["key"], flow["rate"], flow["max_in_flight"])


class DebounceSchema(Schema):
    """A debounce key (docs/api.md, "Debounce"): while a job inserted with it waits and was never
    claimed, another insert with the key (within the endpoint) updates that job instead."""

    key = fields.String(required=True, validate=validate.Regexp(KEY_PATTERN, error=KEY_MESSAGE))
    period = Delay(
        required=True,
        above_zero=True,
        metadata={
            "description": "Seconds (or ISO 8601, PT5M), more than 0: the job is due this long "
            "after the latest insert with the key."
        },
    )
    max_wait = Delay(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Seconds (or ISO 8601), at least `period`: the job is never due later "
            "than this long after the insert that made it. Null or left out: no limit."
        },
    )

    @validates_schema
    def check_max_wait(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("max_wait") is not None and data["max_wait"] < data.get("period", 0):
            raise ValidationError("Must be at least period.", "max_wait")


def debounce_of(item: dict[str, Any]) -> jobs_module.Debounce | None:
    """The jobs.Debounce of a validated item with a `debounce` field."""
    debounce = item.get("debounce")
    if debounce is None:
        return None
    return jobs_module.Debounce(debounce["key"], debounce["period"], debounce["max_wait"])


def _checked(check: Callable[[str], str]) -> Callable[[str], None]:
    """A marshmallow validator from one of http_options' checks, which raise ValueError."""

    def validator(value: str) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    return validator


class RetrySchema(Schema):
    """A job's own backoff (docs/api.md, "Per-job HTTP options")."""

    base = Delay(
        required=True,
        above_zero=True,
        maximum=MAX_RETRY_SECONDS,
        metadata={"description": "Seconds (or ISO 8601): the first retry's backoff."},
    )
    cap = Delay(
        required=True,
        above_zero=True,
        maximum=MAX_RETRY_SECONDS,
        metadata={"description": "Seconds (or ISO 8601), at least `base`: the longest backoff."},
    )

    @validates_schema
    def check_cap(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("cap", 0) < data.get("base", 0):
            raise ValidationError("Must be at least base.", "cap")


class HttpOptionsSchema(Schema):
    """What a job (or every run of a cron) sets of its own request, and the endpoint told of
    its end (docs/api.md, "Per-job HTTP options" and "Callbacks"). Null, or left out, is the
    default; none takes a load_default, so a request without them digests as before."""

    path = fields.String(
        allow_none=True,
        validate=_checked(http_options.check_path),
        metadata={
            "description": "Appended to the endpoint's URL (one `/` between them), with an "
            "optional `?query`; it cannot change the scheme, host or port: `..`, `//`, `@`, "
            "`\\`, encoded `/ \\ . %`, control characters and spaces are refused."
        },
    )
    method = fields.String(
        allow_none=True,
        validate=_checked(http_options.check_method),
        metadata={"enum": list(http_options.METHODS), "description": "Default POST."},
    )
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        allow_none=True,
        metadata={
            "description": f"At most {http_options.MAX_HEADERS} headers sent as given. Hop-by-hop "
            "headers, Host, Content-Length, Content-Type, Content-Encoding, Accept-Encoding, "
            "Expect, traceparent, tracestate and Scheduler-* are refused. Shown with the values "
            "of Authorization, Proxy-Authorization, Cookie and names containing key, token or "
            "secret redacted."
        },
    )
    timeout = Delay(
        allow_none=True,
        above_zero=True,
        maximum=int(config.MAX_TIMEOUT_LIMIT),
        maximum_named="SCHEDULER_MAX_TIMEOUT",
        metadata={
            "description": "Seconds (or ISO 8601) the whole attempt may take, up to "
            "SCHEDULER_MAX_TIMEOUT (300 unless set); default SCHEDULER_CONNECT_TIMEOUT + "
            "SCHEDULER_READ_TIMEOUT."
        },
    )
    retry = fields.Nested(
        RetrySchema,
        allow_none=True,
        metadata={"description": "Its own backoff instead of SCHEDULER_RETRY_BASE and _CAP."},
    )
    callback = EndpointName(
        load_default=missing,
        allow_none=True,
        metadata={
            "description": "A configured endpoint told when the job ends `delivered` or "
            '`failed` (docs/api.md, "Callbacks").'
        },
    )

    @validates_schema
    def check_headers(self, data: dict[str, Any], **kwargs: Any) -> None:
        headers = data.get("headers")
        if headers is None:
            return
        try:
            http_options.check_headers(headers)
        except http_options.HeaderRefused as exc:
            where = (
                {"headers": [str(exc)]} if exc.name is None else {"headers": {exc.name: [str(exc)]}}
            )
            raise ValidationError(where) from None

    @post_load
    def upper_case_method(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # `put` and `PUT` ask for the same job: loaded alike, they digest alike for an
        # idempotency key.
        if data.get("method") is not None:
            data["method"] = http_options.check_method(data["method"])
        return data


OPTION_FIELDS = tuple(HttpOptionsSchema._declared_fields)


def http_options_of(item: dict[str, Any]) -> jobs_module.HttpOptions | None:
    """The jobs.HttpOptions of a validated item (None when it sets none)."""
    changes = http_changes_of(item)
    return jobs_module.HttpOptions.from_json({k: v for k, v in changes.items() if v is not None})


def http_changes_of(item: dict[str, Any]) -> dict[str, Any]:
    """The HTTP options a validated item names, as HttpOptions.to_json stores them; None for
    one it names as null."""
    changes: dict[str, Any] = {}
    for name in ("path", "method", "timeout", "retry"):
        if name in item:
            changes[name] = item[name]
    if "headers" in item:
        headers = item["headers"]
        changes["headers"] = [[n, v] for n, v in headers.items()] if headers else None
    return changes


class JobSpecSchema(HttpOptionsSchema):
    """One job to schedule: when (`timestamp`, `delay` or `debounce`), what, and how hard to
    try."""

    timestamp = Timestamp(load_default=None)
    delay = Delay(load_default=None, metadata={"description": "Seconds, or ISO 8601 (PT90S)."})
    body = fields.Raw(load_default=None, allow_none=True)
    max_attempts = fields.Integer(
        load_default=None,
        strict=True,
        allow_none=True,
        validate=validate.Range(1, config.MAX_ATTEMPTS_LIMIT),
    )
    endpoint = EndpointName()
    flow = fields.Nested(FlowSchema, allow_none=True)
    debounce = fields.Nested(
        DebounceSchema,
        allow_none=True,
        metadata={
            "description": "Instead of `timestamp` and `delay`: due `period` after this insert, "
            "and joined by later inserts with the key while it waits (docs/api.md, "
            '"Debounce"). Null is the same as leaving it out.'
        },
    )

    @post_load
    def drop_null_keys(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # A job without a key is the same request however it says so: its idempotency digest
        # is the one it had before keys existed.
        for name in ("flow", "debounce", *OPTION_FIELDS):
            if data.get(name, False) is None:
                del data[name]
        return data

    @validates_schema
    def check_when(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("debounce") is not None:
            given = [name for name in ("timestamp", "delay") if data[name] is not None]
            message = "A debounced job is due `period` after its latest insert: give neither."
            if given:
                raise ValidationError({name: [message] for name in given})
        elif (data["timestamp"] is None) == (data["delay"] is None):
            message = "Give exactly one of timestamp and delay (or a debounce)."
            raise ValidationError({"timestamp": [message], "delay": [message]})


class InsertJobSchema(JobSpecSchema):
    idempotency_key = fields.String(load_default=None, validate=validate.Length(1, MAX_KEY_LENGTH))


class BatchSchema(Schema):
    jobs = fields.List(fields.Nested(JobSpecSchema), required=True)


class BatchResponse(Schema):
    ids = fields.List(fields.String())
    debounced = fields.List(
        fields.Boolean(),
        metadata={
            "description": "Only when some job of the batch has a `debounce`: for each job, in "
            "order, whether it joined a waiting job with its key (its id is that job's)."
        },
    )


class AttemptSchema(Schema):
    attempt = fields.Integer()
    started_at = Timestamp()
    duration_ms = fields.Integer()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    response_excerpt = fields.String(allow_none=True)
    error_kind = fields.String(allow_none=True, metadata={"description": ERROR_KIND_DESCRIPTION})


def _stored_options(obj: Any) -> jobs_module.HttpOptions:
    """The HTTP options of a job or cron being shown (a record, or a dict of its fields)."""
    options = obj.get("http_options") if isinstance(obj, dict) else obj.http_options
    return options or jobs_module.HttpOptions()


def _retry_shown(options: jobs_module.HttpOptions) -> dict[str, float | None] | None:
    if options.retry_base is None:
        return None
    return {"base": options.retry_base, "cap": options.retry_cap}


class HttpOptionsShown(Schema):
    """A job's or a cron's HTTP options and callback as the API shows them: secret header values
    redacted (http_options.redact)."""

    path = fields.Function(
        lambda obj: _stored_options(obj).path,
        allow_none=True,
        metadata={"type": "string", "description": "Appended to the endpoint's URL; null: none."},
    )
    method = fields.Function(
        lambda obj: _stored_options(obj).method or http_options.DEFAULT_METHOD,
        metadata={"type": "string", "enum": list(http_options.METHODS)},
    )
    headers = fields.Function(
        lambda obj: http_options.redact(dict(_stored_options(obj).headers)),
        metadata={
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Its own headers; the values of Authorization, Proxy-Authorization, "
            f"Cookie and names containing key, token or secret read {http_options.REDACTED!r}.",
        },
    )
    timeout = fields.Function(
        lambda obj: _stored_options(obj).timeout,
        allow_none=True,
        metadata={"type": "number", "description": "Seconds; null: the dispatcher's default."},
    )
    retry = fields.Function(
        lambda obj: _retry_shown(_stored_options(obj)),
        allow_none=True,
        metadata={"type": "object", "description": "Its own backoff; null: the dispatcher's."},
    )
    callback = fields.String(
        allow_none=True, metadata={"description": "The endpoint told of its end; null: none."}
    )


class JobSchema(HttpOptionsShown):
    id = fields.String()
    cron_id = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": list(jobs_module.JOB_STATES)})
    body = fields.Raw(allow_none=True)
    timestamp = Timestamp(attribute="run_at")
    next_attempt_at = Timestamp()
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    last_status = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_error_kind = fields.String(
        allow_none=True, metadata={"description": ERROR_KIND_DESCRIPTION}
    )
    created_at = Timestamp()
    updated_at = Timestamp()
    finished_at = Timestamp(allow_none=True)
    endpoint = fields.String()
    cancel_requested_at = Timestamp(
        allow_none=True, metadata={"description": CANCEL_REQUESTED_DESCRIPTION}
    )
    flow_key = fields.String(
        allow_none=True, metadata={"description": "Its flow-control key; null: none."}
    )
    debounce_key = fields.String(
        allow_none=True,
        metadata={
            "description": "The debounce key it was inserted with (kept once it is claimed, "
            "when later inserts with the key no longer join it); null: none."
        },
    )
    debounce_until = Timestamp(
        allow_none=True,
        metadata={
            "description": "A debounced job's deadline: a later insert with its key never makes "
            "it due after this (its first insert plus `max_wait`); null: none."
        },
    )


class JobDetailSchema(JobSchema):
    history = fields.List(fields.Nested(AttemptSchema))


class JobListQuery(Schema):
    state = fields.String(load_default=None, validate=validate.OneOf(jobs_module.JOB_STATES))
    cron_id = JobId(load_default=None)
    before = Timestamp(load_default=None)
    after = Timestamp(load_default=None)
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(1, MAX_PAGE))
    cursor = JobId(load_default=None)
    endpoint = EndpointName(load_default=None)


class CronRunsQuery(Schema):
    before = Timestamp(load_default=None)
    after = Timestamp(load_default=None)
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(1, MAX_PAGE))
    cursor = JobId(load_default=None)


class JobListResponse(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class JobIdResponse(Schema):
    id = fields.String()


class InsertedJobResponse(JobIdResponse):
    debounced = fields.Boolean(
        metadata={
            "description": "Only for a job with a `debounce`: true when it joined a waiting job "
            "with its key (the id is that job's), false when it made one."
        }
    )


class PatchJobSchema(HttpOptionsSchema):
    """What an edit changes; a field left out stays as it is (an HTTP option or the callback
    given as null goes back to its default)."""

    timestamp = Timestamp()
    delay = Delay(metadata={"description": "Seconds from now, or ISO 8601 (PT90S)."})
    body = fields.Raw(allow_none=True)
    max_attempts = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(1, config.MAX_ATTEMPTS_LIMIT),
        metadata={
            "description": "The whole budget, the attempts made so far included (so more than "
            "them); null: SCHEDULER_MAX_ATTEMPTS."
        },
    )
    endpoint = EndpointName(load_default=missing)
    flow = fields.Nested(
        FlowSchema,
        allow_none=True,
        metadata={"description": "A flow-control key with its limits; null: no key."},
    )

    @validates_schema
    def check_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            message = f"Give at least one of {', '.join(self.fields)}."
            raise ValidationError({name: [message] for name in self.fields})
        if "timestamp" in data and "delay" in data:
            message = "Give at most one of timestamp and delay."
            raise ValidationError({"timestamp": [message], "delay": [message]})


class DeleteJobSchema(Schema):
    id = JobId(required=True)


class CronPoliciesSchema(HttpOptionsSchema):
    """What a cron's ticks do besides firing; a field left out takes its default, so a cron is
    exactly what was sent."""

    jitter = Delay(
        maximum=MAX_JITTER_SECONDS,
        load_default=0.0,
        metadata={
            "description": "Seconds (or ISO 8601, PT5M): each tick is delivered after a uniform "
            "random delay up to this. Default 0."
        },
    )
    overlap = fields.String(
        load_default=jobs_module.OVERLAP_POLICIES[0],
        validate=validate.OneOf(jobs_module.OVERLAP_POLICIES),
        metadata={
            "description": "`allow` (default): every tick is delivered. `skip`: a tick is recorded "
            "as `skipped`, never delivered, while an earlier run of the cron is unfinished."
        },
    )
    flow = fields.Nested(
        FlowSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "A flow-control key every run carries, with its limits."},
    )
    catchup_window = Delay(
        maximum=MAX_CATCHUP_WINDOW_SECONDS,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Seconds (or ISO 8601): a tick missed while no dispatcher led, or "
            "while the leader was behind, is still delivered, in order, this long after its "
            "time; an older one is recorded `missed`, never delivered. Null or left out: the "
            "dispatcher's default (SCHEDULER_CRON_CATCHUP, 1 hour unless set)."
        },
    )
    start_at = Timestamp(
        load_default=None,
        allow_none=True,
        metadata={"description": "RFC 3339: no tick before it. Null or left out: at once."},
    )
    end_at = Timestamp(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "RFC 3339, after start_at: no tick after it, and the cron ends for "
            "good once it has passed. Null or left out: never."
        },
    )
    max_runs = fields.Integer(
        load_default=None,
        strict=True,
        allow_none=True,
        validate=validate.Range(1, MAX_CRON_RUNS),
        metadata={
            "description": "The cron ends for good after this many runs recorded from its ticks "
            "to be delivered (not skipped or missed ticks, backfills or `run`). Null or left "
            "out: no limit."
        },
    )
    delete_after_end = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Remove the cron once it ended, instead of listing it as `ended`. "
            "Either way, sending it again with the same start_at, end_at and max_runs does not "
            "start it again; changing one of them does."
        },
    )

    @validates_schema
    def check_bounds(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start_at"), data.get("end_at")
        if start is not None and end is not None and end <= start:
            raise ValidationError("Must be after start_at.", "end_at")


class CronFlowSchema(Schema):
    """A cron's flow key as the API shows it."""

    key = fields.String()
    rate = fields.Float(attribute="rate_limit", allow_none=True)
    max_in_flight = fields.Integer(allow_none=True)


class CronEntrySchema(CronPoliciesSchema):
    id = CronId(required=True)
    spec = fields.String(required=True, validate=validate.Length(1, MAX_SPEC_LENGTH))
    endpoint = EndpointName()


class ReplaceCronsSchema(Schema):
    jobs = fields.List(
        fields.Nested(CronEntrySchema), required=True, validate=validate.Length(max=MAX_CRONS)
    )

    @validates_schema
    def check_specs(self, data: dict[str, Any], **kwargs: Any) -> None:
        problems: dict[int, dict[str, list[str]]] = {}
        seen: set[str] = set()
        for index, entry in enumerate(data["jobs"]):
            if entry["id"] in seen:
                problems[index] = {"id": [f"Duplicate cron id {entry['id']!r}."]}
                continue
            seen.add(entry["id"])
            try:
                cron.parse_spec(entry["spec"])
            except errors.InvalidCronSpec as exc:
                problems[index] = {
                    "spec": [f"Cron {entry['id']!r}: invalid spec {entry['spec']!r}: {exc.reason}"]
                }
        if problems:
            raise ValidationError({"jobs": problems})


class CronPreviewQuery(Schema):
    spec = fields.String(required=True, validate=validate.Length(1, MAX_SPEC_LENGTH))
    after = Timestamp(load_default=None)
    count = fields.Integer(load_default=5, validate=validate.Range(1, MAX_PREVIEW))
    start_at = Timestamp(load_default=None, metadata={"description": "No time before it."})
    end_at = Timestamp(load_default=None, metadata={"description": "No time after it."})
    max_runs = fields.Integer(
        load_default=None,
        validate=validate.Range(1, MAX_CRON_RUNS),
        metadata={"description": "At most this many times."},
    )


class CronPreviewResponse(Schema):
    spec = fields.String()
    next = fields.List(Timestamp())


class PutCronSchema(CronPoliciesSchema):
    spec = fields.String(required=True, validate=validate.Length(1, MAX_SPEC_LENGTH))
    timezone = fields.String(
        load_default=None,
        validate=validate.Regexp(ZONE_PATTERN, error="Not an IANA time zone name."),
    )

    endpoint = EndpointName()

    @validates_schema
    def check_spec(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["timezone"] is not None and data["spec"].lstrip().upper().startswith(
            ("CRON_TZ=", "TZ=")
        ):
            raise ValidationError(
                "Give the time zone either as timezone or as a CRON_TZ= prefix, not both.",
                "timezone",
            )
        spec = zoned_spec(data["spec"], data["timezone"])
        try:
            cron.parse_spec(spec)
        except errors.InvalidCronSpec as exc:
            raise ValidationError(f"Invalid spec {spec!r}: {exc.reason}", "spec") from None


def zoned_spec(spec: str, timezone: str | None) -> str:
    """The spec as stored: a separate time zone becomes its CRON_TZ= prefix."""
    return spec if timezone is None else f"CRON_TZ={timezone} {spec}"


class CronJobResponse(HttpOptionsShown):
    id = fields.String()
    spec = fields.String()
    timezone = fields.String()
    endpoint = fields.String()
    paused = fields.Boolean()
    jitter = fields.Float(metadata={"description": "Seconds."})
    overlap = fields.String(metadata={"enum": list(jobs_module.OVERLAP_POLICIES)})
    flow = fields.Nested(
        CronFlowSchema,
        allow_none=True,
        metadata={"description": "The flow-control key every run carries; null: none."},
    )
    catchup_window = fields.Float(
        allow_none=True,
        metadata={
            "description": "Seconds; null: the dispatcher's default (SCHEDULER_CRON_CATCHUP)."
        },
    )
    state = fields.String(
        metadata={
            "enum": list(jobs_module.CRON_STATES),
            "description": "`ended`: past its end_at or its max_runs, for good.",
        }
    )
    start_at = Timestamp(allow_none=True)
    end_at = Timestamp(allow_none=True)
    max_runs = fields.Integer(allow_none=True)
    runs = fields.Integer(metadata={"description": "Runs counted toward max_runs."})
    runs_left = fields.Integer(allow_none=True, metadata={"description": "Null: no max_runs."})
    ended_at = Timestamp(allow_none=True)
    delete_after_end = fields.Boolean()
    next_fire_at = Timestamp(allow_none=True)
    last_fire_at = Timestamp(allow_none=True)
    last_state = fields.String(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()
    warning = fields.String(
        allow_none=True,
        metadata={"description": "Set when the cron can never fire (a spec such as February 30)."},
    )


class CronListResponse(Schema):
    jobs = fields.List(fields.Nested(CronJobResponse))


class BackfillSchema(Schema):
    """A window of a cron's ticks: `from` inclusive, `to` exclusive."""

    start = Timestamp(data_key="from", required=True)
    end = Timestamp(data_key="to", required=True)

    @validates_schema
    def check_window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError("Must be later than from.", "to")


class BackfillResponse(Schema):
    recorded = fields.Integer(
        metadata={"description": "Ticks recorded now: new ones, and ones overlap had skipped."}
    )
    ticks = fields.Integer(metadata={"description": "Ticks of the cron in the window."})


class DispatcherSchema(Schema):
    id = fields.String(metadata={"description": "Chosen by the dispatcher when it starts."})
    host = fields.String()
    pid = fields.Integer(metadata={"description": "The dispatcher's own process id."})
    role = fields.String(
        metadata={
            "description": "`leader` (runs timers and maintenance) or "
            "`member`; every dispatcher delivers."
        }
    )
    started_at = Timestamp()
    heartbeat_at = Timestamp()
    in_flight = fields.Integer(metadata={"description": "Deliveries claimed and not yet recorded."})
    delivered = fields.Integer(metadata={"description": "Deliveries made since it started."})
    metrics_port = fields.Integer(
        allow_none=True, metadata={"description": "Port of its Prometheus metrics, if served."}
    )
    endpoints = fields.List(
        fields.String(),
        metadata={
            "description": "The endpoints it knows (`ENDPOINT` as `default`, then "
            "`SCHEDULER_ENDPOINTS`'). It leaves jobs for any other endpoint to the dispatchers "
            "that know it."
        },
    )
    threads_down = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={
            "description": "Its threads not running at its last heartbeat, by name (`claim`, "
            "`listen`, `heartbeat`, `campaign`, `timers`, `maintenance`, `watchdog`, `metrics`, "
            "`record`, `deliver`): `restarting` after a failure, or `dead` (the dispatcher is "
            "stopping and its process exits non-zero); `{}` while all run."
        },
    )


class DispatchersResponse(Schema):
    dispatchers = fields.List(fields.Nested(DispatcherSchema))


class EndpointSchema(Schema):
    name = fields.String()
    url = fields.String()
    rate_limit = fields.Float(
        allow_none=True, metadata={"description": "Deliveries started per second; null: none."}
    )
    max_in_flight = fields.Integer(
        allow_none=True, metadata={"description": "Deliveries in progress at once; null: none."}
    )
    weight = fields.Float(
        metadata={
            "description": "Its share of each dispatcher's threads against the other endpoints' "
            "with work, in proportion (1 by default)."
        }
    )
    paused = fields.Boolean()
    in_flight = fields.Integer(metadata={"description": "Deliveries in progress now."})
    due = fields.Integer(metadata={"description": "Jobs due and not yet sent."})


class EndpointsResponse(Schema):
    endpoints = fields.List(fields.Nested(EndpointSchema))


class PatchEndpointSchema(Schema):
    """Limits and weight to change; a field left out is unchanged, null means unlimited (a
    limit) or the default (the weight)."""

    rate_limit = Number(
        allow_nan=False,
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_RATE_LIMIT),
    )
    max_in_flight = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(1, MAX_IN_FLIGHT_LIMIT)
    )
    weight = Number(
        allow_nan=False,
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_WEIGHT),
        metadata={"description": "Above 0, at most 1000; null: back to the default, 1."},
    )

    @validates_schema
    def check_something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            message = "Give at least one of rate_limit, max_in_flight and weight."
            raise ValidationError({name: [message] for name in self.fields})
