"""The leader's housekeeping: hand on what dead dispatchers hold, and keep history bounded."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable

from scheduler import config, tuning
from scheduler.storage import db, deliveries, flows, retention
from scheduler.worker import membership, metrics

logger = logging.getLogger(__name__)


def rescue_claims(database: db.Database, settings: config.Settings) -> int:
    """Re-queue the deliveries of dispatchers whose heartbeat is older than the leader timeout,
    and those whose lease ran out; how many."""
    rescued = deliveries.release_dead_claims(database, settings.leader_timeout)
    if rescued:
        logger.warning(
            "re-queued %d deliveries held by a dispatcher that stopped heartbeating",
            rescued,
            extra={"action": "rescue", "count": rescued},
        )
    return rescued


def prune_budget(settings: config.Settings) -> float:
    """Seconds one pass of pruning may take: tuning.PRUNE_SHARE of the maintenance tick."""
    return membership.heartbeat_interval(settings) * tuning.PRUNE_SHARE


def _prune_batches(
    prune_batch: Callable[[dt.datetime, int], int], before: dt.datetime, deadline: float
) -> tuple[int, bool]:
    """Batches until one comes back short or the deadline passes; (rows, whether none is left)."""
    deleted = 0
    while True:
        count = prune_batch(before, tuning.PRUNE_BATCH)
        deleted += count
        if count < tuning.PRUNE_BATCH:
            return deleted, True
        if time.monotonic() >= deadline:
            return deleted, False


def prune(
    database: db.Database,
    settings: config.Settings,
    now: dt.datetime,
    budget: float | None = None,
) -> None:
    """Delete history past its retention, batch after batch until none is left or `budget`
    seconds (prune_budget by default) have passed; each kind gets at least one batch."""
    started = time.monotonic()
    deadline = started + (prune_budget(settings) if budget is None else budget)
    finished, finished_done = _prune_batches(
        functools.partial(retention.prune_jobs, database, retention.FINISHED),
        now - dt.timedelta(seconds=settings.retention),
        deadline,
    )
    failed, failed_done = _prune_batches(
        functools.partial(retention.prune_jobs, database, retention.FAILED),
        now - dt.timedelta(seconds=settings.failed_retention),
        deadline,
    )
    metrics.PRUNED_JOBS.inc(finished + failed)
    metrics.PRUNE_SECONDS.inc(time.monotonic() - started)
    keys, keys_done = _prune_batches(
        functools.partial(retention.prune_idempotency_keys, database),
        now - dt.timedelta(seconds=settings.idempotency_ttl),
        deadline,
    )
    if not (finished_done and failed_done and keys_done):
        logger.info(
            "pruning used its %.1f s: deleted %d jobs and %d idempotency keys, and more are past "
            "their retention",
            time.monotonic() - started,
            finished + failed,
            keys,
            extra={"action": "prune_behind", "count": finished + failed},
        )
    flows.forget_idle_flows(database, settings.flow_key_idle)
    retention.prune_dispatchers(database, tuning.DEAD_DISPATCHER_SECONDS)
    retention.prune_delivery_minutes(
        database, now - dt.timedelta(seconds=tuning.DELIVERY_MINUTES_RETENTION_SECONDS)
    )
