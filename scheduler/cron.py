"""Turn cron specs in the robfig/cron v3 syntax that clients send into APScheduler 3 triggers.

Accepted forms (see ``parse_spec``):

- ``second minute hour day-of-month month day-of-week`` (6 fields, the original service's default)
  or ``minute hour day-of-month month day-of-week`` (5 fields, second 0). Each field takes ``*``,
  numbers, ``a-b``, lists, ``*/n``, ``a/n`` (= ``a-max/n``) and ``a-b/n``; months ``jan``-``dec``
  and weekdays ``sun``-``sat`` in any case; ``?`` means ``*`` in the two day fields.
- Day-of-week is numbered as in Unix cron: 0 and 7 are Sunday, 1 Monday .. 6 Saturday, and ``*`` and
  ``a/n`` stop at 6 (robfig). ``sun`` closing a range means 7, so ``fri-sun`` works. Every field is
  expanded here and handed to APScheduler as an explicit list, because APScheduler 3 counts
  weekdays from Monday=0 (its ``*/2`` is mon,wed,...).
- Day-of-month and day-of-week combine as in robfig: if either is written ``*`` or ``?`` (``*/1``
  too, but not ``*/2``) both must match; otherwise a day matching either one fires.
- ``@yearly``/``@annually``, ``@monthly``, ``@weekly`` (Sunday), ``@daily``/``@midnight``,
  ``@hourly``, and ``@every <Go duration>`` (``90s``, ``1h30m``; whole seconds, at least 1 s).
  Unlike robfig, ``@every`` is anchored at the Unix epoch: it fires at every multiple of the
  interval since 1970-01-01T00:00:00Z, so restarts, the preview endpoint and the dispatcher all
  agree on the same instants, whatever the time zone.
- ``CRON_TZ=<IANA zone> `` or the legacy ``TZ=<zone> `` prefix; without one the spec runs in UTC,
  never in the host's zone.

Daylight saving time (checked against APScheduler 3.11.3): schedules follow the wall clock of
their zone, with two adjustments that plain ``CronTrigger`` does not make consistently.

- A wall time that does not exist (the spring-forward gap) fires once, shifted forward by the
  length of the gap: a daily ``30 2 * * *`` in America/New_York fires at 03:30 EDT on 2026-03-08.
  The day is never skipped. ``CronTrigger`` computes that instant too, but misses it when asked from
  a moment between 03:00 and 03:30 EDT.
- A wall time that occurs twice (the fall-back fold) fires twice only when the spec's hour field
  covers all 24 hours (``@hourly``, ``*/15 * * * *``), i.e. once per real hour, and otherwise once,
  at the first occurrence: a daily ``30 1 * * *`` fires at 01:30 EDT only. ``CronTrigger`` fires
  both.

Zone specs therefore get a ``WallClockTrigger``; UTC specs, which have no transitions, get plain
APScheduler triggers. All triggers are module-level classes, so the SQLAlchemy job store can
pickle them.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import NamedTuple, NoReturn
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import Options, get_description

from scheduler import errors, tuning

MAX_SPEC_LENGTH = 200
# A spec that no date matches is accepted, as the seed accepts it (refusing it would fail an
# application's whole cron set at deploy), and said to never fire.
NEVER_FIRES = "No date matches this spec (such as February 30): the cron never fires."
DEFAULT_TIMEZONE = "UTC"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
# A few days short of datetime.max, so that adding any UTC offset still yields a valid datetime.
_MAX_TIMESTAMP = 253_402_000_000
# The largest UTC offset change in tzdata (Pacific/Apia, 2011, and others) is one day...
_MAX_SHIFT = 86_400
# ...and since 1970 no zone changes offset twice within six days, so probing the offset once a day
# cannot step over a pair of transitions.
_PROBE_STEP = 86_400
# Go's time.Duration is an int64 count of nanoseconds.
_MAX_EVERY_SECONDS = (2**63 - 1) // 10**9

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_DURATION_UNITS = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[0-9]+")
# Names that zoneinfo resolves to the host's zone, which a spec must never depend on.
_HOST_ZONE_NAMES = frozenset({"localtime", "local"})


@dataclass(frozen=True)
class CronSpec:
    """A parsed spec: the text as given, its IANA zone, the trigger the dispatcher schedules, and
    whether no date matches it (NEVER_FIRES)."""

    spec: str
    timezone: str
    trigger: BaseTrigger
    never_fires: bool = False


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int
    star_high: int  # end of `*` and `a/n`; day-of-week accepts 7 but `*` stops at 6, as robfig
    names: tuple[str, ...] = ()
    name_base: int = 0
    allows_question: bool = False

    def value_of(self, name: str) -> int | None:
        lowered = name.lower()
        return self.names.index(lowered) + self.name_base if lowered in self.names else None


_SECOND = _FieldKind("second", 0, 59, 59)
_MINUTE = _FieldKind("minute", 0, 59, 59)
_HOUR = _FieldKind("hour", 0, 23, 23)
_DAY = _FieldKind("day-of-month", 1, 31, 31, allows_question=True)
_MONTH = _FieldKind("month", 1, 12, 12, _MONTH_NAMES, 1)
_WEEKDAY = _FieldKind("day-of-week", 0, 7, 6, _WEEKDAY_NAMES, 0, allows_question=True)
_SIX_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)
_FIELDS_HELP = (
    "expected 5 (minute hour day-of-month month day-of-week) "
    "or 6 (second minute hour day-of-month month day-of-week)"
)


class _Field(NamedTuple):
    values: frozenset[int]
    star: bool  # robfig's "unrestricted": written `*` or `?`, possibly with step 1


@dataclass(frozen=True)
class _Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool


class WallClockTrigger(BaseTrigger):
    """Fires when the wall clock of ``timezone`` shows a time that ``wall_trigger`` matches.

    ``wall_trigger`` is a trigger evaluated in UTC: UTC has no transitions, so it lists local wall
    times in order, and this class maps them to instants with the DST rules of the module docstring.
    """

    __slots__ = ("repeat_ambiguous", "timezone", "wall_trigger")

    def __init__(self, wall_trigger: BaseTrigger, tz: ZoneInfo, repeat_ambiguous: bool) -> None:
        self.wall_trigger = wall_trigger
        self.timezone = tz
        self.repeat_ambiguous = repeat_ambiguous

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Same start rule as CronTrigger when now >= previous, but in exact UTC seconds: adding to
        # a fold=1 local time would drop the fold and step back an hour.
        if previous_fire_time is None:
            start = _ceil_timestamp(now)
        else:
            start = _floor_timestamp(previous_fire_time) + 1
        found = self._first_at_or_after(start)
        return None if found is None else datetime.fromtimestamp(found, self.timezone)

    def _first_at_or_after(self, start: int) -> int | None:
        """Earliest fire instant >= start, walking constant-offset segments of the zone."""
        best: int | None = None
        offset = _offset(self.timezone, start)
        low_wall = start + offset
        previous = _last_transition(self.timezone, start)
        if previous is not None:
            offset_before = _offset(self.timezone, previous - 1)
            if offset_before < offset:
                best = self._first_in_gap(start, previous, offset_before, offset)
            elif not self.repeat_ambiguous and low_wall < previous + offset_before:
                low_wall = previous + offset_before
        segment_start = start
        while True:
            wall = self._next_wall(low_wall)
            candidate = None if wall is None else wall - offset
            horizon = _min_or_none(candidate, best)
            if horizon is None:
                return None
            transition = _next_transition(self.timezone, segment_start, horizon)
            if transition is None:
                return horizon
            if candidate is not None and candidate < transition:
                return candidate
            new_offset = _offset(self.timezone, transition)
            if wall is not None and offset < new_offset and wall < transition + new_offset:
                # A wall time inside the gap: keep this segment's offset, i.e. shift it forward.
                best = _min_or_none(candidate, best)
            if best is not None and transition >= best:
                return best
            low_wall = transition + new_offset
            if new_offset < offset and not self.repeat_ambiguous:
                low_wall = transition + offset
            segment_start, offset = transition, new_offset

    def _first_in_gap(self, start: int, transition: int, before: int, after: int) -> int | None:
        """First gap wall time whose forward-shifted instant is >= start, if any."""
        wall = self._next_wall(start + before)
        if wall is not None and wall < transition + after:
            return wall - before
        return None

    def _next_wall(self, wall: int) -> int | None:
        """First matching wall time >= wall, both as seconds on a UTC-like naive clock."""
        if wall > _MAX_TIMESTAMP:
            return None
        found = self.wall_trigger.get_next_fire_time(None, datetime.fromtimestamp(wall, UTC))
        if found is None:
            return None
        seconds = _floor_timestamp(found)
        return seconds if seconds <= _MAX_TIMESTAMP else None

    def __getstate__(self) -> dict[str, object]:
        return {
            "version": 1,
            "wall_trigger": self.wall_trigger,
            "timezone": self.timezone.key,
            "repeat_ambiguous": self.repeat_ambiguous,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown WallClockTrigger state version {state.get('version')}")
        wall_trigger = state["wall_trigger"]
        key = state["timezone"]
        if not isinstance(wall_trigger, BaseTrigger) or not isinstance(key, str):
            raise ValueError("corrupt WallClockTrigger state")
        self.wall_trigger = wall_trigger
        self.timezone = ZoneInfo(key)
        self.repeat_ambiguous = bool(state["repeat_ambiguous"])

    def __str__(self) -> str:
        return f"wallclock[{self.wall_trigger}, timezone='{self.timezone.key}']"

    def __repr__(self) -> str:
        return (
            f"<WallClockTrigger ({self.wall_trigger!r}, timezone='{self.timezone.key}', "
            f"repeat_ambiguous={self.repeat_ambiguous})>"
        )


@functools.lru_cache(maxsize=tuning.PARSED_SPECS_CACHED)
def parse_spec(spec: str) -> CronSpec:
    """Parse a cron spec (kept: the same spec, checked then stored by POST /cron and recorded
    by the leader at each tick, is parsed once; a CronSpec and its trigger are immutable).

    :raise errors.InvalidCronSpec: with a reason naming the offending field and value.
    """
    if len(spec) > MAX_SPEC_LENGTH:
        _fail(spec, f"spec is {len(spec)} characters long; at most {MAX_SPEC_LENGTH} are allowed")
    text = spec.strip()
    if not text:
        _fail(spec, "spec is empty")
    zone, body = _split_zone(spec, text)
    if body.startswith("@"):
        return CronSpec(spec, zone.key, _descriptor_trigger(spec, body, zone))
    schedule = _parse_fields(spec, body.split())
    # With both day fields restricted, a weekday always comes round (cron's OR rule).
    never_fires = schedule.weekdays_star and not _days_can_fire(schedule)
    return CronSpec(spec, zone.key, _schedule_trigger(schedule, zone), never_fires)


def describe(spec: CronSpec) -> str:
    """The schedule in plain English, with its zone (cron-descriptor's wording); the spec itself
    where that library cannot read it."""
    zone, body = _split_zone(spec.spec, spec.spec.strip())
    name, _, rest = body.partition(" ")
    if name.lower() == "@every":
        words = f"Every {_describe_seconds(_parse_duration(spec.spec, rest.strip()))}"
    else:
        fields = _DESCRIPTORS.get(name.lower(), body).split()
        fields = ["0", *fields] if len(fields) == 5 else fields
        options = Options()
        options.use_24hour_time_format = True
        try:
            words = get_description(" ".join(fields), options)
        except Exception:  # its own exception types vary by release; the spec is a fair answer
            words = body
    return f"{words} ({zone.key})"


def _describe_seconds(seconds: int) -> str:
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}" if count == 1 else f"{count} {unit}s")
    return " ".join(parts)


def next_fire_times(spec: CronSpec, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, in the spec's zone.

    Fewer are returned when the schedule ends. Times come from the trigger's own
    ``get_next_fire_time`` called as the dispatcher calls it, so they are what it will fire.
    """
    _as_utc(after)  # refuse a naive moment before anything can swallow the error
    return list(itertools.islice(_fire_times(spec, after), count))


def bounded_fire_times(
    spec: CronSpec,
    after: datetime,
    count: int,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, from ``start_at`` on (inclusive)
    and up to ``end_at`` (inclusive), as a cron with those bounds fires them."""
    if start_at is not None and start_at > after:
        after = start_at - timedelta(microseconds=1)
    times = next_fire_times(spec, after, count)
    return [moment for moment in times if end_at is None or moment <= end_at]


def fire_times_between(spec: CronSpec, start: datetime, end: datetime, most: int) -> list[datetime]:
    """The fire times t with ``start <= t < end``, in the spec's zone, as ``next_fire_times``
    computes them; at most ``most + 1``, so a caller can tell a window that holds more than
    ``most`` without computing them all."""
    start, end = _as_utc(start), _as_utc(end)
    times: list[datetime] = []
    for fire_time in _fire_times(spec, start - timedelta(microseconds=1)):
        if fire_time >= end or len(times) > most:
            break
        times.append(fire_time)
    return times


def _fire_times(spec: CronSpec, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, in the spec's zone, until the schedule ends."""
    zone = ZoneInfo(spec.timezone)
    fire_time: datetime | None = None
    while True:
        try:
            if fire_time is None:
                fire_time = _first_fire_after(spec.trigger, after)
            else:
                fire_time = spec.trigger.get_next_fire_time(fire_time, fire_time)
        except (OverflowError, ValueError):
            # Past 9999-12-31 no time can be represented: the schedule ends there.
            return
        if fire_time is None:
            return
        yield fire_time.astimezone(zone)


def latest_fire_time(spec: CronSpec, after: datetime, until: datetime) -> datetime | None:
    """The latest fire time t with ``after < t <= until``, or None.

    Costs O(log(until - after)) trigger calls: a window grows backwards from ``until`` until it
    holds a fire time, then bisection narrows it to one second.
    """
    # UTC arithmetic: subtracting from a fold=1 local time would silently move it an hour back.
    after, until = _as_utc(after), _as_utc(until)
    if until <= after:
        return None
    width = _ONE_SECOND
    high = until  # invariant: nothing fires in (high, until]
    while True:
        low = max(after, until - width)
        if _fires_between(spec.trigger, low, until):
            break
        if low == after:
            return None
        high, width = low, width * 2
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        if _fires_between(spec.trigger, middle, until):
            low = middle
        else:
            high = middle
    latest = _first_fire_after(spec.trigger, low)
    return None if latest is None else latest.astimezone(ZoneInfo(spec.timezone))


def _fail(spec: str, reason: str) -> NoReturn:
    raise errors.InvalidCronSpec(spec, reason)


def split_zone(spec: str) -> tuple[str, str]:
    """A valid spec's zone name and its schedule without the CRON_TZ= or TZ= prefix."""
    zone, body = _split_zone(spec, spec.strip())
    return zone.key, body


def _split_zone(spec: str, text: str) -> tuple[ZoneInfo, str]:
    if not text.startswith(("CRON_TZ=", "TZ=")):
        return ZoneInfo(DEFAULT_TIMEZONE), text
    prefix, *body = text.split(None, 1)
    if not body:
        _fail(spec, f"time zone prefix {prefix!r} must be followed by a schedule")
    return _load_zone(spec, prefix.partition("=")[2]), body[0]


def _load_zone(spec: str, name: str) -> ZoneInfo:
    if not name:
        _fail(spec, "time zone prefix names no zone, e.g. CRON_TZ=Europe/Paris")
    if name.lower() in _HOST_ZONE_NAMES:
        _fail(spec, f"time zone {name!r} means the host's zone; name an IANA zone instead")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # KeyError includes ZoneInfoNotFoundError
        _fail(spec, f"unknown time zone {name!r}")


def _descriptor_trigger(spec: str, body: str, zone: ZoneInfo) -> BaseTrigger:
    name, *rest_list = body.split(None, 1)
    name, rest = name.lower(), "".join(rest_list)
    if name == "@every":
        return _every_trigger(spec, rest)
    if name not in _DESCRIPTORS:
        known = ", ".join([*_DESCRIPTORS, "@every <duration>"])
        _fail(spec, f"unknown descriptor {name!r}; expected one of {known}")
    if rest:
        _fail(spec, f"unexpected text {rest!r} after {name}")
    return _schedule_trigger(_parse_fields(spec, _DESCRIPTORS[name].split()), zone)


def _every_trigger(spec: str, duration: str) -> BaseTrigger:
    seconds = _parse_duration(spec, duration)
    # Anchored at the epoch so every process computes the same instants (module docstring).
    return IntervalTrigger(seconds=seconds, start_date=_EPOCH, timezone=UTC)


def _parse_duration(spec: str, text: str) -> int:
    if not text:
        _fail(spec, "@every needs a duration, e.g. '@every 1h30m' or '@every 90s'")
    total = Fraction(0) if text == "0" else _duration_seconds(spec, text)
    if total < 1:
        _fail(spec, f"@every duration {text!r} is shorter than the minimum of 1s")
    if total.denominator != 1:
        _fail(spec, f"@every duration {text!r} is not a whole number of seconds")
    if total > _MAX_EVERY_SECONDS:
        _fail(spec, f"@every duration {text!r} is longer than Go's maximum of about 292 years")
    return int(total)


def _duration_seconds(spec: str, text: str) -> Fraction:
    total = Fraction(0)
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            _fail(spec, f"@every duration {text!r} is not a Go duration like 90s, 10m or 1h30m")
        total += Fraction(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return total


def _parse_fields(spec: str, fields: list[str]) -> _Schedule:
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        _fail(spec, f"got {len(fields)} fields, {_FIELDS_HELP}")
    second, minute, hour, day, month, weekday = (
        _parse_field(spec, text, kind) for text, kind in zip(fields, _SIX_FIELDS, strict=True)
    )
    return _Schedule(
        seconds=second.values,
        minutes=minute.values,
        hours=hour.values,
        days=day.values,
        months=month.values,
        weekdays=frozenset(value % 7 for value in weekday.values),
        days_star=day.star,
        weekdays_star=weekday.star,
    )


def _parse_field(spec: str, text: str, kind: _FieldKind) -> _Field:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            _fail(spec, f"{kind.name} {text!r} has an empty list item")
        part_values, part_star = _parse_part(spec, part, kind)
        values.update(part_values)
        star = star or part_star
    return _Field(frozenset(values), star)


def _parse_part(spec: str, part: str, kind: _FieldKind) -> tuple[range, bool]:
    range_text, has_step, step_text = part.partition("/")
    step = _parse_step(spec, part, step_text, kind) if has_step else 1
    if range_text in ("*", "?"):
        if range_text == "?" and not kind.allows_question:
            _fail(spec, f"{kind.name} {part!r}: '?' is only allowed in the two day fields")
        # robfig: `*` and `?` leave a day field unrestricted unless stepped by more than 1.
        return range(kind.low, kind.star_high + 1, step), step == 1
    start_text, has_end, end_text = range_text.partition("-")
    start = _parse_value(spec, part, start_text, kind)
    if has_end:
        end = _parse_value(spec, part, end_text, kind, closes_range=True)
    else:
        end = kind.star_high if has_step else start
    if start > end:
        _fail(spec, f"{kind.name} range {range_text!r} is reversed: {start} is after {end}")
    return range(start, end + 1, step), False


def _parse_step(spec: str, part: str, text: str, kind: _FieldKind) -> int:
    if not _NUMBER.fullmatch(text):
        _fail(spec, f"{kind.name} step {text!r} in {part!r} is not a number")
    step = int(text)
    if step == 0:
        _fail(spec, f"{kind.name} step in {part!r} is 0; it must be at least 1")
    return step


def _parse_value(
    spec: str, part: str, text: str, kind: _FieldKind, closes_range: bool = False
) -> int:
    named = kind.value_of(text)
    if named is not None:
        # `fri-sun` means Friday to Sunday, so a closing Sunday is the 7 of Unix cron.
        return kind.high if closes_range and kind is _WEEKDAY and named == 0 else named
    if _NUMBER.fullmatch(text):
        value = int(text)
        if not kind.low <= value <= kind.high:
            _fail(spec, f"{kind.name} {value} out of range {kind.low}-{kind.high}")
        return value
    if not text:
        _fail(spec, f"{kind.name} {part!r} is missing a value")
    if kind.names and text.isalpha():
        expected = f"{kind.names[0]}-{kind.names[-1]} or {kind.low}-{kind.high}"
        _fail(spec, f"unknown {kind.name} name {text!r} (expected {expected})")
    invalid = next((char for char in text if not char.isascii() or not char.isalnum()), None)
    if invalid is not None:
        _fail(spec, f"{kind.name} {part!r} contains invalid character {invalid!r}")
    _fail(spec, f"{kind.name} {text!r} is not a number")


def _schedule_trigger(schedule: _Schedule, zone: ZoneInfo) -> BaseTrigger:
    if zone.key == DEFAULT_TIMEZONE:
        return _wall_trigger(schedule, zone)
    wall_trigger = _wall_trigger(schedule, UTC)
    return WallClockTrigger(wall_trigger, zone, repeat_ambiguous=len(schedule.hours) == 24)


def _wall_trigger(schedule: _Schedule, tz: timezone | ZoneInfo) -> BaseTrigger:
    common = {
        "second": _expression(schedule.seconds, _SECOND),
        "minute": _expression(schedule.minutes, _MINUTE),
        "hour": _expression(schedule.hours, _HOUR),
        "month": _expression(schedule.months, _MONTH),
    }
    days = _expression(schedule.days, _DAY)
    weekdays = _weekday_expression(schedule.weekdays)
    days_can_fire = _days_can_fire(schedule)
    if schedule.days_star or schedule.weekdays_star:
        # CronTrigger would scan every year up to 9999 (about a second) before giving up on
        # "30 Feb"; an end date in the past makes it answer None at once.
        end_date = None if days_can_fire else _EPOCH
        return CronTrigger(**common, day=days, day_of_week=weekdays, timezone=tz, end_date=end_date)
    # Both day fields restricted: cron's OR rule, where APScheduler alone would AND them.
    if days == "*" or weekdays == "*":
        return CronTrigger(**common, day="*", day_of_week="*", timezone=tz)
    by_weekday = CronTrigger(**common, day="*", day_of_week=weekdays, timezone=tz)
    if not days_can_fire:
        return by_weekday
    by_day = CronTrigger(**common, day=days, day_of_week="*", timezone=tz)
    return OrTrigger([by_day, by_weekday])


def _days_can_fire(schedule: _Schedule) -> bool:
    """Whether a day of the month the spec names exists in a month it names (not February 30)."""
    return any(day <= _MONTH_DAYS[month - 1] for month in schedule.months for day in schedule.days)


def _expression(values: frozenset[int], kind: _FieldKind) -> str:
    if len(values) == kind.star_high - kind.low + 1:
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _weekday_expression(weekdays: frozenset[int]) -> str:
    if len(weekdays) == 7:
        return "*"
    # APScheduler's own numbers start at Monday=0; names avoid the mismatch entirely.
    monday_first = sorted(weekdays, key=lambda day: (day + 6) % 7)
    return ",".join(_WEEKDAY_NAMES[day] for day in monday_first)


def _first_fire_after(trigger: BaseTrigger, moment: datetime) -> datetime | None:
    # Fire times are whole seconds, so the first one after `moment` is the first at or after
    # the next whole second; `now` is inclusive for every trigger used here.
    start = _EPOCH + timedelta(seconds=_floor_timestamp(moment) + 1)
    return trigger.get_next_fire_time(None, start)


def _fires_between(trigger: BaseTrigger, after: datetime, until: datetime) -> bool:
    found = _first_fire_after(trigger, after)
    return found is not None and found <= until


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _floor_timestamp(moment: datetime) -> int:
    # Exact integer arithmetic; aware subtraction honours fold, unlike local arithmetic.
    return (_as_utc(moment) - _EPOCH) // _ONE_SECOND


def _ceil_timestamp(moment: datetime) -> int:
    return _floor_timestamp(moment) + (1 if moment.microsecond else 0)


def _offset(zone: ZoneInfo, timestamp: int) -> int:
    offset = datetime.fromtimestamp(timestamp, zone).utcoffset()
    assert offset is not None  # ZoneInfo always knows the offset of an instant
    return offset // _ONE_SECOND


def _next_transition(zone: ZoneInfo, start: int, end: int) -> int | None:
    """First second in (start, end] whose UTC offset differs from the one at start."""
    offset = _offset(zone, start)
    low = start
    while low < end:
        high = min(low + _PROBE_STEP, end)
        if _offset(zone, high) != offset:
            while high - low > 1:
                middle = (low + high) // 2
                if _offset(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            return high
        low = high
    return None


def _last_transition(zone: ZoneInfo, end: int) -> int | None:
    """Last transition in (end - _MAX_SHIFT, end]: only that one can still shift or fold `end`."""
    found = None
    cursor = end - _MAX_SHIFT
    while (transition := _next_transition(zone, cursor, end)) is not None:
        found = cursor = transition
    return found


def _min_or_none(*values: int | None) -> int | None:
    return min((value for value in values if value is not None), default=None)
