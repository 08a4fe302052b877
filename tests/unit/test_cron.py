"""Cron specs and their fire times, against hand-computed calendars (2026-01-01 is a Thursday)."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler import cron, errors

NEW_YORK = ZoneInfo("America/New_York")
NEW_YEAR = "2026-01-01T00:00:00+00:00"


def at(text: str) -> datetime:
    """An aware datetime from ISO text; a fixed offset keeps fall-back instants unambiguous."""
    return datetime.fromisoformat(text)


def upcoming(spec: str, after: str, count: int) -> list[str]:
    return [t.isoformat() for t in cron.next_fire_times(cron.parse_spec(spec), at(after), count)]


class CountingTrigger(BaseTrigger):
    """Counts get_next_fire_time calls, to show latest_fire_time does not enumerate."""

    __slots__ = ("calls", "inner")

    def __init__(self, inner: BaseTrigger) -> None:
        self.inner = inner
        self.calls = 0

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        self.calls += 1
        found: datetime | None = self.inner.get_next_fire_time(previous, now)
        return found


SYNTAX_CASES = [
    # 6 fields: second 30 of every minute.
    (
        "30 * * * * *",
        NEW_YEAR,
        3,
        ["2026-01-01T00:00:30+00:00", "2026-01-01T00:01:30+00:00", "2026-01-01T00:02:30+00:00"],
    ),
    # 5 fields: second is 0.
    (
        "*/15 * * * *",
        NEW_YEAR,
        4,
        [
            "2026-01-01T00:15:00+00:00",
            "2026-01-01T00:30:00+00:00",
            "2026-01-01T00:45:00+00:00",
            "2026-01-01T01:00:00+00:00",
        ],
    ),
    ("  0   0 9 * * *  ", NEW_YEAR, 2, ["2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00"]),
    # Ranges and lists.
    (
        "0 0 9-11 * * *",
        NEW_YEAR,
        4,
        [
            "2026-01-01T09:00:00+00:00",
            "2026-01-01T10:00:00+00:00",
            "2026-01-01T11:00:00+00:00",
            "2026-01-02T09:00:00+00:00",
        ],
    ),
    (
        "0 5,10,50 * * * *",
        NEW_YEAR,
        4,
        [
            "2026-01-01T00:05:00+00:00",
            "2026-01-01T00:10:00+00:00",
            "2026-01-01T00:50:00+00:00",
            "2026-01-01T01:05:00+00:00",
        ],
    ),
    (
        "0 0,30 8-9,17 * * *",
        NEW_YEAR,
        7,
        [
            "2026-01-01T08:00:00+00:00",
            "2026-01-01T08:30:00+00:00",
            "2026-01-01T09:00:00+00:00",
            "2026-01-01T09:30:00+00:00",
            "2026-01-01T17:00:00+00:00",
            "2026-01-01T17:30:00+00:00",
            "2026-01-02T08:00:00+00:00",
        ],
    ),
    # Every step form: */n, a/n (= a-max/n), a-b/n, and */1.
    (
        "*/20 * * * * *",
        NEW_YEAR,
        3,
        ["2026-01-01T00:00:20+00:00", "2026-01-01T00:00:40+00:00", "2026-01-01T00:01:00+00:00"],
    ),
    (
        "5/20 * * * * *",
        NEW_YEAR,
        4,
        [
            "2026-01-01T00:00:05+00:00",
            "2026-01-01T00:00:25+00:00",
            "2026-01-01T00:00:45+00:00",
            "2026-01-01T00:01:05+00:00",
        ],
    ),
    (
        "20-35/15 * * * * *",
        NEW_YEAR,
        3,
        ["2026-01-01T00:00:20+00:00", "2026-01-01T00:00:35+00:00", "2026-01-01T00:01:20+00:00"],
    ),
    (
        "10/25 * * * *",
        NEW_YEAR,
        3,
        ["2026-01-01T00:10:00+00:00", "2026-01-01T00:35:00+00:00", "2026-01-01T01:10:00+00:00"],
    ),
    (
        "0 0 */6 * * *",
        NEW_YEAR,
        4,
        [
            "2026-01-01T06:00:00+00:00",
            "2026-01-01T12:00:00+00:00",
            "2026-01-01T18:00:00+00:00",
            "2026-01-02T00:00:00+00:00",
        ],
    ),
    ("*/1 */1 */1 * * *", NEW_YEAR, 2, ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"]),
    (
        "0 0 0 */10 * *",
        NEW_YEAR,
        4,
        [
            "2026-01-11T00:00:00+00:00",
            "2026-01-21T00:00:00+00:00",
            "2026-01-31T00:00:00+00:00",
            "2026-02-01T00:00:00+00:00",
        ],
    ),
    (
        "0 0 0 1 */5 *",
        NEW_YEAR,
        3,
        ["2026-06-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"],
    ),
    # Month names, any case, alone, in lists and in ranges.
    (
        "0 0 0 1 jan-mar *",
        NEW_YEAR,
        3,
        ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"],
    ),
    (
        "0 0 0 1 JUL,Dec *",
        NEW_YEAR,
        3,
        ["2026-07-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00", "2027-07-01T00:00:00+00:00"],
    ),
    (
        "0 0 0 15 feb/4 *",
        NEW_YEAR,
        3,
        ["2026-02-15T00:00:00+00:00", "2026-06-15T00:00:00+00:00", "2026-10-15T00:00:00+00:00"],
    ),
    # Weekday names and numbers: 0 and 7 are Sunday, 1 Monday, 6 Saturday.
    (
        "0 0 12 * * MON",
        NEW_YEAR,
        3,
        ["2026-01-05T12:00:00+00:00", "2026-01-12T12:00:00+00:00", "2026-01-19T12:00:00+00:00"],
    ),
    ("0 0 12 * * 1", NEW_YEAR, 2, ["2026-01-05T12:00:00+00:00", "2026-01-12T12:00:00+00:00"]),
    ("0 0 12 * * 0", NEW_YEAR, 2, ["2026-01-04T12:00:00+00:00", "2026-01-11T12:00:00+00:00"]),
    ("0 0 12 * * 7", NEW_YEAR, 2, ["2026-01-04T12:00:00+00:00", "2026-01-11T12:00:00+00:00"]),
    ("0 0 12 * * sun", NEW_YEAR, 2, ["2026-01-04T12:00:00+00:00", "2026-01-11T12:00:00+00:00"]),
    ("0 0 12 * * 6", NEW_YEAR, 2, ["2026-01-03T12:00:00+00:00", "2026-01-10T12:00:00+00:00"]),
    (
        "0 0 12 * * mon-fri",
        NEW_YEAR,
        4,
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-02T12:00:00+00:00",
            "2026-01-05T12:00:00+00:00",
            "2026-01-06T12:00:00+00:00",
        ],
    ),
    (
        "0 0 12 * * sat,Sun",
        NEW_YEAR,
        3,
        ["2026-01-03T12:00:00+00:00", "2026-01-04T12:00:00+00:00", "2026-01-10T12:00:00+00:00"],
    ),
    # Ranges reaching Sunday from either end.
    (
        "0 0 12 * * 5-7",
        NEW_YEAR,
        4,
        [
            "2026-01-02T12:00:00+00:00",
            "2026-01-03T12:00:00+00:00",
            "2026-01-04T12:00:00+00:00",
            "2026-01-09T12:00:00+00:00",
        ],
    ),
    (
        "0 0 12 * * fri-sun",
        NEW_YEAR,
        4,
        [
            "2026-01-02T12:00:00+00:00",
            "2026-01-03T12:00:00+00:00",
            "2026-01-04T12:00:00+00:00",
            "2026-01-09T12:00:00+00:00",
        ],
    ),
    (
        "0 0 12 * * 0-2",
        NEW_YEAR,
        4,
        [
            "2026-01-04T12:00:00+00:00",
            "2026-01-05T12:00:00+00:00",
            "2026-01-06T12:00:00+00:00",
            "2026-01-11T12:00:00+00:00",
        ],
    ),
    # */2 is sun,tue,thu,sat as in Unix cron (APScheduler's own */2 would be mon,wed,fri,sun).
    (
        "0 0 12 * * */2",
        NEW_YEAR,
        5,
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-03T12:00:00+00:00",
            "2026-01-04T12:00:00+00:00",
            "2026-01-06T12:00:00+00:00",
            "2026-01-08T12:00:00+00:00",
        ],
    ),
    (
        "0 0 12 * * 1/2",
        NEW_YEAR,
        3,
        ["2026-01-02T12:00:00+00:00", "2026-01-05T12:00:00+00:00", "2026-01-07T12:00:00+00:00"],
    ),
    # `?` stands for `*` in both day fields.
    ("0 0 12 ? * mon", NEW_YEAR, 2, ["2026-01-05T12:00:00+00:00", "2026-01-12T12:00:00+00:00"]),
    (
        "0 0 12 15 * ?",
        NEW_YEAR,
        3,
        ["2026-01-15T12:00:00+00:00", "2026-02-15T12:00:00+00:00", "2026-03-15T12:00:00+00:00"],
    ),
    ("0 0 12 ? * ?", NEW_YEAR, 2, ["2026-01-01T12:00:00+00:00", "2026-01-02T12:00:00+00:00"]),
    # Both day fields restricted: the 13th OR any Friday.
    (
        "0 0 12 13 * fri",
        NEW_YEAR,
        4,
        [
            "2026-01-02T12:00:00+00:00",
            "2026-01-09T12:00:00+00:00",
            "2026-01-13T12:00:00+00:00",
            "2026-01-16T12:00:00+00:00",
        ],
    ),
    (
        "0 0 12 1,15 * mon",
        NEW_YEAR,
        5,
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-05T12:00:00+00:00",
            "2026-01-12T12:00:00+00:00",
            "2026-01-15T12:00:00+00:00",
            "2026-01-19T12:00:00+00:00",
        ],
    ),
    # A step > 1 makes day-of-month restricted (robfig), so OR applies: 1,11,21,31 or Sundays.
    (
        "0 0 12 */10 * sun",
        NEW_YEAR,
        7,
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-04T12:00:00+00:00",
            "2026-01-11T12:00:00+00:00",
            "2026-01-18T12:00:00+00:00",
            "2026-01-21T12:00:00+00:00",
            "2026-01-25T12:00:00+00:00",
            "2026-01-31T12:00:00+00:00",
        ],
    ),
    # One day field unrestricted (`*`, `?` or `*/1`): AND, i.e. only the restricted one counts.
    ("0 0 12 13 * *", NEW_YEAR, 2, ["2026-01-13T12:00:00+00:00", "2026-02-13T12:00:00+00:00"]),
    (
        "0 0 12 13 * */1",
        NEW_YEAR,
        3,
        ["2026-01-13T12:00:00+00:00", "2026-02-13T12:00:00+00:00", "2026-03-13T12:00:00+00:00"],
    ),
    ("0 0 12 * * fri", NEW_YEAR, 2, ["2026-01-02T12:00:00+00:00", "2026-01-09T12:00:00+00:00"]),
    (
        "0 0 12 1-7 jan mon",
        NEW_YEAR,
        8,
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-02T12:00:00+00:00",
            "2026-01-03T12:00:00+00:00",
            "2026-01-04T12:00:00+00:00",
            "2026-01-05T12:00:00+00:00",
            "2026-01-06T12:00:00+00:00",
            "2026-01-07T12:00:00+00:00",
            "2026-01-12T12:00:00+00:00",
        ],
    ),
    # Only some months have the day; 29 February waits for leap years.
    (
        "0 0 0 31 * *",
        NEW_YEAR,
        3,
        ["2026-01-31T00:00:00+00:00", "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00"],
    ),
    ("0 0 0 29 2 *", NEW_YEAR, 2, ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    # The impossible half of an OR is dropped; the Mondays of February remain.
    (
        "0 0 0 30 feb mon",
        NEW_YEAR,
        5,
        [
            "2026-02-02T00:00:00+00:00",
            "2026-02-09T00:00:00+00:00",
            "2026-02-16T00:00:00+00:00",
            "2026-02-23T00:00:00+00:00",
            "2027-02-01T00:00:00+00:00",
        ],
    ),
    # Never fires.
    ("0 0 0 30 Feb ?", NEW_YEAR, 3, []),
    ("0 0 0 31 apr,jun,sep,nov *", NEW_YEAR, 3, []),
]

DESCRIPTOR_CASES = [
    ("@yearly", NEW_YEAR, 2, ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ("@annually", NEW_YEAR, 2, ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ("@monthly", NEW_YEAR, 2, ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
    ("@weekly", NEW_YEAR, 2, ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
    ("@daily", NEW_YEAR, 2, ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@midnight", NEW_YEAR, 2, ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@hourly", NEW_YEAR, 2, ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ("@Daily", NEW_YEAR, 1, ["2026-01-02T00:00:00+00:00"]),
]

# @every fires on multiples of the interval since 1970-01-01T00:00:00Z, not `after` + interval.
# 2026-01-01T00:00Z is 1767225600 s after the epoch: a multiple of 7 s and of 5400 s, and
# 300 s short of a multiple of 660 s.
EVERY_CASES = [
    ("@every 10s", NEW_YEAR, 2, ["2026-01-01T00:00:10+00:00", "2026-01-01T00:00:20+00:00"]),
    (
        "@every 7s",
        "2026-01-01T00:00:05+00:00",
        3,
        ["2026-01-01T00:00:07+00:00", "2026-01-01T00:00:14+00:00", "2026-01-01T00:00:21+00:00"],
    ),
    ("@every 7s", "2026-01-01T00:00:13.999+00:00", 1, ["2026-01-01T00:00:14+00:00"]),
    (
        "@every 90s",
        "2026-01-01T00:00:10+00:00",
        2,
        ["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"],
    ),
    (
        "@every 1m30s",
        "2026-01-01T00:00:10+00:00",
        2,
        ["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"],
    ),
    (
        "@every 1h30m",
        NEW_YEAR,
        3,
        ["2026-01-01T01:30:00+00:00", "2026-01-01T03:00:00+00:00", "2026-01-01T04:30:00+00:00"],
    ),
    (
        "@every 2h",
        "2026-01-01T01:00:00+00:00",
        2,
        ["2026-01-01T02:00:00+00:00", "2026-01-01T04:00:00+00:00"],
    ),
    (
        "@every 11m",
        NEW_YEAR,
        3,
        ["2026-01-01T00:05:00+00:00", "2026-01-01T00:16:00+00:00", "2026-01-01T00:27:00+00:00"],
    ),
    ("@every 2000ms", "2026-01-01T00:00:01+00:00", 1, ["2026-01-01T00:00:02+00:00"]),
    ("@every 1.5m", NEW_YEAR, 1, ["2026-01-01T00:01:30+00:00"]),
    # The zone only changes how the instants are shown.
    (
        "CRON_TZ=America/New_York @every 1h",
        NEW_YEAR,
        2,
        ["2025-12-31T20:00:00-05:00", "2025-12-31T21:00:00-05:00"],
    ),
]

ZONE_CASES = [
    # 2026-01-01T00:00Z is 09:00 in Tokyo; `after` is exclusive.
    (
        "CRON_TZ=Asia/Tokyo 0 0 9 * * *",
        NEW_YEAR,
        2,
        ["2026-01-02T09:00:00+09:00", "2026-01-03T09:00:00+09:00"],
    ),
    (
        "TZ=Europe/Paris 0 30 8 * * mon-fri",
        NEW_YEAR,
        3,
        ["2026-01-01T08:30:00+01:00", "2026-01-02T08:30:00+01:00", "2026-01-05T08:30:00+01:00"],
    ),
    (
        "CRON_TZ=America/New_York 0 0 * * *",
        NEW_YEAR,
        2,
        ["2026-01-01T00:00:00-05:00", "2026-01-02T00:00:00-05:00"],
    ),
    (
        "CRON_TZ=Asia/Kolkata @daily",
        NEW_YEAR,
        2,
        ["2026-01-02T00:00:00+05:30", "2026-01-03T00:00:00+05:30"],
    ),
    ("CRON_TZ=UTC 0 0 12 * * *", NEW_YEAR, 1, ["2026-01-01T12:00:00+00:00"]),
    ("TZ=Australia/Sydney 0 0 0 1 jul *", NEW_YEAR, 1, ["2026-07-01T00:00:00+10:00"]),
]

# America/New_York 2026: 03-08 02:00 EST -> 03:00 EDT; 11-01 02:00 EDT -> 01:00 EST.
DST_CASES = [
    # A daily time inside the gap fires that day, shifted forward by the gap: 03:30 EDT.
    (
        "CRON_TZ=America/New_York 0 30 2 * * *",
        "2026-03-06T12:00:00-05:00",
        3,
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    # ...even when asked after the gap but before the shifted time (CronTrigger skips it).
    (
        "CRON_TZ=America/New_York 30 2 * * *",
        "2026-03-08T03:15:00-04:00",
        2,
        ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "CRON_TZ=America/New_York 0 2 * * *",
        "2026-03-08T01:59:00-05:00",
        2,
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    (
        "CRON_TZ=America/New_York */20 2 * * *",
        "2026-03-08T00:00:00-05:00",
        4,
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:20:00-04:00",
            "2026-03-08T03:40:00-04:00",
            "2026-03-09T02:00:00-04:00",
        ],
    ),
    # Hourly jobs fire once per real hour: the skipped hour is not made up.
    (
        "CRON_TZ=America/New_York @hourly",
        "2026-03-08T00:30:00-05:00",
        3,
        ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"],
    ),
    (
        "CRON_TZ=America/New_York 0 * * * *",
        "2026-11-01T00:30:00-04:00",
        4,
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00",
        ],
    ),
    (
        "CRON_TZ=America/New_York */30 * * * *",
        "2026-11-01T00:45:00-04:00",
        5,
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
    ),
    # A daily time in the repeated hour fires once, at its first occurrence.
    (
        "CRON_TZ=America/New_York 0 30 1 * * *",
        "2026-10-31T12:00:00-04:00",
        2,
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "CRON_TZ=America/New_York 30 1 * * *",
        "2026-11-01T01:10:00-05:00",
        1,
        ["2026-11-02T01:30:00-05:00"],
    ),
    (
        "TZ=America/New_York 0 1,2 * * *",
        "2026-11-01T00:00:00-04:00",
        3,
        ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-02T01:00:00-05:00"],
    ),
    # Europe/London: 03-29 01:00 GMT -> 02:00 BST.
    (
        "CRON_TZ=Europe/London 30 1 * * *",
        "2026-03-28T12:00:00+00:00",
        2,
        ["2026-03-29T02:30:00+01:00", "2026-03-30T01:30:00+01:00"],
    ),
    # Australia/Lord_Howe moves by half an hour: 2026-10-04 02:00 -> 02:30.
    (
        "CRON_TZ=Australia/Lord_Howe 15 2 * * *",
        "2026-10-03T12:00:00+10:30",
        2,
        ["2026-10-04T02:45:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
    # Pacific/Apia skipped 2011-12-30 entirely; a daily job keeps a 24-hour rhythm across it.
    (
        "CRON_TZ=Pacific/Apia 0 12 * * *",
        "2011-12-28T13:00:00-10:00",
        3,
        ["2011-12-29T12:00:00-10:00", "2011-12-31T12:00:00+14:00", "2012-01-01T12:00:00+14:00"],
    ),
]


@pytest.mark.parametrize(("spec", "after", "count", "expected"), SYNTAX_CASES)
def test_next_fire_times_for_every_field_syntax(
    spec: str, after: str, count: int, expected: list[str]
) -> None:
    assert upcoming(spec, after, count) == expected


@pytest.mark.parametrize(("spec", "after", "count", "expected"), DESCRIPTOR_CASES)
def test_descriptors(spec: str, after: str, count: int, expected: list[str]) -> None:
    assert upcoming(spec, after, count) == expected


@pytest.mark.parametrize(("spec", "after", "count", "expected"), EVERY_CASES)
def test_every_is_anchored_at_the_unix_epoch(
    spec: str, after: str, count: int, expected: list[str]
) -> None:
    assert upcoming(spec, after, count) == expected


@pytest.mark.parametrize(("spec", "after", "count", "expected"), ZONE_CASES)
def test_time_zone_prefixes(spec: str, after: str, count: int, expected: list[str]) -> None:
    assert upcoming(spec, after, count) == expected


@pytest.mark.parametrize(("spec", "after", "count", "expected"), DST_CASES)
def test_daylight_saving_transitions(
    spec: str, after: str, count: int, expected: list[str]
) -> None:
    assert upcoming(spec, after, count) == expected


@pytest.mark.parametrize(
    ("spec", "timezone"),
    [
        ("0 0 12 * * *", "UTC"),
        ("CRON_TZ=Europe/Paris 0 0 12 * * *", "Europe/Paris"),
        ("TZ=Asia/Tokyo @daily", "Asia/Tokyo"),
        ("@every 5m", "UTC"),
    ],
)
def test_parse_spec_keeps_the_text_and_names_the_zone(spec: str, timezone: str) -> None:
    parsed = cron.parse_spec(spec)
    times = cron.next_fire_times(parsed, at(NEW_YEAR), 2)

    assert (parsed.spec, parsed.timezone) == (spec, timezone)
    assert [t.tzinfo for t in times] == [ZoneInfo(timezone)] * 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "0 0 12 * * 1-5",
            "cron[month='*', day='*', day_of_week='mon,tue,wed,thu,fri', hour='12', minute='0', "
            "second='0']",
        ),
        (
            "0 0 12 * * */2",
            "cron[month='*', day='*', day_of_week='tue,thu,sat,sun', hour='12', minute='0', "
            "second='0']",
        ),
        (
            "*/20 0-59/1 1-3,5 1-31 jan-dec 0-7",
            "cron[month='*', day='*', day_of_week='*', hour='1,2,3,5', minute='*', "
            "second='0,20,40']",
        ),
    ],
)
def test_fields_reach_apscheduler_as_explicit_lists(spec: str, expected: str) -> None:
    assert str(cron.parse_spec(spec).trigger) == expected


def test_utc_specs_use_an_explicit_utc_cron_trigger() -> None:
    trigger = cron.parse_spec("0 0 12 * * *").trigger

    assert isinstance(trigger, CronTrigger)
    assert trigger.timezone == ZoneInfo("UTC")


def test_both_day_fields_restricted_become_an_or_of_two_cron_triggers() -> None:
    trigger = cron.parse_spec("0 0 12 13 * fri").trigger

    assert isinstance(trigger, OrTrigger)
    assert [str(t) for t in trigger.triggers] == [
        "cron[month='*', day='13', day_of_week='*', hour='12', minute='0', second='0']",
        "cron[month='*', day='*', day_of_week='fri', hour='12', minute='0', second='0']",
    ]


def test_every_uses_an_interval_trigger_starting_at_the_epoch() -> None:
    trigger = cron.parse_spec("@every 1h30m").trigger

    assert isinstance(trigger, IntervalTrigger)
    assert (trigger.interval, trigger.start_date) == (
        timedelta(hours=1, minutes=30),
        datetime(1970, 1, 1, tzinfo=UTC),
    )


def test_zone_specs_use_a_wall_clock_trigger_in_that_zone() -> None:
    trigger = cron.parse_spec("CRON_TZ=America/New_York 0 30 1 * * *").trigger

    assert isinstance(trigger, cron.WallClockTrigger)
    assert (trigger.timezone, trigger.repeat_ambiguous) == (NEW_YORK, False)
    assert cron.parse_spec("CRON_TZ=America/New_York @hourly").trigger.repeat_ambiguous


def test_next_fire_times_stops_at_count_and_accepts_zero() -> None:
    spec = cron.parse_spec("* * * * * *")

    assert len(cron.next_fire_times(spec, at(NEW_YEAR), 100)) == 100
    assert cron.next_fire_times(spec, at(NEW_YEAR), 0) == []


def test_fire_times_between_include_the_start_and_exclude_the_end() -> None:
    spec = cron.parse_spec("*/10 * * * * *")
    window = cron.fire_times_between(spec, at(NEW_YEAR), at("2026-01-01T00:01:00+00:00"), 100)
    assert [t.isoformat() for t in window] == [
        f"2026-01-01T00:00:{s:02d}+00:00" for s in range(0, 60, 10)
    ]
    late_start = cron.fire_times_between(
        spec, at("2026-01-01T00:00:00.5+00:00"), at("2026-01-01T00:00:20+00:00"), 100
    )
    assert [t.second for t in late_start] == [10]


def test_fire_times_between_stop_one_past_the_most_asked() -> None:
    spec = cron.parse_spec("* * * * * *")
    times = cron.fire_times_between(spec, at(NEW_YEAR), at("2027-01-01T00:00:00+00:00"), 5)
    assert len(times) == 6
    assert cron.fire_times_between(spec, at(NEW_YEAR), at(NEW_YEAR), 5) == []


def test_next_fire_times_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.next_fire_times(cron.parse_spec("@daily"), datetime(2026, 1, 1), 1)


def test_hourly_fires_once_per_real_hour_across_both_transitions() -> None:
    spec = cron.parse_spec("CRON_TZ=America/New_York @hourly")
    for day in ("2026-03-07T00:00:00-05:00", "2026-10-31T00:00:00-04:00"):
        times = cron.next_fire_times(spec, at(day), 72)
        gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in itertools.pairwise(times)}

        assert gaps == {timedelta(hours=1)}


@pytest.mark.parametrize("wall_time", ["0 30 2 * * *", "0 30 1 * * *", "0 0 2 * * *"])
def test_daily_fires_exactly_once_on_every_local_date_of_the_year(wall_time: str) -> None:
    spec = cron.parse_spec(f"CRON_TZ=America/New_York {wall_time}")
    times = cron.next_fire_times(spec, at("2025-12-31T12:00:00-05:00"), 365)

    assert [t.date() for t in times] == [
        datetime(2026, 1, 1).date() + timedelta(days=n) for n in range(365)
    ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-06-01T12:00:00-04:00", "2026-06-01T12:00:00-04:00"),
        ("2026-06-01T12:00:00.250000-04:00", "2026-06-01T12:00:01-04:00"),
    ],
)
def test_first_fire_time_includes_now_as_cron_trigger_does(now: str, expected: str) -> None:
    # The dispatcher's add_job calls get_next_fire_time(None, datetime.now(UTC)).
    ours = cron.parse_spec("CRON_TZ=America/New_York * * * * * *").trigger.get_next_fire_time(
        None, at(now)
    )
    reference = CronTrigger(second="*", timezone=NEW_YORK).get_next_fire_time(None, at(now))

    assert ours is not None and reference is not None
    assert ours.isoformat() == reference.isoformat() == expected


def test_dispatcher_catch_up_sees_the_same_times_as_the_preview() -> None:
    # APScheduler's Job._get_run_times calls get_next_fire_time(previous, now) with a late `now`.
    spec = cron.parse_spec("CRON_TZ=America/New_York 0 */30 * * * *")
    preview = cron.next_fire_times(spec, at("2026-11-01T00:00:00-04:00"), 8)
    late = at("2026-11-02T00:00:00+00:00")
    caught_up = [preview[0]]
    for _ in range(7):
        following = spec.trigger.get_next_fire_time(caught_up[-1], late)
        assert following is not None
        caught_up.append(following)

    assert [t.isoformat() for t in caught_up] == [t.isoformat() for t in preview]


def brute_force(minutes: set[int], hours: set[int], zone: ZoneInfo, day: datetime) -> list[str]:
    """The module's DST rule restated with PEP 495 folds, applied to every wall minute."""
    instants = set()
    wall = day - timedelta(days=1)
    while wall < day + timedelta(days=2):
        if wall.minute in minutes and wall.hour in hours:
            first, second = wall.replace(tzinfo=zone), wall.replace(tzinfo=zone, fold=1)
            instants.add(first.astimezone(UTC))  # fold=0 in a gap is the forward-shifted instant
            first_offset, second_offset = first.utcoffset(), second.utcoffset()
            assert first_offset is not None and second_offset is not None
            if second_offset < first_offset and len(hours) == 24:
                instants.add(second.astimezone(UTC))
        wall += timedelta(minutes=1)
    return [t.isoformat() for t in sorted(instants)]


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/New_York", datetime(2026, 3, 8)),
        ("America/New_York", datetime(2026, 11, 1)),
        ("Australia/Lord_Howe", datetime(2026, 4, 5)),  # back from 02:00 to 01:30
        ("Australia/Lord_Howe", datetime(2026, 10, 4)),  # forward from 02:00 to 02:30
    ],
)
@pytest.mark.parametrize(
    ("spec", "minutes", "hours"),
    [
        ("*/20 * * * *", {0, 20, 40}, set(range(24))),
        ("45 * * * *", {45}, set(range(24))),
        ("30 1 * * *", {30}, {1}),
        ("15,45 1,2 * * *", {15, 45}, {1, 2}),
        ("10 2 * * *", {10}, {2}),
        ("0 */2 * * *", {0}, set(range(0, 24, 2))),
    ],
)
def test_transition_days_match_a_brute_force_walk_over_wall_minutes(
    zone: str, day: datetime, spec: str, minutes: set[int], hours: set[int]
) -> None:
    expected = brute_force(minutes, hours, ZoneInfo(zone), day)
    start = (day - timedelta(days=1)).replace(tzinfo=ZoneInfo(zone)) - timedelta(seconds=1)
    parsed = cron.parse_spec(f"CRON_TZ={zone} {spec}")
    times = cron.next_fire_times(parsed, start, len(expected))

    assert [t.astimezone(UTC).isoformat() for t in times] == expected


@pytest.mark.parametrize(
    "spec", ["30 * * * * *", "0 15 9 * * mon-fri", "0 */20 1-3 * * *", "0 0 12 13 * *"]
)
def test_wall_clock_trigger_matches_cron_trigger_away_from_transitions(spec: str) -> None:
    # These fields mean the same to APScheduler, so its CronTrigger can serve as the reference.
    second, minute, hour, day, month, day_of_week = spec.split()
    reference = CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=day_of_week,
        timezone=NEW_YORK,
    )
    expected: list[str] = []
    previous = None
    now = at("2026-06-01T00:00:00-04:00")
    for _ in range(40):
        found = reference.get_next_fire_time(previous, now)
        assert found is not None
        expected.append(found.isoformat())
        previous = now = found

    assert upcoming(f"CRON_TZ=America/New_York {spec}", "2026-05-31T23:59:59-04:00", 40) == expected


@pytest.mark.parametrize(
    ("spec", "after", "until", "expected"),
    [
        ("0 0 12 * * *", NEW_YEAR, "2026-01-05T11:59:59+00:00", "2026-01-04T12:00:00+00:00"),
        # `until` is inclusive, `after` exclusive.
        ("0 0 12 * * *", NEW_YEAR, "2026-01-04T12:00:00+00:00", "2026-01-04T12:00:00+00:00"),
        ("0 0 12 * * *", "2026-01-01T12:00:00+00:00", "2026-01-02T11:00:00+00:00", None),
        ("* * * * * *", NEW_YEAR, "2026-01-08T00:00:00.5+00:00", "2026-01-08T00:00:00+00:00"),
        ("0 0 0 1 1 *", NEW_YEAR, "2026-12-31T23:59:59+00:00", None),
        ("0 0 0 30 Feb ?", "1970-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00", None),
        ("@every 7s", NEW_YEAR, "2026-01-08T00:00:03+00:00", "2026-01-08T00:00:00+00:00"),
        ("0 0 12 13 * fri", NEW_YEAR, "2026-01-15T00:00:00+00:00", "2026-01-13T12:00:00+00:00"),
        (
            "CRON_TZ=America/New_York 0 * * * *",
            "2026-10-31T00:00:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:00:00-05:00",
        ),
        (
            "CRON_TZ=America/New_York 30 1 * * *",
            "2026-10-31T00:00:00-04:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T01:30:00-04:00",
        ),
        (
            "CRON_TZ=America/New_York 30 2 * * *",
            "2026-03-07T00:00:00-05:00",
            "2026-03-08T04:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
        ),
        ("0 0 0 1 1 *", "2026-01-02T00:00:00+00:00", "2026-01-01T00:00:00+00:00", None),
    ],
)
def test_latest_fire_time(spec: str, after: str, until: str, expected: str | None) -> None:
    latest = cron.latest_fire_time(cron.parse_spec(spec), at(after), at(until))

    assert (latest.isoformat() if latest else None) == expected


@pytest.mark.parametrize(
    ("spec", "until", "expected"),
    [
        ("* * * * * *", "2026-01-08T00:00:00+00:00", "2026-01-08T00:00:00+00:00"),
        ("* * 0-5 * * *", "2026-01-07T23:00:00+00:00", "2026-01-07T05:59:59+00:00"),
        (
            "CRON_TZ=America/New_York * * 0-5 * * *",
            "2026-11-07T23:00:00-05:00",
            "2026-11-07T05:59:59-05:00",
        ),
    ],
)
def test_latest_fire_time_searches_a_week_of_seconds_without_enumerating(
    spec: str, until: str, expected: str
) -> None:
    parsed = cron.parse_spec(spec)
    counting = CountingTrigger(parsed.trigger)
    after = at(until) - timedelta(days=7)

    latest = cron.latest_fire_time(dataclasses.replace(parsed, trigger=counting), after, at(until))

    assert latest is not None and latest.isoformat() == expected
    assert counting.calls < 80  # a week holds 604800 fire times


@pytest.mark.parametrize(
    "spec",
    [
        "0 0 12 * * mon-fri",
        "0 0 12 13 * fri",
        "CRON_TZ=America/New_York 0 30 1 * * *",
        "CRON_TZ=Europe/Paris 0 0 12 13 * fri",
        "@every 1h30m",
        "0 0 0 30 Feb ?",
    ],
)
def test_trigger_survives_pickling(spec: str) -> None:
    parsed = cron.parse_spec(spec)
    restored = dataclasses.replace(
        parsed, trigger=pickle.loads(pickle.dumps(parsed.trigger, pickle.HIGHEST_PROTOCOL))
    )
    after = at("2026-10-30T00:00:00+00:00")

    assert type(restored.trigger) is type(parsed.trigger)
    assert cron.next_fire_times(restored, after, 5) == cron.next_fire_times(parsed, after, 5)


def test_wall_clock_trigger_rejects_unknown_pickle_versions() -> None:
    trigger = cron.parse_spec("CRON_TZ=Europe/Paris @daily").trigger
    state = {**trigger.__getstate__(), "version": 2}

    with pytest.raises(ValueError, match="version 2"):
        cron.WallClockTrigger.__new__(cron.WallClockTrigger).__setstate__(state)


INVALID_CASES = [
    ("", "empty"),
    ("   ", "empty"),
    ("0 " * 101, "202 characters long; at most 200"),
    ("* * * *", "got 4 fields, expected 5"),
    ("* * * * * * *", "got 7 fields, expected 5 (minute hour day-of-month month day-of-week) or 6"),
    ("60 * * * * *", "second 60 out of range 0-59"),
    ("0 61 * * * *", "minute 61 out of range 0-59"),
    ("61 * * * *", "minute 61 out of range 0-59"),
    ("0 0 24 * * *", "hour 24 out of range 0-23"),
    ("0 0 0 0 * *", "day-of-month 0 out of range 1-31"),
    ("0 0 0 32 * *", "day-of-month 32 out of range 1-31"),
    ("0 0 0 * 13 *", "month 13 out of range 1-12"),
    ("0 0 0 * 0 *", "month 0 out of range 1-12"),
    ("0 0 0 * * 8", "day-of-week 8 out of range 0-7"),
    ("0 0 0 1-40 * *", "day-of-month 40 out of range 1-31"),
    ("0 0 0 * foo *", "unknown month name 'foo' (expected jan-dec or 1-12)"),
    ("0 0 0 * january *", "unknown month name 'january'"),
    ("0 0 0 * * funday", "unknown day-of-week name 'funday' (expected sun-sat or 0-7)"),
    ("0 0 0 * * mon-xyz", "unknown day-of-week name 'xyz'"),
    ("0 mon * * * *", "minute 'mon' is not a number"),
    ("*/0 * * * * *", "second step in '*/0' is 0; it must be at least 1"),
    ("0 10/0 * * * *", "minute step in '10/0' is 0"),
    ("0 0 1-5/0 * * *", "hour step in '1-5/0' is 0"),
    ("0 */x * * * *", "minute step 'x' in '*/x' is not a number"),
    ("0 */1/2 * * * *", "minute step '1/2' in '*/1/2' is not a number"),
    ("0 5-1 * * * *", "minute range '5-1' is reversed: 5 is after 1"),
    ("0 0 0 * dec-jan *", "month range 'dec-jan' is reversed"),
    ("0 0 0 * * fri-mon", "day-of-week range 'fri-mon' is reversed"),
    ("0 0 0 * * 6-1", "day-of-week range '6-1' is reversed"),
    ("0 5% * * * *", "minute '5%' contains invalid character '%'"),
    ("0 1x * * * *", "minute '1x' is not a number"),
    ("0 1-2-3 * * * *", "minute '1-2-3' contains invalid character '-'"),
    ("0 -5 * * * *", "minute '-5' is missing a value"),
    ("0 1- * * * *", "minute '1-' is missing a value"),
    ("0 0 ٣ * * *", "hour '٣' contains invalid character '٣'"),
    ("0 0 0 1\x00 * *", "day-of-month '1\\x00' contains invalid character '\\x00'"),
    ("0 1,,2 * * * *", "minute '1,,2' has an empty list item"),
    ("? * * * * *", "second '?': '?' is only allowed in the two day fields"),
    ("@fortnightly", "unknown descriptor '@fortnightly'; expected one of @yearly"),
    ("@", "unknown descriptor '@'"),
    ("@daily 5", "unexpected text '5' after @daily"),
    ("@every", "@every needs a duration"),
    ("@every 1x", "@every duration '1x' is not a Go duration"),
    ("@every 5", "@every duration '5' is not a Go duration"),
    ("@every -1h", "@every duration '-1h' is not a Go duration"),
    ("@every 1h 30m", "@every duration '1h 30m' is not a Go duration"),
    ("@every 1.5s", "@every duration '1.5s' is not a whole number of seconds"),
    ("@every 1500ms", "@every duration '1500ms' is not a whole number of seconds"),
    ("@every 500ms", "@every duration '500ms' is shorter than the minimum of 1s"),
    ("@every 0s", "@every duration '0s' is shorter than the minimum of 1s"),
    ("@every 0", "@every duration '0' is shorter than the minimum of 1s"),
    ("@every 9999999999999h", "longer than Go's maximum"),
    ("CRON_TZ=Mars/Olympus_Mons 0 0 * * *", "unknown time zone 'Mars/Olympus_Mons'"),
    ("TZ=Nowhere * * * * *", "unknown time zone 'Nowhere'"),
    ("CRON_TZ=America * * * * *", "unknown time zone 'America'"),
    ("CRON_TZ=../etc/passwd * * * * *", "unknown time zone '../etc/passwd'"),
    ("CRON_TZ=localtime * * * * *", "time zone 'localtime' means the host's zone"),
    ("CRON_TZ= * * * * *", "time zone prefix names no zone"),
    (
        "CRON_TZ=Europe/Paris",
        "time zone prefix 'CRON_TZ=Europe/Paris' must be followed by a schedule",
    ),
    ("CRON_TZ=Europe/Paris 0 0 0 * * 9", "day-of-week 9 out of range 0-7"),
]


@pytest.mark.parametrize(("spec", "reason"), INVALID_CASES)
def test_invalid_specs_say_what_is_wrong(spec: str, reason: str) -> None:
    with pytest.raises(errors.InvalidCronSpec) as caught:
        cron.parse_spec(spec)

    assert reason in caught.value.reason
    assert caught.value.spec == spec
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "never"),
    [
        ("0 0 30 2 *", True),
        ("0 0 0 30 Feb ?", True),
        ("CRON_TZ=Europe/Paris 0 0 12 31 4 ?", True),
        ("0 0 31 2,4,6,9,11 *", True),
        ("0 0 31 2,3 *", False),
        ("0 0 29 2 *", False),  # leap years
        ("0 0 30 2 mon", False),  # either day field: every Monday of February
        ("@daily", False),
        ("@every 1h", False),
        ("* * * * *", False),
    ],
)
def test_a_spec_no_date_matches_is_known_to_never_fire(spec: str, never: bool) -> None:
    parsed = cron.parse_spec(spec)
    assert parsed.never_fires is never
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert (not cron.next_fire_times(parsed, after, 1)) is never
