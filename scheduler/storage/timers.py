"""APScheduler's timer rows (the `apscheduler_jobs` table), as the leader writes them.

The jobstore reads them through SQLAlchemy as APScheduler does; its writes come here instead, so
that they go through the term's fenced connection (cluster.TermDatabase) like every other write
of a leader, and a pass's moved timers are written in one statement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from scheduler.storage import db, queries

QUERIES = queries.load(__name__)


@dataclasses.dataclass(frozen=True)
class TimerRow:
    id: str
    # Seconds since the epoch, as APScheduler stores it; None for a paused timer.
    next_run_time: float | None
    job_state: bytes


def add_timer(database: db.Database, timer: TimerRow) -> None:
    """:raise errors.Conflict: a timer of that id exists."""
    database.run(QUERIES["add_timer"], dataclasses.asdict(timer))


def update_timers(database: db.Database, timers: Sequence[TimerRow]) -> set[str]:
    """Write `timers` over the rows of their ids; the ids that had a row."""
    params = {
        "ids": [t.id for t in timers],
        "next_run_times": [t.next_run_time for t in timers],
        "job_states": [t.job_state for t in timers],
    }
    return {row["id"] for row in database.rows(QUERIES["update_timers"], params)}


def remove_timer(database: db.Database, timer_id: str) -> bool:
    """False if there was no such timer."""
    return bool(database.rows(QUERIES["remove_timer"], {"id": timer_id}))


def remove_all_timers(database: db.Database) -> None:
    database.run(QUERIES["remove_all_timers"])
