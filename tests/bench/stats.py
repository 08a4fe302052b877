"""Percentiles and the like, without numpy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of durations in seconds, as milliseconds."""
    ms = [value * 1000 for value in seconds]
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
    }


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else math.nan


def cpu_delta(
    before: Mapping[str, float | None], after: Mapping[str, float | None]
) -> dict[str, Any]:
    """CPU seconds each part used between two CpuMeter readings, the rest of the machine's busy
    time as `other` (the load generator, the benchmark itself), and the wall time as `wall`."""
    spent: dict[str, Any] = {}
    for name, start in before.items():
        end = after.get(name)
        spent[name] = None if start is None or end is None else end - start
    known = sum(v for k, v in spent.items() if v is not None and k not in ("machine", "wall"))
    spent["other"] = spent["machine"] - known
    return spent
