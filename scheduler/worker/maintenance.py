"""The leader's housekeeping: hand on what dead dispatchers hold, and keep history bounded."""

from __future__ import annotations

import datetime as dt
import logging

from scheduler import config, store

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1000
PRUNE_BATCHES = 20
# Rows of dispatchers that vanished without leaving are kept this long, for a look afterwards.
DEAD_DISPATCHER_SECONDS = 3600.0
# The per-minute delivery rollup is kept this long: the dashboard shows its last hour.
DELIVERY_MINUTES_RETENTION_SECONDS = 24 * 3600.0


def rescue_claims(job_store: store.Store, epoch: int, settings: config.Settings) -> int:
    """Re-queue the deliveries of dispatchers whose heartbeat is older than the leader timeout,
    and those whose lease ran out; how many."""
    rescued = job_store.release_dead_claims(epoch, settings.leader_timeout)
    if rescued:
        logger.warning(
            "re-queued %d deliveries held by a dispatcher that stopped heartbeating",
            rescued,
            extra={"action": "rescue", "count": rescued},
        )
    return rescued


def prune(job_store: store.Store, settings: config.Settings, now: dt.datetime) -> None:
    """Delete history past its retention, a bounded number of batches at a time."""
    finished_before = now - dt.timedelta(seconds=settings.retention)
    keys_before = now - dt.timedelta(seconds=settings.idempotency_ttl)
    for prune_batch, before in (
        (job_store.prune_finished_jobs, finished_before),
        (job_store.prune_idempotency_keys, keys_before),
    ):
        for _ in range(PRUNE_BATCHES):
            if prune_batch(before, PRUNE_BATCH) < PRUNE_BATCH:
                break
    job_store.prune_dispatchers(DEAD_DISPATCHER_SECONDS)
    job_store.prune_delivery_minutes(now - dt.timedelta(seconds=DELIVERY_MINUTES_RETENTION_SECONDS))
