"""The leader's parts in-process, on a real database: timers that move only once their ticks
are recorded, one timer per schedule, catch-up of every owed tick, fenced writes, and stepping
down when the lease cannot be renewed."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import types
from collections.abc import Callable, Iterator

import psycopg
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from scheduler import config, errors, jobs
from scheduler.storage import cluster, crons, db
from scheduler.worker import leader, leadership, timers
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
    settings: config.Settings, database: db.Database, epoch: int, db_url: str
) -> None:
    passes: list[int] = []
    failing = threading.Event()
    failing.set()

    def after_pass() -> None:
        passes.append(1)
        if failing.is_set():
            raise RuntimeError("the database refused the ticks")

    scheduler = timers.GuardedScheduler(
        timers.TimerStore(settings.sqlalchemy_url, cluster.TermDatabase(database.pool, epoch)),
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


def test_catch_up_records_every_owed_tick_missed_beyond_the_window(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    epoch: int,
    hourly: jobs.CronJob,
    db_url: str,
) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE crons SET updated_at = now() - interval '5 hours 30 minutes',"
            " last_fire_at = NULL"
        )
    term = make_term(make_settings(SCHEDULER_CRON_CATCHUP="7200"), database, epoch)
    now = cluster.database_now(database)
    term.sync_crons()
    term.sync_crons()
    hour = now.replace(minute=0, second=0, microsecond=0)
    start = now - dt.timedelta(hours=5, minutes=30)
    expected = [hour - dt.timedelta(hours=n) for n in range(6, -1, -1)]
    expected = [t for t in expected if t > start]  # 5.5 hours of ticks: five or six
    # Each recorded once: those within the two-hour window to deliver, in order, the older ones
    # missed (the hour may turn between the two calls: one more then).
    states = cron_states(db_url)
    assert list(states)[: len(expected)] == expected
    window_start = now - dt.timedelta(hours=2)
    assert [states[t] for t in expected] == [
        "missed" if t < window_start else "scheduled" for t in expected
    ]
    assert len(states) <= len(expected) + 1


def test_catch_up_under_skip_records_owed_ticks_as_missed(
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
    states = list(cron_states(db_url).values())
    assert 9 <= len(states) <= 11
    assert set(states[:7]) == {"missed"}, "older than the tolerance: missed, not sent"


def test_one_timer_per_schedule_and_none_for_paused_or_removed_crons(
    settings: config.Settings, database: db.Database, epoch: int, db_url: str
) -> None:
    crons.replace_crons(
        database,
        [
            jobs.CronDefinition("a", "0 0 * * * *", "UTC"),
            jobs.CronDefinition("b", "0 0 * * * *", "UTC"),
            jobs.CronDefinition("c", "CRON_TZ=Europe/Paris 0 0 * * * *", "Europe/Paris"),
        ],
    )
    term = make_term(settings, database, epoch)
    term.scheduler.start(paused=True)  # timers reach the jobstore once it runs
    term.sync_crons()
    assert set(stored_timers(db_url)) == {
        jobs.schedule_timer_id("0 0 * * * *"),
        jobs.schedule_timer_id("CRON_TZ=Europe/Paris 0 0 * * * *"),
    }
    crons.set_cron_paused(database, "c", True)
    crons.delete_cron(database, "a")
    term.sync_crons()
    assert set(stored_timers(db_url)) == {jobs.schedule_timer_id("0 0 * * * *")}
    crons.delete_cron(database, "b")
    term.sync_crons()
    assert stored_timers(db_url) == {}
    term.stop()


def test_a_schedules_timer_records_the_tick_for_all_its_crons(
    settings: config.Settings, database: db.Database, epoch: int, db_url: str
) -> None:
    names = [f"c{n}" for n in range(50)]
    crons.replace_crons(database, [jobs.CronDefinition(n, "* * * * * *", "UTC") for n in names])
    term = make_term(settings, database, epoch)
    run_time = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    term._on_timer(schedule_fire("* * * * * *"), [run_time])  # type: ignore[arg-type]
    term._record_held_ticks()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT cron_id FROM jobs WHERE run_at = %s", (run_time,)).fetchall()
    assert sorted(row[0] for row in rows) == sorted(names)
    # Every tick between the crons' start and this one is owed too: each second, for each cron.
    with psycopg.connect(db_url) as conn:
        ticks = conn.execute("SELECT run_at FROM jobs WHERE cron_id = 'c7' ORDER BY run_at")
        seen = [row[0] for row in ticks]
    assert seen == [seen[0] + dt.timedelta(seconds=n) for n in range(len(seen))]
    assert seen[-1] == run_time and len(seen) >= 30
    assert len(cron_ticks(db_url)) == len(seen) * len(names)


def test_a_deposed_terms_timer_pass_records_nothing_and_its_timers_stay(
    settings: config.Settings,
    database: db.Database,
    epoch: int,
    every_second: jobs.CronJob,
    db_url: str,
) -> None:
    term = make_term(settings, database, epoch)
    term.scheduler.start(paused=True)
    term.sync_crons()
    before = stored_timers(db_url)
    assert before
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE dispatcher_leader SET lease_until = now() - interval '1 second'")
    run_time = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    term._on_timer(schedule_fire("* * * * * *"), [run_time])  # type: ignore[arg-type]
    with pytest.raises(errors.TermEnded):
        term._record_held_ticks()
    with pytest.raises(errors.TermEnded):
        term.scheduler.remove_job(jobs.schedule_timer_id("* * * * * *"))
    assert run_time not in cron_ticks(db_url)
    assert stored_timers(db_url).keys() == before.keys()
    term.stop()


def cron_states(db_url: str) -> dict[dt.datetime, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT run_at, state FROM jobs WHERE cron_id IS NOT NULL ORDER BY run_at"
        )
        return dict(rows.fetchall())


def schedule_fire(spec: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(id=jobs.schedule_timer_id(spec), args=("schedule", spec))


@pytest.fixture
def leading(
    settings: config.Settings, database: db.Database
) -> Iterator[tuple[leadership.Leadership, FakeClock]]:
    clock = FakeClock()

    def term_for(epoch: int, is_current: Callable[[], bool]) -> leader.LeaderTerm:
        return leader.LeaderTerm(settings, database, epoch, is_current, lambda: None)

    elected = leadership.Leadership(settings, "me", database, term_for, clock)
    assert elected.campaign_once()
    yield elected, clock
    elected.stop()


def test_a_leader_whose_renewal_is_stale_is_not_current_until_renewed(
    leading: tuple[leadership.Leadership, FakeClock], settings: config.Settings
) -> None:
    elected, clock = leading
    assert elected.term is not None and elected.is_current()
    clock.advance(settings.leader_timeout / 2)
    assert not elected.is_current()
    assert elected.probe(), "a renewal makes it current again"
    assert elected.is_current()


def test_a_leader_whose_lease_ran_out_steps_down_and_a_rival_takes_over(
    leading: tuple[leadership.Leadership, FakeClock],
    settings: config.Settings,
    database: db.Database,
    db_url: str,
) -> None:
    elected, _ = leading
    first = elected.term
    assert first is not None
    rival = leadership.Leadership(
        settings, "rival", database, lambda e, c: make_term(settings, database, e)
    )
    try:
        assert not rival.campaign_once(), "the lease runs"
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE dispatcher_leader SET lease_until = now() - interval '1 second'")
        assert rival.campaign_once()
        assert rival.term is not None and rival.term.epoch == first.epoch + 1
        assert not elected.probe()
        assert elected.term is None and first.stopping.is_set()
        assert not elected.campaign_once(), "the lease is the rival's now"
    finally:
        rival.stop()
    assert elected.campaign_once(), "released when the rival stopped: free at once"
