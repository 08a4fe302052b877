"""Marshmallow schemas for requests in and responses out; their value formats are web.formats."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from scheduler import config, cron, errors
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
# A flow key: any text PostgreSQL can store that reads as one line (no control characters, no
# lone surrogates, which JSON's \u escapes can make).
FLOW_KEY_PATTERN = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,200}\Z")
# A tick's delivery may wait up to this for its cron's jitter: enough to spread a daily cron over
# its whole day.
MAX_JITTER_SECONDS = 24 * 3600
# A cron may deliver its missed ticks for up to a year late (Temporal's schedules default to it).
MAX_CATCHUP_WINDOW_SECONDS = 366 * 24 * 3600
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

    key = fields.String(
        required=True,
        validate=validate.Regexp(
            FLOW_KEY_PATTERN, error="1 to 200 characters, none of them a control character."
        ),
    )
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


class JobSpecSchema(Schema):
    """One job to schedule: when (`timestamp` or `delay`), what, and how hard to try."""

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

    @post_load
    def drop_null_flow(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # A job without a key is the same request however it says so: its idempotency digest
        # is the one it had before keys existed.
        if data.get("flow", False) is None:
            del data["flow"]
        return data

    @validates_schema
    def check_when(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data["timestamp"] is None) == (data["delay"] is None):
            message = "Give exactly one of timestamp and delay."
            raise ValidationError({"timestamp": [message], "delay": [message]})


class InsertJobSchema(JobSpecSchema):
    idempotency_key = fields.String(load_default=None, validate=validate.Length(1, MAX_KEY_LENGTH))


class BatchSchema(Schema):
    jobs = fields.List(fields.Nested(JobSpecSchema), required=True)


class BatchResponse(Schema):
    ids = fields.List(fields.String())


class AttemptSchema(Schema):
    attempt = fields.Integer()
    started_at = Timestamp()
    duration_ms = fields.Integer()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    response_excerpt = fields.String(allow_none=True)
    error_kind = fields.String(allow_none=True, metadata={"description": ERROR_KIND_DESCRIPTION})


class JobSchema(Schema):
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


class DeleteJobSchema(Schema):
    id = JobId(required=True)


class CronPoliciesSchema(Schema):
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


class CronJobResponse(Schema):
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
