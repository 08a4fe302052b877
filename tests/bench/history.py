"""Every run's target measurements, kept beside the report so that each report shows what the
changes between runs did to them (`--note` says what changed).

An entry's `plan` is "full" or "quick" for a run of every scenario. A run of some scenarios only
(`--only`) is recorded with the plan "partial", its plan's name in `sizes` and the scenarios it
ran in `scenarios`, so that nothing takes it for a full run; entries without these two fields
(every one written before them) ran every scenario."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from tests.bench import targets

FILE_NAME = "benchmarks-history.json"
PARTIAL = "partial"
# Decimal places a measurement is recorded with.
DIGITS = 2


def entry(results: dict[str, Any], note: str) -> dict[str, Any]:
    """`results["only"]`, when present, lists the scenarios a partial run ran."""
    measured = {
        target.key: None if math.isnan(target.measured) else round(target.measured, DIGITS)
        for target in targets.evaluate(results)
    }
    plan: dict[str, Any] = {"plan": results["plan"]["name"]}
    if results.get("only"):
        plan = {"plan": PARTIAL, "sizes": results["plan"]["name"], "scenarios": results["only"]}
    found = {
        "date": results["date"],
        **plan,
        "code": results.get("machine", {}).get("code"),
        "note": note,
        "targets": measured,
    }
    # How long the run and each of its scenarios took, so that a later partial report can say
    # how long a run of what it left out takes.
    if "elapsed_s" in results:
        found["minutes"] = round(results["elapsed_s"] / 60, 1)
    if results.get("seconds"):
        found["seconds"] = {name: round(value) for name, value in results["seconds"].items()}
    return found


def is_full(run: dict[str, Any]) -> bool:
    """A run of the full plan's every scenario."""
    return run.get("plan") == "full" and not run.get("scenarios")


def record(path: pathlib.Path, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Append `new` to the history at `path` and return the whole history."""
    runs: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    runs.append(new)
    path.write_text(json.dumps(runs, indent=1, ensure_ascii=False) + "\n")
    return runs


def render(runs: list[dict[str, Any]]) -> str:
    """One row per run, oldest first; a measurement a run did not make reads n/a."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run["targets"] if key not in keys]
    lines = [
        "| Run | Description | " + " | ".join(keys) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for run in runs:
        label = run["date"] + _kind(run)
        cells = [_cell(run["targets"].get(key)) for key in keys]
        note = run["note"].replace("|", "\\|") or "(no note)"
        lines.append(f"| {label} | {note} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _kind(run: dict[str, Any]) -> str:
    if run.get("scenarios"):
        quick = ", quick" if run.get("sizes") == "quick" else ""
        return f" (only {', '.join(run['scenarios'])}{quick})"
    return " (quick)" if run["plan"] == "quick" else ""


def _cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
