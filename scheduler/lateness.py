"""Firing lateness as counts in fixed buckets, which add up across dispatchers and minutes."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

# Upper bounds of the buckets in milliseconds, each inclusive; one more bucket counts what is
# later than the last. Rows already written count in these buckets: changing them needs a
# migration that empties or converts the per-minute rollup (delivery_minutes).
LATENESS_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)
BUCKETS = len(LATENESS_BOUNDS_MS) + 1


def bucket_of(milliseconds: float) -> int:
    """The index of the bucket a lateness falls in: the first whose bound it does not exceed."""
    return bisect.bisect_left(LATENESS_BOUNDS_MS, milliseconds)


def count_buckets(milliseconds: Iterable[float]) -> list[int]:
    """How many of the values fall in each bucket."""
    counts = [0] * BUCKETS
    for value in milliseconds:
        counts[bucket_of(value)] += 1
    return counts


def add_buckets(counts: Iterable[Sequence[int]]) -> list[int]:
    """Bucket counts summed bucket by bucket."""
    total = [0] * BUCKETS
    for row in counts:
        for index, count in enumerate(row):
            total[index] += count
    return total


def percentile(counts: Sequence[int], fraction: float) -> float | None:
    """The value below which `fraction` (0 to 1) of the counted values fall, in milliseconds,
    interpolated linearly within its bucket (as Prometheus's histogram_quantile); None when
    nothing was counted. A value in the last bucket is reported as the last bound: the
    buckets say no more than "later than that".
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(LATENESS_BOUNDS_MS):
                return float(LATENESS_BOUNDS_MS[-1])
            lower = LATENESS_BOUNDS_MS[index - 1] if index else 0
            upper = LATENESS_BOUNDS_MS[index]
            return lower + (upper - lower) * max(0.0, rank - below) / count
        below += count
    return float(LATENESS_BOUNDS_MS[-1])
