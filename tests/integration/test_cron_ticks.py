"""Recording cron ticks (crons.record_ticks) and the leader's lease (cluster.LeaderLease,
cluster.TermDatabase), on a real database."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import psycopg
import pytest

from scheduler import errors, jobs
from scheduler.storage import cluster, crons, db
from tests import support

EVERY_SECOND = "* * * * * *"
POLICY = crons.TickPolicy(default_window=3600, tolerance=2, max_attempts=3)


@pytest.fixture
def term(database: db.Database, epoch: int) -> cluster.TermDatabase:
    return cluster.TermDatabase(database.pool, epoch)


@pytest.fixture
def soon() -> dt.datetime:
    """A whole second a minute from now: ticks there are owed to crons made now, and on time."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=1)


def define(database: db.Database, *definitions: jobs.CronDefinition) -> None:
    crons.replace_crons(database, list(definitions))


def record(
    term: db.Database,
    ticks: Sequence[tuple[str, dt.datetime]],
    ids: int | None = None,
    policy: crons.TickPolicy = POLICY,
) -> crons.RecordedTicks:
    count = len(ticks) * 10 if ids is None else ids
    return crons.record_ticks(term, ticks, [jobs.new_job_id() for _ in range(count)], policy)


def runs(db_url: str) -> dict[tuple[str, dt.datetime], str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT cron_id, run_at, state FROM jobs WHERE cron_id IS NOT NULL")
        return {(cron_id, run_at): state for cron_id, run_at, state in rows}


def seconds(start: dt.datetime, count: int) -> list[dt.datetime]:
    return [start + dt.timedelta(seconds=n) for n in range(count)]


def test_a_tick_is_recorded_once_for_every_running_cron_of_its_schedule(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    define(
        database,
        jobs.CronDefinition("a", EVERY_SECOND, "UTC"),
        jobs.CronDefinition("b", EVERY_SECOND, "UTC"),
        jobs.CronDefinition("paused", EVERY_SECOND, "UTC"),
        jobs.CronDefinition("other", "*/2 * * * * *", "UTC"),
    )
    crons.set_cron_paused(database, "paused", True)
    assert record(term, [(EVERY_SECOND, soon)]) == crons.RecordedTicks(2, 0, 0, 0)
    assert record(term, [(EVERY_SECOND, soon)]).recorded == 0, "a repeat records nothing"
    assert runs(db_url) == {("a", soon): "scheduled", ("b", soon): "scheduled"}
    last = {c.id: c.last_fire_at for c in crons.list_crons(database)}
    assert last == {"a": soon, "b": soon, "paused": None, "other": None}
    later = soon + dt.timedelta(seconds=1)
    assert record(term, [("no such spec", later)]).recorded == 0


def test_ticks_before_a_crons_schedule_started_are_not_owed(
    database: db.Database, term: cluster.TermDatabase, db_url: str
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC"))
    (made,) = crons.list_crons(database)
    before = made.updated_at.replace(microsecond=0) - dt.timedelta(seconds=5)
    assert record(term, [(EVERY_SECOND, t) for t in seconds(before, 3)]).recorded == 0
    assert runs(db_url) == {}


def test_ticks_older_than_the_catch_up_window_are_recorded_missed_the_others_delivered(
    database: db.Database, term: cluster.TermDatabase, db_url: str
) -> None:
    define(
        database,
        jobs.CronDefinition("default", EVERY_SECOND, "UTC"),
        jobs.CronDefinition("short", EVERY_SECOND, "UTC", catchup_window=30),
        jobs.CronDefinition("none", EVERY_SECOND, "UTC", catchup_window=0),
    )
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE crons SET updated_at = now() - interval '2 hours'")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old, recent, late = (now - dt.timedelta(seconds=s) for s in (5400, 600, 1))
    counts = record(term, [(EVERY_SECOND, t) for t in (old, recent, late)])
    assert counts == crons.RecordedTicks(recorded=9, skipped=0, missed=5, left_over=0)
    assert runs(db_url) == {
        ("default", old): "missed",
        ("default", recent): "scheduled",
        ("default", late): "scheduled",
        ("short", old): "missed",
        ("short", recent): "missed",
        ("short", late): "scheduled",
        ("none", old): "missed",
        ("none", recent): "missed",
        ("none", late): "scheduled",  # within the tolerance, whatever the window
    }
    with psycopg.connect(db_url) as conn:
        unfinished = conn.execute(
            "SELECT count(*) FROM jobs WHERE state = 'missed' AND finished_at IS NULL"
        ).fetchone()
    assert unfinished == (0,), "a missed tick is finished (and pruned in time)"


def test_ids_run_out_in_tick_order_and_what_is_left_over_stays_owed(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    define(database, *(jobs.CronDefinition(name, EVERY_SECOND, "UTC") for name in "abc"))
    ticks = [(EVERY_SECOND, t) for t in seconds(soon, 3)]
    assert record(term, ticks, ids=4) == crons.RecordedTicks(4, 0, 0, left_over=5)
    first_four = [(c, t) for t in seconds(soon, 2) for c in "abc"][:4]
    assert set(runs(db_url)) == set(first_four)
    assert record(term, ticks, ids=9).recorded == 5, "the rest, each once"
    assert len(runs(db_url)) == 9


def test_each_tick_is_due_within_its_crons_jitter(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC", jitter=2))
    assert record(term, [(EVERY_SECOND, t) for t in seconds(soon, 50)]).recorded == 50
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM next_attempt_at - run_at)::float8, state FROM jobs"
        ).fetchall()
    delays = [delay for delay, _ in rows]
    assert all(0 <= delay <= 2 for delay in delays)
    assert len(set(delays)) > 1, "each tick draws its own delay"
    assert {state for _, state in rows} == {"scheduled"}, "overlap allows by default"


def test_overlap_skip_records_ticks_as_skipped_while_a_run_is_unfinished(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC", overlap="skip"))
    at = seconds(soon, 6)

    def record_at(*ticks: dt.datetime) -> crons.RecordedTicks:
        return record(term, [(EVERY_SECOND, t) for t in ticks])

    assert record_at(at[0]) == crons.RecordedTicks(1, 0)
    assert record_at(at[1]) == crons.RecordedTicks(1, 1), "the first run waits"
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'delivering' WHERE run_at = %s", (at[0],))
    assert record_at(at[2]) == crons.RecordedTicks(1, 1), "the first run is in flight"
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'delivered' WHERE run_at = %s", (at[0],))
    # Several new ticks in one statement: the first finds the cron idle, the others the first.
    assert record_at(at[3], at[4]) == crons.RecordedTicks(2, 1)
    assert {t: s for (_, t), s in runs(db_url).items()} == {
        at[0]: "delivered",
        at[1]: "skipped",
        at[2]: "skipped",
        at[3]: "scheduled",
        at[4]: "skipped",
    }
    assert crons.list_crons(database)[0].last_fire_at == at[4]


def test_a_term_that_is_over_writes_nothing(
    database: db.Database, epoch: int, soon: dt.datetime, db_url: str
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC"))
    deposed = cluster.TermDatabase(database.pool, epoch - 1)
    with pytest.raises(errors.TermEnded):
        record(deposed, [(EVERY_SECOND, soon)])
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE dispatcher_leader SET lease_until = now() - interval '1 second'")
    with pytest.raises(errors.TermEnded):
        record(cluster.TermDatabase(database.pool, epoch), [(EVERY_SECOND, soon)])
    assert runs(db_url) == {}
    assert crons.list_crons(database)[0].last_fire_at is None


def test_the_lease_goes_to_one_dispatcher_at_a_time_and_to_another_once_it_ran_out(
    database: db.Database, db_url: str
) -> None:
    first = cluster.LeaderLease(database, timeout=60)
    second = cluster.LeaderLease(database, timeout=60)
    epoch = first.try_acquire("first")
    assert epoch is not None
    assert second.try_acquire("second") is None
    assert first.renew(epoch)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE dispatcher_leader SET lease_until = now() - interval '1 second'")
    taken = second.try_acquire("second")
    assert taken == epoch + 1, "a new epoch once the lease ran out"
    assert not first.renew(epoch), "the old term cannot renew"
    second.release(taken)
    assert first.try_acquire("first") == taken + 1, "a released lease is free at once"


def test_taking_the_lease_waits_for_a_write_of_the_term_in_progress(
    database: db.Database, db_url: str
) -> None:
    lease = cluster.LeaderLease(database, timeout=1)
    epoch = lease.try_acquire("slow")
    assert epoch is not None
    with (
        cluster.TermDatabase(database.pool, epoch).transaction(),
        psycopg.connect(db_url, autocommit=True) as rival,
    ):
        support.wait_until(
            lambda: (
                rival.execute("SELECT lease_until <= now() FROM dispatcher_leader").fetchone()
                == (True,)
            ),
            timeout=10,
        )
        rival.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            rival.execute(cluster.QUERIES["take_lease"], {"holder": "rival", "lease": 1})


def cron_row(database: db.Database, cron_id: str) -> jobs.CronJob | None:
    return next((c for c in crons.list_crons(database) if c.id == cron_id), None)


def test_no_tick_is_owed_before_start_at_or_after_end_at(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    start, end = soon + dt.timedelta(seconds=2), soon + dt.timedelta(seconds=5)
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC", start_at=start, end_at=end))
    assert record(term, [(EVERY_SECOND, t) for t in seconds(soon, 10)]).recorded == 4
    assert sorted(t for _, t in runs(db_url)) == seconds(start, 4), "both bounds inclusive"


def test_a_cron_ends_after_max_runs_and_skipped_or_missed_ticks_do_not_count(
    database: db.Database, term: cluster.TermDatabase, db_url: str
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC", max_runs=2))
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE crons SET updated_at = now() - interval '2 hours'")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = now - dt.timedelta(seconds=5400)
    recent = seconds(now - dt.timedelta(seconds=10), 4)
    counts = record(term, [(EVERY_SECOND, t) for t in (old, *recent)])
    assert counts == crons.RecordedTicks(3, 0, 1, 0, ended=1)
    assert runs(db_url) == {
        ("c", old): "missed",
        ("c", recent[0]): "scheduled",
        ("c", recent[1]): "scheduled",
    }
    ended = cron_row(database, "c")
    assert ended is not None and ended.state == "ended" and (ended.runs, ended.runs_left) == (2, 0)
    later = now + dt.timedelta(seconds=30)
    assert record(term, [(EVERY_SECOND, later)]).recorded == 0, "ended for good"
    assert crons.running_schedules(term) == []


def test_a_cron_past_its_end_ends_and_one_that_asked_is_removed_leaving_a_tombstone(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime, db_url: str
) -> None:
    past = soon - dt.timedelta(hours=1)
    kept = jobs.CronDefinition("kept", EVERY_SECOND, "UTC", end_at=past)
    removed = jobs.CronDefinition("gone", EVERY_SECOND, "UTC", end_at=past, delete_after_end=True)
    define(database, kept, removed)
    assert crons.end_past_crons(term, soon) == 2
    assert crons.retire_ended_crons(term) == ["gone"]
    assert [(c.id, c.state) for c in crons.list_crons(database)] == [("kept", "ended")]

    # The application sends its whole set again at its next start, unchanged: still ended.
    define(database, kept, removed)
    assert [(c.id, c.state) for c in crons.list_crons(database)] == [("kept", "ended")]
    # New bounds start each again, afresh.
    later = soon + dt.timedelta(hours=1)
    define(
        database,
        dataclasses.replace(kept, end_at=later),
        dataclasses.replace(removed, end_at=later),
    )
    states = {c.id: (c.state, c.runs) for c in crons.list_crons(database)}
    assert states == {"kept": ("active", 0), "gone": ("active", 0)}


def test_a_spec_change_keeps_the_runs_counted_and_new_bounds_reset_them(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime
) -> None:
    define(database, jobs.CronDefinition("c", EVERY_SECOND, "UTC", max_runs=5))
    assert record(term, [(EVERY_SECOND, t) for t in seconds(soon, 2)]).recorded == 2
    define(database, jobs.CronDefinition("c", "*/2 * * * * *", "UTC", max_runs=5))
    counted = cron_row(database, "c")
    assert counted is not None and (counted.runs, counted.runs_left) == (2, 3)
    define(database, jobs.CronDefinition("c", "*/2 * * * * *", "UTC", max_runs=6))
    reset = cron_row(database, "c")
    assert reset is not None and (reset.runs, reset.runs_left, reset.state) == (0, 6, "active")
    assert reset.updated_at > counted.updated_at, "its schedule starts again now"


def test_put_cron_makes_a_removed_cron_afresh(
    database: db.Database, term: cluster.TermDatabase, soon: dt.datetime
) -> None:
    gone = jobs.CronDefinition(
        "gone", EVERY_SECOND, "UTC", end_at=soon - dt.timedelta(hours=1), delete_after_end=True
    )
    define(database, gone)
    crons.end_past_crons(term, soon)
    crons.retire_ended_crons(term)
    assert crons.list_crons(database) == []
    crons.put_cron(database, dataclasses.replace(gone, end_at=None))
    assert [(c.id, c.state) for c in crons.list_crons(database)] == [("gone", "active")]


def test_an_unsynced_database_commits_each_statement_with_synchronous_commit_off(
    db_url: str,
) -> None:
    one = db.open_pool(db_url, 1, name="probe")  # one connection: what leaks would show
    try:
        plain, unsynced = db.Database(one), db.UnsyncedDatabase(one)
        plain.run("SET synchronous_commit = on")
        setting = "SELECT current_setting('synchronous_commit') AS value"
        assert unsynced.rows(setting) == [{"value": "off"}]
        with unsynced.transaction() as cur:
            cur.execute(setting)
            assert cur.fetchone() == {"value": "off"}
        assert plain.rows(setting) == [{"value": "on"}], "set locally, not on the connection"
        unsynced.run("CREATE TABLE unsynced_probe (n integer)")
        inserted = unsynced.rows("INSERT INTO unsynced_probe VALUES (1), (2) RETURNING n")
        assert inserted == [{"n": 1}, {"n": 2}]
        assert unsynced.rows("UPDATE unsynced_probe SET n = n + 1 WHERE n > 5") == []
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM unsynced_probe").fetchone() == (2,)
    finally:
        one.close()
