"""End to end: a trace context from the insert to every delivery attempt, a cron's jitter, and
ticks skipped while an earlier run is in flight."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from scheduler import jobs
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def cron_runs(db_url: str, cron_id: str) -> list[tuple[dt.datetime, dt.datetime, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT run_at, next_attempt_at, state FROM jobs WHERE cron_id = %s ORDER BY run_at",
            (cron_id,),
        )
        return list(rows.fetchall())


def test_each_delivery_attempt_continues_the_insert_s_trace(system: System) -> None:
    answers = iter([500])
    system.receiver.respond = lambda request: (next(answers, 200), 0.0)
    system.start("web")
    system.start("worker", SCHEDULER_RETRY_BASE="0.1", SCHEDULER_RETRY_CAP="0.2")
    traced = system.client.insert(
        {"n": 1}, delay=0, traceparent=TRACEPARENT, tracestate="rojo=00f067aa0ba902b7"
    )
    first, second = system.receiver.wait_for(2, timeout=15)[:2]
    malformed = system.client.insert({"n": 2}, delay=0, traceparent=TRACEPARENT.upper())
    untraced = support.wait_until(
        lambda: [
            r for r in system.receiver.received() if r.headers["Scheduler-Delivery-Id"] == malformed
        ],
        timeout=15,
    )[0]

    attempts = [first, second]
    assert [r.headers["Scheduler-Delivery-Id"] for r in attempts] == [traced, traced]
    parent_ids = set()
    for request in attempts:
        version, trace_id, parent_id, flags = request.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert parent_id not in ("00f067aa0ba902b7", "0" * 16)
        assert request.headers["tracestate"] == "rojo=00f067aa0ba902b7"
        parent_ids.add(parent_id)
    assert len(parent_ids) == 2, "each attempt is a span of its own"
    assert "traceparent" not in untraced.headers and "tracestate" not in untraced.headers


def test_a_cron_s_ticks_are_delivered_within_its_jitter(system: System) -> None:
    system.start("web")
    system.start("worker")
    system.client.put_cron("spread", "* * * * * *", jitter=2)
    received = system.receiver.wait_for(3, timeout=20)
    runs = cron_runs(system.db_url, "spread")
    assert all(0 <= (due - tick).total_seconds() <= 2 for tick, due, _ in runs)
    due_by_tick = {jobs.format_utc(tick): due for tick, due, _ in runs}
    for request in received:
        # Scheduler-Scheduled-At stays the tick; the delivery goes out once its jitter is over.
        due = due_by_tick[request.headers["Scheduler-Scheduled-At"]]
        assert request.arrived_at >= due.timestamp()


def test_ticks_are_skipped_while_the_previous_run_is_in_flight(system: System) -> None:
    system.receiver.respond = lambda request: (200, 2.5)
    system.start("web")
    system.start("worker")
    system.client.put_cron("slow", "* * * * * *", overlap="skip")
    system.receiver.wait_for(2, timeout=20)
    runs = cron_runs(system.db_url, "slow")
    skipped = {jobs.format_utc(tick) for tick, _, state in runs if state == "skipped"}
    assert len(skipped) >= 2, runs
    sent = {r.headers["Scheduler-Scheduled-At"] for r in system.receiver.received()}
    assert not skipped & sent, "a skipped tick is never delivered"
    listed = system.client.cron_runs("slow", limit=500).jobs
    assert {jobs.format_utc(j.timestamp) for j in listed if j.state == "skipped"} >= skipped
    assert all(j.attempts == 0 for j in listed if j.state == "skipped")
