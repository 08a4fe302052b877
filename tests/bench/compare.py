"""This run's target figures against their range in the last full runs of the history: a change
meant to alter no timing (a refactor) lands every figure between the lowest and the highest of
the last three full runs that have it.

Only full runs form a range: a quick run's sizes differ, and a partial run (`--only`, recorded
with the plan "partial") measured only some scenarios, so history.is_full leaves both out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tests.bench import history, targets

RECENT = 3

INSIDE = "inside"
ABOVE = "above"
BELOW = "below"


@dataclasses.dataclass(frozen=True)
class Comparison:
    key: str
    measured: float
    # The lowest and highest of the figure over `dates`, the earlier full runs that have it
    # (oldest first, at most RECENT); both None when no earlier full run has it.
    low: float | None
    high: float | None
    dates: tuple[str, ...]

    @property
    def status(self) -> str | None:
        """inside, above or below the range; None without an earlier full run."""
        if self.low is None or self.high is None:
            return None
        if self.measured > self.high:
            return ABOVE
        if self.measured < self.low:
            return BELOW
        return INSIDE


def figures(results: dict[str, Any]) -> dict[str, float]:
    """The target figures this run measured, rounded as the history records them. A target whose
    scenario did not run has none, nor have the lost and duplicated totals unless every
    scenario that delivers ran (otherwise they count only part of the run)."""
    complete = targets.losses_complete(results)
    return {
        target.key: round(target.measured, history.DIGITS)
        for target in targets.evaluate(results)
        if not math.isnan(target.measured) and (complete or target.key not in targets.LOSS_KEYS)
    }


def compare(
    earlier: Sequence[dict[str, Any]], current: dict[str, float], recent: int = RECENT
) -> list[Comparison]:
    """Each figure of `current` against the last `recent` full runs of `earlier` (the history
    before this run, oldest first) that have it, in the order of `current`."""
    found = []
    for key, value in current.items():
        runs = [
            run
            for run in earlier
            if history.is_full(run) and run.get("targets", {}).get(key) is not None
        ][-recent:]
        values = [float(run["targets"][key]) for run in runs]
        found.append(
            Comparison(
                key,
                value,
                min(values, default=None),
                max(values, default=None),
                tuple(run["date"] for run in runs),
            )
        )
    return found


def same_run_before(
    earlier: Sequence[dict[str, Any]], scenarios: Sequence[str] | None
) -> dict[str, Any] | None:
    """The latest earlier partial run of the same scenarios: on the same machine just before a
    change, the measure of what the machine's noise alone does to the figures."""
    if not scenarios:
        return None
    alike = [
        run
        for run in earlier
        if run.get("plan") == history.PARTIAL and list(run.get("scenarios", [])) == list(scenarios)
    ]
    return alike[-1] if alike else None


def all_inside(found: Sequence[Comparison], failed: Sequence[str] = ()) -> bool:
    """At least one figure was compared, every one lands inside its range, and no scenario
    failed (a failed scenario's figures are missing, not inside)."""
    return bool(found) and not failed and all(c.status == INSIDE for c in found)


def verdict(found: Sequence[Comparison], failed: Sequence[str] = (), recent: int = RECENT) -> str:
    """One sentence: whether every figure lands inside its range, else which do not; `failed`
    names the scenarios that failed in this run, whose figures are missing."""
    last = f"the last {count(recent)} full runs' range"
    missing = ""
    if failed:
        its = "its" if len(failed) == 1 else "their"
        missing = f"{', '.join(failed)} failed, so {its} figures are missing"
    if not found:
        because = f" ({missing})" if missing else ""
        return f"This run measured no target figure{because}, so none is compared with {last}."
    if all_inside(found, failed):
        every = "The figure" if len(found) == 1 else f"Every one of the {len(found)} figures"
        return f"{every} this run measured lands inside {last}."
    misses = [
        f"{c.key} {c.status}" if c.status else f"{c.key} (no earlier full run)"
        for c in found
        if c.status != INSIDE
    ]
    if not misses:
        return f"Every figure this run measured lands inside {last}, but {missing}."
    also = f", and {missing}" if missing else ""
    return (
        f"Not every figure lands inside {last}: {len(misses)} of {len(found)} do not "
        f"({'; '.join(misses)}){also}."
    )


def count(number: int) -> str:
    return {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}.get(number, str(number))
