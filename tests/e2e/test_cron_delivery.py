"""Cron ticks end to end: catch-up after downtime, retries, and a clock that a slow endpoint
cannot hold back."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import time

import psycopg
import pytest

from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

EVERY_SECOND = {"jobs": [{"id": "tick", "spec": "* * * * * *"}]}


def recorded_ticks(db_url: str, cron_id: str = "tick") -> list[dt.datetime]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT run_at FROM jobs WHERE cron_id = %s ORDER BY run_at", (cron_id,)
        )
        return [row[0] for row in rows]


def miss_one_tick(system: System, policy: str) -> tuple[float, list[dt.datetime]]:
    """Stop the worker right after a tick of a 6-second cron, restart it 2.5 s after the next
    tick was due; return that missed tick's time and the ticks recorded by the one after."""
    system.start("web")
    worker = system.start("worker", SCHEDULER_CRON_CATCHUP=policy)
    assert system.call("POST", "/cron", {"jobs": [{"id": "six", "spec": "*/6 * * * * *"}]}).ok
    first = support.wait_until(lambda: recorded_ticks(system.db_url, "six"), timeout=10)[0]
    assert worker.stop() == 0
    missed = first.timestamp() + 6
    time.sleep(max(0.0, missed + 2.5 - time.time()))
    system.start("worker", SCHEDULER_CRON_CATCHUP=policy)
    support.wait_until(
        lambda: recorded_ticks(system.db_url, "six")[-1].timestamp() >= missed + 6, timeout=12
    )
    return missed, recorded_ticks(system.db_url, "six")


def test_a_tick_missed_while_down_is_caught_up_late(system: System) -> None:
    missed, ticks = miss_one_tick(system, "3600")
    assert [t.timestamp() for t in ticks] == [missed - 6, missed, missed + 6]
    stamp = dt.datetime.fromtimestamp(missed, dt.UTC).isoformat(timespec="milliseconds")
    # Recorded is not yet delivered: wait for its arrival.
    (late,) = support.wait_until(
        lambda: [
            r
            for r in system.receiver.received()
            if r.headers["Scheduler-Scheduled-At"] == stamp.replace("+00:00", "Z")
        ],
        timeout=10,
    )
    assert late.arrived_at > missed + 2, "the missed tick was delivered when the worker returned"


def test_a_window_of_0_records_a_tick_missed_while_down_as_missed_never_sent(
    system: System,
) -> None:
    missed, ticks = miss_one_tick(system, "skip")
    assert [t.timestamp() for t in ticks] == [missed - 6, missed, missed + 6]
    with psycopg.connect(system.db_url) as conn:
        states = dict(conn.execute("SELECT run_at, state FROM jobs WHERE cron_id = 'six'"))
    assert states[ticks[1]] == "missed"
    support.wait_until(lambda: len(system.receiver.received()) >= 2, timeout=10)
    sent = {r.headers["Scheduler-Scheduled-At"] for r in system.receiver.received()}
    stamp = dt.datetime.fromtimestamp(missed, dt.UTC).isoformat(timespec="milliseconds")
    assert stamp.replace("+00:00", "Z") not in sent


def test_failed_cron_tick_is_retried_with_the_same_delivery_id(system: System) -> None:
    answers = iter([500])
    system.receiver.respond = lambda request: (next(answers, 200), 0.0)
    system.start("web")
    system.start("worker", SCHEDULER_RETRY_BASE="0.1", SCHEDULER_RETRY_CAP="0.3")
    assert system.call("POST", "/cron", {"jobs": [{"id": "tick", "spec": "@every 1h"}]}).ok
    assert system.call("POST", "/cron", EVERY_SECOND).ok
    first, second = system.receiver.wait_for(2, timeout=10)[:2]
    assert first.json == second.json == {"id": "", "cron_id": "tick", "body": None}
    assert first.headers["Scheduler-Delivery-Id"] == second.headers["Scheduler-Delivery-Id"]
    assert (first.headers["Scheduler-Attempt"], second.headers["Scheduler-Attempt"]) == ("1", "2")
    assert first.headers["Scheduler-Scheduled-At"] == second.headers["Scheduler-Scheduled-At"]


def test_a_stalled_endpoint_does_not_stall_the_clock(system: System) -> None:
    # Longer than the test looks, however early in its second the first tick falls: a thread
    # freed before the check would send a third delivery.
    system.receiver.respond = lambda request: (200, 8.0)
    system.start("web")
    system.start("worker", SCHEDULER_DELIVERY_THREADS="2")
    assert system.call("POST", "/cron", EVERY_SECOND).ok
    time.sleep(4.2)
    ticks = recorded_ticks(system.db_url)
    # Both threads hang, yet every tick is recorded on time, ready to send.
    assert len(ticks) >= 3, ticks
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(ticks))
    assert len(system.receiver.received()) == 2


def test_a_cron_with_max_runs_ends_for_good_and_one_asked_to_is_removed(system: System) -> None:
    system.start("web")
    system.start("worker")
    crons = {
        "jobs": [
            {"id": "twice", "spec": "* * * * * *", "max_runs": 2},
            {"id": "once", "spec": "* * * * * *", "max_runs": 1, "delete_after_end": True},
        ]
    }
    assert system.call("POST", "/cron", crons).ok
    support.wait_until(
        lambda: (
            [c.id for c in system.client.list_crons()] == ["twice"]
            and system.client.get_cron("twice").state == "ended"
        ),
        timeout=15,
    )
    # Every run is delivered; the application then sends its set again unchanged, as at a start.
    support.wait_until(lambda: len(system.receiver.received()) >= 3, timeout=10)
    assert system.call("POST", "/cron", crons).ok
    ended = system.client.get_cron("twice")
    assert (ended.state, ended.runs, ended.runs_left, ended.next_fire_at) == ("ended", 2, 0, None)
    assert [c.id for c in system.client.list_crons()] == ["twice"], "the removed one stays gone"
    sent = collections.Counter(r.json["cron_id"] for r in system.receiver.received())
    assert sent == {"twice": 2, "once": 1}
    assert recorded_ticks(system.db_url, "twice")[1:] == [
        recorded_ticks(system.db_url, "twice")[0] + dt.timedelta(seconds=1)
    ]

    # New bounds start it again, from now.
    crons["jobs"][0]["max_runs"] = 3
    assert system.call("POST", "/cron", crons).ok
    restarted = system.client.get_cron("twice")
    assert (restarted.state, restarted.runs, restarted.runs_left) == ("active", 0, 3)
    support.wait_until(lambda: system.client.get_cron("twice").state == "ended", timeout=15)
    support.wait_until(
        lambda: (
            collections.Counter(r.json["cron_id"] for r in system.receiver.received())
            == {"twice": 5, "once": 1}
        ),
        timeout=10,
    )
