"""Send one delivery over HTTP and describe what happened; never raises for a failed send."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time

import requests

from scheduler import config, dispatch_metrics, jobs, signing

EXCERPT_LENGTH = 512
USER_AGENT = "scheduler-dispatch"
_local = threading.local()


@dataclasses.dataclass(frozen=True)
class Outcome:
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def build_payload(delivery: jobs.Delivery) -> bytes:
    """The seed's message: a job carries its id and body, a cron fire its cron id and no body."""
    if delivery.cron_id is not None:
        head = '{"id": "", "cron_id": ' + json.dumps(delivery.cron_id) + ', "body": null}'
        return head.encode("utf-8")
    # The body is the database's JSON text already; splicing it avoids a parse and re-dump.
    body = delivery.body if delivery.body is not None else "null"
    return jobs.job_payload(delivery.id, body).encode("utf-8")


def build_headers(
    settings: config.Settings, delivery: jobs.Delivery, payload: bytes
) -> dict[str, str]:
    """Headers of one attempt; the signature covers `payload` and the moment it is sent."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.HEADER: signing.sign(payload, settings.secrets),
        "Scheduler-Delivery-Id": delivery.id,
        "Scheduler-Attempt": str(delivery.attempts),
        "Scheduler-Scheduled-At": delivery.run_at.astimezone(dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    if settings.send_raw_secret:
        headers["Scheduler-Secret"] = settings.secret
    return headers


def _session(endpoint: str) -> requests.Session:
    # One pooled session per sending thread: requests.Session is not thread-safe to share.
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        # requests reads the proxy variables and looks for the CA bundle on disk on every
        # request; a running dispatcher's environment does not change, so read them once.
        environment = session.merge_environment_settings(endpoint, {}, None, None, None)
        session.proxies.update(environment["proxies"])
        session.verify = environment["verify"]
        session.trust_env = False
        _local.session = session
    return session


def deliver(settings: config.Settings, delivery: jobs.Delivery) -> Outcome:
    """POST the delivery to ENDPOINT with connect and read timeouts."""
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    lateness = (started_at - delivery.run_at).total_seconds()
    # A retry is late by design (its backoff), and a job run ahead of its time on request is not
    # late at all: only a first attempt at or after its due time says how late we fire.
    if delivery.attempts == 1 and lateness >= 0:
        dispatch_metrics.FIRING_LATENESS.observe(lateness)
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    payload = build_payload(delivery)
    try:
        response = _session(settings.endpoint).post(
            settings.endpoint,
            data=payload,
            headers=build_headers(settings, delivery, payload),
            timeout=(settings.connect_timeout, settings.read_timeout),
            allow_redirects=False,
        )
        status_code = response.status_code
        excerpt = _excerpt(response)
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except requests.Timeout as exc:
        error = f"timeout: {type(exc).__name__}"
    except requests.ConnectionError as exc:
        error = f"connection failed: {_short(exc)}"
    except requests.RequestException as exc:
        error = f"request failed: {_short(exc)}"
    elapsed = time.monotonic() - start
    dispatch_metrics.DELIVERY_DURATION.observe(elapsed)
    duration_ms = int(elapsed * 1000)
    return Outcome(started_at, duration_ms, status_code, error, excerpt)


def _excerpt(response: requests.Response) -> str | None:
    """The start of the response body as text. Not `response.text`: without a charset in the
    answer's Content-Type it guesses the encoding from the whole body, which costs more than
    the delivery."""
    if not response.content:
        return None
    head = response.content[: EXCERPT_LENGTH * 4]
    try:
        text = head.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = head.decode("utf-8", errors="replace")
    return text[:EXCERPT_LENGTH]


def _short(exc: Exception) -> str:
    return str(exc)[:EXCERPT_LENGTH]
