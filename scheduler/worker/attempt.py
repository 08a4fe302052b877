"""Send one delivery over HTTP and describe what happened; never raises for a failed send.

An endpoint cannot hurt the dispatcher: the whole attempt has one deadline (watchdog.py), and
only an excerpt of the answer is read, so a huge or endless body costs neither memory nor time.
Whatever it answers is an answer: once a status line has arrived, nothing else the endpoint sends
(headers, charset, encoding, body) can turn it into an error of ours or lose it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator

import requests
import urllib3.exceptions

from scheduler import callbacks, config, http_options, jobs, policy, signing, tracing
from scheduler.worker import metrics, watchdog

EXCERPT_LENGTH = 512
# Statuses whose Retry-After header says when this delivery may be tried again.
RETRY_AFTER_STATUSES = (429, 503)
# Enough bytes for EXCERPT_LENGTH characters of UTF-8; the rest of an answer is never read.
EXCERPT_BYTES = EXCERPT_LENGTH * 4
USER_AGENT = "scheduler-dispatch"
# How much of an ignored Retry-After the attempt's error text quotes.
RETRY_AFTER_QUOTED = 40
# What PostgreSQL's text cannot hold: NUL, and surrogates (not encodable as UTF-8), which
# codecs such as utf-7 or unicode_escape produce from bytes an endpoint chose.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_local = threading.local()
_NO_OPTIONS = jobs.HttpOptions()
# The headers every attempt starts with, in the order a requests Session sent them: its
# defaults (Accept, Connection) with ours over them.
_FIXED_HEADERS = {
    **requests.utils.default_headers(),
    "User-Agent": USER_AGENT,
    # A compressed answer could inflate far beyond the excerpt read of it.
    "Accept-Encoding": "identity",
    "Content-Type": "application/json",
}
# Header values taken from a job or the configuration, checked as requests checked each one.
_CHECKED_HEADERS = (
    "Scheduler-Delivery-Id",
    "Scheduler-Secret",
    "Scheduler-Event",
    tracing.TRACESTATE_HEADER,
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    retry_after: float | None = None
    attempted: bool = True
    # One of jobs.ERROR_KINDS or jobs.http_error_kind(status); None when it succeeded.
    error_kind: str | None = None
    # Seconds late, as scheduler_firing_lateness_seconds observes it (firing_lateness).
    lateness: float | None = None
    # The answer as a callback tells it: only for a job with a callback that was answered.
    answer: callbacks.Answer | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def build_payload(delivery: jobs.Delivery) -> bytes:
    """The seed's message: a job carries its id and body, a cron fire its cron id and no body;
    a notification's body is the whole message."""
    if delivery.event is not None:
        return (delivery.body or "null").encode("utf-8")
    if delivery.cron_id is not None:
        head = '{"id": "", "cron_id": ' + json.dumps(delivery.cron_id) + ', "body": null}'
        return head.encode("utf-8")
    # The body is the database's JSON text already; splicing it avoids a parse and re-dump.
    body = delivery.body if delivery.body is not None else "null"
    return jobs.job_payload(delivery.id, body).encode("utf-8")


def build_headers(
    settings: config.Settings,
    delivery: jobs.Delivery,
    payload: bytes,
    endpoint: config.Endpoint | None = None,
    target: str | None = None,
) -> dict[str, str]:
    """Headers of one attempt, as sent and in their order, signed with the endpoint's secrets;
    the signature covers `payload` and the moment it is sent, and for a job whose method or
    path is its own (HttpOptions.binds_request) the method and the request `target` too
    (signing's v2). The job's own headers replace ours of the same name (User-Agent, Accept);
    those it may not set were refused when it was stored. Only the default endpoint may get the
    raw secret: a named endpoint must not learn what would let it act as another service."""
    endpoint = endpoint or settings.endpoints[config.DEFAULT_ENDPOINT]
    headers = dict(_FIXED_HEADERS)
    options = delivery.http_options
    if options is not None and options.headers:
        own = {name.lower() for name, _ in options.headers}
        headers = {name: value for name, value in headers.items() if name.lower() not in own}
        headers.update(options.headers)
    if options is not None and options.binds_request:
        method = options.method or http_options.DEFAULT_METHOD
        assert target is not None, "a request of its own is signed with its target"
        headers[signing.HEADER] = signing.sign_request(method, target, payload, endpoint.secrets)
    else:
        headers[signing.HEADER] = signing.sign(payload, endpoint.secrets)
    headers["Scheduler-Delivery-Id"] = delivery.id
    headers["Scheduler-Attempt"] = str(delivery.attempts)
    headers["Scheduler-Scheduled-At"] = jobs.format_utc(delivery.run_at)
    if settings.send_raw_secret and endpoint.name == config.DEFAULT_ENDPOINT:
        headers["Scheduler-Secret"] = settings.secret
    if delivery.event is not None:
        headers["Scheduler-Event"] = delivery.event
    headers.update(tracing.delivery_headers(delivery.traceparent, delivery.tracestate))
    headers["Content-Length"] = str(len(payload))
    return headers


def prepare(settings: config.Settings) -> None:
    """Build what every sending thread's adapter shares (the TLS context) before the first
    delivery, so that none of them waits for it."""
    _sender(settings)


class _Sender:
    """One sending thread's way to the endpoints: requests' adapter, given each request ready to
    send. Through a Session, every request merged environment, proxy, cookie and hook settings
    that never change here, and prepared its URL and headers again; its answers' cookies went to
    a jar that kept none, and it worked out where a redirect pointed (reading the whole body of a
    3xx) only to follow none. The adapter alone does what is left: it picks the connection pool
    (through a proxy or not), verifies TLS, sends, and turns urllib3's errors into requests'."""

    def __init__(self, default_url: str, endpoint_urls: Iterable[str] = ()) -> None:
        # requests reads the proxy variables and looks for the CA bundle on disk for each
        # request; a running dispatcher's environment does not change, so read them once.
        environment = requests.Session().merge_environment_settings(
            default_url, {}, None, None, None
        )
        verify = environment["verify"]
        self.adapter = watchdog.WatchedAdapter(
            ca_bundle=verify if isinstance(verify, str) else None
        )
        self.proxies = dict(environment["proxies"])
        self._endpoint_urls = frozenset(endpoint_urls)
        self._urls: dict[str, str] = {}

    def send(
        self,
        url: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: tuple[float, float],
        method: str = http_options.DEFAULT_METHOD,
        own_headers: tuple[tuple[str, str], ...] = (),
    ) -> requests.Response:
        """Send `payload` to `url` (as prepared_url prepares it) with exactly `headers`; the
        answer is streamed, never redirected."""
        request = requests.PreparedRequest()
        request.method = method
        request.url = self.prepared_url(url)
        for name in _CHECKED_HEADERS:
            value = headers.get(name)
            if value is not None:
                requests.utils.check_header_validity((name, value))
        # A job's own headers were checked when stored; again here, as requests checks them.
        for pair in own_headers:
            requests.utils.check_header_validity(pair)
        request.headers = requests.structures.CaseInsensitiveDict(headers)
        request.body = payload
        return self.adapter.send(
            request, stream=True, timeout=timeout, verify=True, proxies=self.proxies
        )

    def prepared_url(self, url: str) -> str:
        """`url` as requests sends it (quoted as it quotes). An endpoint's own URL is prepared
        once; one with a job's path is prepared each time (remembering them would grow without
        bound)."""
        prepared = self._urls.get(url)
        if prepared is not None:
            return prepared
        request = requests.PreparedRequest()
        request.prepare_url(url, None)
        assert request.url is not None
        if url in self._endpoint_urls:
            self._urls[url] = request.url
        return request.url


def _sender(settings: config.Settings) -> _Sender:
    # One per sending thread: a pool of connections per thread, as with one Session each.
    sender: _Sender | None = getattr(_local, "sender", None)
    if sender is None:
        sender = _local.sender = _Sender(
            settings.endpoints[config.DEFAULT_ENDPOINT].url,
            [endpoint.url for endpoint in settings.endpoints.values()],
        )
    return sender


def deadline(settings: config.Settings, delivery: jobs.Delivery) -> float:
    """Seconds the whole attempt may take: the job's own timeout (never beyond this dispatcher's
    SCHEDULER_MAX_TIMEOUT), else settings.attempt_deadline."""
    options = delivery.http_options
    if options is None or options.timeout is None:
        return settings.attempt_deadline
    return min(options.timeout, settings.max_timeout)


def _timeouts(settings: config.Settings, delivery: jobs.Delivery) -> tuple[float, float]:
    """urllib3's connect and read timeouts: the settings', or within a job's own timeout."""
    options = delivery.http_options
    if options is None or options.timeout is None:
        return settings.connect_timeout, settings.read_timeout
    whole = deadline(settings, delivery)
    return min(settings.connect_timeout, whole), whole


def deliver(
    settings: config.Settings, delivery: jobs.Delivery, guard: watchdog.Watchdog
) -> Outcome:
    """Send the delivery to its endpoint (with the job's own method, path, headers and
    timeout); `guard` ends it at its deadline. A job whose endpoint is not configured here is
    not sent (`attempted` false). A job with a callback keeps what its answer said."""
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    endpoint = settings.endpoints.get(delivery.endpoint)
    if endpoint is None:
        unknown = f"endpoint {delivery.endpoint!r} is not configured; not sent"
        return Outcome(started_at, 0, None, unknown, None, attempted=False, error_kind="not_sent")
    lateness = _observe_lateness(delivery, started_at)
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    kind: str | None = None
    retry_after: float | None = None
    ignored: str | None = None
    answer: callbacks.Answer | None = None
    payload = build_payload(delivery)
    options = delivery.http_options or _NO_OPTIONS
    sender = _sender(settings)
    url = sender.prepared_url(http_options.join_url(endpoint.url, options.path))
    target = _target(url) if options.binds_request else None
    limit = deadline(settings, delivery)
    with guard.watch(limit) as watch:
        try:
            with sender.send(
                url,
                payload,
                build_headers(settings, delivery, payload, endpoint, target),
                _timeouts(settings, delivery),
                options.method or http_options.DEFAULT_METHOD,
                options.headers,
            ) as response:
                status_code = response.status_code
                if status_code in RETRY_AFTER_STATUSES:
                    header = response.headers.get("Retry-After")
                    retry_after = policy.parse_retry_after(header, dt.datetime.now(dt.UTC))
                    if header is not None and retry_after is None:
                        ignored = header
                wanted = callbacks.BODY_BYTES + 1 if delivery.callback else EXCERPT_BYTES
                head = _read_head(response, wanted)
                excerpt = _excerpt(head, response.encoding)
                if delivery.callback:
                    answer = callbacks.Answer(
                        status_code,
                        tuple(response.headers.items()),
                        head[: callbacks.BODY_BYTES],
                        more=len(head) > callbacks.BODY_BYTES,
                    )
        except requests.Timeout as exc:
            error, kind = f"timeout: {type(exc).__name__}", "timeout"
        except requests.RequestException as exc:
            error, kind = f"connection failed: {_short(exc)}", classify_error(exc)
        if watch.expired and status_code is None:
            error = f"timeout: no answer within {limit:g}s"
            kind = "timeout"
    if status_code is not None and not 200 <= status_code < 300:
        error, kind = f"HTTP {status_code}", jobs.http_error_kind(status_code)
        if ignored is not None:
            # The normal backoff applies; say why the endpoint's wish was not followed.
            error += f"; Retry-After ignored: {_quote(ignored, RETRY_AFTER_QUOTED)}"
    elapsed = time.monotonic() - start
    metrics.DELIVERY_DURATION.observe(elapsed)
    duration_ms = int(elapsed * 1000)
    return Outcome(
        started_at,
        duration_ms,
        status_code,
        None if error is None else _storable(error),
        excerpt,
        retry_after,
        error_kind=kind,
        lateness=lateness,
        answer=answer,
    )


def _target(url: str) -> str:
    """The request target of `url` as sent: its path, and its query when it has one."""
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def classify_error(exc: BaseException) -> str:
    """The jobs.ERROR_KINDS kind of a failed request, read from the exceptions it was caused
    by: requests wraps urllib3's, which wrap the socket's."""
    chain = list(_causes(exc))
    if any(isinstance(e, requests.exceptions.SSLError | ssl.SSLError) for e in chain):
        return "tls"
    if any(isinstance(e, urllib3.exceptions.NameResolutionError | socket.gaierror) for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    # urllib3's NewConnectionError is a ConnectTimeoutError too, for backward compatibility.
    if any(
        isinstance(e, requests.Timeout | TimeoutError | urllib3.exceptions.TimeoutError)
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in chain
    ):
        return "timeout"
    # RemoteDisconnected is a BadStatusLine too, but it is a connection closed without an answer.
    if any(
        isinstance(e, http.client.HTTPException | requests.exceptions.InvalidHeader)
        and not isinstance(e, http.client.RemoteDisconnected)
        for e in chain
    ):
        return "invalid_response"
    return "connection"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it: causes, contexts, urllib3's `reason` and
    exceptions passed as arguments (requests' ConnectionError holds urllib3's MaxRetryError)."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        for nearer in (current.__cause__, current.__context__, reason, *current.args):
            if isinstance(nearer, BaseException):
                pending.append(nearer)


def firing_lateness(delivery: jobs.Delivery, started_at: dt.datetime) -> float | None:
    """policy.firing_lateness of a delivery: from its due time, or a cron tick plus its jitter
    (whatever Scheduler-Scheduled-At says)."""
    due_at = delivery.due_at or delivery.run_at
    return policy.firing_lateness(due_at, started_at, delivery.held_back, delivery.attempts)


def _observe_lateness(delivery: jobs.Delivery, started_at: dt.datetime) -> float | None:
    if delivery.held_back is not None:
        metrics.HELD_BACK.observe(max(0.0, delivery.held_back))
    lateness = firing_lateness(delivery, started_at)
    if lateness is not None:
        metrics.FIRING_LATENESS.observe(lateness)
    return lateness


def _read_head(response: requests.Response, limit: int) -> bytes:
    """The start of the answer's body, at most `limit` bytes whatever its size; a body cut off
    (or ended by the deadline) keeps what arrived. The status line has already answered for the
    delivery, so no failure to read the body is raised."""
    head = b""
    try:
        # read1 returns what has arrived, so what came before a failure is kept; the rest of an
        # answer stays unread: closing the response drops the connection instead.
        while len(head) < limit:
            piece = response.raw.read1(limit - len(head), decode_content=True)
            if not piece:
                break
            head += piece
    except (
        urllib3.exceptions.HTTPError,  # a bad chunk, a Content-Length lie, a bad gzip body
        http.client.HTTPException,
        OSError,  # the watchdog's shutdown included
        ValueError,
    ):
        pass
    return head


def _excerpt(head: bytes, charset: str | None) -> str | None:
    """The start of the answer's body as text (at most EXCERPT_LENGTH characters)."""
    if not head:
        return None
    return decode_excerpt(head[:EXCERPT_BYTES], charset)[:EXCERPT_LENGTH]


def decode_excerpt(head: bytes, charset: str | None) -> str:
    """`head` as text PostgreSQL can store, in the charset the answer named (else UTF-8).

    Not `response.text`: without a charset it guesses the encoding from the whole body. And
    errors="replace" does not make every codec total: the endpoint may name one Python does not
    know, one from bytes to bytes (base64, zlib, hex), one that refuses "replace" (idna,
    punycode) or every input (undefined), or a name Python's lookup refuses (a NUL in it).
    Those read as UTF-8."""
    try:
        text = head.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError):  # UnicodeError is a ValueError
        text = head.decode("utf-8", errors="replace")
    return _storable(text)


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)


def _quote(value: str, limit: int) -> str:
    """`value` quoted, cut to `limit` characters, with its control characters escaped."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def _short(exc: Exception) -> str:
    return str(exc)[:EXCERPT_LENGTH]
