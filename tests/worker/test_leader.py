"""The leader's parts in-process, on a real database: timers that move only once their ticks
are recorded, cron catch-up, stepping down when the lock cannot be confirmed, and timers stored
by an earlier version."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import types
from collections.abc import Callable, Iterator

import psycopg
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from scheduler import config, jobs
from scheduler.storage import cluster, crons, db
from scheduler.worker import leader, leadership, metrics, timers
from tests import support
from tests.worker.conftest import FakeClock


def cron_ticks(db_url: str) -> list[dt.datetime]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT run_at FROM jobs WHERE cron_id IS NOT NULL ORDER BY run_at")
        return [row[0] for row in rows]


def stored_timers(db_url: str) -> dict[str, tuple[float | None, dict[str, object]]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id, next_run_time, job_state FROM apscheduler_jobs")
        return {row[0]: (row[1], pickle.loads(row[2])) for row in rows}


def make_term(
    settings: config.Settings, database: db.Database, epoch: int, current: bool = True
) -> leader.LeaderTerm:
    return leader.LeaderTerm(settings, database, epoch, lambda: current, lambda: None)


@pytest.fixture
def every_second(database: db.Database) -> jobs.CronJob:
    crons.replace_crons(database, [jobs.CronDefinition("tick", "* * * * * *", "UTC")])
    (cron,) = crons.list_crons(database)
    return cron


@pytest.fixture
def hourly(database: db.Database) -> jobs.CronJob:
    crons.replace_crons(database, [jobs.CronDefinition("tick", "0 0 * * * *", "UTC")])
    (cron,) = crons.list_crons(database)
    return cron


def test_a_failing_after_pass_leaves_timers_where_they_were(
    settings: config.Settings, db_url: str
) -> None:
    passes: list[int] = []
    failing = threading.Event()
    failing.set()

    def after_pass() -> None:
        passes.append(1)
        if failing.is_set():
            raise RuntimeError("the database refused the ticks")

    scheduler = timers.GuardedScheduler(
        timers.TimerStore(settings.sqlalchemy_url),
        after_pass,
        timezone=dt.UTC,
        executors={"default": timers.OutboxExecutor(lambda job, run_times: None)},
        job_defaults={"misfire_grace_time": None, "coalesce": True},
    )
    first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.2)
    scheduler.add_job(
        timers.FIRE_REF,
        IntervalTrigger(seconds=1, start_date=first),
        args=("cron", "1"),
        id="cron:1",
    )
    scheduler.start()
    try:
        support.wait_until(lambda: len(passes) >= 2, timeout=10)
        ((stored_next, _),) = stored_timers(db_url).values()
        assert stored_next == pytest.approx(first.timestamp(), abs=0.001)
        failing.clear()
        support.wait_until(lambda: stored_timers(db_url)["cron:1"][0] > first.timestamp(), 10)
    finally:
        scheduler.shutdown(wait=False)


def test_catch_up_records_the_latest_missed_tick_once(
    settings: config.Settings,
    database: db.Database,
    epoch: int,
    hourly: jobs.CronJob,
    db_url: str,
) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE crons SET updated_at = now() - interval '5 hours',"
            " last_fire_at = now() - interval '5 hours'"
        )
    term = make_term(settings, database, epoch)
    now = cluster.database_now(database)
    term.sync_crons()
    term.sync_crons()
    # Five hours of ticks missed: one delivery, for the latest (an hour's turn between the two
    # calls would be the only way to see two).
    (tick,) = cron_ticks(db_url)
    assert tick == now.replace(minute=0, second=0, microsecond=0)


def test_catch_up_under_skip_records_nothing(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    epoch: int,
    every_second: jobs.CronJob,
    db_url: str,
) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE crons SET updated_at = now() - interval '10 seconds'")
    term = make_term(make_settings(SCHEDULER_CRON_CATCHUP="skip"), database, epoch)
    term.sync_crons()
    assert cron_ticks(db_url) == []


def timer_fire(cron: jobs.CronJob) -> types.SimpleNamespace:
    return types.SimpleNamespace(id=cron.timer_id, args=("cron", str(cron.revision)))


@pytest.fixture
def leading(
    settings: config.Settings, database: db.Database
) -> Iterator[tuple[leadership.Leadership, FakeClock]]:
    clock = FakeClock()

    def term_for(epoch: int, is_current: Callable[[], bool]) -> leader.LeaderTerm:
        return leader.LeaderTerm(settings, database, epoch, is_current, lambda: None)

    elected = leadership.Leadership(settings, "me", term_for, clock)
    assert elected.campaign_once()
    yield elected, clock
    elected.stop()


def test_a_leader_whose_confirmation_is_stale_stops_firing(
    leading: tuple[leadership.Leadership, FakeClock],
    settings: config.Settings,
    every_second: jobs.CronJob,
    db_url: str,
) -> None:
    elected, clock = leading
    term = elected.term
    assert term is not None and elected.is_current()
    clock.advance(settings.leader_timeout / 2)
    assert not elected.is_current()
    run_time = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    term._on_timer(timer_fire(every_second), [run_time])  # type: ignore[arg-type]
    term._record_held_ticks()
    assert run_time not in cron_ticks(db_url)
    assert elected.probe(), "a fresh confirmation makes it current again"
    term._on_timer(timer_fire(every_second), [run_time])  # type: ignore[arg-type]
    term._record_held_ticks()
    assert run_time in cron_ticks(db_url)


def test_a_leader_that_loses_its_lock_steps_down_and_a_rival_takes_over(
    leading: tuple[leadership.Leadership, FakeClock],
    settings: config.Settings,
    database: db.Database,
    db_url: str,
) -> None:
    elected, _ = leading
    first = elected.term
    assert first is not None
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
        )
    assert not elected.probe()
    assert elected.term is None and first.stopping.is_set()
    assert metrics.LEADER._value.get() == 0

    rival = leadership.Leadership(settings, "rival", lambda e, c: make_term(settings, database, e))
    try:
        assert rival.campaign_once()
        assert rival.term is not None and rival.term.epoch == first.epoch + 1
        assert not elected.campaign_once(), "the lock is the rival's now"
    finally:
        rival.stop()
