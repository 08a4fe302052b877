"""Every run's target measurements, kept beside the report so that each report shows what the
changes between runs did to them (`--note` says what changed)."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from tests.bench import targets

FILE_NAME = "benchmarks-history.json"


def entry(results: dict[str, Any], note: str) -> dict[str, Any]:
    measured = {
        target.key: None if math.isnan(target.measured) else round(target.measured, 2)
        for target in targets.evaluate(results)
    }
    return {
        "date": results["date"],
        "plan": results["plan"]["name"],
        "code": results.get("machine", {}).get("code"),
        "note": note,
        "targets": measured,
    }


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
        label = run["date"] + (" (quick)" if run["plan"] == "quick" else "")
        cells = [_cell(run["targets"].get(key)) for key in keys]
        note = run["note"].replace("|", "\\|") or "(no note)"
        lines.append(f"| {label} | {note} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
