"""Delivery policies: the token bucket, the next look at a limited endpoint, backoff,
Retry-After and firing lateness, each with examples and the properties the rule promises."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import random

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import policy, tuning

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
# Float rounding, far below a token or a microsecond.
SLACK = 1e-6
PROPERTIES = hypothesis.settings(
    deadline=None,  # a loaded machine is no counterexample; timings belong in `make bench`
    database=None,  # a failure prints its falsifying example anyway
)

rates = st.floats(min_value=0.01, max_value=1000, allow_nan=False)


def take_all(low: float, high: float) -> float:
    return high


def take_none(low: float, high: float) -> float:
    return low


@pytest.mark.parametrize(("rate", "capacity"), [(0.1, 1.0), (1.0, 1.0), (50.0, 50.0)])
def test_a_bucket_holds_a_second_s_worth_and_at_least_one_token(
    rate: float, capacity: float
) -> None:
    bucket = policy.TokenBucket(rate)
    assert bucket.capacity == capacity
    assert bucket.level(None, None) == capacity
    assert bucket.level(0.0, None) == capacity


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = policy.TokenBucket(10.0)
    assert bucket.level(2.0, 0.5) == 7.0
    assert bucket.level(2.0, 5.0) == 10.0
    assert bucket.level(2.0, -3.0) == 2.0  # a clock stepped back takes nothing away


@pytest.mark.parametrize(
    ("limit", "level", "max_in_flight", "in_flight", "allowance"),
    [
        (10, None, None, 0, 10),
        (10, 3.9, None, 0, 3),
        (2, 3.9, None, 0, 2),
        (10, 0.99, None, 0, 0),
        (10, None, 4, 1, 3),
        (10, 5.0, 4, 3, 1),
        (10, None, 2, 5, 0),  # the limit was lowered below what is in flight
    ],
)
def test_a_claim_takes_whole_tokens_within_its_limit_and_the_room_in_flight(
    limit: int, level: float | None, max_in_flight: int | None, in_flight: int, allowance: int
) -> None:
    assert policy.claim_allowance(limit, level, max_in_flight, in_flight) == allowance


@PROPERTIES
@given(rates, st.floats(min_value=0, max_value=1), st.floats(allow_nan=False))
def test_a_level_in_range_stays_in_range(rate: float, fraction: float, elapsed: float) -> None:
    bucket = policy.TokenBucket(rate)
    level = bucket.level(fraction * bucket.capacity, elapsed)
    assert 0 <= level <= bucket.capacity


@PROPERTIES
@given(
    st.integers(min_value=-5, max_value=1000),
    st.none() | st.floats(min_value=0, max_value=1e6),
    st.none() | st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=1000),
)
def test_an_allowance_is_never_negative_and_never_overdraws(
    limit: int, level: float | None, max_in_flight: int | None, in_flight: int
) -> None:
    allowance = policy.claim_allowance(limit, level, max_in_flight, in_flight)
    assert 0 <= allowance <= max(limit, 0)
    if level is not None:
        assert level - allowance >= 0
    if max_in_flight is not None:
        assert in_flight + allowance <= max(max_in_flight, in_flight)


@PROPERTIES
@given(
    rates,
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=10), st.integers(min_value=0, max_value=50)),
        min_size=1,
        max_size=40,
    ),
)
def test_no_window_lets_more_start_than_its_refill_and_one_full_bucket(
    rate: float, claims: list[tuple[float, int]]
) -> None:
    bucket = policy.TokenBucket(rate)
    times = list(itertools.accumulate(gap for gap, _ in claims))
    tokens: float | None = None
    last: float | None = None
    started = []
    for at, (_, limit) in zip(times, claims, strict=True):
        level = bucket.level(tokens, None if last is None else at - last)
        count = policy.claim_allowance(limit, level, None, 0)
        started.append(count)
        tokens, last = level - count, at
    # The busiest windows start and end at claims.
    for first, end in itertools.combinations_with_replacement(range(len(times)), 2):
        window = times[end] - times[first]
        assert sum(started[first : end + 1]) <= rate * window + bucket.capacity + SLACK


@pytest.mark.parametrize(
    ("due_in", "level", "rate_limit", "max_in_flight", "room_left", "wait"),
    [
        (None, 0.0, 1.0, None, False, None),  # nothing due: a new job's notice wakes the loop
        (-3.0, None, None, 2, True, 0.0),
        (4.0, None, None, 2, True, 4.0),
        (0.0, 0.5, 2.0, None, True, 0.25),  # half a token back at two a second
        (1.0, 0.5, 2.0, None, True, 1.0),
        (0.0, 1.5, 2.0, None, False, 0.0),
        (0.0, None, None, 2, False, tuning.IN_FLIGHT_RECHECK_SECONDS),
        (1.0, None, None, 2, False, 1.0),
    ],
)
def test_a_limited_endpoint_is_looked_at_again_when_its_claim_could_take_more(
    due_in: float | None,
    level: float | None,
    rate_limit: float | None,
    max_in_flight: int | None,
    room_left: bool,
    wait: float | None,
) -> None:
    assert policy.next_claim_in(due_in, level, rate_limit, max_in_flight, room_left) == wait


@PROPERTIES
@given(
    st.none() | st.floats(min_value=-1e6, max_value=1e6),
    rates,
    st.floats(min_value=0, max_value=1),
    st.none() | st.integers(min_value=1, max_value=100),
    st.booleans(),
)
def test_the_next_look_is_never_before_the_next_due_job_nor_the_next_token(
    due_in: float | None, rate: float, fraction: float, max_in_flight: int | None, room: bool
) -> None:
    bucket = policy.TokenBucket(rate)
    level = fraction * bucket.capacity
    wait = policy.next_claim_in(due_in, level, rate, max_in_flight, room)
    assert (wait is None) == (due_in is None)
    if due_in is not None and wait is not None:
        assert wait >= max(0.0, due_in)
        assert bucket.level(level, wait) >= 1 - SLACK


@pytest.mark.parametrize(("attempt", "bound"), [(1, 1.0), (3, 4.0), (8, 100.0), (70, 100.0)])
def test_retry_delay_is_uniform_between_zero_and_the_capped_exponential(
    attempt: int, bound: float
) -> None:
    draw = random.Random(attempt).uniform
    delays = [policy.retry_delay(attempt, base=1.0, cap=100.0, draw=draw) for _ in range(2000)]
    assert all(0 <= delay <= bound for delay in delays)
    assert min(delays) < bound * 0.01
    assert max(delays) > bound * 0.99
    assert 0.45 * bound < sum(delays) / len(delays) < 0.55 * bound


def test_a_retry_waits_at_least_what_the_endpoint_asked_within_the_cap() -> None:
    def next_try(attempt: int, retry_after: float | None) -> float | None:
        return policy.next_try_in(attempt, 5, 1.0, 60.0, retry_after, take_none)

    assert next_try(2, None) == 0.0
    assert next_try(2, 30.0) == 30.0
    assert next_try(2, 3600.0) == 60.0
    assert next_try(5, 30.0) is None
    assert policy.next_try_in(2, 5, 1.0, 60.0, 0.5, take_all) == 2.0


def test_the_last_attempt_draws_nothing() -> None:
    def draw(low: float, high: float) -> float:
        raise AssertionError("no delay is drawn after the last attempt")

    assert policy.next_try_in(3, 3, 1.0, 60.0, None, draw) is None


positive = st.floats(min_value=0.001, max_value=1e6)


@PROPERTIES
@given(
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=10_000),
    positive,
    positive,
    st.none() | st.floats(min_value=0, max_value=1e9),
    st.floats(min_value=0, max_value=1),
)
def test_a_next_try_is_within_the_cap_and_none_only_after_the_last_attempt(
    attempt: int,
    max_attempts: int,
    base: float,
    cap: float,
    retry_after: float | None,
    fraction: float,
) -> None:
    def draw(low: float, high: float) -> float:
        return low + (high - low) * fraction

    delay = policy.next_try_in(attempt, max_attempts, base, cap, retry_after, draw)
    assert (delay is None) == (attempt >= max_attempts)
    if delay is not None:
        assert 0 <= delay <= cap
        assert delay >= policy.retry_delay(attempt, base, cap, draw)
        if retry_after is not None:
            assert delay >= min(retry_after, cap)


@PROPERTIES
@given(st.integers(min_value=1, max_value=10_000), positive, positive)
def test_the_backoff_s_bound_never_shrinks_as_attempts_go_on(
    attempt: int, base: float, cap: float
) -> None:
    now = policy.retry_delay(attempt, base, cap, take_all)
    later = policy.retry_delay(attempt + 1, base, cap, take_all)
    assert 0 <= now <= later <= cap


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 27 Nov 2026 12:00:30 -0000", 30.0),  # no zone stated: read as UTC
        ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),  # a date in the past: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delay-seconds are whole
        ("\N{SUPERSCRIPT TWO}", None),  # Latin-1 can carry it; only ASCII digits count
        ("\N{ARABIC-INDIC DIGIT THREE}", None),
        ("Fri, 27 Nov 99999 12:00:30 GMT", None),
        ("Fri, 27 Nov 2026 12:00:30 +9999999999999999999", None),  # the parser overflowed
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    assert policy.parse_retry_after(header, NOW) == seconds


@PROPERTIES
@given(st.none() | st.text())
def test_retry_after_never_raises_and_never_asks_for_negative_time(header: str | None) -> None:
    seconds = policy.parse_retry_after(header, NOW)
    assert seconds is None or seconds >= 0


@PROPERTIES
@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=12),
)
def test_retry_after_never_raises_on_a_date_with_any_numbers(
    year: int, zone: int, junk: str
) -> None:
    """An HTTP date's fields hold whatever digits an endpoint sends."""
    for header in (f"Fri, 27 Nov {year} 12:00:30 {zone:+d}", f"27 Nov {year} {junk} {zone}"):
        seconds = policy.parse_retry_after(header, NOW)
        assert seconds is None or seconds >= 0


@PROPERTIES
@given(st.integers(min_value=0, max_value=10**12))
def test_retry_after_reads_any_delay_seconds(delay: int) -> None:
    assert policy.parse_retry_after(str(delay), NOW) == float(delay)


@PROPERTIES
@given(st.integers(min_value=0, max_value=10**8))
def test_retry_after_reads_any_http_date_to_the_second(delay: int) -> None:
    moment = NOW + dt.timedelta(seconds=delay)
    header = email.utils.format_datetime(moment, usegmt=True)
    assert policy.parse_retry_after(header, NOW) == float(delay)


@pytest.mark.parametrize(
    ("started_after", "held_back", "attempts", "lateness"),
    [
        (0.25, None, 1, 0.25),
        (0.0, None, 1, 0.0),
        (5.0, 4.5, 1, 0.5),  # held by a limit: late only from its claim
        (5.0, -1.0, 1, 5.0),
        (-2.0, None, 1, None),  # run ahead of its time on request
        (5.0, 6.0, 1, None),
        (30.0, None, 2, None),  # a retry waits by design
    ],
)
def test_only_a_first_attempt_at_or_after_its_time_says_how_late_we_fire(
    started_after: float, held_back: float | None, attempts: int, lateness: float | None
) -> None:
    started_at = NOW + dt.timedelta(seconds=started_after)
    assert policy.firing_lateness(NOW, started_at, held_back, attempts) == lateness


@PROPERTIES
@given(
    st.floats(min_value=-1e6, max_value=1e6),
    st.none() | st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=0, max_value=100),
)
def test_lateness_is_never_negative_and_only_of_first_attempts(
    started_after: float, held_back: float | None, attempts: int
) -> None:
    started_at = NOW + dt.timedelta(seconds=started_after)
    lateness = policy.firing_lateness(NOW, started_at, held_back, attempts)
    assert lateness is None or lateness >= 0
    if attempts != 1:
        assert lateness is None
    if lateness is not None:
        assert lateness <= max(0.0, started_after) + SLACK


# --- flow keys' turns ------------------------------------------------------------------------


@given(
    st.integers(min_value=0, max_value=200),
    st.lists(st.integers(min_value=0, max_value=50), max_size=60),
)
def test_turns_share_the_limit_one_each_in_turn(limit: int, allowances: list[int]) -> None:
    counts = policy.take_turns(limit, allowances)
    assert len(counts) == len(allowances)
    assert sum(counts) == min(limit, sum(allowances))
    assert all(0 <= got <= allowed for got, allowed in zip(counts, allowances, strict=True))
    # No key holds another back by more than a turn: one that got fewer than it could had at
    # most one fewer than any other, and only the later keys of a round go without.
    for i, (got, allowed) in enumerate(zip(counts, allowances, strict=True)):
        if got < allowed:
            assert all(other <= got + 1 for other in counts)
            assert all(counts[j] <= got for j in range(i + 1, len(counts)))


def test_turns_in_a_short_round_go_to_the_first_keys() -> None:
    assert policy.take_turns(5, [10, 1, 10, 10]) == [2, 1, 1, 1]
    assert policy.take_turns(2, [3, 3, 3]) == [1, 1, 0]
    assert policy.take_turns(4, []) == []


def turn(**given: float | int | None) -> policy.KeyTurn:
    fields: dict[str, float | int | None] = {
        "level": None,
        "rate_limit": None,
        "max_in_flight": None,
        "in_flight": 0,
        "due": 0,
        "got": 0,
        "next_in": None,
    }
    fields.update(given)
    return policy.KeyTurn(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("turns", "more_keys", "expected"),
    [
        ([], False, None),
        # Nothing more due: its next job, or nothing.
        ([turn(due=2, got=2, next_in=3.0)], False, 3.0),
        ([turn(due=2, got=2)], False, None),
        # Due jobs left behind its bucket: when its next token comes.
        ([turn(due=5, got=1, level=1.5, rate_limit=2.0)], False, 0.25),
        # Behind its in-flight limit: soon, since a delivery anywhere may end.
        ([turn(due=5, got=1, max_in_flight=2, in_flight=1)], False, 0.25),
        # Left only for want of the endpoint's room: at once.
        ([turn(due=5, got=1)], False, 0.0),
        # The soonest key decides; keys not looked at yet come back soon.
        (
            [turn(due=1, got=1, next_in=9.0), turn(due=3, got=1, level=1.0, rate_limit=1.0)],
            False,
            1.0,
        ),
        ([turn(due=1, got=1, next_in=9.0)], True, tuning.IN_FLIGHT_RECHECK_SECONDS),
    ],
)
def test_a_keyed_endpoint_looks_again_when_its_soonest_key_could_take_more(
    turns: list[policy.KeyTurn], more_keys: bool, expected: float | None
) -> None:
    assert policy.next_key_claim_in(turns, more_keys) == expected
