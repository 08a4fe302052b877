"""Pruning: history past its retention, in batches, each statement reading only what it deletes."""

from __future__ import annotations

import datetime as dt

from scheduler.storage import db, queries

QUERIES = queries.load(__name__)
# The two retentions of finished jobs, as the predicates their partial indexes are built on
# (migrations 0009 and 0010): literal, never a parameter, so the planner can match the index.
FINISHED = "state IN ('delivered', 'cancelled', 'skipped', 'missed')"
FAILED = "state = 'failed'"
_PRUNE_JOBS = {
    states: queries.variant(QUERIES["prune_jobs"], finished_in=states)
    for states in (FINISHED, FAILED)
}


def prune_jobs(database: db.Database, finished_in: str, before: dt.datetime, limit: int) -> int:
    """Delete up to `limit` jobs that ended (FINISHED or FAILED) before `before`, with their
    attempts; how many jobs."""
    params = {"before": before, "limit": limit}
    return int(database.rows(_PRUNE_JOBS[finished_in], params)[0]["pruned"])


def prune_idempotency_keys(database: db.Database, before: dt.datetime, limit: int) -> int:
    params = {"before": before, "limit": limit}
    return len(database.rows(QUERIES["prune_idempotency_keys"], params))


def prune_dispatchers(database: db.Database, older_than: float) -> int:
    return len(database.rows(QUERIES["prune_dispatchers"], {"older_than": older_than}))


def prune_delivery_minutes(database: db.Database, before: dt.datetime) -> int:
    """Delete rollup rows of minutes before `before`; how many."""
    return int(database.rows(QUERIES["prune_delivery_minutes"], {"before": before})[0]["pruned"])
