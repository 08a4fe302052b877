"""The dispatcher's Prometheus metrics, served on a port of their own (SCHEDULER_METRICS_PORT) to
scrapers that send the secret, as the web's /metrics is.

Kept apart from web_metrics so that the worker never imports flask and the web never imports
requests. The dispatcher is a single process, so prometheus_client's default registry is enough.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from typing import Any
from wsgiref import simple_server

import prometheus_client

from scheduler import credentials

logger = logging.getLogger(__name__)

OUTCOMES = ("delivered", "retry", "failed")
# Milliseconds when healthy; the long tail is a dispatcher that was down, saturated or catching up.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Up to the default connect + read timeouts (35 s) and a little beyond.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DELIVERIES = prometheus_client.Counter(
    "scheduler_deliveries",
    "Delivery attempts whose outcome was recorded, by outcome (delivered, retry, failed).",
    ["outcome"],
)
DELIVERY_DURATION = prometheus_client.Histogram(
    "scheduler_delivery_duration_seconds",
    "HTTP round trip of each delivery attempt, failed ones included.",
    buckets=DURATION_BUCKETS,
)
FIRING_LATENESS = prometheus_client.Histogram(
    "scheduler_firing_lateness_seconds",
    "Time from a job's due time to the start of its first delivery attempt.",
    buckets=LATENESS_BUCKETS,
)
DUE_JOBS = prometheus_client.Gauge(
    "scheduler_due_jobs",
    "Jobs due and waiting for a delivery slot, counted at each reconcile; 0 on a standby.",
)
DISPATCHER_ACTIVE = prometheus_client.Gauge(
    "scheduler_dispatcher_active", "1 while this dispatcher leads, 0 while it stands by."
)
CRON_TICKS = prometheus_client.Counter(
    "scheduler_cron_ticks", "Cron ticks recorded as jobs, catch-up ticks included."
)

# Every outcome is exported from the start, so a rate over it is 0 rather than absent.
for _outcome in OUTCOMES:
    DELIVERIES.labels(_outcome)


class MetricsServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A line on stderr per scrape would be noise; refused scrapes are logged as warnings."""


def serve(port: int, secrets: tuple[str, ...], public: bool = False) -> MetricsServer | None:
    """Serve the metrics on 0.0.0.0:`port` from a daemon thread; None when off (0) or impossible.

    Not prometheus_client.start_http_server: it serves its own app, with no place for the check
    of the secret (skipped when `public`). A port already taken (a second dispatcher on the same
    host) costs the metrics, never the dispatcher: it logs a warning and carries on.
    """
    if port == 0:
        return None
    app = credentials.MetricsGuard(prometheus_client.make_wsgi_app(), secrets, public)
    try:
        server = simple_server.make_server("0.0.0.0", port, app, MetricsServer, _QuietHandler)
    except OSError as exc:
        logger.warning(
            "cannot serve metrics on port %d (%s); running without them",
            port,
            exc,
            extra={"action": "metrics_unavailable", "port": port},
        )
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics served on port %d", port, extra={"action": "metrics_listen", "port": port})
    return server
