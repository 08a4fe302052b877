"""The dispatcher's Prometheus metrics, served on a port of their own (SCHEDULER_METRICS_PORT) to
scrapers that send the secret, as the web's /metrics is.

Kept apart from the web's metrics so that the worker never imports flask and the web never
imports requests. Each dispatcher is a process of its own, so prometheus_client's default
registry is enough; several on one host take successive ports.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from wsgiref import simple_server

import prometheus_client

from scheduler import credentials

logger = logging.getLogger(__name__)

OUTCOMES = ("delivered", "retry", "failed")
# Dispatchers started on one host with the same SCHEDULER_METRICS_PORT take the next free port
# of this many, so a scrape configuration can list a fixed range.
PORT_RANGE = 16
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
    "Jobs due and waiting for a delivery slot, counted by the leader at each reconcile; "
    "0 on the other dispatchers.",
)
LEADER = prometheus_client.Gauge(
    "scheduler_dispatcher_leader", "1 while this dispatcher leads (runs timers and maintenance)."
)
IN_FLIGHT = prometheus_client.Gauge(
    "scheduler_in_flight", "Deliveries this dispatcher has claimed and not yet recorded."
)
CLAIM_QUERIES = prometheus_client.Counter(
    "scheduler_claim_queries", "Claim statements this dispatcher ran (a look for due deliveries)."
)
CLAIM_SECONDS = prometheus_client.Counter(
    "scheduler_claim_seconds",
    "Seconds this dispatcher spent in claims (each claim's transaction, from its first statement "
    "to its commit); over deliveries, what a delivery costs in claiming.",
)
CLOCK_SKEW = prometheus_client.Gauge(
    "scheduler_clock_skew_seconds",
    "This host's clock minus the database's, measured at each heartbeat.",
)
THROTTLED_CLAIMS = prometheus_client.Counter(
    "scheduler_throttled_claims",
    "Claims of a paused or limited endpoint that left due deliveries behind, by endpoint.",
    ["endpoint"],
)
HELD_BACK = prometheus_client.Histogram(
    "scheduler_held_back_seconds",
    "Time from a due time to the claim, for deliveries of paused or limited endpoints.",
    buckets=LATENESS_BUCKETS,
)
ENDPOINT_IN_FLIGHT = prometheus_client.Gauge(
    "scheduler_endpoint_in_flight",
    "Deliveries in progress to each endpoint across every dispatcher, counted by the leader at "
    "each reconcile.",
    ["endpoint"],
)
ENDPOINT_DUE = prometheus_client.Gauge(
    "scheduler_endpoint_due",
    "Jobs due and waiting for each endpoint (held back by a pause or limit, or for a slot), "
    "counted by the leader at each reconcile.",
    ["endpoint"],
)
CRON_TICKS = prometheus_client.Counter(
    "scheduler_cron_ticks",
    "Cron ticks recorded as jobs, catch-up, skipped and missed ticks included.",
)
CRON_TICKS_SKIPPED = prometheus_client.Counter(
    "scheduler_cron_ticks_skipped",
    "Cron ticks recorded as skipped (overlap skip: an earlier run of the cron was unfinished).",
)
CRON_TICKS_MISSED = prometheus_client.Counter(
    "scheduler_cron_ticks_missed",
    "Cron ticks recorded as missed: older than their cron's catch-up window when recorded.",
)
RESCUED = prometheus_client.Counter(
    "scheduler_rescued_deliveries",
    "Deliveries re-queued because their dispatcher's heartbeat went stale or their lease ran out.",
)
PRUNED_JOBS = prometheus_client.Counter(
    "scheduler_pruned_jobs",
    "Jobs the leader deleted, with their attempts, once past their retention.",
)
PRUNE_SECONDS = prometheus_client.Counter(
    "scheduler_prune_seconds",
    "Seconds the leader spent deleting jobs past their retention; pruned jobs over it is the rate "
    "pruning runs at.",
)
THREAD_RESTARTS = prometheus_client.Counter(
    "scheduler_thread_restarts",
    "Restarts of each long-lived thread after it failed unexpectedly (worker/supervisor.py).",
    ["thread"],
)
THREAD_DOWN = prometheus_client.Gauge(
    "scheduler_thread_down",
    "1 while a long-lived thread is not running: restarting (waiting out its backoff) or dead "
    "(its process is stopping); 0 otherwise.",
    ["thread"],
)

# Every outcome is exported from the start, so a rate over it is 0 rather than absent; each
# child is looked up once, as labels() takes a lock and builds a key for every call.
DELIVERIES_BY_OUTCOME = {outcome: DELIVERIES.labels(outcome) for outcome in OUTCOMES}


class MetricsServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A line on stderr per scrape would be noise; refused scrapes are logged as warnings."""


def serve(
    port: int,
    secrets: tuple[str, ...],
    public: bool = False,
    start: Callable[[str, Callable[[], None]], object] | None = None,
) -> MetricsServer | None:
    """Serve the metrics on 0.0.0.0 at `port`, or the next free one of PORT_RANGE, from a thread
    `start(name, target)` starts (the dispatcher's supervisor; a plain daemon thread when None);
    the server (its `server_port`), or None when off (0) or impossible.

    Not prometheus_client.start_http_server: it serves its own app, with no place for the check
    of the secret (skipped when `public`). No free port costs the metrics, never the dispatcher:
    it logs a warning and carries on.
    """
    if port == 0:
        return None
    app = credentials.MetricsGuard(prometheus_client.make_wsgi_app(), secrets, public)
    last_error: OSError | None = None
    for candidate in range(port, min(port + PORT_RANGE, 65536)):
        try:
            server = simple_server.make_server(
                "0.0.0.0", candidate, app, MetricsServer, _QuietHandler
            )
        except OSError as exc:
            last_error = exc
            continue
        if start is None:
            threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        else:
            start("metrics", server.serve_forever)
        logger.info(
            "metrics served on port %d",
            candidate,
            extra={"action": "metrics_listen", "port": candidate},
        )
        return server
    logger.warning(
        "cannot serve metrics on ports %d to %d (%s); running without them",
        port,
        port + PORT_RANGE - 1,
        last_error,
        extra={"action": "metrics_unavailable", "port": port},
    )
    return None
