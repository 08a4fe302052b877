"""Delivery policies as pure rules: rate limits, when to try again, Retry-After and lateness."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
from collections.abc import Callable, Sequence

from scheduler import tuning

# Past this, 2**exponent times the base could be too large an int for a float (OverflowError);
# 2**62 times any base in use is past every cap anyway.
_MAX_EXPONENT = 62

Draw = Callable[[float, float], float]


@dataclasses.dataclass(frozen=True)
class TokenBucket:
    """An endpoint's rate limit: `rate` tokens a second, holding one second's worth (at least
    one token, so that a rate below one a second still lets a delivery go)."""

    rate: float

    @property
    def capacity(self) -> float:
        return max(self.rate, 1.0)

    def level(self, tokens: float | None, elapsed: float | None) -> float:
        """Tokens held `elapsed` seconds after the bucket was left with `tokens`; a bucket never
        drawn on (either None) is full."""
        if tokens is None or elapsed is None:
            return self.capacity
        # The database's wall clock may be stepped back; that takes no tokens away.
        return min(self.capacity, tokens + self.rate * max(0.0, elapsed))


def claim_allowance(
    limit: int, level: float | None, max_in_flight: int | None, in_flight: int
) -> int:
    """How many deliveries a claim may start: up to `limit`, one whole token each (`level` None:
    no rate limit), and no more than `max_in_flight` (None: no limit) minus those `in_flight`."""
    allowance = limit
    if level is not None:
        allowance = min(allowance, int(level))
    if max_in_flight is not None:
        allowance = min(allowance, max_in_flight - in_flight)
    return max(0, allowance)


def next_claim_in(
    due_in: float | None,
    level: float | None,
    rate_limit: float | None,
    max_in_flight: int | None,
    room_left: bool,
) -> float | None:
    """Seconds until a limited endpoint's claim could take more (None: nothing is due): at its
    next job's due time, or once a token is back, or (held by max_in_flight with no room left)
    soon, since another dispatcher's delivery may end."""
    if due_in is None:
        return None
    wait = max(0.0, due_in)
    if level is not None and level < 1 and rate_limit is not None:
        wait = max(wait, (1 - level) / rate_limit)
    elif not room_left and max_in_flight is not None:
        wait = max(wait, tuning.IN_FLIGHT_RECHECK_SECONDS)
    return wait


def take_turns(limit: int, allowances: Sequence[int]) -> list[int]:
    """How many of `limit` starts each flow key gets: one each in turn, in the order given, for
    as long as its own allowance lasts, so that no key's backlog holds another back by more
    than a turn."""
    counts = [0] * len(allowances)
    left = limit
    open_keys = [i for i, allowance in enumerate(allowances) if allowance > 0]
    while left > 0 and open_keys:
        # Whole rounds at once: every open key gets as many as the smallest allowance left.
        rounds = min(left // len(open_keys), min(allowances[i] - counts[i] for i in open_keys))
        if rounds == 0:
            for i in open_keys[:left]:
                counts[i] += 1
            break
        for i in open_keys:
            counts[i] += rounds
        left -= rounds * len(open_keys)
        open_keys = [i for i in open_keys if counts[i] < allowances[i]]
    return counts


@dataclasses.dataclass(frozen=True)
class KeyTurn:
    """A flow key's part in one claim: its bucket's `level` before it (None: no rate limit),
    its limits, what it had in flight and due, what it got, and in how many seconds its next job
    not yet due is (None: none)."""

    level: float | None
    rate_limit: float | None
    max_in_flight: int | None
    in_flight: int
    due: int
    got: int
    next_in: float | None


def next_key_claim_in(turns: Sequence[KeyTurn], more_keys: bool) -> float | None:
    """Seconds until a claim could take more of a keyed endpoint's jobs (None: nothing waits):
    the soonest any key could (next_claim_in), and soon when the look did not reach every key."""
    waits = [tuning.IN_FLIGHT_RECHECK_SECONDS] if more_keys else []
    for turn in turns:
        if turn.due > turn.got:
            level = None if turn.level is None else turn.level - turn.got
            room_left = turn.max_in_flight is None or (
                turn.in_flight + turn.got < turn.max_in_flight
            )
            wait = next_claim_in(0.0, level, turn.rate_limit, turn.max_in_flight, room_left)
        else:
            wait = turn.next_in
        if wait is not None:
            waits.append(max(0.0, wait))
    return min(waits, default=None)


def retry_delay(attempt: int, base: float, cap: float, draw: Draw) -> float:
    """Exponential backoff with full jitter: `draw(low, high)` (random.uniform) between 0 and
    min(cap, base * 2^(attempt-1))."""
    return draw(0.0, min(cap, base * 2 ** min(attempt - 1, _MAX_EXPONENT)))


def next_try_in(
    attempt: int,
    max_attempts: int,
    base: float,
    cap: float,
    retry_after: float | None,
    draw: Draw,
) -> float | None:
    """Seconds until a failed attempt's delivery is tried again, or None when that was its
    last attempt; `retry_after` is what the endpoint asked for (parse_retry_after)."""
    if attempt >= max_attempts:
        return None
    delay = retry_delay(attempt, base, cap, draw)
    if retry_after is not None:
        # The endpoint said when it can take this again; the cap still bounds the wait.
        delay = max(delay, min(retry_after, cap))
    return delay


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds a Retry-After header asks to wait from `now` (aware): delay-seconds or an HTTP
    date (RFC 9110 section 10.2.3); None when absent or not a valid delay. Never raises: the
    header is whatever an endpoint sent."""
    if not value:
        return None
    text = value.strip()
    # str.isdigit() alone also accepts digits such as '²', which float() refuses; the RFC's
    # DIGIT is ASCII.
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    # OverflowError: a zone offset of many digits (`+9999999999999999999`) is too large for
    # the timedelta the parser builds from it.
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def firing_lateness(
    due_at: dt.datetime, started_at: dt.datetime, held_back: float | None, attempts: int
) -> float | None:
    """Seconds from when a delivery was allowed to go to its start, or None when its start
    says nothing of how late the scheduler fires. A delivery `held_back` (seconds) by a pause
    or a limit is counted from its claim: the time before that was not the scheduler's."""
    lateness = (started_at - due_at).total_seconds()
    if held_back is not None:
        lateness -= max(0.0, held_back)
    # A retry is late by design (its backoff), and a job run ahead of its time on request is not
    # late at all: only a first attempt at or after its due time says how late we fire.
    if attempts == 1 and lateness >= 0:
        return lateness
    return None
