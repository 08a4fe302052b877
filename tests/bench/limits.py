"""How well an endpoint's limits were used and kept, from the times the receiver saw requests start
and end: pure functions, no clock, no I/O.

A rate limit of `rate` per second allows at most `rate * w + max(rate, 1)` starts in any window of
`w` seconds (docs/api.md, "How the limits hold"): `peak_burst` is the most starts any window held
beyond `rate * w`, so the bound held when it is at most `max(rate, 1)`. The receiver sees a start
a moment after the dispatcher made it, by a delay that varies, so a window it sees may be a
little shorter than the dispatcher's: the checks grant the window `slack` seconds more.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

Interval = tuple[float, float]


def windows(start: float, width: float, end: float) -> list[Interval]:
    """The windows of `width` seconds from `start`, the first left out (the dispatchers find the
    backlog in it), up to the last that ends by `end` (while the backlog lasted)."""
    found = []
    number = 1
    while start + (number + 1) * width <= end:
        found.append((start + number * width, start + (number + 1) * width))
        number += 1
    return found


def count_in(starts: Sequence[float], window: Interval) -> int:
    """How many of the sorted `starts` fall in [low, high)."""
    low, high = window
    return bisect.bisect_left(starts, high) - bisect.bisect_left(starts, low)


def window_ratios(
    starts: Sequence[float], spans: Sequence[Interval], allowed: Sequence[float]
) -> list[float]:
    """Starts in each window over what it allowed (a rate times its width)."""
    ordered = sorted(starts)
    return [
        count_in(ordered, span) / limit if limit > 0 else float("nan")
        for span, limit in zip(spans, allowed, strict=True)
    ]


def reached_rate(starts: Sequence[float], start: float) -> float:
    """Starts per second from `start` to the last of them."""
    if not starts or max(starts) <= start:
        return 0.0
    return len(starts) / (max(starts) - start)


def peak_burst(starts: Iterable[float], rate: float) -> float:
    """The most starts any window held beyond `rate` times its length: the largest
    `(j - i + 1) - rate * (t[j] - t[i])` over sorted starts t and i <= j (0 for none)."""
    return peak_window(starts, rate)[0]


def peak_window(starts: Iterable[float], rate: float) -> tuple[float, int, Interval]:
    """peak_burst, with how many starts its window held and the window (first and last start);
    (0, 0, (nan, nan)) for none."""
    ordered = sorted(starts)
    best_before, best_at = float("-inf"), 0
    found: tuple[float, int, Interval] = (0.0, 0, (math.nan, math.nan))
    for index, moment in enumerate(ordered):
        if rate * moment - index > best_before:
            best_before, best_at = rate * moment - index, index
        excess = index + 1 - rate * moment + best_before
        if excess > found[0]:
            found = (excess, index + 1 - best_at, (ordered[best_at], moment))
    return found


def rate_bound_use(starts: Iterable[float], rate: float, slack: float = 0.0) -> float:
    """The peak burst over what the bound allows beyond `rate * w` (`max(rate, 1)`, and `rate *
    slack` for the receiver's view): at most 1 while the bound held."""
    return peak_burst(starts, rate) / (max(rate, 1.0) + rate * slack)


def max_concurrent(intervals: Iterable[Interval]) -> int:
    """The most intervals open at once; one that ends when another starts does not overlap it,
    and one that ends as it starts (an answer sent at once) is open for no time."""
    spans = list(intervals)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = open_now = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


def busy_fraction(intervals: Iterable[Interval], span: Interval, slots: int) -> float:
    """The time-weighted number of intervals open during `span`, over `slots`."""
    low, high = span
    if high <= low or slots <= 0:
        return float("nan")
    covered = sum(max(0.0, min(end, high) - max(start, low)) for start, end in intervals)
    return covered / ((high - low) * slots)


def backlog_capacity(last_starts: Iterable[float], rate: float, window: Interval) -> float:
    """What keys limited to `rate` each allow in `window` while they still hold a backlog: each
    key (its last start given) counts from the window's start until its last start."""
    low, high = window
    return sum(rate * max(0.0, min(last, high) - low) for last in last_starts)


def longest_pause(starts: Iterable[float], start: float) -> Interval:
    """The longest time from `start` without a start, as (from, to); (start, start) for none."""
    ordered = sorted(moment for moment in starts if moment >= start)
    best = (start, start)
    for low, high in zip([start, *ordered], ordered, strict=False):
        if high - low > best[1] - best[0]:
            best = (low, high)
    return best


def per_second(starts: Iterable[float], start: float) -> list[int]:
    """Starts in each second from `start` to the last of them."""
    counts: list[int] = []
    for moment in starts:
        second = int(moment - start) if moment >= start else 0
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts
