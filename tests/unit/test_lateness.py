"""Lateness buckets: where a value falls, how rows add up, and percentiles read from counts."""

from __future__ import annotations

import random

import pytest

from scheduler import lateness

BOUNDS = lateness.LATENESS_BOUNDS_MS


def test_bounds_rise_and_one_more_bucket_counts_what_is_later() -> None:
    assert list(BOUNDS) == sorted(set(BOUNDS))
    assert len(BOUNDS) + 1 == lateness.BUCKETS


@pytest.mark.parametrize(
    ("milliseconds", "bucket"),
    [(0, 0), (0.5, 0), (1, 0), (1.01, 1), (2, 1), (4.9, 2), (60000, len(BOUNDS) - 1)],
)
def test_a_value_falls_in_the_first_bucket_whose_bound_it_does_not_exceed(
    milliseconds: float, bucket: int
) -> None:
    assert lateness.bucket_of(milliseconds) == bucket


def test_a_value_past_every_bound_falls_in_the_last_bucket() -> None:
    assert lateness.bucket_of(60000.5) == len(BOUNDS)
    assert lateness.count_buckets([1e9])[-1] == 1


def test_rows_add_up_bucket_by_bucket() -> None:
    first = lateness.count_buckets([0.5, 3, 3, 70000])
    second = lateness.count_buckets([3, 150])
    total = lateness.add_buckets([first, second])
    assert total == lateness.count_buckets([0.5, 3, 3, 70000, 3, 150])
    assert sum(total) == 6
    assert lateness.add_buckets([]) == [0] * lateness.BUCKETS


def test_nothing_counted_has_no_percentile() -> None:
    assert lateness.percentile([0] * lateness.BUCKETS, 0.5) is None


def test_a_percentile_interpolates_within_its_bucket() -> None:
    counts = [0] * lateness.BUCKETS
    counts[lateness.bucket_of(15)] = 10  # ten values in (10, 20]
    assert lateness.percentile(counts, 0.5) == pytest.approx(15.0)
    assert lateness.percentile(counts, 0.99) == pytest.approx(19.9)
    assert lateness.percentile(counts, 1.0) == pytest.approx(20.0)


def test_a_percentile_lands_in_the_bucket_that_holds_its_rank() -> None:
    # 98 values in the first bucket, 2 in (500, 1000]: p50 stays low, p99 lands among the slow.
    counts = lateness.count_buckets([0.2] * 98 + [700, 800])
    assert lateness.percentile(counts, 0.5) == pytest.approx(50 / 98)
    assert lateness.percentile(counts, 0.99) == pytest.approx(750.0)


def test_values_past_every_bound_are_reported_as_the_last_bound() -> None:
    counts = lateness.count_buckets([5, 90000, 120000])
    assert lateness.percentile(counts, 0.99) == BOUNDS[-1]


def test_the_estimate_is_within_the_bucket_of_the_true_percentile() -> None:
    rng = random.Random(14)
    values = sorted(rng.lognormvariate(3, 1.5) for _ in range(10000))
    counts = lateness.count_buckets(values)
    for fraction in (0.5, 0.9, 0.99):
        true = values[int(fraction * len(values)) - 1]
        estimate = lateness.percentile(counts, fraction)
        assert estimate is not None
        bucket = lateness.bucket_of(true)
        lower = BOUNDS[bucket - 1] if bucket else 0
        assert lower <= estimate <= BOUNDS[bucket]
