"""The overview's charts as SVG geometry, computed here so the page needs no chart library and
no script: one slot per minute of the last hour, bars for deliveries and failures, lines for
lateness p50 and p99."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from typing import Protocol

MINUTES = 60
WIDTH = 720
HEIGHT = 160
SLOT = WIDTH / MINUTES


class Minute(Protocol):
    """One minute of the delivery rollup, summed over dispatchers."""

    @property
    def minute(self) -> dt.datetime: ...
    @property
    def delivered(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def lateness_p50_ms(self) -> float | None: ...
    @property
    def lateness_p99_ms(self) -> float | None: ...


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    label: str


@dataclasses.dataclass(frozen=True)
class Activity:
    """What the overview draws: bars per minute, lateness lines, and the scales' top values."""

    delivered: list[Bar]
    failed: list[Bar]
    most_per_minute: int
    p50_points: list[tuple[float, float]]
    p99_points: list[tuple[float, float]]
    worst_lateness_ms: float
    totals: dict[str, int]
    start: dt.datetime
    end: dt.datetime


def hour_start(now: dt.datetime) -> dt.datetime:
    """The first minute of the hour the chart shows, ending with the minute in progress."""
    return now.replace(second=0, microsecond=0) - dt.timedelta(minutes=MINUTES - 1)


def activity(minutes: Sequence[Minute], now: dt.datetime) -> Activity:
    start = hour_start(now)
    slots: dict[int, Minute] = {}
    for row in minutes:
        index = int((row.minute - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            slots[index] = row
    most = max([row.delivered + row.failed + row.retried for row in slots.values()] or [0])
    scale = HEIGHT / most if most else 0.0
    delivered, failed = [], []
    for index, row in sorted(slots.items()):
        x = index * SLOT
        when = (start + dt.timedelta(minutes=index)).strftime("%H:%M")
        good = row.delivered * scale
        bad = (row.failed + row.retried) * scale
        delivered.append(Bar(x, HEIGHT - good, good, f"{when}: {row.delivered:,} delivered"))
        failed.append(
            Bar(x, HEIGHT - good - bad, bad, f"{when}: {row.failed + row.retried:,} failed")
        )
    worst = max(
        [row.lateness_p99_ms for row in slots.values() if row.lateness_p99_ms is not None] or [0]
    )
    return Activity(
        delivered=delivered,
        failed=failed,
        most_per_minute=most,
        p50_points=_line(slots, "lateness_p50_ms", worst),
        p99_points=_line(slots, "lateness_p99_ms", worst),
        worst_lateness_ms=worst,
        totals={
            "delivered": sum(row.delivered for row in slots.values()),
            "failed": sum(row.failed for row in slots.values()),
            "retried": sum(row.retried for row in slots.values()),
        },
        start=start,
        end=start + dt.timedelta(minutes=MINUTES),
    )


def _line(slots: dict[int, Minute], field: str, worst: float) -> list[tuple[float, float]]:
    """Points on a log scale from 1 ms to `worst`, so a 5 ms p50 and a 900 ms p99 both show;
    minutes without first attempts have no point."""
    top = math.log10(max(worst, 10.0))
    points = []
    for index, row in sorted(slots.items()):
        value = getattr(row, field)
        if value is None:
            continue
        y = HEIGHT - HEIGHT * math.log10(max(value, 1.0)) / top
        points.append((round(index * SLOT + SLOT / 2, 1), round(y, 1)))
    return points
