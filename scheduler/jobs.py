"""The scheduler's domain objects; pure data, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import http
import itertools
import json
import os
import re
import threading
import time
from typing import Any

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_DIGIT_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
_NEXT_DIGIT = dict(itertools.pairwise(_ALPHABET))
ID_LENGTH = 26
# The endpoint named by ENDPOINT, which jobs and crons go to unless they name another.
DEFAULT_ENDPOINT = "default"
FAILED_EVENT = "job.failed"
# Ids a client chooses (cron ids, idempotency-free names): letters, digits and `_.:-`, never only
# dots (they would be path segments).
NAME_MAX_LENGTH = 128
NAME_PATTERN = re.compile(rf"(?!\.+\Z)[A-Za-z0-9_.:-]{{1,{NAME_MAX_LENGTH}}}\Z")


# An id is 10 digits of its creation time in milliseconds, then 16 random digits (80 bits).
_TIME_DIGITS = 10
_RANDOM_DIGITS = ID_LENGTH - _TIME_DIGITS
# Each byte becomes the digit of its low five bits: uniform, as 256 is a multiple of 32.
_DIGIT_OF_BYTE = bytes.maketrans(bytes(range(256)), _ALPHABET.encode() * 8)
# Random digits for this many ids are drawn with one os.urandom call (a system call).
_RANDOM_BATCH = 256

_id_lock = threading.Lock()
_last_id = ""
_random_digits = ""
_random_used = 0
_time_prefix = (-1, "")


def _forget_random_digits() -> None:
    # A forked child using the parent's unused digits would repeat the parent's next ids; and
    # counting up from the parent's last id, both would make its successor within a millisecond.
    global _last_id, _random_digits, _random_used
    _last_id, _random_digits, _random_used = "", "", 0


os.register_at_fork(after_in_child=_forget_random_digits)


def _time_digits(millisecond: int) -> str:
    """The 10 digits of `millisecond`, two at a time (ids are made thousands of times a second)."""
    return (
        _DIGIT_PAIRS[millisecond >> 40 & 1023]
        + _DIGIT_PAIRS[millisecond >> 30 & 1023]
        + _DIGIT_PAIRS[millisecond >> 20 & 1023]
        + _DIGIT_PAIRS[millisecond >> 10 & 1023]
        + _DIGIT_PAIRS[millisecond & 1023]
    )


def _successor(job_id: str) -> str:
    """The id whose value is one more than `job_id`'s."""
    stem = job_id.rstrip(_ALPHABET[-1])
    return stem[:-1] + _NEXT_DIGIT[stem[-1]] + _ALPHABET[0] * (len(job_id) - len(stem))


# Kept rather than python-ulid's `str(ulid.ULID()).lower()`, which writes the same format: timeit,
# 1e6 calls each on CPython 3.11.7, 0.69 us per id here against 2.95 us (python-ulid 4.1.0, an
# os.urandom call per id), about 1% of a 0.2 ms insert and every job takes one. python-ulid also
# starts from fresh random bits when the clock steps back, so its next id sorts before the last.
def new_job_id() -> str:
    """A 26-character id that sorts by creation time (48-bit milliseconds + 80 random bits).

    Within one process ids strictly increase, even within a millisecond (the random part then
    counts up), so a batch lists in the order it was given.
    """
    global _last_id, _random_digits, _random_used, _time_prefix
    with _id_lock:
        if _random_used == len(_random_digits):
            drawn = os.urandom(_RANDOM_DIGITS * _RANDOM_BATCH)
            _random_digits, _random_used = drawn.translate(_DIGIT_OF_BYTE).decode("ascii"), 0
        start = _random_used
        _random_used += _RANDOM_DIGITS
        millisecond = int(time.time() * 1000)
        if millisecond != _time_prefix[0]:
            _time_prefix = (millisecond, _time_digits(millisecond))
        job_id = _time_prefix[1] + _random_digits[start:_random_used]
        # Digits sort as their values do, so comparing the text compares the numbers.
        if job_id <= _last_id:
            job_id = _successor(_last_id)
        _last_id = job_id
    return job_id


def job_payload(job_id: str, body: str) -> str:
    """The message delivered for a job: its id, and its body's stored JSON text spliced in."""
    return '{"id": ' + json.dumps(job_id) + ', "cron_id": "", "body": ' + body + "}"


# What a job's message adds to its body, in bytes: a body of SCHEDULER_MAX_BODY_BYTES less this
# is delivered in a message of SCHEDULER_MAX_BODY_BYTES.
ENVELOPE_BYTES = len(job_payload("0" * ID_LENGTH, "").encode("utf-8"))


@dataclasses.dataclass(frozen=True)
class Flow:
    """A flow-control key and the limits it asks for (None: none). Every job that shares the key
    within its endpoint shares the limits written last."""

    key: str
    rate_limit: float | None = None
    max_in_flight: int | None = None


@dataclasses.dataclass(frozen=True)
class Debounce:
    """A debounce key (within the job's endpoint): while a job inserted with it waits and was
    never claimed, another insert with the key updates that job, due `period` seconds after the
    latest insert but never later than `max_wait` seconds after the first (None: no limit)."""

    key: str
    period: float
    max_wait: float | None = None


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    """How one job's request differs from its endpoint's default: a `path` appended to the
    endpoint's URL, a `method` (None: POST), `headers` as (name, value) pairs in the order given,
    the whole attempt's `timeout` in seconds (None: the dispatcher's attempt deadline), and its
    own backoff (`retry_base`, `retry_cap`; None: the dispatcher's). http_options.py holds the
    rules each is checked against."""

    path: str | None = None
    method: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    retry_base: float | None = None
    retry_cap: float | None = None

    @property
    def binds_request(self) -> bool:
        """Whether its request differs from the endpoint's default POST, so that the signature
        must bind the method and path (signing's v2) rather than the body alone."""
        return self.path is not None or self.method not in (None, "POST")

    def to_json(self) -> dict[str, Any] | None:
        """As stored in jobs.http_options: only what is set; None when nothing is."""
        stored: dict[str, Any] = {}
        if self.path is not None:
            stored["path"] = self.path
        if self.method is not None:
            stored["method"] = self.method
        if self.headers:
            stored["headers"] = [list(pair) for pair in self.headers]
        if self.timeout is not None:
            stored["timeout"] = self.timeout
        if self.retry_base is not None:
            stored["retry"] = {"base": self.retry_base, "cap": self.retry_cap}
        return stored or None

    @classmethod
    def from_json(cls, stored: Any) -> HttpOptions | None:
        """The options stored by to_json (None for NULL)."""
        if not stored:
            return None
        retry = stored.get("retry") or {}
        return cls(
            path=stored.get("path"),
            method=stored.get("method"),
            headers=tuple((name, value) for name, value in stored.get("headers", ())),
            # Stored numbers read back as Decimal (jsonb.read) unless whole.
            timeout=_seconds(stored.get("timeout")),
            retry_base=_seconds(retry.get("base")),
            retry_cap=_seconds(retry.get("cap")),
        )


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A job to store; `body` is its JSON text, as jsonb.encode writes it. It is due at `run_at`,
    or `delay` seconds after it is stored by the database's clock when `run_at` is None."""

    id: str
    body: str
    run_at: dt.datetime | None
    max_attempts: int
    delay: float | None = None
    endpoint: str = DEFAULT_ENDPOINT
    # The W3C trace context of the request that scheduled it (tracing.stored_context).
    traceparent: str | None = None
    tracestate: str | None = None
    flow: Flow | None = None
    # Set on a debounced insert, whose `delay` is then the debounce's period.
    debounce: Debounce | None = None
    http_options: HttpOptions | None = None
    # The endpoint told when the job ends delivered or failed (docs/api.md, "Callbacks").
    callback: str | None = None

    def due_within(self, seconds: float, now: dt.datetime) -> bool:
        """Whether it is due less than `seconds` after `now`."""
        if self.run_at is None:
            return (self.delay or 0.0) < seconds
        return self.run_at < now + dt.timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True)
class JobEdit:
    """What an edit of a waiting job changes; a field left None (`set_flow` False) stays as it
    is. `body` is JSON text, as in NewJob; the due time is `run_at`, or `delay` seconds after the
    edit by the database's clock; `flow` None with `set_flow` takes the job's key away."""

    body: str | None = None
    run_at: dt.datetime | None = None
    delay: float | None = None
    max_attempts: int | None = None
    endpoint: str | None = None
    set_flow: bool = False
    flow: Flow | None = None
    # The HTTP options it changes, as HttpOptions.to_json stores them (None: back to the
    # default); those not named stay. Its callback changes when `set_callback`.
    http_changes: dict[str, Any] = dataclasses.field(default_factory=dict)
    set_callback: bool = False
    callback: str | None = None


@dataclasses.dataclass(frozen=True)
class CronTick:
    """One fire of a cron revision, to be recorded as job `job_id` due at `run_at`."""

    revision: int
    job_id: str
    run_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class CronDefinition:
    id: str
    spec: str
    timezone: str
    endpoint: str = DEFAULT_ENDPOINT
    jitter: float = 0.0
    overlap: str = "allow"
    # The flow-control key every run of it carries, with its limits.
    flow: Flow | None = None
    # Seconds a missed tick is still delivered late; None: the dispatcher's default.
    catchup_window: float | None = None
    # Its lifecycle: no tick before start_at or after end_at, none after max_runs runs; once
    # ended, removed if delete_after_end.
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    max_runs: int | None = None
    delete_after_end: bool = False
    # What each run carries, as a job's (NewJob).
    http_options: HttpOptions | None = None
    callback: str | None = None


@dataclasses.dataclass(frozen=True)
class CronJob:
    id: str
    spec: str
    timezone: str
    revision: int
    last_fire_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime
    paused: bool = False
    endpoint: str = DEFAULT_ENDPOINT
    jitter: float = 0.0
    overlap: str = "allow"
    flow_key: str | None = None
    flow_rate: float | None = None
    flow_max_in_flight: int | None = None
    catchup_window: float | None = None
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    max_runs: int | None = None
    runs: int = 0
    ended_at: dt.datetime | None = None
    delete_after_end: bool = False
    http_options: HttpOptions | None = None
    callback: str | None = None

    @property
    def state(self) -> str:
        """`ended` for good, `paused`, or `active` (which includes waiting for its start_at)."""
        if self.ended_at is not None:
            return "ended"
        return "paused" if self.paused else "active"

    @property
    def runs_left(self) -> int | None:
        """Runs before it ends by max_runs; None without one."""
        return None if self.max_runs is None else max(0, self.max_runs - self.runs)

    @property
    def flow(self) -> Flow | None:
        """The flow-control key its runs carry, with its limits (CronDefinition.flow)."""
        if self.flow_key is None:
            return None
        return Flow(self.flow_key, self.flow_rate, self.flow_max_in_flight)


def schedule_timer_id(spec: str) -> str:
    """The APScheduler job id of the one timer every running cron with `spec` shares (as
    crons.sql `timer_id` computes it)."""
    return "schedule:" + hashlib.md5(spec.encode(), usedforsecurity=False).hexdigest()


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A claimed job, ready to send; `body` is the stored JSON text, `claim_token` fences the
    outcome of this claim. `event` is set on a notification, whose body is the whole message;
    `held_back` is how long a pause or a limit kept it past its due time (seconds); `starts_in`,
    how many seconds after its claim it is due, when it was claimed ahead of its time."""

    id: str
    cron_id: str | None
    body: str | None
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    claim_token: int
    endpoint: str = DEFAULT_ENDPOINT
    event: str | None = None
    held_back: float | None = None
    due_at: dt.datetime | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    starts_in: float = 0.0
    http_options: HttpOptions | None = None
    callback: str | None = None


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """A job as stored, for reading back."""

    id: str
    cron_id: str | None
    body: Any
    run_at: dt.datetime
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    endpoint: str = DEFAULT_ENDPOINT
    last_error_kind: str | None = None
    # When a cancel was first asked for. One that came while the job was being delivered is
    # pending until that attempt ends: the job then ends cancelled, or delivered.
    cancel_requested_at: dt.datetime | None = None
    flow_key: str | None = None
    # Debounced jobs only: the key, and the latest time a debounce may move the job to.
    debounce_key: str | None = None
    debounce_until: dt.datetime | None = None
    event: str | None = None
    http_options: HttpOptions | None = None
    callback: str | None = None

    @property
    def editable(self) -> bool:
        """Whether an edit may change it: a job inserted through the API that waits to be sent
        (a cron's run and a failure notification are made by the scheduler, and are not)."""
        return self.state == "scheduled" and self.cron_id is None and self.event is None

    @property
    def cancellable(self) -> bool:
        """Whether a cancel would change it (jobs.sql `cancellable`)."""
        delivering = self.state == "delivering"
        return self.state == "scheduled" or (delivering and self.cancel_requested_at is None)


@dataclasses.dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    error_kind: str | None = None


@dataclasses.dataclass(frozen=True)
class CronStatus:
    """A cron with the outcome of its latest run, for listings."""

    cron: CronJob
    last_state: str | None
    last_status: int | None


def format_utc(moment: dt.datetime, timespec: str = "milliseconds") -> str:
    """RFC 3339 in UTC with a `Z`, as every time the scheduler sends or logs is written."""
    return moment.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


# `skipped`: a cron tick recorded but never sent, because its cron's overlap policy is `skip`
# and an earlier run was not finished. `missed`: a cron tick recorded but never sent, because it
# was older than its cron's catch-up window when it was recorded (no leader ran, or it was behind).
JOB_STATES = ("scheduled", "delivering", "delivered", "failed", "cancelled", "skipped", "missed")
# What a cron tick does while an earlier run of the cron is unfinished: go out anyway, or be
# recorded as skipped. The first is the default.
OVERLAP_POLICIES = ("allow", "skip")
# A cron's state (CronJob.state): `ended` once past its end_at or its max_runs, for good.
CRON_STATES = ("active", "paused", "ended")


# Why an attempt failed, recorded with it and as its job's last_error_kind: the dashboard groups
# failed jobs by it, since the error text holds addresses. An answer outside 2xx is
# `http_<status>` (http_error_kind); any other failure is one of these.
ERROR_KINDS = {
    "timeout": "No answer in time: the connect or read timeout, or the attempt's deadline, "
    "ran out.",
    "refused": "The endpoint's host refused the connection: nothing listens on that port.",
    "dns": "The endpoint's host name did not resolve.",
    "tls": "The TLS handshake failed: an untrusted or expired certificate, one for another "
    "name, or no TLS on that port.",
    "connection": "The connection failed otherwise: unreachable, reset, or closed before an "
    "answer.",
    "invalid_response": "The endpoint's answer was not valid HTTP (a malformed status line or "
    "headers).",
    "not_sent": "Not sent: the job's endpoint is not configured in the dispatchers "
    "(SCHEDULER_ENDPOINTS).",
    "internal": "The dispatcher failed while sending it (its log says why).",
}
HTTP_ERROR_KIND_PREFIX = "http_"
_HTTP_ERROR_KIND = re.compile(r"http_([0-9]{3})\Z")


def http_error_kind(status: int) -> str:
    """The kind of an answer with this status outside 2xx: `http_503`."""
    return f"{HTTP_ERROR_KIND_PREFIX}{status}"


def is_error_kind(kind: str) -> bool:
    """Whether a failure can be recorded as `kind` (to check a kind read from a request)."""
    return kind in ERROR_KINDS or _HTTP_ERROR_KIND.match(kind) is not None


def describe_error_kind(kind: str | None) -> str:
    """A sentence for people; None is a failure recorded before kinds were (by an earlier
    version of the dispatcher, during a rolling upgrade)."""
    if kind is None:
        return "Not classified: recorded by an earlier version of the dispatcher."
    match = _HTTP_ERROR_KIND.match(kind)
    if match is None:
        return ERROR_KINDS.get(kind, f"Unknown kind {kind!r}.")
    status = int(match[1])
    try:
        phrase = f" {http.HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    return f"The endpoint answered HTTP {status}{phrase}."
