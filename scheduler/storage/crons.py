"""Crons and their ticks: the cron set, one cron's changes, tick records, and their schedules'
timers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from scheduler import errors, jobs
from scheduler.storage import db, flows, notices, queries
from scheduler.storage import jobs as job_rows

QUERIES = queries.load(__name__)
CANCEL_PENDING_FIRES = queries.variant(
    QUERIES["cancel_pending_fires"],
    cancel_requested=job_rows.QUERIES["cancel_requested"],
    cancellable=job_rows.QUERIES["cancellable"],
)


@dataclasses.dataclass(frozen=True)
class RecordedTicks:
    """Cron ticks new to the table, how many of those were recorded as skipped and as missed,
    how many owed ticks were left for another statement, and how many crons it ended."""

    recorded: int
    skipped: int
    missed: int = 0
    left_over: int = 0
    # Crons that reached their max_runs in this statement.
    ended: int = 0


@dataclasses.dataclass(frozen=True)
class ScheduleStart:
    """The running crons of one spec: how many, and the earliest moment after which one of them
    is owed ticks."""

    crons: int
    since: dt.datetime


@dataclasses.dataclass(frozen=True)
class TickPolicy:
    """What decides a tick's record besides its cron: the catch-up window of crons that set
    none, the lateness under which no tick is missed whatever its window, and the attempts a
    run may take."""

    default_window: float
    tolerance: float
    max_attempts: int


def replace_crons(database: db.Database, crons: Sequence[jobs.CronDefinition]) -> None:
    """Make the cron set exactly `crons`, atomically; unchanged crons keep their timers."""
    with database.transaction() as cur:
        cur.execute(QUERIES["lock_crons"])
        ids = [c.id for c in crons]
        cur.execute(QUERIES["delete_crons_except"], {"ids": ids})
        removed = [row["id"] for row in cur.fetchall()]
        if removed:
            cur.execute(CANCEL_PENDING_FIRES, {"cron_ids": removed})
        cur.execute(QUERIES["forget_tombstones_except"], {"ids": ids})
        params = [_cron_params(c) for c in crons]
        cur.executemany(QUERIES["forget_changed_tombstone"], params)
        cur.executemany(QUERIES["upsert_cron"], params)
        _use_flows(cur, crons)
        cur.execute(notices.QUERIES["notify_crons_changed"])


def put_cron(database: db.Database, cron: jobs.CronDefinition) -> None:
    """Create or redefine one cron, leaving the others alone; a cron removed when it ended is
    made afresh."""
    with database.transaction() as cur:
        cur.execute(QUERIES["forget_tombstone"], {"id": cron.id})
        cur.execute(QUERIES["upsert_cron"], _cron_params(cron))
        _use_flows(cur, [cron])
        cur.execute(notices.QUERIES["notify_crons_changed"])


def _cron_params(cron: jobs.CronDefinition) -> dict[str, Any]:
    params = {field: value for field, value in vars(cron).items() if field != "flow"}
    stored = None if cron.http_options is None else cron.http_options.to_json()
    params["http_options"] = None if stored is None else json.dumps(stored)
    flow = cron.flow
    params["flow_key"] = None if flow is None else flow.key
    params["flow_rate"] = None if flow is None else flow.rate_limit
    params["flow_max_in_flight"] = None if flow is None else flow.max_in_flight
    return params


def _use_flows(cur: Any, crons: Sequence[jobs.CronDefinition]) -> None:
    """A cron's key takes its limits when it is defined (the limits written last win), and is
    kept while the cron names it (flows.forget_idle_flows)."""
    named = [(c.endpoint, c.flow) for c in crons if c.flow is not None]
    if named:
        flows.use_flows(cur, named)


def delete_cron(database: db.Database, cron_id: str) -> bool:
    """Remove one cron and cancel its unfinished runs (as jobs.cancel_job does); False if there
    was none."""
    with database.transaction() as cur:
        cur.execute(QUERIES["delete_crons_by_id"], {"id": cron_id})
        if cur.fetchone() is None:
            return False
        cur.execute(CANCEL_PENDING_FIRES, {"cron_ids": [cron_id]})
        cur.execute(notices.QUERIES["notify_crons_changed"])
    return True


def set_cron_paused(database: db.Database, cron_id: str, paused: bool) -> None:
    """:raise errors.CronNotFound: no cron has this id."""
    with database.transaction() as cur:
        cur.execute(QUERIES["set_cron_paused"], {"id": cron_id, "paused": paused})
        if cur.fetchone() is None:
            raise errors.CronNotFound(cron_id)
        cur.execute(notices.QUERIES["notify_crons_changed"])


def list_crons(database: db.Database) -> list[jobs.CronJob]:
    return [_cron(row) for row in database.rows(QUERIES["list_crons"])]


def _cron(row: dict[str, Any]) -> jobs.CronJob:
    return jobs.CronJob(**{**row, "http_options": jobs.HttpOptions.from_json(row["http_options"])})


def cron_statuses(
    database: db.Database,
    cron_id: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[jobs.CronStatus]:
    """Crons with their latest run's outcome: the one named, or up to `limit` in id order after
    `after`."""
    params = {"id": cron_id, "after": after, "limit": limit}
    statuses = []
    for row in database.rows(QUERIES["cron_statuses"], params):
        last_state, last_status = row.pop("last_state"), row.pop("last_status")
        statuses.append(jobs.CronStatus(_cron(row), last_state, last_status))
    return statuses


def run_cron_now(database: db.Database, cron_id: str, job_id: str, max_attempts: int) -> str:
    """Schedule one extra run of a cron, due now; its job id.

    :raise errors.CronNotFound: no cron has this id.
    """
    params = {"id": cron_id, "job_id": job_id, "max_attempts": max_attempts}
    rows = database.rows(QUERIES["run_cron_now"], params)
    if not rows:
        raise errors.CronNotFound(cron_id)
    if rows[0]["flow_key"] is not None:
        flows.announce_keyed(database)
    return str(rows[0]["id"])


def _tick_columns(ticks: Sequence[jobs.CronTick]) -> dict[str, Any]:
    return {"job_ids": [t.job_id for t in ticks], "run_ats": [t.run_at for t in ticks]}


def backfill_cron(
    database: db.Database, cron: jobs.CronJob, ticks: Sequence[jobs.CronTick], max_attempts: int
) -> int:
    """Record `ticks` of `cron` as its revision defines them; how many are new or due again
    (ticks overlap skipped).

    :raise errors.Conflict: the cron was redefined or removed meanwhile.
    """
    params = {
        "id": cron.id,
        "revision": cron.revision,
        "max_attempts": max_attempts,
        **_tick_columns(ticks),
    }
    with database.transaction() as cur:
        cur.execute(QUERIES["backfill_cron"], params)
        row = cur.fetchone()
        assert row is not None
        if not row["found"]:
            raise errors.Conflict(f"cron {cron.id} was changed meanwhile: ask again")
        if row["recorded"]:
            cur.execute(notices.QUERIES["notify_jobs_due"])
    return int(row["recorded"])


def running_schedules(database: db.Database) -> list[str]:
    """The distinct specs of the running crons."""
    return [row["spec"] for row in database.rows(QUERIES["running_schedules"])]


def schedule_starts(database: db.Database, specs: Sequence[str]) -> dict[str, ScheduleStart]:
    """For each of `specs` that running crons have: how many, and since when one is owed ticks."""
    rows = database.rows(QUERIES["schedule_starts"], {"specs": list(specs)})
    return {row["spec"]: ScheduleStart(int(row["crons"]), row["since"]) for row in rows}


def record_ticks(
    database: db.Database,
    ticks: Sequence[tuple[str, dt.datetime]],
    job_ids: Sequence[str],
    policy: TickPolicy,
) -> RecordedTicks:
    """Record the (spec, tick) pairs for every running cron of each spec that is owed them, in
    one statement, the jobs taking their ids from `job_ids` in tick order; ticks beyond them are
    left over, still owed."""
    params = {
        "specs": [spec for spec, _ in ticks],
        "run_ats": [run_at for _, run_at in ticks],
        "job_ids": list(job_ids),
        "window": policy.default_window,
        "tolerance": policy.tolerance,
        "max_attempts": policy.max_attempts,
    }
    (row,) = database.rows(QUERIES["record_ticks"], params)
    if row["keyed"]:
        flows.announce_keyed(database)
    return RecordedTicks(
        int(row["inserted"]),
        int(row["skipped"]),
        int(row["missed"]),
        int(row["left_over"]),
        int(row["ended"]),
    )


def end_past_crons(database: db.Database, now: dt.datetime) -> int:
    """End the crons whose end_at is before `now`; how many. Record what they are owed first."""
    return len(database.rows(QUERIES["end_past_crons"], {"now": now}))


def retire_ended_crons(database: db.Database) -> list[str]:
    """Remove the ended crons that asked to be, leaving their tombstones; their ids."""
    return [row["id"] for row in database.rows(QUERIES["retire_ended_crons"])]


def schedules_missing_timers(database: db.Database) -> list[str]:
    """Specs of running crons that have no timer."""
    return [row["spec"] for row in database.rows(QUERIES["schedules_missing_timers"])]


def stale_schedule_timers(database: db.Database) -> list[str]:
    """Timers of schedules no running cron has any more."""
    return [row["id"] for row in database.rows(QUERIES["stale_schedule_timers"])]
