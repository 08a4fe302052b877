"""The overview's chart geometry: one slot per minute of the last hour, on the right scales."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from scheduler.web.dashboard import chart

NOW = dt.datetime(2026, 11, 27, 12, 30, 40, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Row:
    minute: dt.datetime
    delivered: int
    failed: int = 0
    retried: int = 0
    lateness_p50_ms: float | None = None
    lateness_p99_ms: float | None = None


def test_the_hour_ends_with_the_minute_in_progress() -> None:
    assert chart.hour_start(NOW) == dt.datetime(2026, 11, 27, 11, 31, tzinfo=dt.UTC)


def test_bars_stack_failures_on_deliveries_scaled_to_the_busiest_minute() -> None:
    start = chart.hour_start(NOW)
    rows = [
        Row(start, delivered=30, failed=5, retried=5),
        Row(start + dt.timedelta(minutes=59), delivered=10),
        Row(start - dt.timedelta(minutes=1), delivered=1000),  # before the hour: left out
    ]
    drawn = chart.activity(rows, NOW)
    assert drawn.most_per_minute == 40
    first, last = drawn.delivered
    assert (first.x, first.height) == (0, chart.HEIGHT * 30 / 40)
    assert last.x == 59 * chart.SLOT
    assert drawn.failed[0].y + drawn.failed[0].height == first.y, "failures sit on deliveries"
    assert drawn.totals == {"delivered": 40, "failed": 5, "retried": 5}


def test_lateness_is_drawn_on_a_log_scale_up_to_the_worst_p99() -> None:
    start = chart.hour_start(NOW)
    rows = [
        Row(start, 1, lateness_p50_ms=10, lateness_p99_ms=1000),
        Row(start + dt.timedelta(minutes=1), 1),  # no first attempt: no point
    ]
    drawn = chart.activity(rows, NOW)
    assert drawn.worst_lateness_ms == 1000
    ((_, p99_y),) = drawn.p99_points
    ((_, p50_y),) = drawn.p50_points
    assert p99_y == 0, "the worst p99 is the top of the scale"
    assert p50_y == pytest.approx(chart.HEIGHT * 2 / 3, abs=0.1), "10 ms: a third of the way to 1 s"


def test_an_idle_hour_draws_nothing() -> None:
    drawn = chart.activity([], NOW)
    assert (drawn.delivered, drawn.p50_points, drawn.most_per_minute) == ([], [], 0)
