"""The notifications on the scheduler's channel that make dispatchers act sooner, and their format.

Statements of every aggregate send them (pg_notify in the same statement or transaction as the
change they announce); the dispatcher's listener reads them with parse_notice. They only ever
save latency: every dispatcher also looks at least every poll interval.
"""

from __future__ import annotations

import dataclasses

from scheduler.storage import db, queries

QUERIES = queries.load(__name__)
CHANNEL = "scheduler"
# Payloads are `<kind>` or `<kind> <argument>`; JOB_DUE's argument is the seconds until the job
# is due by the database's clock.
JOB_DUE = "j"
JOBS_DUE = "b"  # several jobs were added, or jobs are due now: every dispatcher looks
CRONS_CHANGED = "c"  # the leader resynchronises its cron timers
ENDPOINTS_CHANGED = "e"  # every dispatcher reloads which endpoints are paused or limited
KINDS = (JOB_DUE, JOBS_DUE, CRONS_CHANGED, ENDPOINTS_CHANGED)


@dataclasses.dataclass(frozen=True)
class Notice:
    """A parsed notification; `due_in` is set for JOB_DUE."""

    kind: str
    due_in: float | None = None


def parse_notice(payload: str) -> Notice:
    """Read a notification; anything unreadable reads as JOBS_DUE, which costs one look and
    misses nothing."""
    kind, _, argument = payload.partition(" ")
    if kind == JOB_DUE:
        try:
            return Notice(JOB_DUE, float(argument))
        except ValueError:
            return Notice(JOBS_DUE)
    return Notice(kind if kind in KINDS else JOBS_DUE)


def notify_jobs_due(database: db.Database) -> None:
    """Have every dispatcher look for due deliveries now."""
    database.run(QUERIES["notify_jobs_due"])
