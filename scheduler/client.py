"""A typed Python client for the scheduler's HTTP API, needing nothing but `requests`.

The module imports nothing else from this project, so it can be copied into an application on its
own. Every call is one HTTP request: the client never retries by itself, because only the caller
knows whether a request is safe to repeat (see `idempotency_key`). A `requests.Session` is not
promised to be thread-safe (psf/requests#2766), so give each thread its own `Client`.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import email.utils
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import requests

SECRET_HEADER = "Scheduler-Secret"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
DEFAULT_TIMEOUT = 10.0
_EXCERPT = 200
T = TypeVar("T")
# A job's (or a cron's) own request and callback (docs/api.md, "Per-job HTTP options").
_OPTION_KEYS = ("path", "method", "headers", "timeout", "retry", "callback")
_JOB_KEYS = frozenset(
    {"body", "at", "delay", "max_attempts", "endpoint", "flow", "debounce", *_OPTION_KEYS}
)
_DEBOUNCE_KEYS = frozenset({"key", "period", "max_wait"})
_RETRY_KEYS = frozenset({"base", "cap"})
_CRON_KEYS = frozenset(
    {
        *_OPTION_KEYS,
        "spec",
        "jitter",
        "overlap",
        "endpoint",
        "catchup_window",
        "start_at",
        "end_at",
        "max_runs",
        "delete_after_end",
    }
)
# Marks a limit left as it is in `set_endpoint_limits` (None means unlimited), and a field left
# as it is in `update` (where None is a value: a null body, no flow key).
UNCHANGED: Any = object()
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Failures after which nothing usable came back; whether the server acted is unknown.
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class SchedulerError(Exception):
    """The scheduler answered with an error, or did not answer usefully.

    `status` is the HTTP status (None when no answer came), `code` the machine-readable `code` of
    the JSON error body, `message` its text and `fields` its per-field problems (None if absent).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status or 'no answer'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


class InvalidRequest(SchedulerError):
    """400: the request was refused; `fields` names each problem. Nothing was written."""


class Unauthorized(SchedulerError):
    """401: the secret is missing or wrong."""


class NotFound(SchedulerError):
    """404: no such job, cron or route."""


class Conflict(SchedulerError):
    """409: the request conflicts with the current state, or reuses an idempotency key."""


class Unavailable(SchedulerError):
    """503: the scheduler cannot reach its database. Nothing was written; try again later.

    `retry_after` is the server's suggested wait in seconds, or None if it gave none.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        fields: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, fields)
        self.retry_after = retry_after


class ServerError(SchedulerError):
    """Another 5xx: a bug or a proxy in trouble; whether anything was written is unknown."""


class ConnectionFailed(SchedulerError):
    """No answer: the connection failed or timed out (`status` is None, `__cause__` says why).

    Deliberately not an `Unavailable`: a 503 guarantees nothing was written, but a request that
    timed out may have been applied, so only a request with an idempotency key (or a read) is
    safe to repeat.
    """


_ERRORS_BY_STATUS: dict[int, type[SchedulerError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One delivery attempt of a job."""

    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    error_kind: str | None = None


@dataclasses.dataclass(frozen=True)
class Retry:
    """A job's (or a cron's) own backoff in seconds, instead of the dispatcher's: the wait
    before retry n is drawn from [0, min(cap, base * 2 ** (n - 1))]."""

    base: float
    cap: float


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as the scheduler reports it; `timestamp` is when it is (or was) due.

    `history` lists the delivery attempts when the job was fetched with `Client.get`, and is None
    in listings, which do not carry it. `cancel_requested_at` is when a cancel was asked for (None
    if none was); a job still `delivering` with it set ends when its attempt does.
    """

    id: str
    cron_id: str | None
    state: str
    body: Any
    timestamp: dt.datetime
    next_attempt_at: dt.datetime
    attempts: int
    max_attempts: int
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    history: tuple[Attempt, ...] | None = None
    endpoint: str = "default"
    last_error_kind: str | None = None
    cancel_requested_at: dt.datetime | None = None
    flow_key: str | None = None
    # A debounced job's key and deadline (None for others, and from a server that does not say).
    debounce_key: str | None = None
    debounce_until: dt.datetime | None = None
    # Its own request (docs/api.md, "Per-job HTTP options"): a path after the endpoint's URL, a
    # method, headers as the server shows them (a secret one's value reads "[redacted]"), the
    # attempt's timeout in seconds (None: the dispatcher's), its own backoff (None: the
    # dispatcher's), and the endpoint told when it ends (docs/api.md, "Callbacks").
    path: str | None = None
    method: str = "POST"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: float | None = None
    retry: Retry | None = None
    callback: str | None = None


@dataclasses.dataclass(frozen=True)
class Debounced:
    """What a debounced insert did: `debounced` is True when it joined a job waiting with its
    key (`id` is that job's), False when it scheduled a new one."""

    id: str
    debounced: bool


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of jobs, newest first; `next_cursor` fetches the next one (None on the last)."""

    jobs: tuple[Job, ...]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class Cron:
    """A cron; its times are in its own time zone, `next_fire_at` is None when paused or over."""

    id: str
    spec: str
    timezone: str
    paused: bool
    next_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_state: str | None
    last_status: int | None
    created_at: dt.datetime | None
    updated_at: dt.datetime
    jitter: float = 0.0
    overlap: str = "allow"
    endpoint: str = "default"
    # Seconds a missed tick is still delivered; None: the dispatcher's default.
    catchup_window: float | None = None
    # Its lifecycle: `active`, `paused` or `ended` (for good); its bounds and runs.
    state: str = "active"
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    max_runs: int | None = None
    runs: int = 0
    runs_left: int | None = None
    ended_at: dt.datetime | None = None
    delete_after_end: bool = False
    # What each of its runs carries, as a job's (see Job).
    path: str | None = None
    method: str = "POST"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: float | None = None
    retry: Retry | None = None
    callback: str | None = None


@dataclasses.dataclass(frozen=True)
class Backfill:
    """What a backfill did: `ticks` of the cron were in the window, `recorded` of them were
    recorded now (the others already were)."""

    recorded: int
    ticks: int


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A configured endpoint: the limits in force (None: unlimited), paused, what it holds, and
    its weight (its share of the threads against other endpoints with work, in proportion)."""

    name: str
    url: str
    rate_limit: float | None
    max_in_flight: int | None
    paused: bool
    in_flight: int
    due: int
    # A server from before weights sends none: every endpoint then weighs the same.
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Flow:
    """A flow-control key of an endpoint: its limits (None: none) and what it holds."""

    key: str
    rate: float | None
    max_in_flight: int | None
    due: int
    in_flight: int
    used_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Health:
    """Readiness as /readyz reports it: `reason` says why not, when not ready."""

    ready: bool
    reason: str | None
    dispatcher_heartbeat_age: float | None


@dataclasses.dataclass(frozen=True)
class Dispatcher:
    """A live dispatcher; `role` is `leader` or `member`, and every one delivers."""

    id: str
    host: str
    pid: int
    role: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    in_flight: int
    delivered: int
    metrics_port: int | None
    # The endpoints it knows; () from a server that does not say.
    endpoints: tuple[str, ...] = ()
    # Its threads not running at its last heartbeat, by name: "restarting" or "dead".
    threads_down: Mapping[str, str] = dataclasses.field(default_factory=dict)


_DISPATCHER_FIELDS = tuple(field.name for field in dataclasses.fields(Dispatcher))
_ENDPOINT_FIELDS = tuple(field.name for field in dataclasses.fields(Endpoint))


class Client:
    """A connection to one scheduler; `timeout` (seconds) bounds each connect and each read.

    A `session` passed in stays the caller's to close; one created here is closed by `close()`
    or by leaving a `with` block.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._secret = secret
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        # Never show the secret.
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self._session.close()

    def insert(
        self,
        body: Any = None,
        *,
        at: dt.datetime | str | None = None,
        delay: float | dt.timedelta | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        endpoint: str | None = None,
        flow: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        path: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | dt.timedelta | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        callback: str | None = None,
    ) -> str:
        """Schedule one delivery of `body` at `at` or after `delay` (exactly one); its job id.

        Repeating a call with the same `idempotency_key` and arguments returns the first call's
        job instead of scheduling another, so a call that raised `ConnectionFailed` can be retried
        safely; the same key with other arguments raises `Conflict`. `traceparent` and
        `tracestate` (W3C Trace Context) are sent as headers and passed on to the deliveries.
        `flow` is a flow-control key with its limits: `{"key": ..., "rate": ...,
        "max_in_flight": ...}`.

        The job's own request, each left to the default when None: `path` is appended to the
        endpoint's URL, `method` is POST, PUT, PATCH or DELETE, `headers` are sent as given,
        `timeout` (seconds) bounds each attempt, `retry` (a `Retry`, or `{"base": ..., "cap":
        ...}` in seconds) replaces the dispatcher's backoff, and `callback` names an endpoint
        told when the job ends delivered or failed (docs/api.md, "Per-job HTTP options").
        """
        payload = _job_payload(
            body=body,
            at=at,
            delay=delay,
            max_attempts=max_attempts,
            endpoint=endpoint,
            flow=flow,
            path=path,
            method=method,
            headers=headers,
            timeout=timeout,
            retry=retry,
            callback=callback,
        )
        if idempotency_key is not None:
            payload["idempotency_key"] = idempotency_key
        answer = self._request(
            "POST", "/insert", json_body=payload, headers=_trace(traceparent, tracestate)
        )
        return _parse(answer, lambda data: str(data["id"]))

    def debounce(
        self,
        key: str,
        body: Any = None,
        *,
        period: float | dt.timedelta,
        max_wait: float | dt.timedelta | None = None,
        max_attempts: int | None = None,
        endpoint: str | None = None,
        flow: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        path: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | dt.timedelta | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        callback: str | None = None,
    ) -> Debounced:
        """Schedule `body` `period` after now, debounced by `key` (within its endpoint): while a
        job inserted with the key waits and was never claimed, this call updates it instead (its
        body, attempts, flow key, trace context, request options and callback become this
        call's, and it is due `period` from now), though never later than `max_wait` after the
        call that made it. The answer says which happened. Other arguments as for `insert`.
        """
        debounce: dict[str, Any] = {"key": key, "period": period}
        if max_wait is not None:
            debounce["max_wait"] = max_wait
        payload = _job_payload(
            body=body,
            max_attempts=max_attempts,
            endpoint=endpoint,
            flow=flow,
            debounce=debounce,
            path=path,
            method=method,
            headers=headers,
            timeout=timeout,
            retry=retry,
            callback=callback,
        )
        if idempotency_key is not None:
            payload["idempotency_key"] = idempotency_key
        answer = self._request(
            "POST", "/insert", json_body=payload, headers=_trace(traceparent, tracestate)
        )
        return _parse(answer, lambda data: Debounced(str(data["id"]), bool(data["debounced"])))

    def insert_batch(
        self,
        jobs: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> builtins.list[str]:
        """Schedule several jobs atomically; their ids, in order.

        Each item takes the keys of `insert`'s arguments: `body`, `at` or `delay`, `max_attempts`,
        `endpoint`, `flow`, `path`, `method`, `headers`, `timeout`, `retry`, `callback`; or,
        instead of `at` and `delay`, `debounce`: `{"key": ..., "period": ..., "max_wait": ...}`
        as `debounce` takes them (an item that joins a waiting job gets its id). The trace
        context, as for `insert`, applies to every job of the batch.
        """
        items = []
        for index, item in enumerate(jobs):
            unknown = set(item) - _JOB_KEYS
            if unknown:
                raise ValueError(f"jobs[{index}]: unknown keys {sorted(unknown)}")
            items.append(_job_payload(**item))
        headers = _trace(traceparent, tracestate)
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        answer = self._request("POST", "/jobs/batch", json_body={"jobs": items}, headers=headers)
        return _parse(answer, lambda data: [str(job_id) for job_id in data["ids"]])

    def delete(self, job_id: str) -> None:
        """Cancel a job; one being delivered finishes its attempt and starts no other (it ends
        cancelled, or delivered). An unknown or finished job is no error."""
        self._request("POST", "/delete", json_body={"id": job_id})

    def update(
        self,
        job_id: str,
        *,
        body: Any = UNCHANGED,
        at: dt.datetime | str | None = None,
        delay: float | dt.timedelta | None = None,
        max_attempts: int | None = UNCHANGED,
        endpoint: str | None = None,
        flow: Mapping[str, Any] | None = UNCHANGED,
        path: str | None = UNCHANGED,
        method: str | None = UNCHANGED,
        headers: Mapping[str, str] | None = UNCHANGED,
        timeout: float | dt.timedelta | None = UNCHANGED,
        retry: Retry | Mapping[str, Any] | None = UNCHANGED,
        callback: str | None = UNCHANGED,
    ) -> Job:
        """Change a scheduled job in place (waiting for its time or for a retry); the job as
        edited. What is left out stays as it is: `body` (None is a null body), the due time (`at`
        or `delay` from now, not both), `max_attempts` (the whole budget, more than the attempts
        made so far; None: the server's default), `endpoint`, `flow` (None: no key), and the
        request options of `insert` (None: back to the default). `headers` replaces the whole
        set, secret values included: the job shows them redacted, so send every one again. The
        job keeps its id, idempotency key, attempts and history. `Conflict` if the job is in
        flight or finished (the message gives its state), or is a cron's run; `NotFound` if
        unknown.
        """
        if at is not None and delay is not None:
            raise ValueError("Give at most one of at and delay.")
        payload: dict[str, Any] = {}
        if body is not UNCHANGED:
            payload["body"] = body
        if at is not None:
            payload["timestamp"] = format_time(at) if isinstance(at, dt.datetime) else at
        if delay is not None:
            payload["delay"] = _seconds(delay)
        if max_attempts is not UNCHANGED:
            payload["max_attempts"] = max_attempts
        if endpoint is not None:
            payload["endpoint"] = endpoint
        if flow is not UNCHANGED:
            payload["flow"] = None if flow is None else dict(flow)
        given = {
            "path": path,
            "method": method,
            "headers": headers,
            "timeout": timeout,
            "retry": retry,
            "callback": callback,
        }
        for name, value in given.items():
            if value is not UNCHANGED:
                payload[name] = None if value is None else _option(name, value)
        if not payload:
            raise ValueError("Give something to change.")
        answer = self._request("PATCH", _path("jobs", job_id), json_body=payload)
        return _parse(answer, _job)

    def get(self, job_id: str) -> Job:
        """One job with its delivery history; `NotFound` if there is no such job."""
        return _parse(self._request("GET", _path("jobs", job_id)), _job)

    def list(
        self,
        state: str | None = None,
        cron_id: str | None = None,
        before: dt.datetime | str | None = None,
        after: dt.datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        endpoint: str | None = None,
    ) -> Page:
        """One page of jobs, newest first; `before`/`after` bound their due time."""
        params = _query(
            state=state,
            cron_id=cron_id,
            before=_time_param(before),
            after=_time_param(after),
            limit=limit,
            cursor=cursor,
            endpoint=endpoint,
        )
        return _parse(self._request("GET", "/jobs", params=params), _page)

    def iter_jobs(
        self,
        state: str | None = None,
        cron_id: str | None = None,
        before: dt.datetime | str | None = None,
        after: dt.datetime | str | None = None,
        limit: int | None = None,
        endpoint: str | None = None,
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetching pages of `limit` as they are consumed.

        Pages follow the id order, so jobs inserted meanwhile are neither repeated nor cause a
        skip.
        """
        cursor: str | None = None
        while True:
            page = self.list(state, cron_id, before, after, limit, cursor, endpoint)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def run(self, job_id: str) -> None:
        """Make a scheduled job due now; `Conflict` if it is not waiting to be sent."""
        self._request("POST", _path("jobs", job_id, "run"))

    def retry(self, job_id: str) -> None:
        """Give a failed job a fresh budget of attempts, starting now; `Conflict` if not failed."""
        self._request("POST", _path("jobs", job_id, "retry"))

    def set_crons(
        self,
        crons: Mapping[str, str | Mapping[str, Any]]
        | Iterable[tuple[str, str | Mapping[str, Any]]],
    ) -> None:
        """Replace the whole set of crons with `{id: spec}` (or `(id, spec)` pairs), atomically.

        A spec may also be a mapping of the entry's fields, the keyword arguments of `put_cron`
        (`spec`, `jitter`, `overlap`, `endpoint`, `catchup_window`, the lifecycle bounds, the
        request options and `callback`): `{"report": {"spec": "@hourly", "jitter": 60}}`. A key
        left out takes its default. An empty set removes every cron. If any entry is invalid,
        nothing changes.
        """
        pairs = crons.items() if isinstance(crons, Mapping) else crons
        entries = [_cron_entry(cron_id, spec) for cron_id, spec in pairs]
        self._request("POST", "/cron", json_body={"jobs": entries})

    def list_crons(self) -> builtins.list[Cron]:
        """Every cron, sorted by id."""
        answer = self._request("GET", "/cron")
        return _parse(answer, lambda data: [_cron(item) for item in data["jobs"]])

    def get_cron(self, cron_id: str) -> Cron:
        return _parse(self._request("GET", _path("cron", cron_id)), _cron)

    def put_cron(
        self,
        cron_id: str,
        spec: str,
        timezone: str | None = None,
        *,
        jitter: float | dt.timedelta | None = None,
        overlap: str | None = None,
        endpoint: str | None = None,
        catchup_window: float | dt.timedelta | None = None,
        start_at: dt.datetime | None = None,
        end_at: dt.datetime | None = None,
        max_runs: int | None = None,
        delete_after_end: bool = False,
        path: str | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | dt.timedelta | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        callback: str | None = None,
    ) -> Cron:
        """Create or redefine one cron, leaving the others alone.

        `timezone` is an IANA name, the same as a `CRON_TZ=` prefix on `spec` (give one, not
        both); without either, the spec runs in UTC. `jitter` (seconds, default 0) delays each
        tick's delivery by a random part of it; `overlap` is `allow` (the default) or `skip` (a
        tick is recorded as skipped while an earlier run is unfinished); `catchup_window`
        (seconds) is how late a missed tick is still delivered, older ones being recorded
        missed (default: the dispatcher's). `start_at`, `end_at` and `max_runs` bound its
        life: no tick before the first or after the second, none after that many runs; then
        it is `ended` for good, or removed with `delete_after_end`. `endpoint` names where it
        goes, and `path`, `method`, `headers`, `timeout`, `retry` and `callback` are each run's,
        as `insert` takes them. Left out, each takes its default: the cron is exactly what this
        call says.
        """
        payload: dict[str, Any] = {"spec": spec}
        if timezone is not None:
            payload["timezone"] = timezone
        payload.update(_cron_policies(jitter, overlap, catchup_window))
        payload.update(_cron_bounds(start_at, end_at, max_runs, delete_after_end))
        if endpoint is not None:
            payload["endpoint"] = endpoint
        payload.update(
            _options(
                path=path,
                method=method,
                headers=headers,
                timeout=timeout,
                retry=retry,
                callback=callback,
            )
        )
        return _parse(self._request("PUT", _path("cron", cron_id), json_body=payload), _cron)

    def delete_cron(self, cron_id: str) -> None:
        """Remove a cron and cancel its unfinished runs as `delete` does; an unknown id is no
        error."""
        self._request("DELETE", _path("cron", cron_id))

    def pause_cron(self, cron_id: str) -> Cron:
        return _parse(self._request("POST", _path("cron", cron_id, "pause")), _cron)

    def resume_cron(self, cron_id: str) -> Cron:
        """Resume a paused cron; ticks missed while it was paused are not caught up."""
        return _parse(self._request("POST", _path("cron", cron_id, "resume")), _cron)

    def run_cron(self, cron_id: str) -> str:
        """Schedule one extra run of a cron, due now; the job id of that run."""
        answer = self._request("POST", _path("cron", cron_id, "run"))
        return _parse(answer, lambda data: str(data["id"]))

    def backfill_cron(
        self, cron_id: str, start: dt.datetime | str, end: dt.datetime | str
    ) -> Backfill:
        """Record every tick of the cron from `start` (inclusive) to `end` (exclusive), at most
        1,000; each is delivered once, however often asked. The cron's overlap policy does not
        apply, and a tick it skipped is delivered now."""
        payload = {"from": _time_param(start), "to": _time_param(end)}
        answer = self._request("POST", _path("cron", cron_id, "backfill"), json_body=payload)
        return _parse(answer, lambda data: Backfill(int(data["recorded"]), int(data["ticks"])))

    def cron_runs(
        self,
        cron_id: str,
        before: dt.datetime | str | None = None,
        after: dt.datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """One page of a cron's runs (each tick is a job), newest first."""
        params = _query(
            before=_time_param(before), after=_time_param(after), limit=limit, cursor=cursor
        )
        answer = self._request("GET", _path("cron", cron_id, "runs"), params=params)
        return _parse(answer, _page)

    def preview(
        self, spec: str, after: dt.datetime | str | None = None, count: int = 5
    ) -> builtins.list[dt.datetime]:
        """The next `count` fire times of `spec` after `after` (default now), in its time zone.

        Fewer come back when the spec stops firing; an invalid spec raises `InvalidRequest`.
        """
        params = _query(spec=spec, after=_time_param(after), count=count)
        answer = self._request("GET", "/cron/next", params=params)
        return _parse(answer, lambda data: [_parse_time(text) for text in data["next"]])

    def endpoints(self) -> builtins.list[Endpoint]:
        """Every configured endpoint, `default` first."""
        answer = self._request("GET", "/endpoints")
        return _parse(answer, lambda data: [_endpoint(item) for item in data["endpoints"]])

    def get_endpoint(self, name: str) -> Endpoint:
        return _parse(self._request("GET", _path("endpoints", name)), _endpoint)

    def flows(self, name: str) -> builtins.list[Flow]:
        """The endpoint's flow keys with the most jobs due (at most 100), most due first."""
        answer = self._request("GET", _path("endpoints", name, "flows"))
        return _parse(answer, lambda data: [_flow(item) for item in data["flows"]])

    def set_endpoint_limits(
        self,
        name: str,
        *,
        rate_limit: Any = UNCHANGED,
        max_in_flight: Any = UNCHANGED,
        weight: Any = UNCHANGED,
    ) -> Endpoint:
        """Change an endpoint's limits or weight at run time; one left UNCHANGED stays as it
        is. None means unlimited for a limit, the default (1) for the weight. The limits win
        over the environment's until `reset_endpoint`, which leaves the weight as it is."""
        given = (("rate_limit", rate_limit), ("max_in_flight", max_in_flight), ("weight", weight))
        payload = {key: value for key, value in given if value is not UNCHANGED}
        answer = self._request("PATCH", _path("endpoints", name), json_body=payload)
        return _parse(answer, _endpoint)

    def reset_endpoint(self, name: str) -> Endpoint:
        """Return an endpoint to the environment's limits (its weight stays as set)."""
        answer = self._request("POST", _path("endpoints", name, "reset"))
        return _parse(answer, _endpoint)

    def pause_endpoint(self, name: str) -> Endpoint:
        """Hold an endpoint's deliveries; its jobs stay scheduled and cron ticks are recorded."""
        answer = self._request("POST", _path("endpoints", name, "pause"))
        return _parse(answer, _endpoint)

    def resume_endpoint(self, name: str) -> Endpoint:
        """Deliver again, in due order and within the limits."""
        answer = self._request("POST", _path("endpoints", name, "resume"))
        return _parse(answer, _endpoint)

    def dispatchers(self) -> builtins.list[Dispatcher]:
        """The live dispatchers, the leader first."""
        answer = self._request("GET", "/dispatchers")
        return _parse(
            answer,
            lambda data: [
                Dispatcher(
                    **{
                        # Fields a newer server adds are left out, not an error.
                        **{key: item[key] for key in _DISPATCHER_FIELDS if key in item},
                        "started_at": _parse_time(item["started_at"]),
                        "heartbeat_at": _parse_time(item["heartbeat_at"]),
                        "endpoints": tuple(item.get("endpoints", ())),
                        "threads_down": dict(item.get("threads_down", {})),
                    }
                )
                for item in data["dispatchers"]
            ],
        )

    def health(self) -> Health:
        """Readiness with its reason; raises `ConnectionFailed` if the scheduler does not answer."""
        try:
            answer = self._request("GET", "/readyz", authenticated=False)
        except Unavailable as exc:
            return Health(ready=False, reason=exc.message, dispatcher_heartbeat_age=None)
        return _parse(
            answer,
            lambda data: Health(
                ready=True,
                reason=None,
                dispatcher_heartbeat_age=float(data["dispatcher_heartbeat_age_seconds"]),
            ),
        )

    def ready(self) -> bool:
        """Whether the scheduler can take work now: its database, schema and dispatcher are fine.

        No answer counts as not ready; other errors (a wrong URL, say) are raised.
        """
        try:
            return self.health().ready
        except ConnectionFailed:
            return False

    def alive(self) -> bool:
        """Whether the web process answers at all (/healthz), whatever the state of the rest."""
        try:
            self._request("GET", "/healthz", authenticated=False)
        except ConnectionFailed:
            return False
        return True

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> requests.Response:
        """Send one request; the response if it is a 2xx, a `SchedulerError` otherwise."""
        sent_headers = dict(headers or {})
        if authenticated:
            sent_headers[SECRET_HEADER] = self._secret
        data = None
        if json_body is not None:
            # Serialised here so NaN and Infinity fail at once instead of as a 400.
            data = json.dumps(json_body, allow_nan=False).encode("utf-8")
            sent_headers["Content-Type"] = "application/json"
        try:
            response = self._session.request(
                method,
                self.url + path,
                data=data,
                params=params,
                headers=sent_headers,
                timeout=self.timeout,
                # A redirect would turn a POST into a GET; a wrong URL should fail loudly instead.
                allow_redirects=False,
            )
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionFailed(None, "connection_failed", str(exc)) from exc
        if not 200 <= response.status_code < 300:
            _raise_for(response)
        return response


def _raise_for(response: requests.Response) -> NoReturn:
    status = response.status_code
    code, message, fields = f"http_{status}", response.reason or "HTTP error", None
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        fields = error.get("fields")
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not our error body (a proxy's page, say): keep the start of it for the message.
        text = response.text.strip()
        if text:
            message = f"{message}: {text[:_EXCERPT]}"
    if status == 503:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        raise Unavailable(status, code, message, fields, retry_after=retry_after)
    cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else SchedulerError)
    raise cls(status, code, message, fields)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, which is either seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _parse(response: requests.Response, build: Callable[[Any], T]) -> T:
    """`build(json)`, with a body that is not what the API promises raised as a SchedulerError."""
    try:
        return build(response.json())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SchedulerError(
            response.status_code,
            "invalid_response",
            f"Unexpected response from {response.url}: {exc!r}",
        ) from exc


def _endpoint(data: Any) -> Endpoint:
    # Fields a newer server adds are left out, not an error.
    return Endpoint(**{key: data[key] for key in _ENDPOINT_FIELDS if key in data})


def _path(*segments: str) -> str:
    """A URL path of quoted segments, so an id can never reach another route.

    :raise ValueError: an id holds a `/`, which no id can: the server would see it as a
        separator even when quoted, because WSGI decodes the path before routing.
    """
    quoted = []
    for segment in segments:
        if "/" in segment:
            raise ValueError(f"Not a valid id: {segment!r}")
        part = urllib.parse.quote(segment, safe="")
        # `.` and `..` would be removed as dot segments by requests and urllib3.
        if part in (".", ".."):
            part = part.replace(".", "%2E")
        quoted.append(part)
    return "/" + "/".join(quoted)


def _query(**params: Any) -> dict[str, str]:
    return {name: str(value) for name, value in params.items() if value is not None}


def _job_payload(
    body: Any = None,
    at: dt.datetime | str | None = None,
    delay: float | dt.timedelta | None = None,
    max_attempts: int | None = None,
    endpoint: str | None = None,
    flow: Mapping[str, Any] | None = None,
    debounce: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    if debounce is not None:
        if at is not None or delay is not None:
            raise ValueError("A debounced job takes neither at nor delay.")
    elif (at is None) == (delay is None):
        raise ValueError("Give exactly one of at and delay.")
    payload: dict[str, Any] = {"body": body}
    if debounce is not None:
        payload["debounce"] = _debounce(debounce)
    if at is not None:
        payload["timestamp"] = format_time(at) if isinstance(at, dt.datetime) else at
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
        # Whole seconds go as integers so that retries with an idempotency key send equal JSON.
        payload["delay"] = int(seconds) if float(seconds).is_integer() else seconds
    if max_attempts is not None:
        payload["max_attempts"] = max_attempts
    if endpoint is not None:
        payload["endpoint"] = endpoint
    if flow is not None:
        payload["flow"] = dict(flow)
    payload.update(_options(**options))
    return payload


def _options(**given: Any) -> dict[str, Any]:
    """The request options given (not None), as the API takes them."""
    return {name: _option(name, value) for name, value in given.items() if value is not None}


def _option(name: str, value: Any) -> Any:
    if name == "headers":
        return dict(value)
    if name == "timeout":
        return _seconds(value)
    if name == "retry":
        return _retry(value)
    return value


def _retry(retry: Retry | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(retry, Retry):
        return {"base": _seconds(retry.base), "cap": _seconds(retry.cap)}
    unknown = set(retry) - _RETRY_KEYS
    if unknown:
        raise ValueError(f"retry: unknown keys {sorted(unknown)}")
    return {
        name: _seconds(value) if isinstance(value, dt.timedelta) else value
        for name, value in retry.items()
    }


def _debounce(debounce: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(debounce) - _DEBOUNCE_KEYS
    if unknown:
        raise ValueError(f"debounce: unknown keys {sorted(unknown)}")
    given = {key: value for key, value in debounce.items() if value is not None}
    for name in ("period", "max_wait"):
        if isinstance(given.get(name), dt.timedelta):
            given[name] = _seconds(given[name])
    return given


def _trace(traceparent: str | None, tracestate: str | None) -> dict[str, str]:
    headers = {}
    if traceparent is not None:
        headers[TRACEPARENT_HEADER] = traceparent
    if tracestate is not None:
        headers[TRACESTATE_HEADER] = tracestate
    return headers


def _cron_entry(cron_id: str, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"id": cron_id, "spec": spec}
    unknown = set(spec) - _CRON_KEYS
    if unknown:
        raise ValueError(f"cron {cron_id!r}: unknown keys {sorted(unknown)}")
    if "spec" not in spec:
        raise ValueError(f"cron {cron_id!r}: no spec")
    policies = _cron_policies(spec.get("jitter"), spec.get("overlap"), spec.get("catchup_window"))
    policies.update(
        _cron_bounds(
            spec.get("start_at"),
            spec.get("end_at"),
            spec.get("max_runs"),
            bool(spec.get("delete_after_end", False)),
        )
    )
    if spec.get("endpoint") is not None:
        policies["endpoint"] = spec["endpoint"]
    policies.update(_options(**{name: spec.get(name) for name in _OPTION_KEYS}))
    return {"id": cron_id, "spec": spec["spec"], **policies}


def _cron_policies(
    jitter: float | dt.timedelta | None,
    overlap: str | None,
    catchup_window: float | dt.timedelta | None = None,
) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    if jitter is not None:
        policies["jitter"] = _seconds(jitter)
    if overlap is not None:
        policies["overlap"] = overlap
    if catchup_window is not None:
        policies["catchup_window"] = _seconds(catchup_window)
    return policies


def _cron_bounds(
    start_at: dt.datetime | str | None,
    end_at: dt.datetime | str | None,
    max_runs: int | None,
    delete_after_end: bool,
) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if start_at is not None:
        bounds["start_at"] = _time_param(start_at)
    if end_at is not None:
        bounds["end_at"] = _time_param(end_at)
    if max_runs is not None:
        bounds["max_runs"] = max_runs
    if delete_after_end:
        bounds["delete_after_end"] = True
    return bounds


def _seconds(value: float | dt.timedelta) -> float | int:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    return int(seconds) if float(seconds).is_integer() else seconds


def _time_param(value: dt.datetime | str | None) -> str | None:
    return format_time(value) if isinstance(value, dt.datetime) else value


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC (`...Z`); a naive datetime is a ValueError, since its zone is a guess."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"A naive datetime has no time zone: {value!r}; give tzinfo.")
    try:
        in_utc = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{value!r} cannot be expressed in UTC.") from None
    return in_utc.replace(tzinfo=None).isoformat() + "Z"


def _parse_time(text: str) -> dt.datetime:
    """An aware datetime from RFC 3339; fractions beyond microseconds are dropped."""
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(f"Not an RFC 3339 timestamp: {text!r}")
    fraction = f".{(match['fraction'] + '00000')[:6]}" if match["fraction"] else ""
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    return dt.datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{offset}")


def _optional_time(value: str | None) -> dt.datetime | None:
    return None if value is None else _parse_time(value)


def _attempt(data: dict[str, Any]) -> Attempt:
    return Attempt(
        attempt=data["attempt"],
        started_at=_parse_time(data["started_at"]),
        duration_ms=data["duration_ms"],
        status_code=data.get("status_code"),
        error=data.get("error"),
        response_excerpt=data.get("response_excerpt"),
        error_kind=data.get("error_kind"),
    )


def _job(data: dict[str, Any]) -> Job:
    history = data.get("history")
    return Job(
        id=data["id"],
        cron_id=data.get("cron_id"),
        state=data["state"],
        body=data.get("body"),
        timestamp=_parse_time(data["timestamp"]),
        next_attempt_at=_parse_time(data["next_attempt_at"]),
        attempts=data["attempts"],
        max_attempts=data["max_attempts"],
        last_status=data.get("last_status"),
        last_error=data.get("last_error"),
        created_at=_parse_time(data["created_at"]),
        updated_at=_parse_time(data["updated_at"]),
        finished_at=_optional_time(data.get("finished_at")),
        history=None if history is None else tuple(_attempt(item) for item in history),
        endpoint=data.get("endpoint", "default"),
        last_error_kind=data.get("last_error_kind"),
        cancel_requested_at=_optional_time(data.get("cancel_requested_at")),
        flow_key=data.get("flow_key"),
        debounce_key=data.get("debounce_key"),
        debounce_until=_optional_time(data.get("debounce_until")),
        **_shown_options(data),
    )


def _shown_options(data: dict[str, Any]) -> dict[str, Any]:
    """A job's or a cron's request options as the server shows them (its defaults from a server
    that shows none)."""
    retry = data.get("retry")
    timeout = data.get("timeout")
    return {
        "path": data.get("path"),
        "method": str(data.get("method") or "POST"),
        "headers": dict(data.get("headers") or {}),
        "timeout": None if timeout is None else float(timeout),
        "retry": None if retry is None else Retry(float(retry["base"]), float(retry["cap"])),
        "callback": data.get("callback"),
    }


def _flow(data: dict[str, Any]) -> Flow:
    fields = {field.name for field in dataclasses.fields(Flow)}
    known = {name: value for name, value in data.items() if name in fields}
    return Flow(**{**known, "used_at": _parse_time(data["used_at"])})


def _page(data: dict[str, Any]) -> Page:
    return Page(jobs=tuple(_job(item) for item in data["jobs"]), next_cursor=data["next_cursor"])


def _cron(data: dict[str, Any]) -> Cron:
    return Cron(
        id=data["id"],
        spec=data["spec"],
        timezone=data["timezone"],
        paused=bool(data.get("paused", False)),
        next_fire_at=_optional_time(data.get("next_fire_at")),
        last_fire_at=_optional_time(data.get("last_fire_at")),
        last_state=data.get("last_state"),
        last_status=data.get("last_status"),
        created_at=_optional_time(data.get("created_at")),
        updated_at=_parse_time(data["updated_at"]),
        jitter=float(data.get("jitter", 0.0)),
        overlap=str(data.get("overlap", "allow")),
        endpoint=data.get("endpoint", "default"),
        catchup_window=data.get("catchup_window"),
        state=str(data.get("state", "paused" if data.get("paused") else "active")),
        start_at=_optional_time(data.get("start_at")),
        end_at=_optional_time(data.get("end_at")),
        max_runs=data.get("max_runs"),
        runs=int(data.get("runs", 0)),
        runs_left=data.get("runs_left"),
        ended_at=_optional_time(data.get("ended_at")),
        delete_after_end=bool(data.get("delete_after_end", False)),
        **_shown_options(data),
    )
