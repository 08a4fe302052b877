"""Request counts and latencies of the web process, served at GET /metrics to scrapers that send
the secret (credentials.MetricsGuard), or to anyone with SCHEDULER_METRICS_PUBLIC=true.

Gunicorn runs several worker processes. gunicorn_conf sets PROMETHEUS_MULTIPROC_DIR in the master,
before any worker imports prometheus_client, so every worker writes its samples to files there and
a scrape answered by any one worker adds up all of them. Without the variable (the Flask test
client) the default single-process registry is used.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import prometheus_client
from flask import Flask, Response, g, request
from prometheus_client import multiprocess

from scheduler import config, credentials

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
# Werkzeug accepts any method name; an unknown one must not mint a new series per request.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = prometheus_client.Counter(
    "scheduler_http_requests",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
)
REQUEST_DURATION = prometheus_client.Histogram(
    "scheduler_http_request_duration_seconds",
    "Time from routing a request to its response being ready, by method and route pattern.",
    ["method", "route"],
)


def init_web_metrics(app: Flask, settings: config.Settings) -> None:
    """Count and time every request of `app`, and answer GET /metrics in front of it."""
    app.before_request(_start_timer)
    app.after_request(_count_request)
    metrics = credentials.MetricsGuard(
        prometheus_client.make_wsgi_app(_registry()), settings.secrets, settings.metrics_public
    )
    app.wsgi_app = MetricsMount(app.wsgi_app, metrics)  # type: ignore[method-assign]


def _registry() -> prometheus_client.CollectorRegistry:
    # prometheus_client chose where samples live from this variable when it was first imported;
    # exposition has to read from the same place.
    if not os.environ.get(MULTIPROC_VARIABLE):
        return prometheus_client.REGISTRY
    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    method = request.method if request.method in KNOWN_METHODS else "other"
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    _requests(method, route, response.status_code).inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        _duration(method, route).observe(time.perf_counter() - started)
    return response


# Finding a labelled child takes a lock and builds its key each time; methods, route patterns
# and status codes are few, so each child is looked up once.
@functools.cache
def _requests(method: str, route: str, status: int) -> prometheus_client.Counter:
    return REQUESTS.labels(method, route, str(status))


@functools.cache
def _duration(method: str, route: str) -> prometheus_client.Histogram:
    return REQUEST_DURATION.labels(method, route)


class MetricsMount:
    """Answers GET /metrics before Flask routes the request.

    Outside Flask's URL map on purpose: it has a secret check of its own, which also accepts the
    bearer token Prometheus sends, and the OpenAPI document, which must match the URL map route
    for route, describes the API only.
    Anything else at /metrics falls through to Flask (and its JSON 404).
    """

    def __init__(self, app: WSGIApplication, metrics: WSGIApplication) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH and environ.get("REQUEST_METHOD") in (
            "GET",
            "HEAD",
        ):
            return self.metrics(environ, start_response)
        return self.app(environ, start_response)
